"""The optimizer inside Dagster: history in, a decision and observations out.

At the start of each semantic filter / map / classify asset, ``plan_operator`` reads the
query's materialization history (the instance's event log), turns it into ``optimizer``
observations, asks the optimizer for a decision over the whole per-batch plan (so a filter's
selectivity prices what follows it) and returns this operator's candidate. After the run,
``assess`` measures quality on the partition (against labels where the optimizer resource has
them, else against the champion on a sample), runs the candidates the optimizer wants to
explore on the same sample, and returns metadata that the next partition reads back as history.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

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
from optimizer.candidates import STRATEGIES as OPTIMIZER_STRATEGIES
from optimizer.config import PhysicalConfig
from optimizer.quality import ValidationSet, field_counts, filter_counts
from optimizer.thresholds import (
    SignedThreshold,
    apply_threshold,
    learn_cascade,
    learn_signed_threshold,
)
from pz_dagster.errors import PlanError
from pz_dagster.models.base import ChatModel
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators import SEMANTIC_STRATEGIES, OperatorResult, run_operator
from pz_dagster.operators.base import CHARS_PER_TOKEN, Record
from pz_dagster.operators.filter import EXAMPLE_CHARS, MULTI_MODEL_STRATEGIES
from pz_dagster.operators.prompts import render_fields
from pz_dagster.operators.proxy import PROXIES, scores_for
from pz_dagster.query import plan
from pz_dagster.query.schema import ERROR, RECORD_ID

OPTIMIZED = (plan.SemanticFilter, plan.SemanticMap, plan.SemanticClassify)
AUTO = "auto"


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


def _value(md: dict[str, Any], key: str, default: Any = None) -> Any:
    return md[key].value if key in md else default


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
    cfg = _value(md, "physical_config")
    evaluated = int(_value(md, "evaluated", 0) or 0)
    if cfg and evaluated:
        config = PhysicalConfig.from_json(json.dumps(cfg))
        calls, hits = int(_value(md, "model_calls", 0)), int(_value(md, "cache_hits", 0))
        dollars, seconds = (
            float(_value(md, "dollars", 0.0)),
            float(_value(md, "model_seconds", 0.0)),
        )
        costed = calls > 0 or hits == 0
        if calls and hits:  # answers from the cache cost nothing now but would have cost this
            dollars, seconds = dollars * (calls + hits) / calls, seconds * (calls + hits) / calls
        sel = _value(md, "selectivity")
        records_out = round(sel * evaluated) if sel is not None else None
        out.append(
            Observation(
                Candidate.from_config(config),
                evaluated,
                dollars=dollars,
                seconds=seconds,
                records_out=records_out,
                quality=_counts(_value(md, "quality_counts")),
                quality_source=_value(md, "quality_source", "") or "",
                sequence=sequence,
                costed=costed,
            )
        )
        if calls:
            hist.prompt_tokens.append(float(_value(md, "input_tokens", 0)) / calls)
        if costed:
            hist.cost.append(dollars / evaluated)
            hist.seconds.append(seconds / evaluated)
        if sel is not None:
            hist.selectivity.append(float(sel))
    for side in _value(md, "sample_runs", []) or []:
        out.append(
            Observation(
                Candidate.from_config(PhysicalConfig.from_json(json.dumps(side["config"]))),
                int(side["records"]),
                dollars=float(side["dollars"]),
                seconds=float(side["seconds"]),
                records_out=side.get("records_out"),
                quality=_counts(side.get("quality")),
                quality_source=side.get("quality_source", ""),
                sequence=sequence,
            )
        )
    judged_by = _value(md, "proxy_pairs_source", "labels")
    suffix = "" if judged_by == "labels" else CHAMPION_JUDGED
    for proxy, pairs in (_value(md, "proxy_pairs", {}) or {}).items():
        hist.proxy_pairs[proxy + suffix] = [(float(x), bool(y)) for x, y in pairs]
    hist.examples = [(str(t), bool(y)) for t, y in (_value(md, "examples", []) or [])]
    functions = _value(md, "code_functions")
    if functions and any(functions.values()):
        hist.functions = functions
    for cheap, pairs in (_value(md, "cascade_pairs", {}) or {}).items():
        hist.proxy_pairs[f"cascade:{cheap}"] = [(float(x), bool(y)) for x, y in pairs]
    hist.observations = out
    return hist


def read_history(
    instance: dg.DagsterInstance, keys: dict[str, dg.AssetKey], limit: int
) -> dict[str, NodeHistory]:
    """History of each operator (by node name) from its latest ``limit`` materializations."""
    out: dict[str, NodeHistory] = {}
    for name, key in keys.items():
        merged = NodeHistory()
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key), limit=limit
        ).records
        for rec in records:
            mat = rec.asset_materialization
            if mat is None:
                continue
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
    node: plan.PlanNode, hist: NodeHistory, records: Sequence[Record] | None
) -> OperatorSpec:
    """The optimizer's view of a node: tokens per call from history, else from the records at
    hand, else a default; selectivity prior 0.5 for filters."""
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


def operator_strategies(node: plan.PlanNode) -> set[str]:
    names = set(SEMANTIC_STRATEGIES.get(type(node), {}))
    if isinstance(node, plan.SemanticFilter):
        names |= set(PROXIES) | set(MULTI_MODEL_STRATEGIES)
    return names


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
    if strategy not in operator_strategies(node):
        raise PlanError(
            f"unknown strategy {strategy!r} for {node.kind} {node.name!r}; known: "
            f"{sorted(operator_strategies(node))}"
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
    if strategy in MULTI_MODEL_STRATEGIES:
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
) -> Decision:
    """The optimizer's decision over the per-batch ``chain`` (sources excluded), made at the
    start of ``node``'s asset."""
    specs, fixed = [], {}
    for n in chain:
        h = history.get(n.name, NodeHistory())
        specs.append(spec_of(n, h, records if n is node else None))
        if not isinstance(n, OPTIMIZED):
            fixed[n.name] = fixed_estimate(n, h)
    # Per operator: the strategies both the optimizer can price and the operator implements.
    usable = {
        n.name: [
            s
            for s in optimizer.strategies
            if s in OPTIMIZER_STRATEGIES and s in operator_strategies(n)
        ]
        or ["direct"]
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


# --- quality and exploration ---------------------------------------------------------------


def sample_of(records: Sequence[Record], n: int, labels: ValidationSet | None) -> list[Record]:
    """A deterministic sample: labelled records first, then by a hash of the record id."""
    ok = [r for r in records if not r.get(ERROR)]

    def order(r: Record) -> tuple[bool, str]:
        rid = str(r[RECORD_ID])
        return (labels is None or rid not in labels, hashlib.sha1(rid.encode()).hexdigest())

    return sorted(ok, key=order)[:n]


def _kept(result: OperatorResult) -> set[str]:
    return {str(r[RECORD_ID]) for r in result.records if not r.get(ERROR)}


def _outputs(result: OperatorResult) -> dict[str, Record]:
    return {str(r[RECORD_ID]): r for r in result.records if not r.get(ERROR)}


def quality_vs_labels(
    node: plan.PlanNode, evaluated: Sequence[str], result: OperatorResult, labels: ValidationSet
) -> QualityCounts | None:
    if not any(r in labels for r in evaluated):
        return None
    if isinstance(node, plan.SemanticFilter):
        return labels.filter_counts(_kept(result), evaluated)
    counts = labels.field_counts(_outputs(result), node.adds)
    return counts if counts.total else None


def quality_vs_reference(
    node: plan.PlanNode, sample: Sequence[str], result: OperatorResult, reference: OperatorResult
) -> QualityCounts:
    if isinstance(node, plan.SemanticFilter):
        kept, ref = _kept(result), _kept(reference)
        return filter_counts({r: r in kept for r in sample}, {r: r in ref for r in sample})
    mine, ref = _outputs(result), _outputs(reference)
    return field_counts(
        {r: mine[r] for r in sample if r in mine},
        {r: ref[r] for r in sample if r in ref},
        node.adds,
    )


@dataclass
class Assessment:
    quality: QualityCounts | None = None
    source: str = ""
    sample_runs: list[dict[str, Any]] = field(default_factory=list)
    sample_usage_dollars: float = 0.0
    sample_seconds: float = 0.0
    proxy_pairs: dict[str, list[list[Any]]] = field(default_factory=dict)
    proxy_pairs_source: str = ""
    cascade_pairs: dict[str, list[list[Any]]] = field(default_factory=dict)
    examples: list[list[Any]] = field(default_factory=list)


def assess(
    node: plan.UnaryNode,
    records: Sequence[Record],
    result: OperatorResult,
    decision: Decision,
    client_for: Callable[[str | None], ChatModel],
    optimizer: OptimizerResource,
    log: Callable[[str], None],
    history: NodeHistory | None = None,
    embedder_for: Callable[[], EmbeddingModel] | None = None,
) -> Assessment:
    """Quality of the chosen run, and the sample runs of the champion and the explored
    candidates (each recorded as an observation of its own). For a semantic filter with proxy
    strategies enabled, also the proxies' scores of the judged records (what their thresholds
    are learned from) and each proxy's quality on them with the threshold learned before."""
    labels = optimizer.get_labels()
    chosen = decision.candidate(node.name)
    champion = decision.champions.get(node.name)
    sample = sample_of(records, optimizer.sample_size, labels)
    sample_ids = [str(r[RECORD_ID]) for r in sample]
    evaluated = [str(r[RECORD_ID]) for r in records if not r.get(ERROR)]
    out = Assessment()
    out.cascade_pairs = cascade_pairs(chosen, result, labels)
    if labels is not None:
        out.quality = quality_vs_labels(node, evaluated, result, labels)
        out.source = "labels" if out.quality else ""

    def run_on_sample(cand: Candidate) -> OperatorResult:
        start = time.perf_counter()
        res = run_operator(
            node,
            list(sample),
            client_for(cand.model),
            strategy=cand.strategy,
            models=[client_for(m) for m in cand.models] if len(cand.models) > 1 else None,
            params=strategy_params(cand, history),
        )
        for cheap, pairs in cascade_pairs(cand, res, labels).items():
            out.cascade_pairs.setdefault(cheap, []).extend(pairs)
        out.sample_usage_dollars += res.stats.usage.dollars
        out.sample_seconds += time.perf_counter() - start
        return res

    reference: OperatorResult | None = None
    # The champion runs on the sample only when something must be judged against it: the
    # chosen run without labels, or explored candidates on a sample the labels do not cover.
    labelled_sample = labels is not None and all(r in labels for r in sample_ids)
    explored = [c for c in decision.exploration.get(node.name, ()) if c.strategy not in PROXIES]
    needs_reference = out.quality is None or (explored and not labelled_sample)
    if champion is not None and sample and needs_reference:
        if champion.key == chosen.key:
            sample_set = set(sample_ids)
            reference = OperatorResult(
                [r for r in result.records if str(r[RECORD_ID]) in sample_set],
                result.stats,
                result.strategy,
                result.model,
            )
        else:
            reference = run_on_sample(champion)
            out.sample_runs.append(_side(champion, len(sample), reference, None, ""))
        if out.quality is None and champion.key != chosen.key:
            out.quality = quality_vs_reference(node, sample_ids, result, reference)
            out.source = "champion"
    for cand in decision.exploration.get(node.name, ()):
        if not sample:
            break
        if cand.strategy in PROXIES:  # judged below on every partition, at no model cost
            continue
        try:
            res = run_on_sample(cand)
        except Exception as exc:  # a candidate that cannot run is noted, not fatal
            log(f"{node.name}: exploring {cand.key} failed: {exc}")
            continue
        q, src = None, ""
        if labels is not None:
            q = quality_vs_labels(node, sample_ids, res, labels)
            src = "labels" if q else ""
        if q is None and reference is not None:
            q, src = quality_vs_reference(node, sample_ids, res, reference), "champion"
        out.sample_runs.append(_side(cand, len(sample), res, q, src))
    if isinstance(node, plan.SemanticFilter) and "few_shot" in optimizer.strategies and labels:
        labelled = [r for r in records if not r.get(ERROR) and str(r[RECORD_ID]) in labels]
        for want in (True, False):
            for r in [r for r in labelled if labels.relevant(str(r[RECORD_ID])) == want][
                :FEW_SHOT_EACH
            ]:
                text = render_fields(r, node.depends_on)[:EXAMPLE_CHARS]
                out.examples.append([text, want])
    proxies = [p for p in optimizer.strategies if p in PROXIES]
    if isinstance(node, plan.SemanticFilter) and proxies:
        # judged records: the labelled ones, else the sample against the champion
        if labels is not None and any(r in labels for r in evaluated):
            judged = [r for r in records if not r.get(ERROR) and str(r[RECORD_ID]) in labels]
            truth = [labels.relevant(str(r[RECORD_ID])) for r in judged]
            source = "labels"
        elif reference is not None:
            ref = _kept(reference)
            judged, truth, source = list(sample), [rid in ref for rid in sample_ids], "champion"
        else:
            judged, truth, source = [], [], ""
        for proxy in proxies:
            if not judged:
                break
            start = time.perf_counter()
            try:
                embedder = embedder_for() if proxy == "embedding_proxy" and embedder_for else None
                scores, usage = scores_for(proxy, node, judged, embedder)
            except Exception as exc:  # a proxy that cannot score is noted, not fatal
                log(f"{node.name}: scoring {proxy} failed: {exc}")
                continue
            seconds = time.perf_counter() - start
            out.proxy_pairs[proxy] = [[s, y] for s, y in zip(scores, truth, strict=True)]
            out.proxy_pairs_source = source
            past = history.pairs(proxy) if history else []
            if {y for _, y in past} != {True, False}:
                continue
            threshold = learn_signed_threshold([x for x, _ in past], [y for _, y in past])
            counts = apply_threshold(threshold, scores, truth)
            out.sample_runs.append(
                {
                    "config": json.loads(
                        Candidate(node.name, proxy, None)
                        .config(**threshold_params(threshold))
                        .to_json()
                    ),
                    "records": len(judged),
                    "dollars": usage.dollars,
                    "seconds": seconds,
                    "records_out": int(counts.tp + counts.fp),
                    "quality": _counts_dict(counts),
                    "quality_source": source,
                }
            )
    return out


def threshold_params(t: SignedThreshold) -> dict[str, Any]:
    return {"threshold": t.value, "polarity": t.polarity}


def _counts_dict(q: QualityCounts) -> dict[str, float]:
    return dict(zip(("tp", "fp", "fn", "tn", "agree", "total"), q.as_tuple(), strict=True))


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


def cascade_pairs(
    cand: Candidate, result: OperatorResult, labels: ValidationSet | None
) -> dict[str, list[list[Any]]]:
    """(cheap score, truth) of a cascade run's records: the label where there is one, else the
    strong model's answer where it was asked."""
    seen = result.extras.get("cascade")
    if cand.strategy != "cascade" or not seen:
        return {}
    out = []
    for rid, (score, strong) in seen.items():
        if labels is not None and rid in labels:
            out.append([score, labels.relevant(rid)])
        elif strong is not None:
            out.append([score, strong])
    return {cand.models[0]: out} if out else {}


def learned_threshold(history: NodeHistory, proxy: str) -> SignedThreshold:
    """The proxy's threshold learned on every scored example in the history."""
    pairs = history.pairs(proxy)
    if {y for _, y in pairs} != {True, False}:
        raise PlanError(f"{proxy} has no labelled examples of both kinds to learn from yet")
    return learn_signed_threshold([x for x, _ in pairs], [y for _, y in pairs])


def _side(
    cand: Candidate, n: int, res: OperatorResult, q: QualityCounts | None, source: str
) -> dict[str, Any]:
    usage = res.stats.usage
    calls, hits = usage.calls, usage.cache_hits
    scale = (calls + hits) / calls if calls and hits else 1.0
    return {
        "config": json.loads(cand.config().to_json()),
        "records": n,
        "dollars": usage.dollars * scale,
        "seconds": usage.seconds * scale,
        "records_out": len(_kept(res)),
        "quality": None
        if q is None
        else dict(zip(("tp", "fp", "fn", "tn", "agree", "total"), q.as_tuple(), strict=True)),
        "quality_source": source,
    }


def decision_metadata(
    decision: Decision, node: str, assessment: Assessment, cold: bool
) -> dict[str, Any]:
    q = assessment.quality
    md: dict[str, Any] = {
        "policy": decision.policy.describe(),
        "decision": dg.MetadataValue.md(
            f"**{decision.result.reason}**\n\nchosen plan: `{decision.result.chosen.describe()}`\n\n"
            + (
                f"pinned by run config: {', '.join(sorted(decision.pinned))}\n\n"
                if decision.pinned
                else ""
            )
            + f"### frontier\n{decision.frontier_markdown()}\n\n"
            f"### candidates of {node}\n{decision.candidates_markdown(node)}"
        ),
        "estimated_quality": float(decision.estimate(node, decision.candidate(node)).quality),
        "sample_runs": dg.MetadataValue.json(assessment.sample_runs),
        "sample_dollars": float(assessment.sample_usage_dollars),
        "cold_start_sample": cold,
    }
    if q is not None:
        md["quality"] = float(q.score)
        md["quality_source"] = assessment.source
        md["quality_evidence"] = float(q.evidence)
        md["quality_counts"] = dg.MetadataValue.json(_counts_dict(q))
    if assessment.proxy_pairs:
        md["proxy_pairs"] = dg.MetadataValue.json(assessment.proxy_pairs)
        md["proxy_pairs_source"] = assessment.proxy_pairs_source
    if assessment.examples:
        md["examples"] = dg.MetadataValue.json(assessment.examples)
    if assessment.cascade_pairs:
        md["cascade_pairs"] = dg.MetadataValue.json(assessment.cascade_pairs)
    return md
