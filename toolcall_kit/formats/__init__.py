"""One reader per source format (FORMATS), each turning a parsed row into a canonical record, from JSON Lines,
a JSON array or Parquet, gzipped or not. A bad row comes back carrying a `Problem` (a format's `convert`
raises `RowError`); an unreadable file raises `DataError`."""

from __future__ import annotations

import ast
import gzip
import importlib
import io
import itertools
import json
import math
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .. import io as kit_io
from ..errors import DataError
from ..records import Record, text_of
from ..validate import ARGUMENTS_NOT_OBJECT, BAD_FIELD, INVALID_JSON, NOT_OBJECT, Problem

FORMATS = ("openai", "xlam", "sharegpt", "chat")
SAMPLE_ROWS = 1000  # rows `auto` looks at before choosing a file's format
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


class RowError(ValueError):
    """A row a reader cannot convert; carries the `Problem` that goes to rejects.jsonl."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.problem = Problem(reason, detail)


@dataclass
class Row:
    """One input row: where it came from, its text, and either its canonical record or why not."""

    path: str
    line: int  # 1-based: the line in JSON Lines, index + 1 in a JSON array or a Parquet file
    source: Any  # the raw line (str) or the parsed element (array / Parquet row)
    fmt: str
    record: Record | None = None
    problem: Problem | None = None

    @property
    def raw(self) -> str:
        if isinstance(self.source, str):
            return self.source
        return json.dumps(self.source, ensure_ascii=False, default=str)


def call_ids(taken=()) -> Iterator[str]:
    return (f"call_{n}" for n in itertools.count() if f"call_{n}" not in taken)


def row_id(row: dict) -> dict:
    rid = row.get("id")
    return {"id": str(rid)} if isinstance(rid, str | int) and not isinstance(rid, bool) else {}


def content_text(content: Any, where: str) -> str | None:
    try:
        return text_of(content)
    except ValueError as e:
        raise RowError(BAD_FIELD, f"{where}: {e}") from None


def loads_lenient(text: str, what: str) -> Any:
    """JSON, or a Python literal (Hermes/Glaive data often writes `{'name': ..., 'arguments': {...}}`)."""
    with suppress(ValueError, RecursionError):
        return json.loads(text)
    try:
        value = ast.literal_eval(text.strip())
        return json.loads(json.dumps(value))  # tuples -> lists; sets, bytes -> TypeError below
    except Exception as e:  # noqa: BLE001 - literal_eval raises many types on arbitrary text
        raise RowError(
            BAD_FIELD, f"{what} is neither JSON nor a Python literal: {text.strip()[:80]!r}"
        ) from e


def decode_json_field(value: Any, field: str) -> Any:
    """Fields that datasets store as JSON strings (`tools`, `answers`): decoded; other values unchanged."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as e:
        raise RowError(BAD_FIELD, f"`{field}` is a string that is not valid JSON: {e}") from None


def decode_arguments(args: Any, where: str) -> Any:
    """Call arguments as an object. JSON strings are decoded (twice if double-encoded); a non-object that
    decodes is left for the validator to reject, so the reason names the tool."""
    if args is None:
        return {}
    if not isinstance(args, str):
        return args
    text = args.strip()
    if not text:
        return {}  # some generators write "" for a call without arguments
    try:
        args = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise RowError(
            ARGUMENTS_NOT_OBJECT, f"{where}: arguments are not valid JSON ({e}): {text[:80]!r}"
        ) from None
    if isinstance(args, str) and args.lstrip().startswith("{"):
        with suppress(ValueError, RecursionError):
            args = json.loads(args)
    return args


def normalize_tools(tools: Any, field: str = "tools") -> Any:
    """A `tools` value in the OpenAI shape; accepts a JSON string and bare `{name, description, parameters}`
    functions. Anything it cannot make sense of is returned as is for the validator to name."""
    tools = decode_json_field(tools, field)
    if not isinstance(tools, list):
        return tools
    out = []
    for tool in tools:
        tool = decode_json_field(tool, field)
        if isinstance(tool, dict) and "function" not in tool and "name" in tool:
            tool = {"type": "function", "function": tool}
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("parameters"), str):
            tool = {
                **tool,
                "function": {**fn, "parameters": decode_json_field(fn["parameters"], "parameters")},
            }
        out.append(tool)
    return out


def merge_tools(tools: Any, more: list) -> Any:
    """`tools` plus the tools in `more` whose name it does not declare yet (a broken `tools` is kept as is,
    for the validator to name)."""
    if not isinstance(tools, list):
        return more if tools is None else tools

    def name(t: Any) -> Any:
        fn = t.get("function") if isinstance(t, dict) else None
        return fn.get("name") if isinstance(fn, dict) and isinstance(fn.get("name"), str) else None

    names = {name(t) for t in tools} - {None}
    return tools + [t for t in more if name(t) is None or name(t) not in names]


def _from_arrow(value: Any) -> Any:
    """A Parquet row as JSON values: null keys dropped (Arrow fills absent struct fields with null), NaN as
    null, other non-JSON values as strings."""
    if isinstance(value, dict):
        return {str(k): v for k, v in ((k, _from_arrow(v)) for k, v in value.items()) if v is not None}
    if isinstance(value, list | tuple):
        return [_from_arrow(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse_line(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return Problem(INVALID_JSON, "JSON nested too deeply")
    except ValueError as e:
        return Problem(INVALID_JSON, f"not valid JSON: {e}")


class _Prefixed(io.RawIOBase):
    """Bytes already read (the sniffed head) followed by the rest of a stream: nothing is read twice."""

    def __init__(self, head: bytes, rest):
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.head[: len(buf)] or self.rest.read(len(buf))
        self.head = self.head[len(data) :]
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.rest is not sys.stdin.buffer:
            self.rest.close()
        super().close()


def _sniff(f, n: int):
    """(the first `n` bytes, a reader that still yields them) of a stream that may not seek (a pipe)."""
    head = b""
    while len(head) < n and (chunk := f.read(n - len(head))):
        head += chunk
    return head, io.BufferedReader(_Prefixed(head, f), buffer_size=1 << 16)


def _open_binary(path: Path):
    """(reader, gzipped, first 4 bytes): the file is opened once (pipes, FIFOs, /dev/stdin, `-`)."""
    raw = kit_io.open_input(path)
    try:
        head, f = _sniff(raw, 4)
    except OSError as e:
        raw.close()
        raise DataError(path, None, f"cannot read: {e.strerror or e}") from None
    if head[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb"), True, head
    if path.suffix == ".gz":
        f.close()
        raise DataError(path, None, "named .gz but is not a gzip file")
    return f, False, head


def _iter_jsonl(f) -> Iterator[tuple[int, str, Any]]:
    for lineno, bline in enumerate(f, 1):
        if lineno == 1:
            bline = bline.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte order mark
        if not bline.strip():
            continue
        try:
            text = bline.decode("utf-8").rstrip("\r\n")  # the original text, minus its line end
        except UnicodeDecodeError as e:
            text = bline.decode("utf-8", "replace").rstrip("\r\n")
            yield lineno, text, Problem(INVALID_JSON, f"line is not UTF-8: {e}")
            continue
        yield lineno, text, _parse_line(text)


def _iter_json_text(path: Path, f, suffix: str) -> Iterator[tuple[int, str | None, Any]]:
    """A `.json` file is an array, one object, or (BFCL, many dumps) JSON Lines under a .json name.
    Other names (not .jsonl) get here when they start with `[`: an array if the whole parses, else lines."""
    data = f.read().removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
        whole = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        pass  # read as lines: each bad line is rejected on its own
    except RecursionError:
        raise DataError(path, None, "JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        first = text.lstrip().split("\n", 1)[0]
        if suffix == ".json" and first.startswith("[") and isinstance(_parse_line(first), Problem):
            # An array with a syntax error cannot be split into rows reliably: the whole file is unusable.
            raise DataError(path, e.lineno, f"not a valid JSON array: {e.msg} (column {e.colno})") from None
    except ValueError as e:  # NaN / Infinity
        if suffix == ".json" and text.lstrip().startswith("["):
            raise DataError(path, None, f"not a valid JSON array: {e}") from None
    else:
        if not isinstance(whole, list):
            yield 1, text.strip(), whole
            return
        del data, text  # the file's bytes and text (hundreds of MB for xLAM) are not needed any more
        for i in range(len(whole)):
            item, whole[i] = whole[i], None  # let each row go once it is converted
            yield i + 1, None, item
        return
    yield from _iter_jsonl(io.BytesIO(data))


def _struct_arguments(t) -> bool:
    """True if an Arrow type holds a field `arguments` stored as a struct (keys unified across rows)."""
    import pyarrow as pa

    if pa.types.is_struct(t):
        return any(
            (f.name == "arguments" and pa.types.is_struct(f.type)) or _struct_arguments(f.type) for f in t
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _struct_arguments(t.value_type)
    return False


def _iter_parquet(path: Path, source, info: dict | None) -> Iterator[tuple[int, str | None, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source if source is not None else path)
        if info is not None and any(_struct_arguments(f.type) for f in pf.schema_arrow):
            info["warning"] = (
                "call arguments are Arrow structs, whose keys are unified across rows: an explicit null cannot be "
                "told from an absent key, so null arguments were dropped; store arguments as JSON strings to keep them"
            )
        rows = itertools.chain.from_iterable(b.to_pylist() for b in pf.iter_batches(batch_size=4096))
        for n, row in enumerate(rows, 1):
            yield n, None, _from_arrow(row)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(path, None, f"not a readable Parquet file: {e}") from None


def parsed_items(path: str | Path, info: dict | None = None) -> Iterator[tuple[int, str | None, Any]]:
    """(line, raw text or None, parsed value or Problem) for every row of a file, whatever its container.
    `info`, if given, receives a `warning` about what the container cannot carry (Parquet struct nulls)."""
    path = Path(path)
    f, gzipped, head = _open_binary(path)
    suffix = (Path(path.stem) if gzipped and path.suffix == ".gz" else path).suffix.lower()
    try:
        with f:
            if not gzipped and (head == PARQUET_MAGIC or suffix == ".parquet"):
                if head != PARQUET_MAGIC:
                    raise DataError(path, None, "named .parquet but is not a Parquet file")
                # Parquet reads its footer first: a regular file by name, a pipe read whole into memory.
                source = None if str(path) != kit_io.STDIN and path.is_file() else io.BytesIO(f.read())
                f.close()
                yield from _iter_parquet(path, source, info)
                return
            peek, f = _sniff(f, 64)
            # The name decides where it says: .jsonl is lines even if one starts with `[`; .json may be either.
            if suffix == ".json" or (suffix != ".jsonl" and peek.lstrip().startswith(b"[")):
                yield from _iter_json_text(path, f, suffix)
            else:
                yield from _iter_jsonl(f)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(path, None, f"corrupt gzip data: {e}") from None
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e}") from None


_TOOL_SPEAKERS = {"function_call", "observation", "tool", "function_response", "ipython", "function"}
_TOOL_TAGS = ("<tool_call>", "<tools>", "<tool_response>")


def _is_tool_turn(t: Any) -> bool:
    """A ShareGPT turn spoken by a tool or carrying Hermes' tool tags."""
    return isinstance(t, dict) and (
        (isinstance(t.get("from"), str) and t["from"] in _TOOL_SPEAKERS)
        or (isinstance(t.get("value"), str) and any(g in t["value"] for g in _TOOL_TAGS))
    )


def _is_tool_message(m: Any) -> bool:
    return isinstance(m, dict) and bool(
        m.get("tool_calls") or m.get("function_call") or m.get("role") in ("tool", "function")
    )


def _looks_like(row: Any) -> str | None:
    """The format one parsed row is written in: xlam, openai, sharegpt, or chat:messages / chat:conversations
    for tool-free rows that the openai / sharegpt readers would read as well."""
    if not isinstance(row, dict):
        return None
    if "query" in row and "answers" in row:
        return "xlam"
    turns = row.get("conversations")
    if isinstance(turns, list | str):
        tools = row.get("tools") or isinstance(turns, str) or any(_is_tool_turn(t) for t in turns)
        return "sharegpt" if tools else "chat:conversations"
    messages = row.get("messages")
    if isinstance(messages, list | str):
        tools = row.get("tools") or row.get("functions") or isinstance(messages, str)
        return "openai" if tools or any(_is_tool_message(m) for m in messages) else "chat:messages"
    if isinstance(row.get("data"), list):
        return "chat:data"  # UltraChat's original layout: alternating user/assistant strings
    return None


# Tool-free rows of these shapes are read by the openai / sharegpt reader once the file holds tool rows.
_PLAIN_CHAT_OF = {"chat:messages": "openai", "chat:conversations": "sharegpt"}


def detect_format(path: str | Path, first_rows: list[Any]) -> tuple[str, str]:
    """(format, a sentence saying why) from a file's first parsed rows; a file with no recognisable row is
    read as `openai`, so that each row is rejected with its own reason."""
    shapes = Counter(v for v in map(_looks_like, first_rows) if v)
    n = len(first_rows)
    if not shapes:
        return "openai", f"auto: none of the first {n} rows looks like a known format; read as openai"
    votes: Counter = Counter()
    for shape, count in shapes.items():
        if shapes.get(_PLAIN_CHAT_OF.get(shape)):
            shape = _PLAIN_CHAT_OF[shape]
        votes[shape.split(":")[0]] += count
    fmt, count = votes.most_common(1)[0]
    how = f"auto: {count} of the first {n} rows look like {fmt}"
    others = [f"{c} like {f}" for f, c in votes.most_common() if f != fmt]
    if others:
        how += f" ({', '.join(others)}: mixed file, read as {fmt})"
    return fmt, how


def _row_format(row: dict, file_fmt: str) -> str | None:
    shape = _looks_like(row)
    if shape is None or _PLAIN_CHAT_OF.get(shape) == file_fmt or shape.split(":")[0] == file_fmt:
        return None
    return shape.split(":")[0]


@cache
def converter(fmt: str):
    """The `convert(row) -> Record` function of one format (imported lazily: formats import this module)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    return importlib.import_module(f".{fmt}", __name__).convert


def read_file(path: str | Path, fmt: str = "auto", info: dict | None = None) -> Iterator[Row]:
    """Every row of one file as a `Row`. `info`, if given, receives `format` and `how` (what auto chose)."""
    if fmt != "auto":
        converter(fmt)  # fail on a bad name before the file is opened
    items = parsed_items(path, info)
    how = f"given: --format {fmt}"
    if fmt == "auto":
        sample = list(itertools.islice(items, SAMPLE_ROWS))
        fmt, how = detect_format(path, [v for _, _, v in sample if not isinstance(v, Problem)])
        items = itertools.chain(sample, items)
    # In a mixed file that auto read, a row that plainly looks like another format is read so.
    per_row = how.startswith("auto")
    minority: Counter = Counter()
    info = {} if info is None else info
    info.update(format=fmt, how=how)
    for line, text, value in items:
        row = Row(str(path), line, text if text is not None else value, fmt)
        if isinstance(value, Problem):
            row.problem = value
        elif not isinstance(value, dict):
            row.problem = Problem(NOT_OBJECT, f"a row must be a JSON object, got {type(value).__name__}")
        else:
            other = _row_format(value, fmt) if per_row else None
            if other is not None:
                row.fmt = other
                minority[other] += 1
                info["other_format_rows"] = dict(minority)
            try:
                row.record = converter(row.fmt)(value)
            except RowError as e:
                row.problem = e.problem
        yield row
