"""Static checks of docker/Dockerfile (no Docker engine runs here): pinned base, real paths, real command."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


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
    (cmd,) = [rest for op, rest in ins if op == "CMD"]
    argv = eval(cmd)  # noqa: S307 - the JSON-array form of our own CMD
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
