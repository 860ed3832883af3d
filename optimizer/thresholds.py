"""Thresholds learned from scored, labelled examples: a proxy's cut-off for a target, and a
cascade's pair of cut-offs (accept above, reject below, escalate in between)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optimizer.observations import QualityCounts


@dataclass(frozen=True)
class Threshold:
    value: float  # keep records with score >= value
    counts: QualityCounts

    @property
    def precision(self) -> float:
        kept = self.counts.tp + self.counts.fp
        return 1.0 if kept == 0 else self.counts.tp / kept

    @property
    def recall(self) -> float:
        pos = self.counts.tp + self.counts.fn
        return 1.0 if pos == 0 else self.counts.tp / pos


def _counts(scores: Sequence[float], labels: Sequence[bool], t: float) -> QualityCounts:
    tp = sum(1 for s, y in zip(scores, labels, strict=True) if s >= t and y)
    fp = sum(1 for s, y in zip(scores, labels, strict=True) if s >= t and not y)
    fn = sum(1 for s, y in zip(scores, labels, strict=True) if s < t and y)
    return QualityCounts(tp, fp, fn, len(scores) - tp - fp - fn)


def _cuts(scores: Sequence[float]) -> list[float]:
    """Candidate thresholds: midpoints between neighbouring distinct scores, and the ends."""
    xs = sorted(set(scores))
    mids = [(a + b) / 2 for a, b in zip(xs, xs[1:], strict=False)]
    return [xs[0], *mids, xs[-1] + 1.0] if xs else [0.0]


def learn_threshold(
    scores: Sequence[float],
    labels: Sequence[bool],
    *,
    min_recall: float | None = None,
    min_precision: float | None = None,
) -> Threshold:
    """The cut-off with the best F1 among those meeting the targets (if none meets them, the
    one closest to the recall target, else the best F1).

    >>> t = learn_threshold([0.9, 0.8, 0.4, 0.3, 0.1], [True, True, False, True, False])
    >>> t.value, round(t.counts.f1, 3)
    (0.2, 0.857)
    >>> learn_threshold([0.9, 0.8, 0.4, 0.3, 0.1], [True, True, False, True, False],
    ...                 min_precision=1.0).value  # doctest: +ELLIPSIS
    0.6...
    """
    if len(scores) != len(labels) or not scores:
        raise ValueError("need as many labels as scores, and at least one")
    options = [Threshold(t, _counts(scores, labels, t)) for t in _cuts(scores)]
    ok = [
        t
        for t in options
        if (min_recall is None or t.recall >= min_recall)
        and (min_precision is None or t.precision >= min_precision)
    ]
    if ok:
        # best F1; ties go to the higher cut-off (fewer records kept)
        return max(ok, key=lambda t: (t.counts.f1, t.value))
    if min_recall is not None:
        return max(options, key=lambda t: (t.recall, t.counts.f1, t.value))
    return max(options, key=lambda t: (t.counts.f1, t.value))


@dataclass(frozen=True)
class CascadeThresholds:
    """Accept when score >= high, reject when score < low, escalate the rest."""

    low: float
    high: float
    escalated: float  # share of the examples escalated
    precision: float  # of the records decided without escalation as positive
    recall: float  # share of positives not rejected by the cheap stage


def learn_cascade(
    scores: Sequence[float],
    labels: Sequence[bool],
    *,
    min_precision: float = 0.9,
    min_recall: float = 0.9,
) -> CascadeThresholds:
    """The pair of cut-offs that escalates the fewest records while the cheap stage's own
    decisions keep precision >= ``min_precision`` (of its accepts) and lose at most
    ``1 - min_recall`` of the positives (by rejecting them). Escalated records are assumed to be
    decided right by the strong model. Escalating everything always qualifies.

    >>> c = learn_cascade([0.95, 0.9, 0.6, 0.5, 0.4, 0.1], [True, True, False, True, False, False])
    >>> round(c.low, 2), round(c.high, 2), round(c.escalated, 2)
    (0.45, 0.75, 0.33)
    """
    if len(scores) != len(labels) or not scores:
        raise ValueError("need as many labels as scores, and at least one")
    cuts = _cuts(scores)
    positives = sum(labels) or 1
    best = CascadeThresholds(cuts[0], cuts[-1], 1.0, 1.0, 1.0)
    for i, low in enumerate(cuts):
        for high in cuts[i:]:
            accepted = [y for s, y in zip(scores, labels, strict=True) if s >= high]
            rejected_pos = sum(1 for s, y in zip(scores, labels, strict=True) if s < low and y)
            escalated = sum(1 for s in scores if low <= s < high) / len(scores)
            precision = sum(accepted) / len(accepted) if accepted else 1.0
            recall = 1 - rejected_pos / positives
            meets = precision >= min_precision and recall >= min_recall
            if meets and escalated < best.escalated:
                best = CascadeThresholds(low, high, escalated, precision, recall)
    return best


@dataclass(frozen=True)
class SignedThreshold:
    """Keep a record when ``polarity * score >= value``: a proxy score may rise or fall with
    the predicate (a negated predicate such as "is not a news article")."""

    value: float
    polarity: int
    counts: QualityCounts

    def keeps(self, score: float) -> bool:
        return self.polarity * score >= self.value


def learn_signed_threshold(scores: Sequence[float], labels: Sequence[bool]) -> SignedThreshold:
    """The direction and cut-off with the best F1 on the examples (ties: the score rising with
    the label, then the higher cut-off).

    >>> t = learn_signed_threshold([5, 4, 1, 0], [False, False, True, True])
    >>> t.polarity, t.value, t.counts.f1
    (-1, -2.5, 1.0)
    """
    up = learn_threshold(scores, labels)
    down = learn_threshold([-s for s in scores], labels)
    if down.counts.f1 > up.counts.f1:
        return SignedThreshold(down.value, -1, down.counts)
    return SignedThreshold(up.value, 1, up.counts)


def apply_threshold(
    threshold: SignedThreshold, scores: Sequence[float], labels: Sequence[bool]
) -> QualityCounts:
    """How a learned threshold does on other examples (held out from its learning)."""
    kept = [threshold.keeps(s) for s in scores]
    tp = sum(1 for k, y in zip(kept, labels, strict=True) if k and y)
    fp = sum(1 for k, y in zip(kept, labels, strict=True) if k and not y)
    fn = sum(1 for k, y in zip(kept, labels, strict=True) if not k and y)
    return QualityCounts(tp, fp, fn, len(scores) - tp - fp - fn)


def leave_one_out(scores: Sequence[float], labels: Sequence[bool]) -> QualityCounts:
    """How a threshold learned on examples does on an example it did not learn from: each one
    judged by the threshold learned on all the others. An example whose others hold only one
    kind (the only positive, say) counts as a miss: no threshold could have been learned for
    it. What a proxy's quality is first estimated by, from the few labelled records of a batch.

    >>> leave_one_out([9, 8, 1, 0, 2], [True, True, False, False, False])
    QualityCounts(tp=2, fp=0, fn=0, tn=3, agree=0.0, total=0.0)
    >>> leave_one_out([9, 1, 0], [True, False, False]).fn
    1
    """
    tp = fp = fn = tn = 0
    for i, (score, label) in enumerate(zip(scores, labels, strict=True)):
        rest = [y for j, y in enumerate(labels) if j != i]
        if set(rest) != {True, False}:
            keeps = not label  # unlearnable: the wrong answer
        else:
            learned = learn_signed_threshold([s for j, s in enumerate(scores) if j != i], rest)
            keeps = learned.keeps(score)
        tp, fp = tp + (keeps and label), fp + (keeps and not label)
        fn, tn = fn + (not keeps and label), tn + (not keeps and not label)
    return QualityCounts(tp, fp, fn, tn)
