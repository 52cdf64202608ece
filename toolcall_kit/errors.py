"""User-facing errors: the CLI prints these as one line (no traceback) and exits 2."""


class KitError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible config value."""


class DataError(KitError):
    """Input data that cannot be read; the message names the file and line."""

    def __init__(self, path, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
