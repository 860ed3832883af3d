"""Planning one operator from its history: the optimizer's view of the per-batch plan, the
run config's pin, what strategies learn from the history (thresholds, examples, functions),
and the cold start of a filter's proxies on the batch's own labels."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from optimizer import (
    Candidate,
    Decision,
    Estimate,
    ModelProfile,
    Observation,
    OperatorSpec,
    QualityCounts,
    decide,
)
from optimizer.thresholds import (
    SignedThreshold,
    learn_cascade,
    learn_signed_threshold,
    leave_one_out,
)
from pz_dagster.errors import PlanError
from pz_dagster.models.base import CHARS_PER_TOKEN
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators.base import Record
from pz_dagster.operators.prompts import render_fields
from pz_dagster.operators.proxy import PROXIES, scores_for
from pz_dagster.operators.registry import is_multi_model, strategies_for, strategy_names
from pz_dagster.query import plan
from pz_dagster.query.schema import ERROR, RECORD_ID
from pz_dagster.tuning.history import CHAMPION_JUDGED, NodeHistory
from pz_dagster.tuning.settings import TuningSettings

OPTIMIZED = (plan.SemanticFilter, plan.SemanticMap, plan.SemanticClassify)
AUTO = "auto"
# Every strategy some operator runs: what a run config may pin (``auto``: the optimizer chooses).
RUNNABLE_STRATEGIES = strategy_names()
FEW_SHOT_EACH = 2  # examples per answer (YES / NO) in a few-shot prompt
CERTIFIED = "certified_cascade"  # how a filter with a target runs


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
    if isinstance(node, plan.SemanticFilter) and node.target:
        if strategy not in (AUTO, CERTIFIED):
            raise PlanError(
                f"{node.name!r} declares a target, so it runs as a {CERTIFIED}, not {strategy}"
            )
        strategy = CERTIFIED
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
    if strategy in ("cascade", CERTIFIED):
        strong = model or max(profiles, key=lambda p: p.quality).name
        others = sorted(
            (p for p in profiles if p.name != strong), key=lambda p: (p.input_price, p.quality)
        )
        if strategy == CERTIFIED and strong in names and not others:
            return Candidate(node.name, strategy, strong, (strong,))  # scored by a proxy
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
    history: Mapping[str, NodeHistory],
    profiles: Sequence[ModelProfile],
    settings: TuningSettings,
    records: Sequence[Record],
    pinned: Candidate | None,
    runs_ahead: int = 1,
) -> Decision:
    """The optimizer's decision over the per-batch ``chain`` (sources excluded), made at the
    start of ``node``'s step; ``runs_ahead``: this batch and those of the query still to
    come."""
    specs, fixed = [], {}
    for n in chain:
        h = history.get(n.name, NodeHistory())
        specs.append(spec_of(n, h, records if n is node else None, runs_ahead))
        if not isinstance(n, OPTIMIZED):
            fixed[n.name] = fixed_estimate(n, h)
    # Per operator: the strategies offered that run on it.
    usable = {
        n.name: [s for s in settings.strategies if s in strategies_for(n)] or ["direct"]
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
    # a filter that declares a target runs as a certified cascade, whatever else is offered
    pins = {
        n.name: c
        for n in chain
        if isinstance(n, plan.SemanticFilter) and n.target
        if (c := pinned_candidate(n, AUTO, "", profiles)) is not None
    }
    if pinned:
        pins[node.name] = pinned
    return decide(
        specs,
        profiles,
        observations,
        settings.get_policy(),
        strategies=usable,
        pinned=pins or None,
        fixed=fixed,
        available=available,
        exploration_slots=settings.cold_start_candidates if cold else settings.exploration_slots,
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
    if cand.strategy == CERTIFIED:
        # one model: the lexical proxy (the predicate's own terms) scores, the model is the
        # oracle; the certificates of the newest batch are audited before they are reused
        scorer = {"scorer": "lexical_proxy"} if len(cand.models) < 2 else {}
        carried = history.certificates_for(cand.key) if history else []
        return {**scorer, "certificates": carried}
    if cand.strategy != "cascade" or history is None:
        return {}
    pairs = history.pairs(f"cascade:{cand.models[0]}")
    if {y for _, y in pairs} != {True, False}:
        return {}  # the operator's cautious defaults
    learned = learn_cascade(
        [x for x, _ in pairs], [y for _, y in pairs], min_precision=0.9, min_recall=0.9
    )
    return {"low": learned.low, "high": learned.high}


def config_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy's learned parameters as its physical config records them: examples as a
    count (the texts are in the history), functions left out (their code is in the metadata)."""
    out = {k: v for k, v in params.items() if k not in ("functions", "certificates")}
    if "examples" in out:
        out["examples"] = len(out["examples"])
    return out


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


@dataclass(frozen=True)
class Scored:
    """A proxy's scores of some records, what they cost and how long they took."""

    scores: list[float]
    dollars: float
    seconds: float


class ProxyScorer:
    """A filter's proxies' scores of the records they are judged on, computed once per step:
    the cold start before the plan and the assessment after the run read the same scores."""

    def __init__(
        self, node: plan.SemanticFilter, embedder_for: Callable[[], EmbeddingModel] | None
    ):
        self.node = node
        self.embedder_for = embedder_for
        self._done: dict[tuple[str, tuple[str, ...]], Scored | Exception] = {}

    def score(self, proxy: str, records: Sequence[Record]) -> Scored:
        """``proxy``'s scores of ``records``; raises what scoring raised (every time asked)."""
        key = (proxy, tuple(str(r[RECORD_ID]) for r in records))
        if key not in self._done:
            start = time.perf_counter()
            try:
                wants = proxy == "embedding_proxy" and self.embedder_for is not None
                embedder = self.embedder_for() if wants else None  # type: ignore[misc]
                scores, usage = scores_for(proxy, self.node, records, embedder)
                self._done[key] = Scored(scores, usage.dollars, time.perf_counter() - start)
            except Exception as exc:  # kept: the second reader is told the same
                self._done[key] = exc
        done = self._done[key]
        if isinstance(done, Exception):
            raise done
        return done


def with_batch_labels(
    history: NodeHistory,
    node: plan.PlanNode,
    records: Sequence[Record],
    settings: TuningSettings,
    scorer: ProxyScorer | None,
    log: Callable[[str], None],
) -> NodeHistory:
    """Cold start of a filter's proxies: where the history cannot learn a proxy yet, the
    batch's own labelled records, scored by the proxy (no chat model call), are added to it,
    with the proxy's leave-one-out quality on them as an observation. So a proxy can be
    chosen for the first batch whose labels hold both answers, not only for the next one.
    The assessment after the run records the same pairs and the same quality."""
    labels = settings.get_labels()
    if labels is None or scorer is None or not isinstance(node, plan.SemanticFilter):
        return history
    judged = [r for r in records if not r.get(ERROR) and str(r[RECORD_ID]) in labels]
    truth = [labels.relevant(str(r[RECORD_ID])) for r in judged]
    out = history
    for proxy in [p for p in settings.strategies if p in PROXIES]:
        if not judged or history.can_learn(proxy):
            continue
        try:
            scored = scorer.score(proxy, judged)
        except Exception as exc:  # the assessment notes it again; the plan goes on without
            log(f"{node.name}: scoring {proxy} on the batch's labels failed: {exc}")
            continue
        pairs = first_pairs(history, proxy, "labels", list(zip(scored.scores, truth, strict=True)))
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
                dollars=scored.dollars,
                seconds=scored.seconds,
                records_out=int(counts.tp + counts.fp),
                quality=counts,
                quality_source="labels",
                sequence=time.time(),
            )
        )
    return out
