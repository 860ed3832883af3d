"""A semantic filter with a stated guarantee: ``sem_filter(..., target=Recall(0.9, delta=0.05),
label_budget=200)``.

A cheap score decides the records it can decide within the target, and the oracle (the
strong model, ``models[-1]``) the rest. The score is the cheap model's signed confidence
(``models[0]``, as in the cascade) or a proxy's (``scorer="lexical_proxy"`` /
``"embedding_proxy"``). Its thresholds are certified on oracle labels of records drawn from
the batch, at most ``label_budget`` of them (``optimizer.guarantees`` states the method and
what it guarantees), carried to the next batch, and audited there.

``extras["guarantee"]`` says what the batch was decided by: the certificates, how they came
about (certified here, carried and audited, re-certified after a drift, dropped, or
uncertified), and what the oracle was asked."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from optimizer.guarantees import Certificate, Labels, guarantee_for
from pz_dagster.errors import PlanError, RecordFailure
from pz_dagster.models.base import ChatModel, Usage
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators.base import (
    OperatorResult,
    OperatorStats,
    Progress,
    Record,
    Tally,
    split_failed,
)
from pz_dagster.operators.filter import confidence_score, holds
from pz_dagster.operators.prompts import render_fields
from pz_dagster.operators.proxy import PROXIES, scores_for
from pz_dagster.query.plan import SemanticFilter
from pz_dagster.query.schema import RECORD_ID

DEFAULT_LABEL_BUDGET = 200
AUDIT_DRAWS = 40  # oracle draws per target that audit a carried certificate on a new batch


def _rng(node: SemanticFilter, records: Sequence[Record], seed: int) -> random.Random:
    """Draws fixed by the seed, the operator and the batch: a re-run draws the same records."""
    ids = hashlib.sha256("\n".join(str(r.get(RECORD_ID)) for r in records).encode()).hexdigest()
    return random.Random(f"{seed}:{node.name}:{ids}")


class _Oracle:
    """The strong model's answers on records by index, asked concurrently; a record it fails
    on gets None, and its failure is kept for the record's error."""

    def __init__(self, node: SemanticFilter, texts: Sequence[str], model: ChatModel):
        self.node, self.texts, self.model = node, texts, model
        self.usage = Usage()
        self.failures: dict[int, RecordFailure] = {}
        self.calls = 0

    def _one(self, i: int) -> tuple[bool | None, Usage]:
        tally = Tally()
        try:
            return holds(self.texts[i], self.node.predicate, self.model, tally)[0], tally.usage
        except RecordFailure as exc:
            self.failures[i] = exc
            return None, exc.usage if isinstance(exc.usage, Usage) else tally.usage

    def __call__(self, indices: Sequence[int]) -> list[bool | None]:
        self.calls += len(indices)
        workers = max(1, min(self.model.max_concurrency, len(indices)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pz-oracle") as pool:
            answers = list(pool.map(self._one, indices))
        for _, spent in answers:
            self.usage += spent
        return [a for a, _ in answers]


def model_scores(
    texts: Sequence[str], predicate: str, model: ChatModel
) -> tuple[list[float | None], Usage, int]:
    """The cheap model's signed confidence per text (None where it failed), its usage, and the
    chunks it read."""

    def one(text: str) -> tuple[float | None, Usage, int]:
        tally = Tally()
        try:
            score, chunks = confidence_score(text, predicate, model, tally)
            return score, tally.usage, chunks
        except RecordFailure as exc:
            return None, exc.usage if isinstance(exc.usage, Usage) else tally.usage, 1

    workers = max(1, min(model.max_concurrency, len(texts)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pz-score") as pool:
        got = list(pool.map(one, texts))
    usage = Usage()
    for _, spent, _ in got:
        usage += spent
    return [s for s, _, _ in got], usage, sum(c for _, _, c in got)


def certified_filter(
    node: SemanticFilter,
    records: list[Record],
    models: Sequence[ChatModel],
    progress: Progress | None = None,
    *,
    certificates: Sequence[Mapping[str, Any]] = (),
    scorer: str | None = None,
    embedder: EmbeddingModel | None = None,
    seed: int = 0,
    audit_draws: int = AUDIT_DRAWS,
) -> OperatorResult:
    """Keep the records the predicate holds for, within ``node.target`` (see the module).
    ``certificates``: what an earlier batch certified (from the history), audited here before
    it is used. Records the cheap model cannot score go to the oracle; records the oracle fails
    on are kept with their error, as with every operator."""
    if not node.target:
        raise PlanError(f"the certified cascade of {node.name!r} needs a target (Recall/Precision)")
    if len(models) < 2 and scorer not in PROXIES:
        raise PlanError("a certified cascade needs a cheap scorer and a strong model (the oracle)")
    cheap, strong = models[0], models[-1]
    ok, failed = split_failed(records)
    texts = [render_fields(r, node.depends_on) for _, r in ok]
    if progress:
        progress(0, len(ok), Usage())
    if scorer in PROXIES:
        proxy_scores, score_usage = scores_for(scorer, node, [r for _, r in ok], embedder)
        scores: list[float | None] = list(proxy_scores)
        chunks = len(ok)
    else:
        scores, score_usage, chunks = model_scores(texts, node.predicate, cheap)
    scored = [j for j, s in enumerate(scores) if s is not None]
    oracle = _Oracle(node, texts, strong)
    # the certification's population: the scored records (an unscored one always goes to the
    # oracle, which can only raise recall and precision)
    budget = DEFAULT_LABEL_BUDGET if node.label_budget is None else node.label_budget
    labels = Labels(lambda idx: oracle([scored[i] for i in idx]), budget)
    carried = [Certificate.from_dict(c) for c in certificates]
    g = guarantee_for(
        node.target,
        [float(scores[j]) for j in scored],  # type: ignore[arg-type]
        labels,
        _rng(node, [r for _, r in ok], seed),
        carried,
        audit_draws,
    )
    known = {scored[i]: y for i, y in labels.known.items()}
    decided: dict[int, bool | None] = {}
    ask: list[int] = []
    for j, s in enumerate(scores):
        if known.get(j) is not None:
            decided[j] = known[j]
        elif j in known:  # the oracle failed on it while labelling: its failure stands
            decided[j] = None
        elif (by_score := None if s is None else g.decide(float(s))) is not None:
            decided[j] = by_score
        else:
            ask.append(j)
    for j, y in zip(ask, oracle(ask) if ask else [], strict=True):
        decided[j] = y
    stats = OperatorStats(
        records_in=len(records), evaluated=len(ok), passed_through_errors=len(failed)
    )
    stats.usage = score_usage + oracle.usage
    if chunks > len(ok):
        stats.chunks_total = chunks
    keep: dict[int, Record | None] = {i: r for i, r in failed}
    for j, (i, record) in enumerate(ok):
        if decided[j] is None:
            exc = oracle.failures.get(j)
            message = str(exc) if exc else "the oracle gave no answer"
            keep[i] = stats.fail(record, node.name, message, bool(exc and exc.transport))
        else:
            keep[i] = record if decided[j] else None
    out = [keep[i] for i in range(len(records)) if keep.get(i) is not None]
    stats.records_out = len(out)
    if progress:
        progress(len(ok), len(ok), stats.usage)
    asked = set(ask)
    by_score = sum(1 for j in range(len(ok)) if j not in known and j not in asked)
    report = g.to_dict() | {
        "scorer": scorer or cheap.model_name,
        "oracle": strong.model_name,
        "label_budget": budget,
        "oracle_calls": oracle.calls,
        "oracle_dollars": oracle.usage.dollars,
        "scorer_dollars": score_usage.dollars,
        "decided_by_score": by_score,
        "decided_by_oracle": sum(1 for j in known if known[j] is not None) + len(ask),
        # records the thresholds left to the oracle (labelled while certifying, or asked)
        "escalated": labels.escalated + len(ask),
        "unscored": len(ok) - len(scored),
    }
    names = f"{scorer or cheap.model_name}+{strong.model_name}"
    result = OperatorResult(out, stats, strategy="certified_cascade", model=names)
    result.extras["guarantee"] = report
    return result
