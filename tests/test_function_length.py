"""No function of the library or the optimizer runs past 100 lines: a longer one is a set of
named steps waiting to be split out."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 100


def long_functions(folder: Path, root: Path = REPO, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (n lines)`` of every function or method under ``folder`` longer than
    ``limit`` lines (decorators not counted), paths relative to ``root``."""
    out = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    out.append(
                        f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)"
                    )
    return out


def test_no_function_is_longer_than_100_lines():
    offenders = long_functions(REPO / "pz_dagster") + long_functions(REPO / "optimizer")
    assert not offenders, f"functions over {MAX_LINES} lines: " + "; ".join(offenders)


def test_the_length_check_sees_methods_and_nested_functions(tmp_path: Path):
    body = "\n".join(f"            x{i} = {i}" for i in range(MAX_LINES))
    src = (
        f"class A:\n    def outer(self):\n        async def inner():\n{body}\n\n"
        "def short():\n    return 1\n"
    )
    (tmp_path / "probe.py").write_text(src)
    found = long_functions(tmp_path, tmp_path)
    assert found == ["probe.py:2 outer (102 lines)", "probe.py:3 inner (101 lines)"], found
