"""Atomic file writes (a temporary sibling, fsynced, then renamed over the target), folder ownership (folders
the kit makes carry a `.toolcall-kit` marker; one with files and no marker is the user's and never replaced),
folder locks, and input opening: the one place for each."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .errors import DataError, KitError

KIT_MARKER = ".toolcall-kit"  # in every folder the kit made: {"made_by": "toolcall-kit", "kind": ...}
LOCK_FILE = ".toolcall-kit.lock"
STDIN = "-"

_UMASK = os.umask(0)  # read by setting it; restored on the next line
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary sibling of `path`; on clean exit it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs should read like any other file
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable_file(path: str | os.PathLike, what: str) -> None:
    """Fail early (before minutes of work) if an output file cannot be created where it is asked for."""
    path = Path(path)
    if path.is_dir():
        raise KitError(f"{what} {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise KitError(f"{what} {path}: cannot write there ({e.strerror or e})") from None


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """Fail early if an output folder cannot be created and written (eval --out before the generation)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KitError(f"{what} {path} exists and is not a folder")
    existed = path.exists()
    check_writable_file(path / "probe", what)
    if not existed:
        with suppress(OSError):
            path.rmdir()  # made only to probe: the verb makes it again when it writes


def write_text(path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path, rows: Iterable[Any]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path) -> list[Any]:
    """Every row of a JSONL file the kit wrote; user input goes through `formats`."""
    return [row for _, row in iter_json_lines(path)]


def is_marked(folder: str | os.PathLike) -> bool:
    return (Path(folder) / KIT_MARKER).is_file()


def _holds_files(folder: Path) -> bool:
    return any(p.name != LOCK_FILE for p in folder.iterdir())


def mark(folder: str | os.PathLike, kind: str) -> None:
    write_json(Path(folder) / KIT_MARKER, {"made_by": "toolcall-kit", "kind": kind})


def claim_dir(path: str | os.PathLike, kind: str, what: str, known: Iterable[str] = ()) -> Path:
    """Create `path` (a run folder) or take an existing one the kit made; a folder that holds files, no marker
    and none of the `known` names (what the kit wrote there before it had markers) is the user's: refused."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise KitError(f"{what}: {path} exists and is not a folder")
        if path.is_dir() and not is_marked(path) and _holds_files(path):
            if not any((path / name).exists() for name in known):
                raise KitError(
                    f"{what}: {path} holds files that toolcall-kit did not write (no {KIT_MARKER} marker); "
                    "pick another folder or empty this one"
                )
        path.mkdir(parents=True, exist_ok=True)
        if not is_marked(path):
            mark(path, kind)
    except OSError as e:
        raise KitError(f"{what}: cannot create {path}: {e.strerror or e}") from None
    return path


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run folder"):
    """An exclusive lock on `folder` while a process writes there: a second process gets a KitError at once.
    Re-entrant within a process, from any thread; the OS releases it when the process dies."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder.resolve() / LOCK_FILE
        try:  # filelock 4 would delete the file on release, letting a late opener lock a removed inode
            lock = FileLock(path, timeout=0, is_singleton=True, thread_local=False, preserve_lock_file=True)
        except TypeError:  # filelock 3 (a GPU image's own) keeps the file and has no such option
            lock = FileLock(path, timeout=0, is_singleton=True, thread_local=False)
        lock.acquire()
    except Timeout:
        raise KitError(
            f"{what}: {folder} is in use by another toolcall-kit process (it holds {folder / LOCK_FILE}); "
            "wait for it to finish or pick another folder"
        ) from None
    except OSError as e:
        raise KitError(f"{what}: cannot lock {folder}: {e.strerror or e}") from None
    try:
        yield folder
    finally:
        lock.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _remove_stale_temps(path: Path) -> None:
    """Temporary folders that a killed `atomic_dir` left beside `path` (their process is gone)."""
    try:
        siblings = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:  # a folder we may write but not list: nothing to clean
        return
    for tmp in siblings:
        try:
            info = json.loads((tmp / KIT_MARKER).read_text(encoding="utf-8"))
            pid = int(info.get("pid"))
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # not one of ours, or a half-written marker: leave it
        if info.get("kind") == "building" and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_dir(path: str | os.PathLike, kind: str = "output", replace_unmarked: bool = False):
    """Build a folder under a temporary name and rename it into place. An existing `path` is replaced only if
    it is empty or carries the kit's marker, unless `replace_unmarked` (inside a run folder or the cache)."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise KitError(f"{path} exists and is not a folder; refusing to replace it")
        if not replace_unmarked and not is_marked(path) and _holds_files(path):
            raise KitError(
                f"{path} is a folder that toolcall-kit did not make (no {KIT_MARKER} marker) and it is not empty; "
                "refusing to replace it: pick another --out"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        write_json(tmp / KIT_MARKER, {"made_by": "toolcall-kit", "kind": "building", "pid": os.getpid()})
        yield tmp
        mark(tmp, kind)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_input(path: str | os.PathLike):
    """A binary reader, opened once so that pipes and FIFOs work; `-` is standard input."""
    if str(path) == STDIN:
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except IsADirectoryError:
        raise DataError(path, None, "is a folder; pass the data file inside it") from None
    except FileNotFoundError:
        raise DataError(path, None, "no such file") from None
    except OSError as e:
        raise DataError(path, None, f"cannot open: {e.strerror or e}") from None


def iter_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of a UTF-8 input; a line that is not UTF-8 is a DataError naming it."""
    f = open_input(path)
    try:
        for n, bline in enumerate(f, 1):
            try:
                yield n, bline.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, n, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e.strerror or e}") from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def read_text_input(path: str | os.PathLike) -> str:
    """The whole of a UTF-8 text input (a catalog, a config) with the same errors as `iter_text_lines`."""
    return "".join(text for _, text in iter_text_lines(path))


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line; a line that is not JSON is a DataError naming it."""
    for n, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except (ValueError, RecursionError) as e:
            raise DataError(path, n, f"invalid JSON: {getattr(e, 'msg', e)}") from None
