"""Logical rewrites that are always safe. Each pass takes a plan and returns an equivalent one;
``optimize`` applies them until nothing changes. Node names (so Dagster asset keys) are kept;
only the order of operators, hence the asset dependencies, changes.

- ``push_down_filters``: a Python filter runs before the semantic operators above it when it
  does not read what they add, so the model never sees records the filter drops. One visible
  difference: if the Python predicate raises on a record, that record is kept with ``error``
  set (as always), also when the semantic filter would have dropped it had it run first. An
  error is reported, never a record silently lost.
- ``push_down_limits``: a limit runs before one-to-one operators (semantic map, classify,
  Python map, project), so the model is called only for records that survive the limit.
- ``push_down_projections``: columns a projection drops are dropped before the semantic
  operator below it when that operator does not read them (an early projection is added).

The order of adjacent semantic filters is not a rewrite: it depends on each filter's observed
cost and selectivity, so it is chosen per batch when they run (``tuning.ordering``, in the
filter chain's multi-asset), and the plan keeps their declared order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from pz_dagster.query.join import SemanticJoin
from pz_dagster.query.nodes import PlanNode, UnaryNode
from pz_dagster.query.relational import Filter, Limit, Map, Project
from pz_dagster.query.schema import ERROR, RECORD_ID
from pz_dagster.query.semantic import SemanticClassify, SemanticFilter, SemanticMap, SemanticNode


def _rebuild(node: PlanNode, rewrite: Callable[[PlanNode], PlanNode]) -> PlanNode:
    """Apply ``rewrite`` below ``node`` first, then at it."""
    if not isinstance(node, UnaryNode):
        return rewrite(node)
    below = _rebuild(node.parent, rewrite)
    here = node if below is node.parent else node.with_input(below)
    return rewrite(here)


def _can_pass(filter_node: Filter, op: PlanNode) -> bool:
    if isinstance(op, SemanticFilter):
        return True  # adds nothing, changes no record: the filter sees the same dicts
    if isinstance(op, (SemanticMap, SemanticClassify)):
        reads = filter_node.reads
        return reads is not None and not set(reads) & set(op.adds)
    return False


def push_down_filters(node: PlanNode) -> PlanNode:
    def swap(n: PlanNode) -> PlanNode:
        if isinstance(n, Filter) and _can_pass(n, n.parent):
            op = n.parent
            assert isinstance(op, UnaryNode)
            return op.with_input(push_down_filters(n.with_input(op.parent)))
        return n

    return _rebuild(node, swap)


_ONE_TO_ONE = (SemanticMap, SemanticClassify, Map, Project)


def push_down_limits(node: PlanNode) -> PlanNode:
    def swap(n: PlanNode) -> PlanNode:
        if isinstance(n, Limit) and isinstance(n.parent, _ONE_TO_ONE):
            op = n.parent
            return op.with_input(push_down_limits(n.with_input(op.parent)))
        return n

    return _rebuild(node, swap)


def push_down_projections(node: PlanNode) -> PlanNode:
    def narrow(n: PlanNode) -> PlanNode:
        op = n.parent
        if not (
            isinstance(n, Project) and isinstance(op, SemanticNode) and isinstance(op, UnaryNode)
        ):
            return n
        if isinstance(op.parent, Project):
            return n  # already narrowed
        needed = (set(n.keep) - set(op.adds)) | set(op.reads)
        below = op.parent.columns
        keep = tuple(c for c in below if c in needed and c not in (RECORD_ID, ERROR))
        if len(keep) + 2 >= len(below) or not keep:
            return n  # would drop nothing (or everything): no gain
        name = f"{n.name}_early"
        if any(x.name == name for x in n.lineage()):
            return n
        early = Project(name=name, input=op.parent, keep=keep, declared_at=n.declared_at)
        return n.with_input(op.with_input(early))

    return _rebuild(node, narrow)


def optimize_join_inputs(node: PlanNode) -> PlanNode:
    """The right side of every join, optimized too (the passes above only walk parents)."""

    def right(n: PlanNode) -> PlanNode:
        if isinstance(n, SemanticJoin) and n.right is not None:
            better = optimize(n.right)
            return n if better == n.right else replace(n, right=better)
        return n

    return _rebuild(node, right)


def optimize(node: PlanNode) -> PlanNode:
    """Apply every pass until the plan stops changing."""
    node = optimize_join_inputs(node)
    for _ in range(100):
        new = push_down_limits(push_down_filters(node))
        new = push_down_projections(new)
        if new == node:
            return new
        node = new
    return node
