"""Every command in the README's code blocks runs as written: `toolcall-kit` lines parse with the CLI's own
parser and their --config/--set/--gpu values load; `make` targets and CONFIG files exist; paths into the
repository exist; run folders are ones a shipped config writes; docker mounts match the image's layout."""

import re
import shlex
from pathlib import Path

import pytest

from toolcall_kit.cli import make_parser
from toolcall_kit.config import load_config
from toolcall_kit.plan import GPUS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Folders of the repository a command may name; anything under them must exist.
REPO_DIRS = ("configs/", "docker/", "scripts/", "notebooks/", "data/demo/", "toolcall_kit/", "tests/")
# Files a command may name from the repository's top level.
REPO_FILES = ("constraints-cpu.txt", "requirements-unsloth-cpu.txt", "pyproject.toml", "Makefile")


def _commands() -> list[list[str]]:
    """argv of every command in the ```bash blocks (continuations joined, comments dropped, && ; | split)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            cmd: list[str] = []
            for w in words + ["&&"]:
                if w in ("&&", ";", "|", "||"):
                    if cmd:
                        out.append(cmd)
                    cmd = []
                else:
                    cmd.append(w)
    return out


def _inline_make() -> list[list[str]]:
    return [shlex.split(span) for span in re.findall(r"`(make [^`]+)`", README)]


COMMANDS = _commands()
RUN_NAMES = {load_config(p).output.name for p in (ROOT / "configs").glob("*.yaml")}
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def _check_paths(argv: list[str]) -> None:
    for word in argv:
        for token in re.split(r"[=:]", word):
            token = token.strip('"')
            if token.startswith(REPO_DIRS) or token in REPO_FILES:
                assert (ROOT / token).exists(), f"{' '.join(argv)}: {token} does not exist"
            m = re.match(r"runs/([^/\s]+)", token)
            if m:
                assert m.group(1) in RUN_NAMES | {"gpu_check"}, (
                    f"{' '.join(argv)}: runs/{m.group(1)} is not a run folder any shipped config writes "
                    f"(output.name: {', '.join(sorted(RUN_NAMES))})"
                )


def _check_make(argv: list[str]) -> None:
    targets = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
    for t in targets:
        assert t in _make_targets(), f"{' '.join(argv)}: no make target {t!r}"
    for a in argv[1:]:
        if a.startswith("CONFIG=") and a != "CONFIG=...":  # "..." stands for any config in prose
            assert (ROOT / a.split("=", 1)[1]).is_file(), f"{' '.join(argv)}: no such config"


def _check_toolcall_kit(argv: list[str]) -> None:
    try:
        args = make_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"README command does not parse: {' '.join(argv)}")
    config = getattr(args, "config", None)
    if config:
        load_config(ROOT / config, getattr(args, "overrides", None))  # every --set key is a real config key
    gpu = getattr(args, "gpu", None)
    if gpu is not None:
        assert gpu in GPUS, f"{' '.join(argv)}: --gpu {gpu} is not one plan knows ({', '.join(GPUS)})"


def _check_docker_run(argv: list[str]) -> None:
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    runs_volume = re.search(r"TOOLCALL_KIT_RUNS=(\S+)", DOCKERFILE).group(1)
    hf_home = re.search(r"HF_HOME=(\S+)", DOCKERFILE).group(1)
    for m in mounts:
        inside = m.rsplit(":", 1)[1]
        assert inside in (runs_volume, hf_home, "/workspace"), (
            f"{' '.join(argv)}: mount {m} is not where the image keeps runs ({runs_volume}) or the HF cache ({hf_home})"
        )
    if "make" in argv:
        _check_make(argv[argv.index("make"):])


def test_the_readme_has_the_commands_this_test_checks():
    verbs = {a[0] for a in COMMANDS}
    assert {"toolcall-kit", "make", "docker", "vllm"} <= verbs, verbs


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a)[:60])
def test_readme_command_runs_as_written(argv):
    _check_paths(argv)
    if argv[0] == "toolcall-kit":
        _check_toolcall_kit(argv)
    elif argv[0] == "make":
        _check_make(argv)
    elif argv[:2] == ["docker", "run"]:
        _check_docker_run(argv)
    elif argv[:2] == ["docker", "build"]:
        assert (ROOT / argv[argv.index("-f") + 1]).is_file()
    elif argv[0] == "cd":
        workdir = re.search(r"^WORKDIR (\S+)", DOCKERFILE, re.MULTILINE).group(1)
        assert argv[1] == workdir, f"cd {argv[1]}: the image installs the kit in {workdir}"


@pytest.mark.parametrize("argv", _inline_make(), ids=lambda a: " ".join(a)[:60])
def test_readme_inline_make_commands(argv):
    _check_paths(argv)
    _check_make(argv)
