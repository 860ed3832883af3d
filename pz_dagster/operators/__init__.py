"""Physical operators: one module per family; ``registry`` says which strategy runs on which
plan node, and ``run_operator`` runs one through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optimizer.thresholds import SignedThreshold
from pz_dagster.models.base import ChatModel
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record
from pz_dagster.operators.registry import RELATIONAL, Inputs, runner_for, strategies_for
from pz_dagster.query import plan


def needs_model(node: plan.PlanNode) -> bool:
    """Whether ``node`` is semantic: run by a strategy, on a model (or a proxy of one)."""
    return bool(strategies_for(node))


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
    """Run one logical node on a partition's records with the named physical strategy
    (ignored by a relational node, which has one way to run).

    A proxy strategy of a semantic filter (``lexical_proxy``, ``embedding_proxy``) needs no
    model but the learned ``threshold``; a cascade or an ensemble needs its ``models``."""
    if (relational := RELATIONAL.get(type(node))) is not None:
        return relational(node, records)
    inputs = Inputs(
        strategy=strategy,
        records=records,
        model=model,
        models=models or (),
        right=right,
        embedder=embedder,
        threshold=threshold,
        progress=progress,
        params=params or {},
    )
    return runner_for(node, strategy)(node, inputs)


__all__ = ["OperatorResult", "OperatorStats", "needs_model", "run_operator"]
