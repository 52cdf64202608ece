"""Static checks of docker/Dockerfile (no Docker engine runs here): pinned base, real paths, real command,
every program it runs installed, the kit outside RunPod's volume and the runs on it."""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
MAKEFILE = ROOT / "Makefile"
# Make targets run inside the image: its CMD, the README's docker commands, the GPU check.
IMAGE_TARGETS = ("train", "demo", "gpu-check")
# What unsloth/unsloth:core provides, as its docker/Dockerfile (runtime stage) and DOCKERHUB.md document it:
# Ubuntu 24.04 (nvidia/cuda base) with coreutils, bash, grep, sed; its apt list (curl, wget, git, gcc, g++,
# zstd, ffmpeg, ninja-build, cuda-nvcc, python3.12); the venv on PATH (python, pip, jupyter, vllm on amd64);
# nvidia-smi, which the NVIDIA runtime injects with --gpus; and its entrypoint. No make: only its builder
# stage had build-essential.
BASE_IMAGE_PROGRAMS = {
    "bash", "sh", "env", "mkdir", "basename", "dirname", "cat", "ls", "rm", "cp", "mv", "ln", "head", "tail",
    "tee", "timeout", "seq", "sleep", "grep", "sed", "curl", "wget", "git", "gcc", "g++", "zstd", "ffmpeg",
    "ninja", "nvcc", "python", "python3", "pip", "jupyter", "vllm", "nvidia-smi", "unsloth-entrypoint",
}
# Shell keywords and builtins: no program to install.
SHELL_WORDS = {"for", "in", "do", "done", "if", "then", "else", "elif", "fi", "exit", "echo", "test", "[", "cd",
               "true", "false", "command", "export", "set", "exec", "printf", "kill", "wait", ":"}


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_base_image_is_the_official_unsloth_image_pinned_to_a_release():
    ins = instructions()
    args = dict(rest.split("=", 1) for op, rest in ins if op == "ARG" and "=" in rest)
    (base,) = [rest for op, rest in ins if op == "FROM"]
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    repo, _, tag = image.partition(":")
    assert repo == "unsloth/unsloth", image
    assert tag and tag not in ("latest", "core", "studio") and re.search(r"\d{4}\.\d+\.\d+", tag), (
        f"pin a release or nightly tag, not {tag!r}: latest is rebuilt daily"
    )


def test_every_copied_path_exists_and_the_command_runs_a_real_target():
    ins = instructions()
    for op, rest in ins:
        if op == "COPY":
            *sources, _dest = shlex.split(rest)
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
    argv = json_form(ins, "CMD")
    assert argv[:2] == ["make", "train"]
    config = next(a.split("=", 1)[1] for a in argv if a.startswith("CONFIG="))
    assert (ROOT / config).is_file()
    assert "train:" in (ROOT / "Makefile").read_text()
    envs = " ".join(rest for op, rest in ins if op == "ENV")
    assert "USE_SYSTEM_PYTHON=1" in envs  # the image's CUDA stack, not a CPU venv
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert "--no-deps -e ." in runs, "installing the kit's deps would replace the image's CUDA torch"


def test_dockerignore_keeps_runs_and_venv_out_of_the_context():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "runs", ".git"} <= set(ignored)


def json_form(ins: list[tuple[str, str]], op: str) -> list[str]:
    (rest,) = [r for o, r in ins if o == op]
    return eval(rest)  # noqa: S307 - the JSON-array form of our own CMD / ENTRYPOINT


def recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target, continuation lines joined."""
    lines = re.sub(r"\\\n", " ", MAKEFILE.read_text()).splitlines()
    head = next(i for i, line in enumerate(lines) if re.match(rf"{re.escape(target)}:", line))
    out = []
    for line in lines[head + 1:]:
        if not line.startswith("\t"):
            break
        out.append(line.strip())
    assert out, f"make {target}: no recipe"
    return out


def programs(line: str) -> set[str]:
    """First words of the commands in one recipe line (command substitutions and pipelines included)."""
    line = re.sub(r"'[^']*'", "''", line)  # quoted program text (python -c '...') is an argument
    line = line.replace("$(BIN)/", "")  # the image's Python folder under USE_SYSTEM_PYTHON
    line = re.sub(r"(?<!\$)\$\((\w+)\)", r"\1", line)  # other make variables are arguments
    found = set()
    for seg in re.split(r"\$\$\(|&&|\|\||[;|(`]", line):
        words = [w for w in seg.strip().lstrip("@-").split() if not re.match(r"^[A-Z_]+=", w)]
        while words and words[0] in ("do", "then", "else"):
            words = words[1:]
        if words and words[0] not in SHELL_WORDS and not words[0].startswith(('"', ")")):
            found.add(words[0])
    return found


def installed_by_dockerfile(ins: list[tuple[str, str]]) -> set[str]:
    """Programs the Dockerfile adds: apt packages (named as their program) and the pip packages' scripts."""
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    out = set()
    for m in re.finditer(r"apt-get install ((?:-\S+\s+)*)([\w.+\- ]+)", runs):
        out |= set(m.group(2).split())
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    scripts = re.findall(r"^([\w-]+)\s*=", section, re.MULTILINE)  # (tomllib is 3.11+; the kit supports 3.10)
    if "--no-deps -e ." in runs:
        out |= set(scripts)
    for pkg in ("papermill", "jupytext"):
        if f'"{pkg}' in runs:
            out.add(pkg)
    return out


def test_every_program_the_image_runs_is_installed():
    ins = instructions()
    have = BASE_IMAGE_PROGRAMS | installed_by_dockerfile(ins)
    needed = {"CMD": {json_form(ins, "CMD")[0]}}
    for target in IMAGE_TARGETS:
        needed[f"make {target}"] = set().union(*(programs(line) for line in recipe(target)))
    start = ROOT / "docker" / "start.sh"
    needed["docker/start.sh"] = set().union(*(programs(line) for line in start.read_text().splitlines()
                                              if line.strip() and not line.lstrip().startswith("#")))
    assert "papermill" in needed["make train"] and "make" in needed["CMD"]  # the parser sees what it must
    for where, progs in needed.items():
        missing = sorted(p.rsplit("/", 1)[-1] for p in progs if p.rsplit("/", 1)[-1] not in have)
        assert not missing, f"{where} runs {missing}: install them in docker/Dockerfile (the base image lacks them)"


def test_the_kit_lives_outside_the_volume_and_writes_runs_and_cache_to_it():
    ins = instructions()
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for op, rest in ins if op == "ENV")))
    (workdir,) = [rest for op, rest in ins if op == "WORKDIR"]
    # RunPod mounts its volume at /workspace, over anything the image put there.
    assert not workdir.startswith("/workspace"), f"WORKDIR {workdir}: hidden by RunPod's volume"
    assert env["TOOLCALL_KIT_RUNS"].startswith("/workspace/") and env["HF_HOME"].startswith("/workspace/")
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert 'ln -s "$TOOLCALL_KIT_RUNS" runs' in runs
    # The link's target is made when the container starts (after the volume is mounted), then the base image's
    # entrypoint (GPU checks, exec "$@") takes over.
    (entry,) = json_form(ins, "ENTRYPOINT")
    copied = {shlex.split(rest)[-1]: shlex.split(rest)[0] for op, rest in ins if op == "COPY"}
    start = (ROOT / copied[entry]).read_text()
    assert 'mkdir -p "${TOOLCALL_KIT_RUNS:?}"' in start
    assert start.rstrip().endswith('exec /usr/local/bin/unsloth-entrypoint "$@"')
    assert os.access(ROOT / copied[entry], os.X_OK), f"{copied[entry]} must be executable"


def test_gpu_check_target_runs_the_script_the_image_carries():
    (line,) = recipe("gpu-check")
    script = re.search(r"scripts/\S+\.sh", line).group(0)
    assert (ROOT / script).is_file() and os.access(ROOT / script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(ROOT / script)]).returncode == 0
    assert any(op == "COPY" and rest.split()[0] == "scripts" for op, rest in instructions())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("image,exported", [(False, True), (True, False)])
def test_cpu_malloc_settings_stay_out_of_the_gpu_image(image, exported):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if image:
        env["USE_SYSTEM_PYTHON"] = "1"  # what docker/Dockerfile sets
    out = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "--eval", "print-env: ; @env", "print-env"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    has = "MALLOC_MMAP_MAX_=0" in out.splitlines()
    assert has is exported, f"USE_SYSTEM_PYTHON={'1' if image else 'unset'}: MALLOC_MMAP_MAX_ exported: {has}"
