"""Which plan nodes each physical strategy runs on, and how: one runner per (strategy, node).

A strategy's name, the operator kinds it runs on and its cost profile are declared once, in
``optimizer.candidates.STRATEGIES``: the optimizer is pure Python and enumerates and prices
candidates by name. Here every strategy gets a runner for each of its kinds, and importing this
module checks that the two agree (``registry_problems``), so a strategy the optimizer can choose
always runs, and one that runs is always priced.

>>> f = plan.SemanticFilter(name="f", input=plan.DirectorySource(name="d", path="x"),
...                         predicate="mentions Raptor")
>>> strategies_for(f)[:3], is_multi_model("cascade"), strategies_for(f.input)
(('direct', 'few_shot', 'batched'), True, ())
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from optimizer.candidates import STRATEGIES, StrategyProfile
from optimizer.thresholds import SignedThreshold
from pz_dagster.errors import PlanError
from pz_dagster.models.base import ChatModel
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators import aggregate as aggregate_ops
from pz_dagster.operators import classify as classify_ops
from pz_dagster.operators import filter as filter_ops
from pz_dagster.operators import flat_map as flat_map_ops
from pz_dagster.operators import guaranteed, proxy, relational
from pz_dagster.operators import join as join_ops
from pz_dagster.operators import map as map_ops
from pz_dagster.operators import topk as topk_ops
from pz_dagster.operators.base import OperatorResult, Progress, Record
from pz_dagster.operators.code_synthesis.filter import code_synthesis_filter
from pz_dagster.operators.code_synthesis.map import code_synthesis_map
from pz_dagster.query import plan

N = TypeVar("N", bound=plan.PlanNode)


@dataclass(frozen=True)
class Inputs:
    """Everything one operator run may be given; each runner takes what its strategy needs and
    says what is missing."""

    strategy: str
    records: list[Record]
    model: ChatModel | None = None
    models: Sequence[ChatModel] = ()
    right: list[Record] | None = None
    embedder: EmbeddingModel | None = None
    threshold: SignedThreshold | None = None
    progress: Progress | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def chat_model(self, node: plan.PlanNode) -> ChatModel:
        if self.model is None:
            raise PlanError(f"{node.kind} {node.name!r} needs a model")
        return self.model

    def chat_models(self, node: plan.PlanNode) -> Sequence[ChatModel]:
        if not self.models:
            raise PlanError(f"{self.strategy} of {node.name!r} needs its models")
        return self.models

    def learned_threshold(self, node: plan.PlanNode) -> SignedThreshold:
        if self.threshold is None:
            raise PlanError(f"{self.strategy} of {node.name!r} needs a learned threshold")
        return self.threshold

    def right_records(self, node: plan.PlanNode) -> list[Record]:
        if self.right is None:
            raise PlanError(f"{node.kind} {node.name!r} needs the right side's records")
        return self.right


@dataclass(frozen=True)
class Runner(Generic[N]):
    """How one strategy runs on one plan node class."""

    node: type[N]
    run: Callable[[N, Inputs], OperatorResult]

    def __call__(self, node: plan.PlanNode, inputs: Inputs) -> OperatorResult:
        if not isinstance(node, self.node):
            raise PlanError(f"a runner of {self.node.__name__} was given {type(node).__name__}")
        return self.run(node, inputs)


# The shapes of the strategies' functions, as runners.
def one_model(fn: Callable[..., OperatorResult]) -> Callable[[Any, Inputs], OperatorResult]:
    """``fn(node, records, model, progress, **params)``."""

    def run(node: Any, given: Inputs) -> OperatorResult:
        return fn(node, given.records, given.chat_model(node), given.progress, **given.params)

    return run


def many_models(fn: Callable[..., OperatorResult]) -> Callable[[Any, Inputs], OperatorResult]:
    """``fn(node, records, models, progress, **params)``: a cascade's or an ensemble's models."""

    def run(node: Any, given: Inputs) -> OperatorResult:
        return fn(node, given.records, given.chat_models(node), given.progress, **given.params)

    return run


def proxy_runner(node: plan.SemanticFilter, given: Inputs) -> OperatorResult:
    """A proxy filter: no chat model, the threshold learned for it."""
    threshold = given.learned_threshold(node)
    return proxy.proxy_filter(
        node, given.records, given.strategy, threshold, given.embedder, given.progress
    )


def certified_runner(node: plan.SemanticFilter, given: Inputs) -> OperatorResult:
    """A certified cascade: its cheap scorer and its oracle (one model: the oracle, scored by a
    proxy), the embedder where the proxy is the embedding one."""
    models = list(given.models) or [given.chat_model(node)]
    return guaranteed.certified_filter(
        node, given.records, models, given.progress, embedder=given.embedder, **given.params
    )


def chunk_select_runner(node: plan.SemanticMap, given: Inputs) -> OperatorResult:
    """Chunk selection: ranks a long document's chunks by the operator's embedder when it has
    one, by BM25 otherwise."""
    return map_ops.chunk_select_map(
        node,
        given.records,
        given.chat_model(node),
        given.progress,
        embedder=given.embedder,
        **given.params,
    )


def join_runner(node: plan.SemanticJoin, given: Inputs) -> OperatorResult:
    right = given.right_records(node)
    return join_ops.nested_loop_join(
        node, given.records, right, given.chat_model(node), given.progress
    )


def topk_runner(node: plan.SemanticTopK, given: Inputs) -> OperatorResult:
    model = given.chat_model(node)
    return topk_ops.embedding_rerank_topk(
        node, given.records, model, given.embedder, given.progress
    )


RUNNERS: dict[str, tuple[Runner[Any], ...]] = {
    "direct": (
        Runner(plan.SemanticFilter, one_model(filter_ops.direct_filter)),
        Runner(plan.SemanticMap, one_model(map_ops.direct_map)),
        Runner(plan.SemanticClassify, one_model(classify_ops.direct_classify)),
        Runner(plan.SemanticFlatMap, one_model(flat_map_ops.direct_flat_map)),
        Runner(plan.SemanticAggregate, one_model(aggregate_ops.semantic_aggregate)),
        Runner(plan.SemanticJoin, join_runner),
        Runner(plan.SemanticTopK, topk_runner),
    ),
    "few_shot": (Runner(plan.SemanticFilter, one_model(filter_ops.few_shot_filter)),),
    "batched": (Runner(plan.SemanticFilter, one_model(filter_ops.batched_filter)),),
    "chain_of_thought": (
        Runner(plan.SemanticFilter, one_model(filter_ops.chain_of_thought_filter)),
    ),
    "critique": (Runner(plan.SemanticFilter, one_model(filter_ops.critique_filter)),),
    "ensemble": (Runner(plan.SemanticFilter, many_models(filter_ops.ensemble_filter)),),
    "cascade": (Runner(plan.SemanticFilter, many_models(filter_ops.cascade_filter)),),
    "certified_cascade": (Runner(plan.SemanticFilter, certified_runner),),
    "code_synthesis": (
        Runner(plan.SemanticFilter, one_model(code_synthesis_filter)),
        Runner(plan.SemanticMap, one_model(code_synthesis_map)),
    ),
    "chunk_select": (Runner(plan.SemanticMap, chunk_select_runner),),
    "embedding_proxy": (Runner(plan.SemanticFilter, proxy_runner),),
    "lexical_proxy": (Runner(plan.SemanticFilter, proxy_runner),),
}
# Operators with one way to run, in Python: no strategy, nothing for the optimizer to choose.
RELATIONAL: dict[type[plan.PlanNode], Callable[[Any, list[Record]], OperatorResult]] = {
    plan.Filter: relational.run_filter,
    plan.Map: relational.run_map,
    plan.Project: relational.run_project,
    plan.Limit: relational.run_limit,
    plan.Sort: relational.run_sort,
    plan.Distinct: relational.run_distinct,
    plan.Aggregate: aggregate_ops.run_aggregate,
}


def registry_problems(
    runners: Mapping[str, Sequence[Runner[Any]]], profiles: Mapping[str, StrategyProfile]
) -> list[str]:
    """Where ``runners`` and the optimizer's ``profiles`` disagree: a strategy without runners
    or without a profile, a kind of its profile it has no runner for, a node class it runs on
    that its profile does not name, a node class with two runners of one strategy."""
    problems = [f"{n}: no runner" for n in profiles if n not in runners]
    problems += [f"{n}: no cost profile in the optimizer" for n in runners if n not in profiles]
    for name in runners.keys() & profiles.keys():
        kinds = [r.node.kind for r in runners[name]]
        if doubled := sorted({k for k in kinds if kinds.count(k) > 1}):
            problems.append(f"{name}: more than one runner for {doubled}")
        if missing := sorted(profiles[name].kinds - set(kinds)):
            problems.append(f"{name}: no runner for {missing}")
        if extra := sorted(set(kinds) - profiles[name].kinds):
            problems.append(f"{name}: runs on {extra}, which its cost profile does not name")
    return problems


if _problems := registry_problems(RUNNERS, STRATEGIES):
    raise ImportError(f"the strategy registry disagrees with the optimizer's: {_problems}")
_BY_NODE: dict[tuple[type[plan.PlanNode], str], Runner[Any]] = {
    (r.node, name): r for name, rs in RUNNERS.items() for r in rs
}


def strategy_names() -> tuple[str, ...]:
    """Every strategy, in the order the optimizer declares them (``direct`` first)."""
    return tuple(STRATEGIES)


def strategies_for(node: plan.PlanNode) -> tuple[str, ...]:
    """The strategies that run on ``node``, in declaration order; none for a relational one."""
    return tuple(name for name in STRATEGIES if (type(node), name) in _BY_NODE)


def is_multi_model(name: str) -> bool:
    """Whether strategy ``name`` combines several models (a cascade, an ensemble)."""
    return STRATEGIES[name].models > 1


def runner_for(node: plan.PlanNode, strategy: str) -> Runner[Any]:
    """The runner of ``strategy`` on ``node``; a PlanError names those that run on it."""
    runner = _BY_NODE.get((type(node), strategy))
    if runner is None:
        known = strategies_for(node)
        if not known:
            raise PlanError(f"no physical operator for {type(node).__name__}")
        raise PlanError(f"unknown strategy {strategy!r} for {node.kind}; known: {list(known)}")
    return runner
