#!/usr/bin/env bash
# The GPU path, checked on a real GPU: `make gpu-check` in the Docker image (or on any CUDA host whose Python
# has CUDA torch, Unsloth and the kit). Not run in CI: no GPU there. About 10 minutes on a 24 GB card, most of
# it downloading Qwen 2.5 7B twice (the 4-bit repo to train, the 16-bit one to merge into: ~20 GB; a warm HF
# cache on the volume skips that). Each step prints what one item of issue 10 depends on; a failed step is
# reported and the next one still runs. The facts also land in $RUN/gpu_check.json.
#
#   make gpu-check                         # in the image: docker run ... toolcall-kit:gpu make gpu-check
#   GPU_CHECK_SKIP_VLLM=1 make gpu-check   # without the vLLM serving step
set -uo pipefail

CONFIG=${GPU_CHECK_CONFIG:-configs/qwen2_5_7b_qlora.yaml}
RUN=runs/gpu_check
FACTS=()
fact() { printf '== %s: %s\n' "$1" "$2"; FACTS+=("$1=$2"); }
step() { printf '\n### %s\n' "$1"; }

step "1. the image: make, driver, GPU, the kit's bf16 decision"
fact make "$(command -v make || echo MISSING)"
fact nvidia_smi "$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -1)"
fact malloc_env "MALLOC_MMAP_MAX_=${MALLOC_MMAP_MAX_:-unset} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-unset}"
fact torch "$(python -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1)"
fact bf16 "$(python -c 'from toolcall_kit.train import _device; on_gpu, bf16 = _device(); print("gpu" if on_gpu else "NO GPU", "bf16" if bf16 else "fp16")' 2>&1 | tail -1)"

step "2. five training steps of $CONFIG (unsloth backend, 4-bit)"
timeout 900 toolcall-kit train --config "$CONFIG" --set train.max_steps=5 --set data.eval=null \
  --set train.save_steps=null --set output.name=gpu_check --set output.overwrite=true --json > /tmp/gpu_check_train.json
fact train_exit "$?"
fact train "$(python -c 'import json; r = json.load(open("/tmp/gpu_check_train.json")); print(r["backend"], r["precision"], "steps", r["steps"], "loss", r["first_loss"], "->", r["final_loss"], "unsloth_imported_first", r["unsloth_imported_first"], "peak GiB", r.get("gpu_peak_reserved_gib"))' 2>&1 | tail -1)"

step "3. the adapter's base name (Unsloth writes its bnb-4bit repo) and what merge resolves it to"
fact adapter_base "$(python -c 'import json; print(json.load(open("'$RUN'/adapter/adapter_config.json"))["base_model_name_or_path"])' 2>&1 | tail -1)"
fact merge_base "$(python -c 'import json, yaml; from toolcall_kit.merge import base_for; print(base_for(json.load(open("'$RUN'/adapter/adapter_config.json")), {"config": yaml.safe_load(open("'$RUN'/config.yaml"))}))' 2>&1 | tail -1)"

step "4. merge into the 16-bit base (default dtype: bfloat16 for a 4-bit run) and the logit check"
timeout 1200 toolcall-kit merge "$RUN" --out "$RUN/merged" --json > /tmp/gpu_check_merge.json
fact merge_exit "$?"
fact merge "$(python -c 'import json; r = json.load(open("/tmp/gpu_check_merge.json")); print(r["base"], r["dtype"], "max|diff|", r["max_abs_logit_diff"], "tol", r["tolerance"])' 2>&1 | tail -1)"
fact merged_quantization "$(python -c 'import json; print(json.load(open("'$RUN'/merged/config.json")).get("quantization_config", "none"))' 2>&1 | tail -1)"

step "5. plan beside the measured peak (same batch, sequences as long as the longest trained one)"
fact plan_vs_measured "$(python - "$CONFIG" "$RUN" <<'PY' 2>&1 | tail -1
import json, sys
import torch
from toolcall_kit.config import load_config
from toolcall_kit.plan import GiB, arch_for, memory
cfg, run = load_config(sys.argv[1]), sys.argv[2]
result = json.load(open(f"{run}/result.json"))
longest = json.load(open(f"{run}/data_fingerprints.json"))["train"]["longest_tokens"]
gpu_gib = torch.cuda.get_device_properties(0).total_memory / GiB
tok = cfg.train.batch_size * min(longest, cfg.model.max_seq_length)
kw = dict(r=cfg.lora.r, target_modules=cfg.lora.target_modules, load_in_4bit=cfg.model.load_in_4bit,
          gradient_checkpointing=cfg.train.gradient_checkpointing)
est = {b: memory(arch_for(cfg.model.name), tok, gpu_gib, backend=b, **kw)["total"] / GiB for b in ("unsloth", "hf")}
print(f"{tok} tokens a batch: plan unsloth {est['unsloth']:.1f} GiB, hf bound {est['hf']:.1f} GiB; measured peak "
      f"reserved {result.get('gpu_peak_reserved_gib')} GiB, allocated {result.get('gpu_peak_allocated_gib')} GiB")
PY
)"

step "6. vLLM serves one tools request with the model card's command"
if [ "${GPU_CHECK_SKIP_VLLM:-0}" = 1 ] || ! python -c "import vllm" 2>/dev/null; then
  fact vllm "skipped (GPU_CHECK_SKIP_VLLM=1 or vllm not installed)"
else
  SERVE=$(python -c 'import json; print(json.load(open("'$RUN'/merged/merge_report.json"))["serve_command"])')
  $SERVE --port 8011 --max-model-len 4096 --enforce-eager --gpu-memory-utilization 0.85 > /tmp/gpu_check_vllm.log 2>&1 &
  VLLM_PID=$!
  for _ in $(seq 1 60); do curl -sf http://127.0.0.1:8011/v1/models > /dev/null && break; sleep 5; done
  fact vllm "$(python - "$RUN/merged" <<'PY' 2>&1 | tail -1
import json, sys, urllib.request
tool = {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
body = {"model": sys.argv[1], "tools": [tool], "tool_choice": "auto", "max_tokens": 128,
        "messages": [{"role": "user", "content": "What's the weather like in Lisbon today?"}]}
req = urllib.request.Request("http://127.0.0.1:8011/v1/chat/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
msg = json.load(urllib.request.urlopen(req, timeout=120))["choices"][0]["message"]
print("tool_calls", json.dumps(msg.get("tool_calls")), "content", repr(msg.get("content")))
PY
)"
  kill "$VLLM_PID" 2>/dev/null; wait "$VLLM_PID" 2>/dev/null
fi

mkdir -p "$RUN"
python -c 'import json, sys; print(json.dumps(dict(a.split("=", 1) for a in sys.argv[1:]), indent=2))' "${FACTS[@]}" \
  > "$RUN/gpu_check.json"
printf '\nfacts written to %s\n' "$RUN/gpu_check.json"
