"""`make bench` runs benchmarks/bench_*.py outside the test suite; a name they import from the kit that was moved
or renamed would only show there, 20 minutes in. Every `from toolcall_kit... import name` in them must resolve."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parent.parent / "benchmarks").glob("bench_*.py"))


def kit_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every `from toolcall_kit[.x] import name` anywhere in the file, functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "toolcall_kit":
            found += [(node.module, alias.name) for alias in node.names]
    return found


def resolves(module: str, name: str) -> bool:
    """`name` is an attribute of `module`, or a submodule of it (`from toolcall_kit import evaluate`)."""
    mod = importlib.import_module(module)
    if hasattr(mod, name):
        return True
    return hasattr(mod, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(path):
    missing = [f"{mod}.{name}" for mod, name in kit_imports(path) if not resolves(mod, name)]
    assert not missing, f"{path.name} imports names the kit no longer has: {missing}"


def test_the_check_sees_nested_imports(tmp_path):
    bench = tmp_path / "bench_x.py"
    bench.write_text("def f():\n    from toolcall_kit.tokens import read_records\n")
    assert kit_imports(bench) == [("toolcall_kit.tokens", "read_records")]
    assert not resolves("toolcall_kit.tokens", "read_records")
    assert resolves("toolcall_kit", "evaluate") and resolves("toolcall_kit.records", "read_records")
