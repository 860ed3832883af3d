"""The logical plan: every node type, printing and column types in one namespace.

Nodes live in ``nodes`` (base and sources), ``semantic``, ``relational``, ``aggregate``
(global: over every partition) and ``join`` (tables and the semantic join).
"""

from __future__ import annotations

from typing import Any

from pz_dagster.query.aggregate import (
    Aggregate,
    AggSpec,
    GlobalNode,
    SemanticAggregate,
    SemanticTopK,
)
from pz_dagster.query.join import SemanticJoin, TableBatchSource, TableSource
from pz_dagster.query.nodes import (
    SOURCE_COLUMNS,
    BatchedSource,
    DirectorySource,
    PlanNode,
    UnaryNode,
    callable_fingerprint,
)
from pz_dagster.query.relational import Distinct, Filter, Limit, Map, Project, Sort
from pz_dagster.query.semantic import (
    PARENT_ID,
    SemanticClassify,
    SemanticFilter,
    SemanticFlatMap,
    SemanticMap,
    SemanticNode,
)

__all__ = [
    "PARENT_ID",
    "AggSpec",
    "Aggregate",
    "GlobalNode",
    "SemanticAggregate",
    "SOURCE_COLUMNS",
    "BatchedSource",
    "TableBatchSource",
    "DirectorySource",
    "Distinct",
    "Filter",
    "Limit",
    "Map",
    "PlanNode",
    "Project",
    "SemanticClassify",
    "SemanticFilter",
    "SemanticFlatMap",
    "SemanticJoin",
    "SemanticTopK",
    "TableSource",
    "SemanticMap",
    "SemanticNode",
    "Sort",
    "UnaryNode",
    "callable_fingerprint",
    "column_types",
    "explain",
]


def explain(node: PlanNode) -> str:
    """A printable view of the plan, source first, one operator per line."""
    lines = []
    for depth, n in enumerate(node.lineage()):
        prefix = "  " * depth + ("└─ " if depth else "")
        lines.append(f"{prefix}{n.name}: {n.describe()}")
        cols = ", ".join(n.columns) if n.described else "(read from the table when compiled)"
        lines.append(f"{'  ' * depth}{'   ' if depth else ''}   columns: {cols}")
    return "\n".join(lines)


def column_types(node: PlanNode) -> list[tuple[str, Any]]:
    """(column, Python type) of the node's output."""
    return list(node.schema)
