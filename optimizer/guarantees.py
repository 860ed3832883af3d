"""Filters with a stated guarantee: a recall or precision target, met with probability at
least ``1 - delta``, certified on oracle labels of records the method draws, within a label
budget.

A guaranteed filter decides most records by a cheap score (a small model's signed
confidence, or a proxy's score) and sends the rest to the oracle (the champion model). What
the guarantee is about is agreement with the oracle, as in LOTUS's cascades and BARGAIN:

- **recall**: of the records the oracle would keep, at least ``target`` are kept. The cheap
  score drops the records below a threshold ``low``; everything else goes to the oracle.
- **precision**: of the records kept, at least ``target`` are ones the oracle would keep.
  The cheap score keeps the records at or above ``high`` without asking the oracle; the rest
  go to it.
- both: the records below ``low`` are dropped, those at or above ``high`` kept, and the oracle
  decides in between; each target is certified at ``delta / 2`` (a union bound).

**Method** (certification holds for finite samples; no assumption on how the score relates to
the truth). Candidate thresholds are fixed before any label is seen: the batch's distinct
scores, or 64 of their quantiles. They are tested in a fixed sequence, from the safest (nothing
decided by the score) on, each with a one-sided Clopper-Pearson bound at level ``delta``; the
last threshold that passes before the first that fails is the certified one. Fixed-sequence
testing needs no correction for the many thresholds: the first false claim in the sequence
stops it only with probability ``delta`` at most.

- recall: one sample of the batch, drawn uniformly with replacement. Given how many of its
  draws are positives, the number of them scoring at or above a threshold is binomial in the
  threshold's recall, so one sample serves every threshold.
- precision: for each threshold, draws uniform on the records scoring at or above it (the
  region it would keep), so the count of positives among them is binomial in that region's
  precision. Regions are nested: a step's draws reuse the step before's with the probability
  of landing in its smaller region and draw the rest from where the region grew, which keeps
  them uniform on the region and asks for few new labels. Only each step's own test must be
  valid for fixed-sequence testing, so reusing draws across steps is sound.
- a batch no larger than the draws it would take is labelled whole, and the targets are then
  computed, not bounded.

Draws are with replacement so that the binomial bound is exact; the oracle is asked once per
distinct record, and the label budget counts distinct records. The labels are the oracle's, so
the records they cover are decided by them.

**Carrying a certificate to the next batch** assumes the score and the oracle relate there as
they did here. An audit checks it: a uniform sample of the new batch (for precision: of its
region kept), labelled by the oracle, and a one-sided upper bound of the achieved recall
(precision); if that bound falls below the target, the certificate is revoked (a drift) and
the batch certifies anew. The audit detects large drifts with few labels; a small drift can go
unnoticed for a while, which is what re-certifying every batch (``audit_draws=0``) avoids, at
the full budget each time.

Uniform sampling of the batch spends labels on records far below any threshold; for a rare
predicate a recall target needs a budget of roughly ``positives needed / share of
positives`` (about 22 positives for a 0.9 target at delta 0.1 if none is missed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

GRID_LEVELS = 64  # candidate thresholds at most (the batch's distinct scores, else quantiles)


@dataclass(frozen=True)
class Target:
    """A guarantee: ``kind`` ("recall" or "precision") of at least ``target`` with probability
    at least ``1 - delta``."""

    kind: str
    target: float
    delta: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("recall", "precision"):
            raise ValueError(f"a target is recall or precision, not {self.kind!r}")
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"a {self.kind} target is a share between 0 and 1, not {self.target}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta (the failure probability) is in (0, 1), not {self.delta}")

    def describe(self) -> str:
        return f"{self.kind} >= {self.target:g} with probability >= {1 - self.delta:g}"

    def split(self, parts: int) -> Target:
        return Target(self.kind, self.target, self.delta / parts)


def Recall(target: float, delta: float = 0.1) -> Target:  # noqa: N802 - reads as a declaration
    """``sem_filter(..., target=Recall(0.9, delta=0.05))``."""
    return Target("recall", target, delta)


def Precision(target: float, delta: float = 0.1) -> Target:  # noqa: N802
    """``sem_filter(..., target=Precision(0.9, delta=0.05))``."""
    return Target("precision", target, delta)


def parse_targets(value: Any) -> tuple[Target, ...]:
    """Targets from a declaration: a ``Target``, several, or a mapping as YAML writes it
    (``{recall: 0.9, precision: 0.8, delta: 0.05}``).

    >>> parse_targets({"recall": 0.9, "delta": 0.05})
    (Target(kind='recall', target=0.9, delta=0.05),)
    """
    if value is None:
        return ()
    if isinstance(value, Target):
        return (value,)
    if isinstance(value, Mapping):
        unknown = set(value) - {"recall", "precision", "delta"}
        if unknown:
            raise ValueError(
                f"unknown target keys {sorted(unknown)}; known: recall, precision, delta"
            )
        delta = float(value.get("delta", 0.1))
        out = tuple(
            Target(k, float(value[k]), delta) for k in ("recall", "precision") if k in value
        )
        if not out:
            raise ValueError("a target names recall, precision or both")
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        out = tuple(t for v in value for t in parse_targets(v))
        if len({t.kind for t in out}) != len(out):
            raise ValueError("one target per kind (recall, precision)")
        return out
    raise ValueError(f"a target is Recall(...), Precision(...) or a mapping, not {value!r}")


def lower_bound(k: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson lower bound of a proportion: ``k`` successes in ``n`` draws.

    >>> round(lower_bound(22, 22, 0.1), 3), lower_bound(0, 5, 0.1), lower_bound(0, 0, 0.1)
    (0.901, 0.0, 0.0)
    """
    if n <= 0 or k <= 0:
        return 0.0
    from scipy.stats import beta  # scipy comes with scikit-learn; imported on first use

    return float(beta.ppf(delta, k, n - k + 1))


def upper_bound(k: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson upper bound.

    >>> round(upper_bound(6, 12, 0.1), 3), upper_bound(3, 3, 0.1)
    (0.712, 1.0)
    """
    if n <= 0 or k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(1 - delta, k + 1, n - k))


class BudgetSpent(Exception):
    """The label budget is spent before a test could be made."""


# The oracle: the truth of some records (by index), None where it could not answer.
Oracle = Callable[[Sequence[int]], Sequence[bool | None]]


class Labels:
    """Oracle labels of a batch's records, each asked once, at most ``budget`` of them for
    certifying and auditing (``budget`` None: no limit)."""

    def __init__(self, oracle: Oracle, budget: int | None):
        self.oracle, self.budget = oracle, budget
        self.known: dict[int, bool | None] = {}
        self.spent = 0  # labels drawn to certify and audit (the budget's)
        self.escalated = 0  # labels of records the oracle decides anyway

    def left(self) -> float:
        return math.inf if self.budget is None else self.budget - self.spent

    def get(self, indices: Sequence[int], spend: bool = True) -> list[bool | None]:
        """The labels of ``indices``; raises ``BudgetSpent`` (asking nothing) when the new
        ones would exceed the budget. ``spend=False``: records the oracle decides anyway (the
        region a threshold sends to it), which the budget does not count."""
        new = list(dict.fromkeys(i for i in indices if i not in self.known))
        if spend and len(new) > self.left():
            raise BudgetSpent(f"{len(new)} new labels needed, {self.left():g} left")
        if new:
            answers = list(self.oracle(new))
            if len(answers) != len(new):
                raise ValueError(f"the oracle answered {len(answers)} of {len(new)} records")
            self.known.update(zip(new, answers, strict=True))
            if spend:
                self.spent += len(new)
            else:
                self.escalated += len(new)
        return [self.known[i] for i in indices]

    @property
    def failed(self) -> int:
        return sum(1 for v in self.known.values() if v is None)


def threshold_grid(scores: Sequence[float], levels: int = GRID_LEVELS) -> list[float]:
    """Candidate thresholds, ascending: the distinct scores, or ``levels`` quantiles of them.

    >>> threshold_grid([3, 1, 2, 2])
    [1, 2, 3]
    >>> len(threshold_grid([i / 1000 for i in range(1000)], 10))
    10
    """
    xs = sorted(set(scores))
    if len(xs) <= levels:
        return xs
    return sorted({xs[round(i * (len(xs) - 1) / (levels - 1))] for i in range(levels)})


@dataclass(frozen=True)
class Certificate:
    """A certified threshold: recall ``low`` (records scoring below it are dropped unasked), or
    precision ``high`` (records scoring at or above it are kept unasked); ``threshold`` None
    when none could be certified but the trivial one (the oracle decides every record: the
    score is of no use, it is dropped)."""

    kind: str
    target: float
    delta: float
    threshold: float | None
    bound: float  # the (1 - delta) lower bound at the threshold (the exact value if exact)
    estimate: float  # the sample's point estimate at the threshold
    draws: int
    labels: int  # distinct oracle labels this certification asked for
    exact: bool = False  # every record (of the regions tested) labelled: computed, not bounded
    note: str = ""
    # precision: of the output ("output": the kept region and what the oracle keeps below it)
    # or of the kept region alone ("kept": with a recall threshold the oracle's share is unknown)
    scope: str = "kept"
    floor: float | None = None  # precision beside recall: the oracle's region starts here

    @property
    def useful(self) -> bool:
        return self.threshold is not None

    @classmethod
    def none(cls, target: Target, note: str, **more: Any) -> Certificate:
        """No threshold certified for ``target``, and why."""
        return cls(
            target.kind, target.target, target.delta, None, 0.0, 0.0, 0, 0, note=note, **more
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Certificate:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _draws_for(target: Target) -> int:
    """Draws per precision step: four times the fewest with which all-positive draws certify
    ``target`` (so that a region a little above the target passes), at least 60. A step reuses
    the draws before it, so it asks for new labels only where its region grew.

    >>> _draws_for(Target("precision", 0.9, 0.1))
    88
    """
    fewest = math.ceil(math.log(target.delta) / math.log(target.target))
    return max(60, 4 * fewest)


def certify_recall(
    scores: Sequence[float],
    labels: Labels,
    target: Target,
    rng: random.Random,
    draws: int,
    idx: Sequence[int] | None = None,
) -> Certificate:
    """The highest threshold ``low`` whose recall is certified (see the module's method): one
    uniform sample of the batch; given how many of its draws are positives, the number of
    them at or above a threshold is binomial in the threshold's recall, so the one sample
    tests the whole grid in a fixed sequence, from the lowest threshold up. ``idx``: the sample,
    drawn by the caller (to share it)."""
    n = len(scores)
    spent_before = labels.spent
    grid = threshold_grid(scores)
    if idx is None:
        idx = list(range(n)) if n <= draws else [rng.randrange(n) for _ in range(draws)]
    exact = len(idx) == n and set(idx) == set(range(n))
    try:
        ys = labels.get(idx)
    except BudgetSpent as exc:
        return Certificate.none(target, f"not certified: {exc}")
    positives = [scores[i] for i, y in zip(idx, ys, strict=True) if y]
    m = len(positives)
    chosen: float | None = None
    bound = estimate = 1.0
    for t in grid[1:]:  # grid[0], the lowest score, drops nothing: recall 1 by construction
        k = sum(1 for x in positives if x >= t)
        est = k / m if m else 1.0
        b = est if exact else lower_bound(k, m, target.delta)
        if b < target.target:
            break
        chosen, bound, estimate = t, b, est
    failed = sum(1 for y in ys if y is None)
    note = f"{m} positives in {len(idx)} draws" + (f", {failed} unanswered" if failed else "")
    return Certificate(
        "recall",
        target.target,
        target.delta,
        chosen,
        bound,
        estimate,
        len(idx),
        labels.spent - spent_before,
        exact,
        note,
    )


def certify_precision(
    scores: Sequence[float],
    labels: Labels,
    target: Target,
    rng: random.Random,
    draws: int,
    below: int = 0,
    shared: Sequence[int] | None = None,
    floor: float | None = None,
) -> Certificate:
    """The lowest threshold whose kept region's precision is certified, testing from the
    highest score down (see the module's method). Each step's ``draws`` are uniform on its
    region; they reuse the step before's (uniform on the smaller region inside it) with the
    probability of landing there, and draw the rest from the region's new part, so a step
    asks for labels mostly where the region grew.

    ``below`` > 0: the target is the output's precision, the kept region together with the
    records the oracle keeps below it (every record below goes to it). Those positives are
    bounded below by ``below`` uniform draws of the batch (restricted to the records below a
    threshold, they are uniform on them); each bound is taken at ``delta / 2``, and the output's
    precision is at least ``(kept positives + oracle's positives) / (kept + oracle's
    positives)`` at the two lower bounds. ``shared``: those draws already made (a recall
    target's uniform sample), and ``floor``: the recall threshold, below which records are
    dropped, so the oracle's positives are those between ``floor`` and the threshold."""
    grid = [t for t in threshold_grid(scores) if floor is None or t >= floor]
    spent_before, total_draws = labels.spent, 0
    output = bool(below or shared)
    level = target.delta / 2 if output else target.delta
    low = -math.inf if floor is None else floor
    sample: list[tuple[float, bool]] = []
    if shared:
        sample = [(scores[i], y) for i in shared if (y := labels.known.get(i)) is not None]
    elif below:
        idx = [rng.randrange(len(scores)) for _ in range(below)]
        try:
            got = labels.get(idx)
        except BudgetSpent as exc:
            return Certificate.none(target, f"not certified: {exc}", scope="output")
        sample = [(scores[i], y) for i, y in zip(idx, got, strict=True) if y is not None]
        total_draws += len(idx)
    chosen: float | None = None
    bound = estimate = 0.0
    note = ""
    previous: list[int] = []
    inside: set[int] = set()
    for t in reversed(grid):
        region = [i for i, s in enumerate(scores) if s >= t]
        idx = _pooled_draws(previous, inside, region, draws, rng)
        try:
            ys = labels.get(idx)
        except BudgetSpent as exc:
            note = f"stopped at {t:g}: {exc}"
            break
        total_draws += len(idx)
        b, k, n = _region_bound(labels, region, ys, level)
        if output:
            drawn = [y for x, y in sample if low <= x < t]
            under = sum(1 for x in scores if low <= x < t)
            added = under * lower_bound(sum(drawn), len(drawn), level) if drawn else 0.0
            b = (len(region) * b + added) / (len(region) + added)
        if b < target.target:
            note = f"stopped at {t:g}: bound {b:.3f} < {target.target:g}"
            break
        chosen, bound, estimate = t, b, k / n
        previous, inside = idx, set(region)
    return Certificate(
        "precision", target.target, target.delta, chosen, bound, estimate, total_draws,
        labels.spent - spent_before, False, note, "output" if output else "kept", floor,
    )  # fmt: skip


def _pooled_draws(
    previous: Sequence[int],
    inside: set[int],
    region: Sequence[int],
    draws: int,
    rng: random.Random,
) -> list[int]:
    """``draws`` uniform on ``region``: the step before's draws (uniform on ``inside``, the
    smaller region within it) reused with the probability of landing there, the rest drawn
    from where the region grew."""  # fmt: skip
    shell = [i for i in region if i not in inside]
    share = len(inside) / len(region)
    pool = iter(previous)
    idx = []
    for _ in range(draws):
        if rng.random() < share:
            reused = next(pool, None)
            idx.append(reused if reused is not None else rng.choice(sorted(inside)))
        else:
            idx.append(shell[rng.randrange(len(shell))])
    return idx


def _region_bound(
    labels: Labels, region: Sequence[int], ys: Sequence[bool | None], level: float
) -> tuple[float, int, int]:
    """(lower bound of the region's share of positives, positives, answered draws): computed
    when every record of the region is labelled, else bounded from the draws ``ys``."""
    whole = [labels.known.get(i) for i in region]
    if all(i in labels.known for i in region) and any(y is not None for y in whole):
        answered = [y for y in whole if y is not None]
        return sum(answered) / len(answered), sum(answered), len(answered)
    answered = [y for y in ys if y is not None]
    k, n = sum(answered), len(answered)
    return lower_bound(k, n, level), k, n


def certify(
    scores: Sequence[float],
    labels: Labels,
    target: Target,
    rng: random.Random,
    draws: int | None = None,
    below: int = 0,
) -> Certificate:
    """Certify one target (``below``: see ``certify_precision``). Recall: ``draws`` defaults to what the budget allows (at most ten
    per record); precision: per step, ``_draws_for`` the target."""
    if target.kind == "recall":
        n = draws if draws is not None else int(min(labels.left(), 10 * len(scores)))
        return certify_recall(scores, labels, target, rng, n)
    return certify_precision(scores, labels, target, rng, draws or _draws_for(target), below)


@dataclass(frozen=True)
class Audit:
    """A carried certificate checked on a new batch: ``rejected`` when the (1 - delta) upper
    bound of what it achieves there falls below its target."""

    kind: str
    estimate: float
    upper: float
    draws: int
    labels: int
    rejected: bool
    ran: bool = True  # False: no answered draw to judge by

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit(
    cert: Certificate,
    scores: Sequence[float],
    labels: Labels,
    rng: random.Random,
    draws: int,
    high: float | None = None,
) -> Audit:
    """Judge ``cert`` on this batch's ``scores`` by ``draws`` oracle labels (see the module).

    Precision: draws from the region it keeps; rejected when the upper bound of their share of
    positives is below the target. Recall: the oracle's region (at or above ``low``, below
    ``high`` where a precision threshold keeps the rest unasked) is labelled, as the decisions
    need; draws from the records below ``low`` give a lower bound of the positives dropped,
    and so an upper bound of recall (the kept-unasked records counted as all positive)."""
    spent_before = labels.spent
    if cert.threshold is None:  # nothing decided by the score: nothing can be missed
        return Audit(cert.kind, 1.0, 1.0, 0, 0, rejected=False)
    top = math.inf if high is None else high
    if cert.kind == "recall":
        pool = [i for i, s in enumerate(scores) if s < cert.threshold]
    else:
        pool = [i for i, s in enumerate(scores) if s >= cert.threshold]
    if not pool:
        return Audit(cert.kind, 1.0, 1.0, 0, 0, rejected=False)
    idx = [pool[rng.randrange(len(pool))] for _ in range(draws)]
    try:
        ys = labels.get(idx)
    except BudgetSpent:
        return Audit(cert.kind, 0.0, 1.0, 0, 0, rejected=False, ran=False)
    answered = [y for y in ys if y is not None]
    k, n = sum(answered), len(answered)
    if not n:
        return Audit(cert.kind, 0.0, 1.0, len(idx), labels.spent - spent_before, False, False)
    if cert.kind == "precision" and cert.scope == "output":
        # the oracle's positives below the kept region raise the output's precision: bound
        # them above too (each bound at delta / 2)
        low = -math.inf if cert.floor is None else cert.floor
        under = [i for i, s in enumerate(scores) if low <= s < cert.threshold]
        extra = [under[rng.randrange(len(under))] for _ in range(draws)] if under else []
        try:
            got = [y for y in labels.get(extra) if y is not None]
        except BudgetSpent:
            return Audit(cert.kind, 0.0, 1.0, len(idx), labels.spent - spent_before, False, False)
        kept_up = len(pool) * upper_bound(k, n, cert.delta / 2)
        added_up = len(under) * upper_bound(sum(got), len(got), cert.delta / 2) if got else 0.0
        added = len(under) * sum(got) / len(got) if got else 0.0
        upper = (kept_up + added_up) / (len(pool) + added_up)
        estimate = (len(pool) * k / n + added) / (len(pool) + added)
    elif cert.kind == "precision":
        upper, estimate = upper_bound(k, n, cert.delta), k / n
    else:
        region = [i for i, s in enumerate(scores) if cert.threshold <= s < top]
        known = labels.get(region, spend=False)
        counted = sum(1 for y in known if y) + sum(1 for s in scores if s >= top)
        lost_low = len(pool) * lower_bound(k, n, cert.delta)
        lost = len(pool) * k / n
        upper = counted / (counted + lost_low) if counted + lost_low else 1.0
        estimate = counted / (counted + lost) if counted + lost else 1.0
    return Audit(
        cert.kind,
        estimate,
        upper,
        len(idx),
        labels.spent - spent_before,
        rejected=upper < cert.target,
    )


@dataclass
class Guarantee:
    """What a guaranteed filter did on one batch: the certificates it decided by, how they came
    about (``mode``), the audits, and the oracle labels they took."""

    targets: tuple[Target, ...]
    certificates: list[Certificate] = field(default_factory=list)
    audits: list[Audit] = field(default_factory=list)
    mode: str = ""  # certified | carried | recertified | dropped | uncertified
    certified: bool = False
    reason: str = ""
    labels: int = 0  # oracle labels taken to certify and audit

    @property
    def low(self) -> float | None:
        return next((c.threshold for c in self.certificates if c.kind == "recall"), None)

    @property
    def high(self) -> float | None:
        p = next((c for c in self.certificates if c.kind == "precision"), None)
        if p is None or p.threshold is None:
            return None
        low = self.low
        return p.threshold if low is None else max(p.threshold, low)

    def decide(self, score: float) -> bool | None:
        """True: kept by the score, False: dropped by it, None: the oracle decides."""
        if self.low is not None and score < self.low:
            return False
        if self.high is not None and score >= self.high:
            return True
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": [asdict(t) for t in self.targets],
            "certificates": [c.to_dict() for c in self.certificates],
            "audits": [a.to_dict() for a in self.audits],
            "mode": self.mode,
            "certified": self.certified,
            "reason": self.reason,
            "labels": self.labels,
            "low": self.low,
            "high": self.high,
        }


def guarantee_for(
    targets: Sequence[Target],
    scores: Sequence[float],
    labels: Labels,
    rng: random.Random,
    carried: Sequence[Certificate] = (),
    audit_draws: int = 40,
) -> Guarantee:
    """The certificates one batch is decided by: the carried ones when their audit on this
    batch passes, else (or when there are none) new ones certified on it."""
    targets = tuple(sorted(targets, key=lambda t: t.kind != "recall"))
    parts = len(targets)
    out = Guarantee(targets)
    start = labels.spent
    matching = {c.kind: c for c in carried if c.kind in {t.kind for t in targets}}
    usable = len(matching) == parts and all(
        c.target == t.target and c.delta == t.split(parts).delta
        for t in targets
        for c in [matching[t.kind]]
    )
    if usable and audit_draws > 0 and any(c.useful for c in matching.values()):
        kept = matching.get("precision")
        high = kept.threshold if kept is not None else None
        out.audits = [
            audit(matching[t.kind], scores, labels, rng, audit_draws, high) for t in targets
        ]
        unchecked = not all(a.ran for a in out.audits)
        if unchecked or not any(a.rejected for a in out.audits):
            out.certificates = list(matching.values())
            out.mode, out.certified = "carried", not unchecked
            out.reason = (
                "the audit got no oracle answer: the carried thresholds are unchecked"
                if unchecked
                else "carried from an earlier batch; this batch's audit did not reject it"
            )
            out.labels = labels.spent - start
            return out
    certs: list[Certificate] = []
    recall = next((t for t in targets if t.kind == "recall"), None)
    precision = next((t for t in targets if t.kind == "precision"), None)
    shared: list[int] = []
    if recall is not None:
        # one uniform sample: the recall test's, and (beside a precision target) the bound of
        # the positives the oracle keeps between the two thresholds
        n = len(scores)
        draws = int(min(labels.left() / parts, 10 * n))
        shared = list(range(n)) if n <= draws else [rng.randrange(n) for _ in range(draws)]
        certs.append(certify_recall(scores, labels, recall.split(parts), rng, draws, idx=shared))
    if precision is not None:
        floor = certs[0].threshold if certs else None
        below = int(min(labels.left() / 4, 4 * len(scores))) if recall is None else 0
        certs.append(
            certify_precision(
                scores, labels, precision.split(parts), rng, _draws_for(precision), below,
                shared=shared if recall is not None else None, floor=floor,
            )
        )  # fmt: skip
    out.certificates = certs
    answered = all(not c.note.startswith("not certified") for c in certs)
    unanswered = labels.failed
    if not answered or (labels.known and unanswered > len(labels.known) / 2):
        out.mode, out.certified = "uncertified", False
        out.certificates = [replace(c, threshold=None, bound=0.0, estimate=0.0) for c in certs]
        out.reason = (
            f"the oracle answered {len(labels.known) - unanswered} of {len(labels.known)} labels"
            if answered
            else "; ".join(c.note for c in certs)
        )
    elif not any(c.useful for c in certs):
        out.mode, out.certified = "dropped", True
        out.reason = "no threshold of the score could be certified: the oracle decides every record"
    else:
        drifted = [a for a in out.audits if a.rejected]
        out.mode = "recertified" if drifted else "certified"
        out.certified = True
        out.reason = (
            "the audit rejected the carried thresholds ("
            + ", ".join(f"{a.kind} at most {a.upper:.3f}" for a in drifted)
            + "); certified anew on this batch"
            if drifted
            else "certified on this batch"
        )
    out.labels = labels.spent - start
    return out
