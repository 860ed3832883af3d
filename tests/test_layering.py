"""DESIGN.md's layering: optimizer/ is pure; query/, sources/, models/, operators/, tuning/ know
no Dagster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_roots(folder: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = roots
    return out


def test_optimizer_is_pure_python():
    forbidden = {"dagster", "pz_dagster", "openai", "llama_cpp", "vllm", "definitions"}
    bad = {f: r & forbidden for f, r in imported_roots(REPO / "optimizer").items() if r & forbidden}
    assert not bad, f"optimizer/ must not import {bad}"


def test_library_core_knows_no_dagster():
    for sub in ("query", "sources", "models", "operators", "tuning"):
        bad = {f: r for f, r in imported_roots(REPO / "pz_dagster" / sub).items() if "dagster" in r}
        assert not bad, f"pz_dagster/{sub} must not import dagster: {bad}"


def test_query_layer_imports_no_model_client():
    for f, roots in imported_roots(REPO / "pz_dagster" / "query").items():
        assert not roots & {"openai", "llama_cpp", "vllm"}, f


QUERY_ALONE = """
import sys, types
pkg = types.ModuleType("pz_dagster")  # pz_dagster/__init__ is light, but test query/ alone
pkg.__path__ = [sys.argv[1]]
sys.modules["pz_dagster"] = pkg
from pz_dagster.query import Dataset
ds = Dataset.from_duckdb("/nonexistent/t.duckdb", "t", id_column="id", batch_size=2)
ds.sem_filter("x", depends_on="body").sem_map([{"name": "n", "type": "str", "desc": "d"}])
Dataset.from_duckdb("/nonexistent/r.duckdb", "select * from r", name="r").explain()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("duckdb", "_duckdb")))
"""


def test_query_layer_imports_no_duckdb():
    """DuckDB tables are declared in query/ and read in sources/: declaring one, and the
    operators after it, neither imports duckdb nor opens a connection."""
    for f, roots in imported_roots(REPO / "pz_dagster" / "query").items():
        assert "duckdb" not in roots, f"{f} imports duckdb"
    out = subprocess.run(
        [sys.executable, "-c", QUERY_ALONE, str(REPO / "pz_dagster")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=REPO,
    )
    assert out.stdout.strip() == "[]", out.stdout
