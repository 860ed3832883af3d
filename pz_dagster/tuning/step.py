"""One operator on one batch, framework-free: plan (from the history), run, assess, and the
metadata and history record its materialization holds.

>>> from pz_dagster import Dataset
>>> short = Dataset.from_directory("docs").filter(lambda r: len(r["contents"]) < 4).node
>>> rows = [{"record_id": i, "contents": t, "error": None} for i, t in (("a", "hi"), ("b", "hello"))]
>>> step = run_operator_step(short, rows, StepServices(client_for=lambda model: None))
>>> [r["record_id"] for r in step.records], step.metadata["records/selectivity"], step.record.run.records
(['a'], 0.5, 2)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from optimizer import Candidate, Decision, ModelProfile, PhysicalConfig
from optimizer.quality import ValidationSet
from optimizer.thresholds import SignedThreshold
from pz_dagster import metadata_keys as K
from pz_dagster.errors import PzError
from pz_dagster.models.base import ChatModel
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators import needs_model, run_operator
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record
from pz_dagster.operators.proxy import PROXIES
from pz_dagster.query import plan
from pz_dagster.query.schema import RECORD_ID
from pz_dagster.tuning.assessment import Assessment, assess
from pz_dagster.tuning.history import HistoryRecord, NodeHistory, RunRecord
from pz_dagster.tuning.planning import (
    AUTO,
    OPTIMIZED,
    ProxyScorer,
    config_params,
    learned_threshold,
    pinned_candidate,
    plan_operator,
    strategy_params,
    threshold_params,
    with_batch_labels,
)
from pz_dagster.tuning.report import (
    Markdown,
    decision_report,
    in_reading_order,
    preview,
    run_metadata,
)
from pz_dagster.tuning.settings import TuningSettings

logger = logging.getLogger(__name__)


class StepLog(Protocol):
    """Where a step's log lines go: a ``logging.Logger`` or Dagster's ``context.log``."""

    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


@dataclass(frozen=True)
class StepServices:
    """What a step calls out to: chat clients by model name (None: the default model), an
    embedding client, the models' priors, what their dollars are, the log, progress."""

    client_for: Callable[[str | None], ChatModel]
    embedder_for: Callable[[], EmbeddingModel] | None = None
    profiles: Sequence[ModelProfile] = ()
    dollars_basis: Callable[[Sequence[str | None]], str] | None = None
    log: StepLog = logger
    progress: Progress | None = None


class EndpointUnanswered(PzError):
    """Too many of a step's records got no answer from the model endpoint: the batch says
    nothing of its documents and must not be stored as a success. ``metadata``: plain values
    of what failed."""

    def __init__(self, description: str, metadata: dict[str, Any]):
        super().__init__(description)
        self.metadata = metadata


@dataclass(frozen=True)
class OperatorPlan:
    """What planning chose for one operator, and what its run and assessment need."""

    decision: Decision
    candidate: Candidate
    recorded: NodeHistory  # the history as read: what the assessment extends
    cold: bool  # no observation of the operator yet
    threshold: SignedThreshold | None
    params: dict[str, Any]
    scorer: ProxyScorer | None

    @property
    def config(self) -> PhysicalConfig:
        """The physical config as the history records it."""
        learned = threshold_params(self.threshold) if self.threshold else {}
        return self.candidate.config(**config_params(self.params), **learned)


@dataclass(frozen=True)
class StepResult:
    """What one step produced: the result, the history record and the metadata (plain values)
    its materialization holds, and the optimizer's decision where it planned."""

    result: OperatorResult
    record: HistoryRecord
    metadata: dict[str, Any]
    decision: Decision | None = None

    @property
    def records(self) -> list[Record]:
        return self.result.records


def check_answered(name: str, stats: OperatorStats, max_failed_fraction: float) -> None:
    """Raise ``EndpointUnanswered`` when at least ``max_failed_fraction`` of the evaluated
    records failed for a transport reason. Such a batch says nothing of its documents: stored,
    it would read as a success (with every record flagged), the run would exit 0, and the next
    run would skip it as done."""
    unanswered, evaluated = stats.transport_failures, stats.evaluated
    if not unanswered or not evaluated or unanswered / evaluated < max_failed_fraction:
        return
    how_many = f"all {evaluated}" if unanswered == evaluated else f"{unanswered} of {evaluated}"
    example = stats.transport_example or (stats.failure_examples or ["-"])[0]
    raise EndpointUnanswered(
        f"{name}: {how_many} evaluated record(s) failed without an answer from the model "
        f"endpoint (max_failed_fraction={max_failed_fraction:g}), e.g. {example}. Nothing "
        "was stored for this partition. Check that the endpoint (the model resource's "
        "base_url) is up and reachable from here and answers within its timeout_s, then "
        "run the partition again.",
        {
            "evaluated": evaluated,
            "transport_failures": unanswered,
            "failures": stats.failures,
            "max_failed_fraction": max_failed_fraction,
            "examples": Markdown("\n".join(f"- {e}" for e in stats.failure_examples) or "-"),
        },
    )


def plan_step(
    node: plan.UnaryNode,
    records: Sequence[Record],
    services: StepServices,
    settings: TuningSettings,
    history: Mapping[str, NodeHistory],
    chain: Sequence[plan.PlanNode],
    *,
    strategy: str = AUTO,
    model: str = "",
    runs_ahead: int = 1,
) -> OperatorPlan:
    """The optimizer's choice for ``node`` over ``chain`` (``strategy``/``model`` pin it),
    with what the chosen strategy learned from the history."""
    pinned = pinned_candidate(node, strategy, model, services.profiles)
    recorded = history.get(node.name) or NodeHistory()
    is_filter = isinstance(node, plan.SemanticFilter)
    scorer = ProxyScorer(node, services.embedder_for) if is_filter else None  # type: ignore[arg-type]
    own = with_batch_labels(recorded, node, records, settings, scorer, services.log.warning)
    decision = plan_operator(
        node,
        chain,
        {**history, node.name: own},
        services.profiles,
        settings,
        records,
        pinned,
        runs_ahead,
    )
    chosen = decision.candidate(node.name)
    services.log.info(
        f"{node.name}: {chosen.key} ({decision.result.reason})"
        + (" [pinned by run config]" if pinned else "")
    )
    threshold = learned_threshold(own, chosen.strategy) if chosen.strategy in PROXIES else None
    return OperatorPlan(
        decision,
        chosen,
        recorded,
        cold=not recorded.observations,
        threshold=threshold,
        params=strategy_params(chosen, own),
        scorer=scorer,
    )


def run_planned(
    node: plan.UnaryNode, records: list[Record], services: StepServices, planned: OperatorPlan
) -> OperatorResult:
    """Run the planned candidate on the batch."""
    chosen = planned.candidate
    embeds = "embedding_proxy" in (chosen.strategy, planned.params.get("scorer"))
    embeds = embeds and services.embedder_for is not None
    return run_operator(
        node,
        records,
        services.client_for(chosen.model) if chosen.strategy not in PROXIES else None,
        strategy=chosen.strategy,
        progress=services.progress,
        embedder=services.embedder_for() if embeds else None,  # type: ignore[misc]
        threshold=planned.threshold,
        models=[services.client_for(m) for m in chosen.models] if len(chosen.models) > 1 else None,
        params=planned.params,
    )


def run_as_given(
    node: plan.UnaryNode,
    records: list[Record],
    services: StepServices,
    strategy: str = AUTO,
    model: str = "",
    right: list[Record] | None = None,
) -> OperatorResult:
    """Run an operator the optimizer does not plan, with ``strategy`` (auto: direct)."""
    embeds = isinstance(node, plan.SemanticTopK) and services.embedder_for is not None
    return run_operator(
        node,
        records,
        services.client_for(model or None) if needs_model(node) else None,
        strategy="direct" if strategy == AUTO else strategy,
        progress=services.progress,
        right=right,
        embedder=services.embedder_for() if embeds else None,  # type: ignore[misc]
    )


def history_record(
    node: plan.PlanNode,
    result: OperatorResult,
    config: PhysicalConfig | None = None,
    assessment: Assessment | None = None,
) -> HistoryRecord:
    """What the run tells the next batch. ``config``: the physical config as the optimizer
    names it (default: read off the result)."""
    s = result.stats
    config = config or PhysicalConfig(node.kind, result.model, result.strategy)
    # A global operator (agg, top-k) has no per-record selectivity to learn from.
    per_record = isinstance(node, plan.UnaryNode) and not isinstance(node, plan.GlobalNode)
    kept = s.records_out - s.passed_through_errors - s.failures
    quality = assessment.quality if assessment else None
    run = RunRecord.measured(
        config,
        s.usage,
        s.evaluated,
        kept if per_record and s.evaluated else None,
        result.extras,
        quality,
        assessment.source if assessment and quality else "",
    )
    functions = result.extras.get("functions")
    guarantee = result.extras.get("guarantee")
    if assessment is None:
        return HistoryRecord(
            run=run, input_tokens=s.usage.input_tokens, functions=functions, guarantee=guarantee
        )
    return HistoryRecord(
        run=run,
        input_tokens=s.usage.input_tokens,
        sample_runs=assessment.sample_runs,
        proxy_pairs=assessment.proxy_pairs,
        proxy_pairs_source=assessment.proxy_pairs_source or "labels",
        cascade_pairs=assessment.cascade_pairs,
        examples=assessment.examples,
        functions=functions,
        guarantee=guarantee,
        label_free=assessment.label_free,
    )


def step_metadata(
    node: plan.UnaryNode,
    records: Sequence[Record],
    result: OperatorResult,
    record: HistoryRecord,
    services: StepServices,
    wall_seconds: float,
    planned: OperatorPlan | None = None,
    assessment: Assessment | None = None,
) -> dict[str, Any]:
    """The materialization's metadata, as plain values (``records``: the step's input, which a
    filter's preview shows what it dropped of)."""
    md = run_metadata(result, record, wall_seconds, preview(node, result, records))
    if planned is not None and assessment is not None:
        dollars = assessment.sample_usage_dollars
        md |= decision_report(planned.decision, node.name, dollars, planned.cold)
    if "escalated" in result.extras:
        md[K.ESCALATED] = result.extras["escalated"]
    if assessment is not None and assessment.label_free:
        md[K.LABEL_FREE] = assessment.label_free
    if guarantee := result.extras.get("guarantee"):
        md[K.GUARANTEE] = guarantee
        md[K.GUARANTEE_CERTIFIED] = int(bool(guarantee["certified"]))
        md[K.ORACLE_LABELS] = guarantee["labels"]
        md[K.ESCALATED] = guarantee["escalated"]
    if needs_model(node) and services.dollars_basis is not None:
        # a local model's dollars are its compute at a price per hour, not a bill
        md[K.DOLLARS_BASIS] = services.dollars_basis(
            record.run.config.params.get("models") or [result.model]  # type: ignore[arg-type]
        )
    return in_reading_order(md)


def _warn_about(node: plan.PlanNode, stats: OperatorStats, log: StepLog) -> None:
    if stats.failures:
        log.warning(
            f"{node.name}: {stats.failures} record(s) failed and are kept with the error "
            f"column set, e.g. {stats.failure_examples[0]}"
        )
    if stats.truncated:
        log.warning(
            f"{node.name}: {stats.truncated} record(s) were cut to fit the model's "
            f"context: {', '.join(stats.truncated_ids[:10])}"
        )


def run_operator_step(
    node: plan.UnaryNode,
    records: list[Record],
    services: StepServices,
    *,
    settings: TuningSettings | None = None,
    history: Mapping[str, NodeHistory] | None = None,
    chain: Sequence[plan.PlanNode] | None = None,
    strategy: str = AUTO,
    model: str = "",
    runs_ahead: int = 1,
    max_failed_fraction: float = 1.0,
    right: list[Record] | None = None,
) -> StepResult:
    """Plan, run and assess ``node`` on the batch's ``records``. With ``settings``, an operator
    the optimizer plans (``OPTIMIZED``) is chosen over ``chain`` (default: the node alone) from
    ``history`` (by node name), ``strategy``/``model`` pinning it; any other runs ``strategy``
    on ``model`` as given (``right``: a join's other side). Raises ``EndpointUnanswered`` when
    at least ``max_failed_fraction`` of the evaluated records got no answer."""
    start = time.perf_counter()
    if settings is not None and isinstance(node, OPTIMIZED):
        planned = plan_step(
            node,
            records,
            services,
            settings,
            history or {},
            chain or (node,),
            strategy=strategy,
            model=model,
            runs_ahead=runs_ahead,
        )
        return run_planned_step(
            node,
            records,
            services,
            planned,
            settings,
            max_failed_fraction=max_failed_fraction,
            planning_seconds=time.perf_counter() - start,
        )
    result = run_as_given(node, records, services, strategy, model, right)
    check_answered(node.name, result.stats, max_failed_fraction)
    record = history_record(node, result)
    md = step_metadata(node, records, result, record, services, time.perf_counter() - start)
    _warn_about(node, result.stats, services.log)
    return StepResult(result, record, md)


def run_planned_step(
    node: plan.UnaryNode,
    records: list[Record],
    services: StepServices,
    planned: OperatorPlan,
    settings: TuningSettings,
    *,
    max_failed_fraction: float = 1.0,
    planning_seconds: float = 0.0,
) -> StepResult:
    """Run ``planned`` (from ``plan_step``) on ``records`` and assess it: the second half of
    ``run_operator_step``, for a caller that plans several operators before running any (the
    filters of a chain, planned on the chain's input, run on what the filters before kept).
    ``planning_seconds`` is counted into the step's seconds."""
    start = time.perf_counter()
    result = run_planned_checked(node, records, services, planned, max_failed_fraction)
    seconds = time.perf_counter() - start + planning_seconds
    return assess_planned_step(node, records, result, services, planned, settings, seconds)


def run_planned_checked(
    node: plan.UnaryNode,
    records: list[Record],
    services: StepServices,
    planned: OperatorPlan,
    max_failed_fraction: float = 1.0,
) -> OperatorResult:
    """Run ``planned`` on ``records``; raise when too few records were answered."""
    result = run_planned(node, records, services, planned)
    check_answered(node.name, result.stats, max_failed_fraction)
    return result


def assess_planned_step(
    node: plan.UnaryNode,
    records: list[Record],
    result: OperatorResult,
    services: StepServices,
    planned: OperatorPlan,
    settings: TuningSettings,
    seconds: float,
    labels: ValidationSet | None = None,
) -> StepResult:
    """Assess the run ``result`` of ``planned`` on ``records`` (judged by ``labels``, default the
    settings'), and its history record and metadata; ``seconds``: what the run took."""
    start = time.perf_counter()
    assessment = assess(
        node,
        records,
        result,
        planned.decision,
        services.client_for,
        settings,
        services.log.warning,
        history=planned.recorded,
        scorer=planned.scorer,
        labels=labels,
    )
    record = history_record(node, result, planned.config, assessment)
    seconds += time.perf_counter() - start
    md = step_metadata(node, records, result, record, services, seconds, planned, assessment)
    _warn_about(node, result.stats, services.log)
    return StepResult(result, record, md, planned.decision)


def run_filter_chain(
    nodes: Sequence[plan.SemanticFilter],
    records: list[Record],
    services_for: Callable[[plan.SemanticFilter], StepServices],
    plans: Mapping[str, OperatorPlan],
    settings: TuningSettings,
    *,
    max_failed_fraction: float = 1.0,
) -> dict[str, StepResult]:
    """Adjacent filters, in the order ``nodes`` gives, each on what the ones before kept; then
    each assessed. Labels describe the conjunction: a record labelled irrelevant that a later
    filter dropped tells nothing of an earlier filter that kept it (its own predicate may well
    hold: an email about the scheme that quotes the news), so that filter is judged without it.
    """
    inputs: dict[str, list[Record]] = {}
    results: dict[str, tuple[OperatorResult, float]] = {}
    shown = records
    for node in nodes:
        start = time.perf_counter()
        inputs[node.name] = shown
        result = run_planned_checked(
            node, shown, services_for(node), plans[node.name], max_failed_fraction
        )
        results[node.name] = (result, time.perf_counter() - start)
        shown = result.records
    labels = settings.get_labels()
    steps = {}
    for i, node in enumerate(nodes):
        judged = labels
        if labels is not None:
            dropped_later = {
                str(r[RECORD_ID])
                for later in nodes[i + 1 :]
                for r in _dropped(inputs[later.name], results[later.name][0])
            }
            judged = labels.without({r for r in dropped_later if not labels.relevant(r)})
        result, seconds = results[node.name]
        steps[node.name] = assess_planned_step(
            node, inputs[node.name], result, services_for(node), plans[node.name], settings,
            seconds, judged,
        )  # fmt: skip
    return steps


def _dropped(records: Sequence[Record], result: OperatorResult) -> list[Record]:
    kept = {str(r[RECORD_ID]) for r in result.records}
    return [r for r in records if str(r[RECORD_ID]) not in kept]
