"""vLLM's own tool-call parsers as a referee for the kit's parsers (tests/test_vllm_parsers.py).

    python tests/vllm_referee.py     # the worker: JSON lines in on stdin, JSON lines out (the tests start it)

vLLM 0.33.0 and its small pure-Python imports are installed `--no-deps` into `.vllm-site/` by
`make install` (the Makefile names them), apart from the kit's own packages: vLLM's pins would
otherwise replace the kit's torch and transformers. Its parsers run on CPU without the engine. They run
in a worker process of their own, so importing vLLM (which pulls torchao and registers its own logging
and hooks) never touches the test process; the worker puts `.vllm-site` at the END of sys.path so the
kit's packages win wherever both hold one.

Each request is {"parser": ..., "texts": [...]} and each answer a list of what the server would send:
{"calls": [[name, arguments JSON string], ...], "content": str | None, "raised": str | None}, from
`parser.extract_tool_calls(text, ChatCompletionRequest(..., tools=[...], tool_choice="auto"))` as vLLM's
chat-completions endpoint calls it. Parsers: hermes (tiny ChatML tokenizer), llama3_json (tiny Llama 3.1
tokenizer, which holds <|python_tag|>), mistral (tiny Mistral tokenizer without [ARGS]: vLLM's pre-v11
path, the v3 format the kit's template writes) and mistral_v11 (the same with [ARGS] added:
vLLM's v11+ path, name[ARGS]{...}).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where make install puts vLLM (gitignored); TOOLCALL_KIT_VLLM_SITE points elsewhere.
SITE = Path(os.environ.get("TOOLCALL_KIT_VLLM_SITE") or ROOT / ".vllm-site")
VLLM_VERSION = "0.33.0"
PARSERS = ("hermes", "llama3_json", "mistral", "mistral_v11")


def missing_reason() -> str | None:
    """Why the referee cannot run here, or None."""
    if not (SITE / "vllm" / "tool_parsers" / "hermes_tool_parser.py").exists():
        return (
            f"vLLM {VLLM_VERSION}'s tool parsers are not installed in {SITE} (make install puts them there)"
        )
    return None


@dataclass
class ServerResult:
    calls: list[tuple[str, str]]  # (name, arguments as the JSON string the client receives)
    content: str | None
    raised: str | None = None  # the parser raised: the server would answer with an error, not a message

    def client_calls(self) -> list[tuple[str, str]]:
        """The calls a client can use: a non-empty name and arguments that decode to an object, each as
        (name, canonical JSON of the arguments) so that NaN and key order compare."""
        out = []
        for name, args in self.calls:
            try:
                decoded = json.loads(args)
            except (ValueError, RecursionError):
                continue
            if name and isinstance(decoded, dict):
                out.append((name, canonical(decoded)))
        return out


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class Referee:
    """The worker process, started once; `parse` sends texts and returns what vLLM's parser returns."""

    def __init__(self) -> None:
        paths = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        env.setdefault("VLLM_LOGGING_LEVEL", "CRITICAL")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
            cwd=str(ROOT),
        )
        ready = self.proc.stdout.readline()
        if json.loads(ready or "null") != "ready":
            self.close()
            raise RuntimeError(f"the vLLM referee did not start (it said {ready!r}); see the output above")

    def parse(self, parser: str, texts: list[str]) -> list[ServerResult]:
        self.proc.stdin.write(json.dumps({"parser": parser, "texts": texts}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return [ServerResult([tuple(c) for c in a["calls"]], a["content"], a["raised"]) for a in answer]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --- the worker -------------------------------------------------------------------------------------------


def _serve() -> None:
    import logging

    sys.path.append(str(SITE))  # last: the kit's torch / transformers / pydantic win
    from template_fixtures import family_tokenizer
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser
    from vllm.tool_parsers.llama_tool_parser import Llama3JsonToolParser
    from vllm.tool_parsers.mistral_tool_parser import MistralToolParser

    logging.getLogger("vllm").setLevel(logging.CRITICAL)  # failed parses log tracebacks otherwise
    v11 = family_tokenizer("mistral")
    v11.add_special_tokens({"additional_special_tokens": ["[ARGS]"]})
    toks = {"chatml": family_tokenizer("chatml"), "llama3_1": family_tokenizer("llama3_1")}
    toks["mistral"] = family_tokenizer("mistral")
    makers = {
        "hermes": lambda: Hermes2ProToolParser(toks["chatml"]),
        "llama3_json": lambda: Llama3JsonToolParser(toks["llama3_1"]),
        "mistral": lambda: MistralToolParser(toks["mistral"]),
        "mistral_v11": lambda: MistralToolParser(v11),
    }
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
    }
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever vLLM prints must not garble the answers
    out.write(json.dumps("ready") + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        answers = []
        for text in req["texts"]:
            # A fresh parser and request per text, as the server makes per request.
            parser = makers[req["parser"]]()
            request = ChatCompletionRequest(
                model="m", messages=[{"role": "user", "content": "hi"}], tools=[tool], tool_choice="auto"
            )
            request = parser.adjust_request(request)
            try:
                info = parser.extract_tool_calls(text, request)
            except Exception as e:  # noqa: BLE001 - the server would fail the request
                answers.append({"calls": [], "content": None, "raised": f"{type(e).__name__}: {e}"})
                continue
            calls = (
                [[c.function.name, c.function.arguments] for c in info.tool_calls]
                if info.tools_called
                else []
            )
            content = info.content
            if calls and content is not None and not content.strip():
                content = None  # as the chat-completions endpoint does (vllm/parser/abstract_parser.py)
            answers.append({"calls": calls, "content": content, "raised": None})
        out.write(json.dumps(answers) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve()
