"""After an optimized operator ran: its quality on a sample (against the labels, else the
champion), the candidates explored on that sample, and what proxies, cascades and few-shot
prompts learn from; the next decision reads it all back from the history record."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from optimizer import Candidate, Decision, QualityCounts
from optimizer.label_model import fit
from optimizer.quality import ValidationSet, field_counts, filter_counts
from optimizer.thresholds import apply_threshold, learn_signed_threshold
from pz_dagster.models.base import ChatModel
from pz_dagster.operators import OperatorResult, run_operator
from pz_dagster.operators.base import Record
from pz_dagster.operators.filter import EXAMPLE_CHARS
from pz_dagster.operators.prompts import render_fields
from pz_dagster.operators.proxy import PROXIES, QUOTED_WEIGHT, lexical_scores, predicate_terms
from pz_dagster.query import plan
from pz_dagster.query.schema import ERROR, RECORD_ID
from pz_dagster.tuning.history import NodeHistory, Pairs, RunRecord
from pz_dagster.tuning.planning import (
    CERTIFIED,
    FEW_SHOT_EACH,
    ProxyScorer,
    first_pairs,
    first_quality,
    strategy_params,
    threshold_params,
)
from pz_dagster.tuning.settings import TuningSettings

# Fewest sample records code synthesis is explored on (see ``_explore``).
MIN_SYNTHESIS_SAMPLE = 2


def sample_of(records: Sequence[Record], n: int, labels: ValidationSet | None) -> list[Record]:
    """A deterministic sample, by a hash of the record id: only labelled records when the
    batch has any (they are judged against their labels, so exploring on them needs no
    champion run for a reference), relevant and irrelevant ones in turn (a filter's F1 rests
    on the relevant ones, a map's exact match only on them; a sample drawn blind from a
    selective batch would hold none), else any.

    >>> recs = [{RECORD_ID: i} for i in "abcd"]
    >>> [r[RECORD_ID] for r in sample_of(recs, 3, ValidationSet({"b": None, "d": None}))]
    ['d', 'b']
    >>> [r[RECORD_ID] for r in sample_of(recs, 2, ValidationSet({"a": {}, "b": None, "d": None}))]
    ['a', 'd']
    >>> len(sample_of(recs, 3, ValidationSet({"x": None})))
    3
    """

    def digest(r: Record) -> str:
        return hashlib.sha1(str(r[RECORD_ID]).encode()).hexdigest()

    ok = sorted((r for r in records if not r.get(ERROR)), key=digest)
    labelled = [r for r in ok if labels is not None and str(r[RECORD_ID]) in labels]
    if not labelled:
        return ok[:n]
    assert labels is not None
    relevant = [r for r in labelled if labels.relevant(str(r[RECORD_ID]))]
    irrelevant = [r for r in labelled if not labels.relevant(str(r[RECORD_ID]))]
    turns = [r for pair in zip_longest(relevant, irrelevant) for r in pair if r is not None]
    return turns[:n]


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
    counts = labels.field_counts(_outputs(result), answer_fields(node))
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
        answer_fields(node),
    )


def answer_fields(node: plan.PlanNode) -> tuple[str, ...]:
    """The columns whose values are judged: a map's fields (not its evidence quotes)."""
    return node.output_fields if isinstance(node, plan.SemanticMap) else node.adds


@dataclass
class Assessment:
    """The chosen run's quality and what the sample runs and judged records taught."""

    quality: QualityCounts | None = None
    source: str = ""
    sample_runs: list[RunRecord] = field(default_factory=list)
    sample_usage_dollars: float = 0.0
    proxy_pairs: dict[str, Pairs] = field(default_factory=dict)
    proxy_pairs_source: str = ""
    cascade_pairs: dict[str, Pairs] = field(default_factory=dict)
    examples: list[tuple[str, bool]] = field(default_factory=list)
    # a filter's quality estimated without labels (see ``label_free_estimate``)
    label_free: dict[str, Any] | None = None


def cascade_pairs(
    cand: Candidate, result: OperatorResult, labels: ValidationSet | None
) -> dict[str, Pairs]:
    """(cheap score, truth) of a cascade run's records: the label where there is one, else the
    strong model's answer where it was asked."""
    seen = result.extras.get("cascade")
    if cand.strategy != "cascade" or not seen:
        return {}
    out = []
    for rid, (score, strong) in seen.items():
        if labels is not None and rid in labels:
            out.append((score, labels.relevant(rid)))
        elif strong is not None:
            out.append((score, strong))
    return {cand.models[0]: out} if out else {}


class _Sample:
    """The batch's sample and the runs of candidates on it, adding up into ``out``."""

    def __init__(
        self,
        node: plan.UnaryNode,
        records: Sequence[Record],
        settings: TuningSettings,
        client_for: Callable[[str | None], ChatModel],
        history: NodeHistory | None,
        out: Assessment,
        labels: ValidationSet | None,
    ):
        self.node, self.client_for, self.history, self.out = node, client_for, history, out
        self.labels = labels
        self.records = sample_of(records, settings.sample_size, self.labels)
        self.ids = [str(r[RECORD_ID]) for r in self.records]
        self.results: dict[str, OperatorResult] = {}  # by candidate key

    @property
    def labelled(self) -> bool:
        return self.labels is not None and all(r in self.labels for r in self.ids)

    def run(self, cand: Candidate) -> OperatorResult:
        res = run_operator(
            self.node,
            list(self.records),
            self.client_for(cand.model),
            strategy=cand.strategy,
            models=[self.client_for(m) for m in cand.models] if len(cand.models) > 1 else None,
            params=strategy_params(cand, self.history),
        )
        for cheap, pairs in cascade_pairs(cand, res, self.labels).items():
            self.out.cascade_pairs.setdefault(cheap, []).extend(pairs)
        self.out.sample_usage_dollars += res.stats.usage.dollars
        self.results[cand.key] = res
        return res

    def record(
        self, cand: Candidate, res: OperatorResult, q: QualityCounts | None, source: str
    ) -> None:
        self.out.sample_runs.append(
            RunRecord.measured(
                cand.config(),
                res.stats.usage,
                len(self.records),
                len(_kept(res)),
                res.extras,
                q,
                source,
            )
        )

    def judge(
        self, res: OperatorResult, reference: OperatorResult | None
    ) -> tuple[QualityCounts | None, str]:
        """A sample run's quality: against the labels, else against the champion's run."""
        if self.labels is not None and (
            q := quality_vs_labels(self.node, self.ids, res, self.labels)
        ):
            return q, "labels"
        if reference is not None:
            return quality_vs_reference(self.node, self.ids, res, reference), "champion"
        return None, ""


def assess(
    node: plan.UnaryNode,
    records: Sequence[Record],
    result: OperatorResult,
    decision: Decision,
    client_for: Callable[[str | None], ChatModel],
    settings: TuningSettings,
    log: Callable[[str], None],
    history: NodeHistory | None = None,
    scorer: ProxyScorer | None = None,
    labels: ValidationSet | None = None,
) -> Assessment:
    """Quality of the chosen run, and the sample runs of the champion and the explored
    candidates (each recorded as a run of its own). For a semantic filter with proxy
    strategies enabled, also the proxies' scores of the judged records (what their thresholds
    are learned from; ``scorer`` may hold them already) and each proxy's quality on them with
    the threshold learned before. ``labels``: what to judge by instead of the settings'
    (a filter of a chain: less the records another filter of the chain dropped)."""
    labels = labels if labels is not None else settings.get_labels()
    chosen = decision.candidate(node.name)
    evaluated = [str(r[RECORD_ID]) for r in records if not r.get(ERROR)]
    out = Assessment(cascade_pairs=cascade_pairs(chosen, result, labels))
    if labels is not None:
        out.quality = quality_vs_labels(node, evaluated, result, labels)
        out.source = "labels" if out.quality else ""
    if chosen.strategy == CERTIFIED:
        # the oracle decides what the certified thresholds leave it, and the guarantee check
        # reports on the batch: a champion sample would only pay the oracle twice
        return out
    sample = _Sample(node, records, settings, client_for, history, out, labels)
    reference = _reference(sample, result, decision)
    _explore(sample, decision, reference, log)
    if isinstance(node, plan.SemanticFilter) and "few_shot" in settings.strategies and labels:
        out.examples = _examples(node, records, labels)
    proxies = [p for p in settings.strategies if p in PROXIES]
    if isinstance(node, plan.SemanticFilter) and proxies:
        scorer = scorer or ProxyScorer(node, None)
        _judge_proxies(sample, records, evaluated, reference, proxies, scorer, log)
    if isinstance(node, plan.SemanticFilter) and not sample.labelled:
        sample.results.setdefault(chosen.key, result)
        out.label_free = label_free_estimate(node, sample)
    return out


# Fewest judges a label model learns their accuracies from (two can only agree or not).
LABEL_FREE_SOURCES = 3


def predicate_terms_votes(node: plan.SemanticFilter, records: Sequence[Record]) -> list[bool]:
    """A judge that needs no model: the record names what the predicate names. With quoted
    phrases in the predicate, one of them; otherwise at least half its content words."""
    quoted, words = predicate_terms(node.predicate)
    need = QUOTED_WEIGHT if quoted else max(1.0, len(words) / 2)
    return [s >= need for s in lexical_scores(node, records)]


def label_free_estimate(node: plan.SemanticFilter, sample: _Sample) -> dict[str, Any] | None:
    """Each judge's quality on the batch's sample, estimated without labels: the decisions of
    the runs on it (the chosen one, the champion, the explored candidates) and the predicate's
    own terms, combined by a label model (``optimizer.label_model``: Dawid-Skene, EM from the
    majority vote, bootstrap intervals). Recorded for the history; None with fewer than
    ``LABEL_FREE_SOURCES`` judges or when they all agree on every record."""
    if not sample.records:
        return None
    votes: dict[str, list[bool | None]] = {}
    for key, res in sample.results.items():
        kept, failed = _kept(res), {str(r[RECORD_ID]) for r in res.records if r.get(ERROR)}
        votes[key] = [None if r in failed else r in kept for r in sample.ids]
    votes["predicate_terms"] = list(predicate_terms_votes(node, sample.records))
    if len(votes) < LABEL_FREE_SOURCES or len({tuple(v) for v in votes.values()}) < 2:
        return None
    fitted = fit(votes, bootstrap=20)
    return {
        "method": fitted.method,
        "records": len(sample.ids),
        "prior": round(fitted.prior, 4),
        "sources": {
            name: {
                "f1": round(q.f1, 4),
                "f1_interval": [round(x, 4) for x in q.f1_interval],
                "precision": round(q.precision, 4),
                "recall": round(q.recall, 4),
                "accuracy": round(q.accuracy, 4),
                "votes": q.votes,
            }
            for name, q in fitted.sources.items()
        },
    }


def _reference(
    sample: _Sample, result: OperatorResult, decision: Decision
) -> OperatorResult | None:
    """The champion's answers on the sample, when something must be judged against them: the
    chosen run without labels, or explored candidates on a sample the labels do not cover.
    Sets the chosen run's quality against them when it is not the champion."""
    node, out = sample.node, sample.out
    chosen, champion = decision.candidate(node.name), decision.champions.get(node.name)
    explored = [c for c in decision.exploration.get(node.name, ()) if c.strategy not in PROXIES]
    needs_reference = out.quality is None or (explored and not sample.labelled)
    if champion is None or not sample.records or not needs_reference:
        return None
    if champion.key == chosen.key:
        ids = set(sample.ids)
        return OperatorResult(
            [r for r in result.records if str(r[RECORD_ID]) in ids],
            result.stats,
            result.strategy,
            result.model,
        )
    reference = sample.run(champion)
    sample.record(champion, reference, None, "")
    if out.quality is None:
        out.quality = quality_vs_reference(node, sample.ids, result, reference)
        out.source = "champion"
    return reference


def _explore(
    sample: _Sample,
    decision: Decision,
    reference: OperatorResult | None,
    log: Callable[[str], None],
) -> None:
    """Run the candidates the optimizer explores on the sample, each judged on it."""
    node = sample.node
    for cand in decision.exploration.get(node.name, ()):
        if not sample.records:
            break
        if cand.strategy in PROXIES:  # judged on every partition, at no model cost
            continue
        if cand.strategy == "code_synthesis" and len(sample.records) < MIN_SYNTHESIS_SAMPLE:
            # one answer induces functions that can only agree with it: a cost that tells
            # nothing of them. From two on, the functions induced from the answers decide the
            # sample's records too (run_synthesis, step 4): what they output is judged.
            log(f"{node.name}: not exploring {cand.key} on a sample of {len(sample.records)}")
            continue
        try:
            res = sample.run(cand)
        except Exception as exc:  # a candidate that cannot run is noted, not fatal
            log(f"{node.name}: exploring {cand.key} failed: {exc}")
            continue
        sample.record(cand, res, *sample.judge(res, reference))


def _examples(
    node: plan.SemanticFilter, records: Sequence[Record], labels: ValidationSet
) -> list[tuple[str, bool]]:
    """Labelled excerpts of the batch, ``FEW_SHOT_EACH`` per answer, for few-shot prompts."""
    labelled = [r for r in records if not r.get(ERROR) and str(r[RECORD_ID]) in labels]
    out = []
    for want in (True, False):
        for r in [r for r in labelled if labels.relevant(str(r[RECORD_ID])) == want][
            :FEW_SHOT_EACH
        ]:
            out.append((render_fields(r, node.depends_on)[:EXAMPLE_CHARS], want))
    return out


def _judge_proxies(
    sample: _Sample,
    records: Sequence[Record],
    evaluated: Sequence[str],
    reference: OperatorResult | None,
    proxies: Sequence[str],
    scorer: ProxyScorer,
    log: Callable[[str], None],
) -> None:
    """Each proxy's scores of the judged records (the labelled ones, else the sample against
    the champion) and its quality on them, with the threshold learned before or, the first
    time it can be learned, each example judged by the threshold the others teach."""
    node, out, labels, history = sample.node, sample.out, sample.labels, sample.history
    if labels is not None and any(r in labels for r in evaluated):
        judged = [r for r in records if not r.get(ERROR) and str(r[RECORD_ID]) in labels]
        truth = [labels.relevant(str(r[RECORD_ID])) for r in judged]
        source = "labels"
    elif reference is not None:
        ref = _kept(reference)
        judged, truth, source = list(sample.records), [r in ref for r in sample.ids], "champion"
    else:
        return
    for proxy in proxies:
        if not judged:
            break
        try:
            scored = scorer.score(proxy, judged)
        except Exception as exc:  # a proxy that cannot score is noted, not fatal
            log(f"{node.name}: scoring {proxy} failed: {exc}")
            continue
        current = list(zip(scored.scores, truth, strict=True))
        out.proxy_pairs[proxy] = current
        out.proxy_pairs_source = source
        past = history.pairs(proxy) if history else []
        if {y for _, y in past} == {True, False}:  # learned before, judged on this batch
            threshold = learn_signed_threshold([x for x, _ in past], [y for _, y in past])
            counts = apply_threshold(threshold, scored.scores, truth)
        else:  # the first time it can be learned: each example judged by all the others
            pairs = first_pairs(history, proxy, source, current)
            if pairs is None:
                continue
            threshold, counts = first_quality(pairs)
        out.sample_runs.append(
            RunRecord(
                config=Candidate(node.name, proxy, None).config(**threshold_params(threshold)),
                records=int(sum(counts.as_tuple()[:4])),  # judged (leave-one-out: all)
                dollars=scored.dollars,
                seconds=scored.seconds,
                records_out=int(counts.tp + counts.fp),
                quality=counts,
                quality_source=source,
            )
        )
