"""After an optimized operator ran: its quality on a sample (against the labels, else the
champion), the candidates explored on that sample, what proxies and cascades learn from, and
the metadata that records it all for the next decision (``planning.read_history``)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from optimizer import (
    Candidate,
    Decision,
    QualityCounts,
)
from optimizer.quality import ValidationSet, field_counts, filter_counts
from optimizer.thresholds import (
    apply_threshold,
    learn_signed_threshold,
)
from pz_dagster.models.base import ChatModel
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators import OperatorResult, run_operator
from pz_dagster.operators.base import Record
from pz_dagster.operators.code_synthesis.run import SAMPLE_SIZE as SYNTHESIS_SAMPLE
from pz_dagster.operators.filter import EXAMPLE_CHARS
from pz_dagster.operators.prompts import render_fields
from pz_dagster.operators.proxy import PROXIES, scores_for
from pz_dagster.orchestration.planning import (
    FEW_SHOT_EACH,
    NodeHistory,
    OptimizerResource,
    first_pairs,
    first_quality,
    strategy_params,
    threshold_params,
)
from pz_dagster.query import plan
from pz_dagster.query.schema import ERROR, RECORD_ID


def sample_of(records: Sequence[Record], n: int, labels: ValidationSet | None) -> list[Record]:
    """A deterministic sample, by a hash of the record id: only labelled records when the
    batch has any (they are judged against their labels, so exploring on them needs no
    champion run for a reference), else any.

    >>> recs = [{RECORD_ID: i} for i in "abcd"]
    >>> [r[RECORD_ID] for r in sample_of(recs, 3, ValidationSet({"b": None, "d": None}))]
    ['d', 'b']
    >>> len(sample_of(recs, 3, ValidationSet({"x": None})))
    3
    """
    ok = [r for r in records if not r.get(ERROR)]
    if labels is not None and any(str(r[RECORD_ID]) in labels for r in ok):
        ok = [r for r in ok if str(r[RECORD_ID]) in labels]

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
        if cand.strategy == "code_synthesis" and len(sample) <= SYNTHESIS_SAMPLE:
            # the model would answer the whole sample to write the functions, which would then
            # answer none of it: a one-time cost that tells nothing of them
            log(f"{node.name}: not exploring {cand.key} on a sample of {len(sample)}")
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
            if {y for _, y in past} == {True, False}:  # learned before, judged on this batch
                threshold = learn_signed_threshold([x for x, _ in past], [y for _, y in past])
                counts = apply_threshold(threshold, scores, truth)
            else:  # the first time it can be learned: each example judged by all the others
                pairs = first_pairs(history, proxy, source, list(zip(scores, truth, strict=True)))
                if pairs is None:
                    continue
                threshold, counts = first_quality(pairs)
            out.sample_runs.append(
                {
                    "config": json.loads(
                        Candidate(node.name, proxy, None)
                        .config(**threshold_params(threshold))
                        .to_json()
                    ),
                    "records": int(sum(counts.as_tuple()[:4])),  # judged (leave-one-out: all)
                    "dollars": usage.dollars,
                    "seconds": seconds,
                    "records_out": int(counts.tp + counts.fp),
                    "quality": _counts_dict(counts),
                    "quality_source": source,
                }
            )
    return out


def _counts_dict(q: QualityCounts) -> dict[str, float]:
    return dict(zip(("tp", "fp", "fn", "tn", "agree", "total"), q.as_tuple(), strict=True))


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
        # code synthesis's one-time part, which the history leaves out of the recurring cost
        "one_time": {
            k: res.extras[k]
            for k in ("sample", "synthesis_tokens", "fallback_tokens")
            if k in res.extras
        },
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
            + (f"{note}\n\n" if (note := decision.dollars_note()) else "")
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
