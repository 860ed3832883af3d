"""Physical operators. Each family keeps its strategies in a ``STRATEGIES`` registry by name."""

from __future__ import annotations

from pz_dagster.errors import PlanError
from pz_dagster.models.base import ChatModel
from pz_dagster.operators import filter as filter_ops
from pz_dagster.operators import map as map_ops
from pz_dagster.operators import relational
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record
from pz_dagster.query import plan

SEMANTIC_STRATEGIES = {
    plan.SemanticFilter: filter_ops.STRATEGIES,
    plan.SemanticMap: map_ops.STRATEGIES,
}


def needs_model(node: plan.PlanNode) -> bool:
    return type(node) in SEMANTIC_STRATEGIES


def run_operator(
    node: plan.PlanNode,
    records: list[Record],
    model: ChatModel | None = None,
    *,
    strategy: str = "direct",
    progress: Progress | None = None,
) -> OperatorResult:
    """Run one logical node on a partition's records with the named physical strategy."""
    if needs_model(node):
        strategies = SEMANTIC_STRATEGIES[type(node)]
        if strategy not in strategies:
            raise PlanError(
                f"unknown strategy {strategy!r} for {node.kind}; known: {sorted(strategies)}"
            )
        if model is None:
            raise PlanError(f"{node.kind} {node.name!r} needs a model")
        return strategies[strategy](node, records, model, progress)  # type: ignore[operator]
    if isinstance(node, plan.Filter):
        return relational.run_filter(node, records)
    if isinstance(node, plan.Project):
        return relational.run_project(node, records)
    if isinstance(node, plan.Limit):
        return relational.run_limit(node, records)
    raise PlanError(f"no physical operator for {type(node).__name__}")


__all__ = ["OperatorResult", "OperatorStats", "needs_model", "run_operator"]
