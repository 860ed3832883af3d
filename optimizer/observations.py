"""Observations (what a candidate did on a partition or a sample) and the estimates built from
them and the priors.

Quality is kept as counts, not as a ratio, so that estimates over many small samples are exact:
a filter's (tp, fp, fn, tn) against the reference give its F1 (a rare-positive filter that keeps
nothing is 95% accurate and useless; its F1 says so), a map's (agree, total) its accuracy.
Older observations of a candidate weigh less the more has been observed since (see
``EstimateSettings``), so a model whose quality drops is noticed after a few partitions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from optimizer.candidates import (
    CASCADE_ESCALATION_PRIOR,
    PROXY_QUALITY_PRIOR,
    STRATEGIES,
    Candidate,
    ModelProfile,
    OperatorSpec,
)


@dataclass(frozen=True)
class QualityCounts:
    """Agreement with a reference (labels or the champion) on some records.

    >>> QualityCounts(tp=8, fp=2, fn=0, tn=90).f1
    0.8888888888888888
    >>> QualityCounts(agree=9, total=10).score
    0.9
    """

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0
    tn: float = 0.0
    agree: float = 0.0  # for non-filters: records whose output equals the reference's
    total: float = 0.0

    @property
    def is_filter(self) -> bool:
        return self.tp + self.fp + self.fn + self.tn > 0

    @property
    def f1(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else 2 * self.tp / denominator

    @property
    def evidence(self) -> float:
        """How many records the score rests on (for a filter: those any side called positive)."""
        if self.is_filter:
            return self.tp + self.fp + self.fn
        return self.total

    @property
    def score(self) -> float:
        if self.is_filter:
            return self.f1
        return 1.0 if self.total == 0 else self.agree / self.total

    def scaled(self, w: float) -> QualityCounts:
        return QualityCounts(*(w * v for v in self.as_tuple()))

    def as_tuple(self) -> tuple[float, ...]:
        return (self.tp, self.fp, self.fn, self.tn, self.agree, self.total)

    def __add__(self, other: QualityCounts) -> QualityCounts:
        return QualityCounts(
            *(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True))
        )


@dataclass(frozen=True)
class Observation:
    """What one candidate did on ``records`` records (a partition or a sample of one)."""

    candidate: Candidate
    records: int
    # what the run cost apart from a strategy's one-time cost (code synthesis's sample and
    # functions), which the estimate adds on its own terms
    dollars: float = 0.0
    seconds: float = 0.0  # model time (summed over calls), comparable across concurrency
    records_out: int | None = None
    quality: QualityCounts | None = None
    quality_source: str = ""  # "labels" or "champion"
    sequence: float = 0.0  # orders observations in time (e.g. the event's timestamp)
    costed: bool = True  # False when dollars/seconds are unknown (answers came from a cache)


@dataclass(frozen=True)
class Estimate:
    """Per input record: dollars, seconds, output records (selectivity) and quality."""

    cost: float
    seconds: float
    selectivity: float
    quality: float
    records_seen: float = 0.0  # effective number of observed records behind cost/time
    quality_evidence: float = 0.0  # effective number of records behind quality
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def observed(self) -> bool:
        return self.records_seen > 0


def prior_estimate(
    op: OperatorSpec, candidate: Candidate, models: dict[str, ModelProfile]
) -> Estimate:
    """What the priors say before any observation."""
    s = STRATEGIES[candidate.strategy]
    if not s.uses_model:
        return Estimate(0.0, 0.001, op.selectivity, PROXY_QUALITY_PRIOR)
    used = [models[m] for m in candidate.models]
    prompt = op.prompt_tokens * s.prompt_factor
    out = op.output_tokens + s.extra_output_tokens
    if candidate.strategy == "cascade":
        cheap, strong = used[0], used[-1]
        cost = cheap.call_dollars(prompt, out) + CASCADE_ESCALATION_PRIOR * strong.call_dollars(
            prompt, out
        )
        seconds = cheap.call_seconds(prompt, out) + CASCADE_ESCALATION_PRIOR * strong.call_seconds(
            prompt, out
        )
        quality = strong.quality - 0.5 * (1 - CASCADE_ESCALATION_PRIOR) * (
            strong.quality - cheap.quality
        )
    elif candidate.strategy == "ensemble":
        cost = sum(m.call_dollars(prompt, out) for m in used)
        seconds = sum(m.call_seconds(prompt, out) for m in used)
        quality = majority_quality([m.quality for m in used])
    else:
        m = used[0]
        cost = s.calls * m.call_dollars(prompt, out)
        seconds = s.calls * m.call_seconds(prompt, out)
        quality = min(1.0, max(0.0, m.quality + s.quality_delta))
    once_cost, once_seconds = one_time_share(op, candidate, models)
    return Estimate(cost + once_cost, seconds + once_seconds, op.selectivity, quality)


def one_time_share(
    op: OperatorSpec, candidate: Candidate, models: dict[str, ModelProfile]
) -> tuple[float, float]:
    """Dollars and seconds per record of a strategy's one-time cost (code synthesis's sample
    answers and functions): spread over this run's records and those of the runs to come that
    reuse what it made; nothing once that is at hand.

    >>> from optimizer.candidates import ModelProfile, OperatorSpec, Candidate
    >>> m, c = ModelProfile("a", input_price=1e-6), Candidate("x", "code_synthesis", "a", ("a",))
    >>> one, ten = (one_time_share(OperatorSpec("x", "sem_map", batch_records=10, runs_ahead=r),
    ...             c, {"a": m})[0] for r in (1, 10))
    >>> round(one / ten, 6)
    10.0
    >>> one_time_share(OperatorSpec("x", "sem_map", paid_once=frozenset({"code_synthesis"})),
    ...                c, {"a": m})
    (0.0, 0.0)
    """
    s = STRATEGIES[candidate.strategy]
    if not s.fixed_calls or candidate.strategy in op.paid_once or not candidate.models:
        return 0.0, 0.0
    model = models[candidate.models[0]]
    records = max(op.batch_records, 1) * op.runs_ahead
    prompt = op.prompt_tokens * s.fixed_prompt_factor
    out = op.output_tokens + s.fixed_output_tokens
    return (
        s.fixed_calls * model.call_dollars(prompt, out) / records,
        s.fixed_calls * model.call_seconds(prompt, out) / records,
    )


def majority_quality(qualities: list[float]) -> float:
    """Probability that a majority of independent voters with these accuracies is right.

    >>> round(majority_quality([0.8, 0.8, 0.8]), 3)
    0.896
    """
    n = len(qualities)
    total = 0.0
    for mask in range(1 << n):
        right = [(mask >> i) & 1 for i in range(n)]
        if sum(right) * 2 > n:
            p = 1.0
            for q, r in zip(qualities, right, strict=True):
                p *= q if r else 1 - q
            total += p
    return total


@dataclass(frozen=True)
class EstimateSettings:
    """How observations and priors are blended.

    ``prior_records`` / ``prior_quality_records``: the weight of the priors (in records, in
    quality evidence); an observation's weight halves for every ``cost_half_life_records``
    records (cost, time, selectivity) or ``quality_half_life`` evidence (quality) observed after
    it, so that a model whose quality drops is noticed after a few partitions.
    """

    prior_records: float = 5.0
    prior_quality_records: float = 10.0
    cost_half_life_records: float = 500.0
    quality_half_life: float = 15.0


DEFAULT_SETTINGS = EstimateSettings()


def estimate(
    op: OperatorSpec,
    candidate: Candidate,
    models: dict[str, ModelProfile],
    observations: Iterable[Observation],
    settings: EstimateSettings = DEFAULT_SETTINGS,
) -> Estimate:
    """Prior blended with the candidate's observations (newer ones weigh more).

    >>> from optimizer.candidates import ModelProfile, OperatorSpec, Candidate
    >>> op, m = OperatorSpec("f", "sem_filter"), ModelProfile("a", input_price=1e-6)
    >>> c = Candidate("f", "direct", "a", ("a",))
    >>> seen = [Observation(c, 100, dollars=0.01, seconds=50, records_out=20)]
    >>> e = estimate(op, c, {"a": m}, seen)
    >>> round(e.selectivity, 2), round(e.cost * 1e4, 2)
    (0.24, 1.19)
    """
    prior = prior_estimate(op, candidate, models)
    # Observations hold what runs cost per record apart from the one-time cost (see
    # ``Observation``): the prior is blended with them without it, and it is added back.
    once_cost, once_seconds = one_time_share(op, candidate, models)
    # Only this operator's own runs: selectivity, quality and cost per record are properties of
    # an operator (its predicate, its prompt), never of the model alone. What operators share
    # is what the model is (price, tokens per second: ``ModelProfile``), through the prior.
    mine = sorted(
        (o for o in observations if is_own(o, candidate) and o.records > 0),
        key=lambda o: o.sequence,
    )
    if not mine:
        return prior
    # Older observations weigh less the more has been seen since: cost and time by records,
    # quality by evidence. An observation that adds no evidence (a sample without positives)
    # does not age the quality evidence before it.
    record_w = _aging([o.records for o in mine], settings.cost_half_life_records)
    labelled_only = any(o.quality is not None and o.quality_source == "labels" for o in mine)
    quality_w = _aging(
        [
            o.quality.evidence
            if o.quality and (not labelled_only or o.quality_source == "labels")
            else 0.0
            for o in mine
        ],
        settings.quality_half_life,
    )
    k = settings.prior_records
    costed = [(w, o) for w, o in zip(record_w, mine, strict=True) if o.costed]
    n = sum(w * o.records for w, o in costed)
    recurring = k * (prior.cost - once_cost) + sum(w * o.dollars for w, o in costed)
    cost = recurring / (k + n) + once_cost
    recurring_s = k * (prior.seconds - once_seconds) + sum(w * o.seconds for w, o in costed)
    seconds = recurring_s / (k + n) + once_seconds
    with_out = [(w, o) for w, o in zip(record_w, mine, strict=True) if o.records_out is not None]
    n_out = sum(w * o.records for w, o in with_out)
    kept = sum(w * (o.records_out or 0) for w, o in with_out)
    selectivity = (k * prior.selectivity + kept) / (k + n_out)
    # Labels outrank the champion: once a candidate has been judged against labels, its
    # agreement with a (possibly weak) champion no longer counts.
    labelled = labelled_only
    counts = QualityCounts()
    for w, o in zip(quality_w, mine, strict=True):
        if o.quality is not None and (not labelled or o.quality_source == "labels"):
            counts = counts + o.quality.scaled(w)
    evidence = counts.evidence
    kq = settings.prior_quality_records
    quality = (kq * prior.quality + evidence * counts.score) / (kq + evidence)
    sources = tuple(sorted({o.quality_source for o in mine if o.quality_source}))
    return Estimate(cost, seconds, selectivity, quality, n, evidence, sources)


def is_own(observation: Observation, candidate: Candidate) -> bool:
    """Whether ``observation`` is of ``candidate``: the same operator, strategy and models."""
    seen = observation.candidate
    return seen.operator == candidate.operator and seen.key == candidate.key


def _aging(amounts: list[float], half_life: float) -> list[float]:
    """Weights of observations (oldest first): 1/2 per ``half_life`` of amount seen after each.

    >>> _aging([10, 0, 10], 10)
    [0.5, 0.5, 1.0]
    """
    out, after = [], 0.0
    for amount in reversed(amounts):
        out.append(0.5 ** (after / half_life))
        after += amount
    return out[::-1]


def ucb_bonus(evidence: float, total_evidence: float, c: float = 1.0) -> float:
    """The exploration bonus of UCB1 for a candidate whose quality rests on ``evidence``."""
    if evidence <= 0:
        return math.inf
    return c * math.sqrt(math.log(max(total_evidence, math.e)) / evidence)
