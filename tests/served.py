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


@contextmanager
def stub_openai_server(answer, delay: float = 0.0) -> Iterator[tuple[str, list]]:
    """An OpenAI-compatible stub on 127.0.0.1: `answer(request body) -> assistant message`, each request held
    `delay` seconds. Yields the `/v1` base URL and a list that collects (path, body, requests in flight)."""
    import http.server
    import json
    import threading

    seen: list = []
    in_flight = [0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                in_flight[0] += 1
                seen.append((self.path, body, in_flight[0]))
            time.sleep(delay)
            with lock:
                in_flight[0] -= 1
            choice = {"index": 0, "message": answer(body), "finish_reason": "stop"}
            payload = {"id": "stub", "object": "chat.completion", "created": 0, "model": body["model"]}
            data = json.dumps({**payload, "choices": [choice]}).encode()
            self.send_response(200)
            for key, value in (("Content-Type", "application/json"), ("Content-Length", str(len(data)))):
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
