"""A local OpenAI-compatible server for a model folder: `transformers serve` on 127.0.0.1, for the tests and
benchmarks/bench_eval.py (vLLM is the production server; this is the CPU stand-in that needs no GPU).

    with local_server("runs/demo/merged") as url:      # url = "http://127.0.0.1:PORT/v1"
        evaluate(..., endpoint=url)

Needs the `serve` extra (fastapi, uvicorn).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from toolcall_kit.errors import KitError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _transformers_cli() -> str:
    exe = Path(sys.executable).with_name("transformers")
    found = str(exe) if exe.exists() else shutil.which("transformers")
    if not found:
        raise KitError("the `transformers` CLI is not installed (pip install 'toolcall-kit[serve]')")
    return found


@contextmanager
def local_server(
    model: str | Path,
    continuous_batching: bool = False,
    timeout: float = 180.0,
    cwd: str | Path | None = None,
) -> Iterator[str]:
    """Serve `model` on a free 127.0.0.1 port until the block ends; yields the `/v1` base URL.

    `continuous_batching`: without it `transformers serve` answers one request at a time, so concurrent
    clients gain nothing. `timeout`: seconds to wait for /health (a cold start takes 5-20 s on CPU).
    """
    port = free_port()
    cmd = [
        _transformers_cli(),
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    if continuous_batching:
        cmd.append("--continuous-batching")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise KitError(
                        f"transformers serve {model} did not start (exit code {proc.poll()})"
                    ) from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
