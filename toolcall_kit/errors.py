"""User-facing errors: the CLI prints these as one line (no traceback) and exits 2."""

from contextlib import contextmanager


class KitError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible config value."""


class DataError(KitError):
    """Input data that cannot be read; the message names the file and line."""

    def __init__(self, path, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@contextmanager
def loading(what: str, where):
    """Loading a model, tokenizer or adapter from a user's folder: a missing, truncated or foreign file is one
    line naming the folder (transformers, PEFT and safetensors raise many types for those), not a traceback."""
    try:
        yield
    except KitError:
        raise
    except Exception as e:  # noqa: BLE001 - see the docstring
        text = str(e).strip()
        msg = text.splitlines()[0][:300] if text else ""
        raise KitError(f"{what} {where}: cannot be loaded ({type(e).__name__}{': ' + msg if msg else ''})") from None
