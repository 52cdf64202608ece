"""Set-up that must happen before any test captures output."""

# torch binds a logging.StreamHandler to the sys.stderr of the moment it is first imported. First imported
# inside a test that uses capsys, that stream is closed when the test ends, and the next torch warning (e.g. the
# _pytree notice torchao triggers) prints "--- Logging error ---" with a traceback into a later test's stderr,
# which the one-line-error tests then see. Importing it here binds the handler to pytest's session-long capture.
import torch  # noqa: F401
