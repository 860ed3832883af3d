"""Physical operators. Each family keeps its strategies in a ``STRATEGIES`` registry by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optimizer.thresholds import SignedThreshold
from pz_dagster.errors import PlanError
from pz_dagster.models.base import ChatModel
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators import aggregate as aggregate_ops
from pz_dagster.operators import classify as classify_ops
from pz_dagster.operators import filter as filter_ops
from pz_dagster.operators import flat_map as flat_map_ops
from pz_dagster.operators import join as join_ops
from pz_dagster.operators import map as map_ops
from pz_dagster.operators import proxy, relational
from pz_dagster.operators import topk as topk_ops
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record
from pz_dagster.operators.code_synthesis import filter as code_filter
from pz_dagster.operators.code_synthesis import map as code_synthesis
from pz_dagster.query import plan

SEMANTIC_STRATEGIES = {
    plan.SemanticFilter: {
        **filter_ops.STRATEGIES,
        code_synthesis.STRATEGY: code_filter.code_synthesis_filter,
    },
    plan.SemanticMap: {
        **map_ops.STRATEGIES,
        code_synthesis.STRATEGY: code_synthesis.code_synthesis_map,
    },
    plan.SemanticClassify: classify_ops.STRATEGIES,
    plan.SemanticFlatMap: flat_map_ops.STRATEGIES,
    plan.SemanticAggregate: aggregate_ops.STRATEGIES,
    plan.SemanticJoin: join_ops.STRATEGIES,
    plan.SemanticTopK: topk_ops.STRATEGIES,
}
RELATIONAL = {
    plan.Filter: relational.run_filter,
    plan.Map: relational.run_map,
    plan.Project: relational.run_project,
    plan.Limit: relational.run_limit,
    plan.Sort: relational.run_sort,
    plan.Distinct: relational.run_distinct,
    plan.Aggregate: aggregate_ops.run_aggregate,
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
    right: list[Record] | None = None,
    embedder: EmbeddingModel | None = None,
    threshold: SignedThreshold | None = None,
    models: Sequence[ChatModel] | None = None,
    params: dict[str, Any] | None = None,
) -> OperatorResult:
    """Run one logical node on a partition's records with the named physical strategy.

    A proxy strategy of a semantic filter (``lexical_proxy``, ``embedding_proxy``) needs no
    model but the learned ``threshold``."""
    if isinstance(node, plan.SemanticFilter) and strategy in proxy.PROXIES:
        if threshold is None:
            raise PlanError(f"{strategy} of {node.name!r} needs a learned threshold")
        return proxy.proxy_filter(node, records, strategy, threshold, embedder)
    if isinstance(node, plan.SemanticFilter) and strategy in filter_ops.MULTI_MODEL_STRATEGIES:
        if not models:
            raise PlanError(f"{strategy} of {node.name!r} needs its models")
        run = filter_ops.MULTI_MODEL_STRATEGIES[strategy]
        return run(node, records, models, progress, **(params or {}))  # type: ignore[operator]
    if needs_model(node):
        strategies = SEMANTIC_STRATEGIES[type(node)]
        if strategy not in strategies:
            raise PlanError(
                f"unknown strategy {strategy!r} for {node.kind}; known: {sorted(strategies)}"
            )
        if model is None:
            raise PlanError(f"{node.kind} {node.name!r} needs a model")
        if isinstance(node, plan.SemanticTopK):
            return strategies[strategy](node, records, model, embedder, progress)  # type: ignore[operator]
        if isinstance(node, plan.SemanticJoin):
            if right is None:
                raise PlanError(f"sem_join {node.name!r} needs the right side's records")
            return strategies[strategy](node, records, right, model, progress)  # type: ignore[operator]
        return strategies[strategy](node, records, model, progress, **(params or {}))  # type: ignore[operator]
    if type(node) in RELATIONAL:
        return RELATIONAL[type(node)](node, records)  # type: ignore[operator]
    raise PlanError(f"no physical operator for {type(node).__name__}")


__all__ = ["SEMANTIC_STRATEGIES", "OperatorResult", "OperatorStats", "needs_model", "run_operator"]
