"""The optimizer inside Dagster: history in, a decision and observations out.

At the start of each semantic filter / map / classify asset, ``plan_operator`` reads the
query's materialization history (the instance's event log), turns it into ``optimizer``
observations, asks the optimizer for a decision over the whole per-batch plan (so a filter's
selectivity prices what follows it) and returns this operator's candidate. After the run,
``assessment.assess`` measures quality on the partition (against labels where the optimizer resource has
them, else against the champion on a sample), runs the candidates the optimizer wants to
explore on the same sample, and returns metadata that the next partition reads back as history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr, field_validator

from optimizer import (
    Candidate,
    Decision,
    Estimate,
    ModelProfile,
    Observation,
    OperatorSpec,
    Policy,
    QualityCounts,
    decide,
    parse_policy,
)
from optimizer.config import PhysicalConfig
from optimizer.quality import ValidationSet
from optimizer.thresholds import (
    SignedThreshold,
    learn_cascade,
    learn_signed_threshold,
    leave_one_out,
)
from pz_dagster.errors import PlanError
from pz_dagster.operators.base import CHARS_PER_TOKEN, Record
from pz_dagster.operators.prompts import render_fields
from pz_dagster.operators.proxy import PROXIES, scores_for
from pz_dagster.operators.registry import is_multi_model, strategies_for, strategy_names
from pz_dagster.orchestration.metadata import recurring_part
from pz_dagster.query import plan
from pz_dagster.query.schema import ERROR, RECORD_ID

OPTIMIZED = (plan.SemanticFilter, plan.SemanticMap, plan.SemanticClassify)
AUTO = "auto"
# Every strategy some operator runs: what a run config may pin (``auto``: the optimizer chooses).
RUNNABLE_STRATEGIES = strategy_names()


class OptimizerResource(dg.ConfigurableResource):
    """How the optimizer chooses each semantic operator's model and strategy.

    >>> OptimizerResource(policy="MinCostAtQuality(0.9)").get_policy()
    MinCostAtQuality(quality=0.9)
    """

    policy: str = Field(
        default="MaxQuality",
        description="MaxQuality, MinCost, MinTime, MinCostAtQuality(q), MinTimeAtQuality(q) or "
        "MaxQualityAtCost(dollars per input record).",
    )
    strategies: list[str] = Field(
        default_factory=lambda: ["direct"],
        description="Strategies the optimizer may choose (each with every model of the model "
        "resource), e.g. direct, batched, chain_of_thought, critique, ensemble, cascade.",
    )
    sample_size: int = Field(
        default=10, description="Records per partition for measuring quality and exploring."
    )
    exploration_slots: int = Field(
        default=1, description="Under-observed candidates tried per partition on the sample."
    )
    cold_start_candidates: int = Field(
        default=3,
        description="Candidates tried on the sample of the first partition, before any history.",
    )
    labels_path: str | None = Field(
        default=None,
        description="JSON labels {record_id: relevant fields | [] | null}; quality is then "
        "measured against them instead of against the champion.",
    )
    history_limit: int = Field(
        default=100, description="Latest materializations per asset read as history."
    )

    _labels: ValidationSet | None = PrivateAttr(default=None)

    # Checked where the resource is built (the query's module, or the YAML component), so a
    # mistake is reported at load, not as a failed step of a run.
    @field_validator("policy")
    @classmethod
    def _policy_parses(cls, value: str) -> str:
        parse_policy(value)  # its ValueError names the known policies
        return value

    @field_validator("strategies")
    @classmethod
    def _strategies_known(cls, value: list[str]) -> list[str]:
        if unknown := [s for s in value if s not in strategy_names()]:
            raise ValueError(f"unknown strategies {unknown}; known: {list(strategy_names())}")
        return value

    def get_policy(self) -> Policy:
        return parse_policy(self.policy)

    def get_labels(self) -> ValidationSet | None:
        if self.labels_path and self._labels is None:
            self._labels = ValidationSet.from_json(self.labels_path)
        return self._labels


# --- history -------------------------------------------------------------------------------

CHAMPION_JUDGED = "@champion"  # suffix of proxy pairs whose truth is the champion's answer


@dataclass
class NodeHistory:
    """What the history says about one operator, beyond per-candidate observations."""

    observations: list[Observation] = field(default_factory=list)
    prompt_tokens: list[float] = field(default_factory=list)  # per model call
    cost: list[float] = field(default_factory=list)  # dollars per record (any candidate)
    seconds: list[float] = field(default_factory=list)
    selectivity: list[float] = field(default_factory=list)
    # scored, labelled records by proxy: what a proxy's threshold is learned from
    proxy_pairs: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    # labelled excerpts of earlier inputs, newest first: a few-shot prompt's examples
    examples: list[tuple[str, bool]] = field(default_factory=list)
    # the newest functions code synthesis kept, per field (reused while they keep answering)
    functions: dict[str, list[dict[str, Any]]] | None = None

    def pairs(self, proxy: str) -> list[tuple[float, bool]]:
        """Scored examples to learn ``proxy``'s threshold from: those judged by labels when
        they hold both answers, else those judged by the champion. Never a mix: a weak
        champion's verdicts must not drag a threshold learned on labels."""
        labelled = self.proxy_pairs.get(proxy, [])
        if {y for _, y in labelled} == {True, False}:
            return labelled
        return self.proxy_pairs.get(f"{proxy}{CHAMPION_JUDGED}", [])

    def can_learn(self, proxy: str) -> bool:
        labels = {y for _, y in self.pairs(proxy)}
        return labels == {True, False}

    @staticmethod
    def mean(xs: list[float], default: float) -> float:
        return sum(xs) / len(xs) if xs else default


def metadata_value(md: dict[str, Any], key: str, default: Any = None) -> Any:
    """The plain value of one materialization metadata entry, ``default`` when absent."""
    if key not in md:
        return default
    return getattr(md[key], "value", md[key])


def _counts(data: Any) -> QualityCounts | None:
    if not isinstance(data, dict):
        return None
    return QualityCounts(
        **{k: float(v) for k, v in data.items() if k in QualityCounts.__annotations__}
    )


def observations_of(md: dict[str, Any], sequence: float) -> NodeHistory:
    """The observations one materialization's metadata holds: its own run, and the sample runs
    (champion, exploration) listed under ``sample_runs``."""
    hist = NodeHistory()
    out: list[Observation] = []
    cfg = metadata_value(md, "physical_config")
    evaluated = int(metadata_value(md, "evaluated", 0) or 0)
    if cfg and evaluated:
        config = PhysicalConfig.from_json(json.dumps(cfg))
        calls = int(metadata_value(md, "model_calls", 0))
        hits = int(metadata_value(md, "cache_hits", 0))
        dollars, seconds = (
            float(metadata_value(md, "dollars", 0.0)),
            float(metadata_value(md, "model_seconds", 0.0)),
        )
        costed = calls > 0 or hits == 0
        if calls and hits:  # answers from the cache cost nothing now but would have cost this
            dollars, seconds = dollars * (calls + hits) / calls, seconds * (calls + hits) / calls
        # code synthesis: what recurs per batch, without the one-time sample and functions
        once = {
            "sample": metadata_value(md, "synthesis_sample", 0),
            "synthesis_tokens": metadata_value(md, "synthesis_tokens", 0),
            "fallback_tokens": metadata_value(md, "fallback_tokens", 0),
        }
        recurring, share = recurring_part(once, evaluated)
        dollars, seconds = dollars * share, seconds * share
        sel = metadata_value(md, "selectivity")
        records_out = round(sel * recurring) if sel is not None else None
        out.append(
            Observation(
                Candidate.from_config(config),
                recurring,
                dollars=dollars,
                seconds=seconds,
                records_out=records_out,
                quality=_counts(metadata_value(md, "quality_counts")),
                quality_source=metadata_value(md, "quality_source", "") or "",
                sequence=sequence,
                costed=costed,
            )
        )
        if calls:
            hist.prompt_tokens.append(float(metadata_value(md, "input_tokens", 0)) / calls)
        if costed and recurring:
            hist.cost.append(dollars / recurring)
            hist.seconds.append(seconds / recurring)
        if sel is not None:
            hist.selectivity.append(float(sel))
    for side in metadata_value(md, "sample_runs", []) or []:
        records = int(side["records"])
        recurring, share = recurring_part(side.get("one_time", {}), records)
        kept = side.get("records_out")
        out.append(
            Observation(
                Candidate.from_config(PhysicalConfig.from_json(json.dumps(side["config"]))),
                recurring,
                dollars=float(side["dollars"]) * share,
                seconds=float(side["seconds"]) * share,
                records_out=None if kept is None else round(kept * recurring / max(records, 1)),
                quality=_counts(side.get("quality")),
                quality_source=side.get("quality_source", ""),
                sequence=sequence,
            )
        )
    judged_by = metadata_value(md, "proxy_pairs_source", "labels")
    suffix = "" if judged_by == "labels" else CHAMPION_JUDGED
    for proxy, pairs in (metadata_value(md, "proxy_pairs", {}) or {}).items():
        hist.proxy_pairs[proxy + suffix] = [(float(x), bool(y)) for x, y in pairs]
    hist.examples = [(str(t), bool(y)) for t, y in (metadata_value(md, "examples", []) or [])]
    functions = metadata_value(md, "code_functions")
    if functions and any(functions.values()):
        hist.functions = functions
    for cheap, pairs in (metadata_value(md, "cascade_pairs", {}) or {}).items():
        hist.proxy_pairs[f"cascade:{cheap}"] = [(float(x), bool(y)) for x, y in pairs]
    hist.observations = out
    return hist


def materializations(
    instance: dg.DagsterInstance, key: dg.AssetKey, limit: int
) -> Iterator[tuple[dg.EventLogRecord, dg.AssetMaterialization]]:
    """The latest ``limit`` materializations of ``key``, newest first, with their records."""
    for rec in instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key), limit=limit
    ).records:
        if rec.asset_materialization is not None:
            yield rec, rec.asset_materialization


def read_history(
    instance: dg.DagsterInstance, keys: dict[str, dg.AssetKey], limit: int
) -> dict[str, NodeHistory]:
    """History of each operator (by node name) from its latest ``limit`` materializations."""
    out: dict[str, NodeHistory] = {}
    for name, key in keys.items():
        merged = NodeHistory()
        for rec, mat in materializations(instance, key, limit):
            h = observations_of(dict(mat.metadata), rec.timestamp)
            merged.observations += h.observations
            merged.prompt_tokens += h.prompt_tokens
            merged.cost += h.cost
            merged.seconds += h.seconds
            merged.selectivity += h.selectivity
            for proxy, pairs in h.proxy_pairs.items():
                merged.proxy_pairs.setdefault(proxy, []).extend(pairs)
            merged.examples += h.examples
            merged.functions = merged.functions or h.functions  # newest first
        out[name] = merged
    return out


# --- the decision --------------------------------------------------------------------------


def output_tokens(node: plan.PlanNode) -> float:
    if isinstance(node, plan.SemanticMap):
        return 10.0 + 12.0 * len(node.adds)
    return 8.0


def spec_of(
    node: plan.PlanNode,
    hist: NodeHistory,
    records: Sequence[Record] | None,
    runs_ahead: int = 1,
) -> OperatorSpec:
    """The optimizer's view of a node: tokens per call from history, else from the records at
    hand, else a default; selectivity prior 0.5 for filters. Code synthesis's one-time cost is
    spread over ``runs_ahead`` batches (this one and those still to come, which reuse its
    functions), and not counted while the history holds functions to reuse."""
    default_tokens = 500.0
    if records and isinstance(node, OPTIMIZED):
        texts = [render_fields(r, node.depends_on) for r in records[:50] if not r.get(ERROR)]
        if texts:
            default_tokens = 80.0 + sum(len(t) for t in texts) / len(texts) / CHARS_PER_TOKEN
    is_filter = isinstance(node, plan.SemanticFilter | plan.Filter)
    return OperatorSpec(
        node.name,
        node.kind,
        prompt_tokens=NodeHistory.mean(hist.prompt_tokens, default_tokens),
        output_tokens=output_tokens(node),
        selectivity=0.5 if is_filter else 1.0,
        batch_records=len(records) if records else 100,
        runs_ahead=max(runs_ahead, 1),
        paid_once=frozenset({"code_synthesis"}) if hist.functions else frozenset(),
    )


def fixed_estimate(node: plan.PlanNode, hist: NodeHistory) -> Estimate:
    """Operators with one way to run (Python, or semantic ones the optimizer does not choose
    for yet) enter the plan with what their history says."""
    is_filter = isinstance(node, plan.Filter | plan.Limit)
    return Estimate(
        NodeHistory.mean(hist.cost, 0.0),
        NodeHistory.mean(hist.seconds, 0.0),
        NodeHistory.mean(hist.selectivity, 0.5 if is_filter else 1.0),
        1.0,
    )


def pinned_candidate(
    node: plan.PlanNode, strategy: str, model: str, profiles: Sequence[ModelProfile]
) -> Candidate | None:
    """The run config's override, or None when both are ``auto``/empty."""
    if strategy == AUTO and not model:
        return None
    strategy = "direct" if strategy == AUTO else strategy
    if strategy in PROXIES and isinstance(node, plan.SemanticFilter):
        if model:
            raise PlanError(f"{strategy} of {node.name!r} uses no model; leave model empty")
        return Candidate(node.name, strategy, None)
    if strategy not in strategies_for(node):
        raise PlanError(
            f"unknown strategy {strategy!r} for {node.kind} {node.name!r}; known: "
            f"{list(strategies_for(node))}"
        )
    names = [p.name for p in profiles]
    if strategy == "cascade":
        strong = model or max(profiles, key=lambda p: p.quality).name
        others = sorted(
            (p for p in profiles if p.name != strong), key=lambda p: (p.input_price, p.quality)
        )
        if strong not in names or not others:
            raise PlanError(f"a cascade needs a strong model and a cheaper one; served: {names}")
        return Candidate(node.name, strategy, strong, (others[0].name, strong))
    if is_multi_model(strategy):
        best = [p.name for p in sorted(profiles, key=lambda p: -p.quality)][:3]
        if len(best) < 2:
            raise PlanError(f"{strategy} needs at least two models; the resource serves {names}")
        return Candidate(node.name, strategy, best[0], tuple(best))
    chosen = model or names[0]
    if chosen not in names:
        raise PlanError(f"model {chosen!r} is not served by the model resource; available: {names}")
    return Candidate(node.name, strategy, chosen, (chosen,))


def plan_operator(
    node: plan.UnaryNode,
    chain: Sequence[plan.PlanNode],
    history: dict[str, NodeHistory],
    profiles: Sequence[ModelProfile],
    optimizer: OptimizerResource,
    records: Sequence[Record],
    pinned: Candidate | None,
    runs_ahead: int = 1,
) -> Decision:
    """The optimizer's decision over the per-batch ``chain`` (sources excluded), made at the
    start of ``node``'s asset; ``runs_ahead``: this batch and those of the query still to
    come."""
    specs, fixed = [], {}
    for n in chain:
        h = history.get(n.name, NodeHistory())
        specs.append(spec_of(n, h, records if n is node else None, runs_ahead))
        if not isinstance(n, OPTIMIZED):
            fixed[n.name] = fixed_estimate(n, h)
    # Per operator: the strategies offered that run on it.
    usable = {
        n.name: [s for s in optimizer.strategies if s in strategies_for(n)] or ["direct"]
        for n in chain
        if isinstance(n, OPTIMIZED)
    }
    observations = [o for h in history.values() for o in h.observations]
    cold = not history.get(node.name, NodeHistory()).observations
    # a proxy is a candidate once its threshold can be learned from scored examples
    available = {
        n.name: frozenset(p for p in PROXIES if history.get(n.name, NodeHistory()).can_learn(p))
        | ({"examples"} if few_shot_examples(history.get(n.name, NodeHistory())) else set())
        for n in chain
    }
    return decide(
        specs,
        profiles,
        observations,
        optimizer.get_policy(),
        strategies=usable,
        pinned={node.name: pinned} if pinned else None,
        fixed=fixed,
        available=available,
        exploration_slots=optimizer.cold_start_candidates if cold else optimizer.exploration_slots,
    )


def threshold_params(t: SignedThreshold) -> dict[str, Any]:
    return {"threshold": t.value, "polarity": t.polarity}


def strategy_params(cand: Candidate, history: NodeHistory | None) -> dict[str, Any]:
    """Parameters a strategy learns from history: a cascade's thresholds, learned on its cheap
    model's scores of records whose truth is known (labels, or the strong model's answer) for
    precision and recall of at least 0.9 among the records it decides alone."""
    if cand.strategy == "few_shot" and history is not None:
        return {"examples": few_shot_examples(history)}
    if cand.strategy == "code_synthesis":
        return {"functions": history.functions} if history and history.functions else {}
    if cand.strategy != "cascade" or history is None:
        return {}
    pairs = history.pairs(f"cascade:{cand.models[0]}")
    if {y for _, y in pairs} != {True, False}:
        return {}  # the operator's cautious defaults
    learned = learn_cascade(
        [x for x, _ in pairs], [y for _, y in pairs], min_precision=0.9, min_recall=0.9
    )
    return {"low": learned.low, "high": learned.high}


FEW_SHOT_EACH = 2  # examples per answer (YES / NO) in a few-shot prompt


def few_shot_examples(history: NodeHistory) -> list[tuple[str, bool]]:
    """The newest labelled excerpts, ``FEW_SHOT_EACH`` per answer; none until both answers
    have an example."""
    pos = [e for e in history.examples if e[1]][:FEW_SHOT_EACH]
    neg = [e for e in history.examples if not e[1]][:FEW_SHOT_EACH]
    return [x for pair in zip(pos, neg, strict=False) for x in pair] if pos and neg else []


def learned_threshold(history: NodeHistory, proxy: str) -> SignedThreshold:
    """The proxy's threshold learned on every scored example in the history."""
    pairs = history.pairs(proxy)
    if {y for _, y in pairs} != {True, False}:
        raise PlanError(f"{proxy} has no labelled examples of both kinds to learn from yet")
    return learn_signed_threshold([x for x, _ in pairs], [y for _, y in pairs])


def first_pairs(
    history: NodeHistory | None,
    proxy: str,
    source: str,
    current: list[tuple[float, bool]],
) -> list[tuple[float, bool]] | None:
    """The examples a proxy is first learned from: those of the history judged the same way
    (labels, or the champion) and ``current``; None while they do not hold both answers."""
    suffix = "" if source == "labels" else CHAMPION_JUDGED
    past = history.proxy_pairs.get(proxy + suffix, []) if history else []
    pairs = list(past) + list(current)
    return pairs if {y for _, y in pairs} == {True, False} else None


def first_quality(pairs: list[tuple[float, bool]]) -> tuple[SignedThreshold, QualityCounts]:
    """A proxy's threshold learned on all ``pairs``, and its quality judged leave-one-out (each
    example by the threshold learned on the others), so that it is not judged on what it
    learned from."""
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    return learn_signed_threshold(xs, ys), leave_one_out(xs, ys)


def with_batch_labels(
    history: NodeHistory,
    node: plan.PlanNode,
    records: Sequence[Record],
    optimizer: OptimizerResource,
    embedder_for: Any,
    log: Any,
) -> NodeHistory:
    """Cold start of a filter's proxies: where the history cannot learn a proxy yet, the
    batch's own labelled records, scored by the proxy (no chat model call), are added to it,
    with the proxy's leave-one-out quality on them as an observation. So a proxy can be
    chosen for the first batch whose labels hold both answers, not only for the next one.
    The assessment after the run records the same pairs and the same quality."""
    labels = optimizer.get_labels()
    if labels is None or not isinstance(node, plan.SemanticFilter):
        return history
    judged = [r for r in records if not r.get(ERROR) and str(r[RECORD_ID]) in labels]
    truth = [labels.relevant(str(r[RECORD_ID])) for r in judged]
    out = history
    for proxy in [p for p in optimizer.strategies if p in PROXIES]:
        if not judged or history.can_learn(proxy):
            continue
        start = time.perf_counter()
        try:
            embedder = embedder_for() if proxy == "embedding_proxy" else None
            scores, usage = scores_for(proxy, node, judged, embedder)
        except Exception as exc:  # the assessment notes it again; the plan goes on without
            log(f"{node.name}: scoring {proxy} on the batch's labels failed: {exc}")
            continue
        pairs = first_pairs(history, proxy, "labels", list(zip(scores, truth, strict=True)))
        if pairs is None:
            continue
        _, counts = first_quality(pairs)
        if out is history:
            out = replace(
                history,
                observations=list(history.observations),
                proxy_pairs=dict(history.proxy_pairs),
            )
        out.proxy_pairs[proxy] = pairs
        out.observations.append(
            Observation(
                Candidate(node.name, proxy, None),
                len(pairs),
                dollars=usage.dollars,
                seconds=time.perf_counter() - start,
                records_out=int(counts.tp + counts.fp),
                quality=counts,
                quality_source="labels",
                sequence=time.time(),
            )
        )
    return out
