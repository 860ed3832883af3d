"""Exploration: which candidates to try on a sample of the next partition.

UCB1 on quality: a candidate's upper bound is its estimated quality plus a bonus that shrinks
with the evidence behind it; a candidate never observed has an infinite bonus, so a newly added
model is tried first. The chosen candidate runs on the whole partition and the champion runs on
the sample anyway (it is the reference), so neither is counted as exploration.
"""

from __future__ import annotations

from collections.abc import Sequence

from optimizer.candidates import Candidate
from optimizer.observations import Estimate, ucb_bonus


def explore(
    options: Sequence[tuple[Candidate, Estimate]],
    *,
    chosen: Candidate,
    champion: Candidate | None = None,
    slots: int = 1,
    c: float = 1.0,
    enough_evidence: float = 20.0,
) -> list[Candidate]:
    """Up to ``slots`` candidates to run on this partition's sample, most promising first.

    Candidates with at least ``enough_evidence`` records behind their quality are settled and
    not explored again (until they decay).

    >>> from optimizer.candidates import Candidate
    >>> a, b, n = (Candidate("f", "direct", m, (m,)) for m in ("a", "b", "new"))
    >>> opts = [(a, Estimate(1, 1, 1, 0.9, 50, 50)), (b, Estimate(2, 1, 1, 0.8, 50, 50)),
    ...         (n, Estimate(1, 1, 1, 0.8))]
    >>> [c.key for c in explore(opts, chosen=a)]
    ['direct:new']
    """
    skip = {chosen.key} | ({champion.key} if champion else set())
    total = sum(e.quality_evidence for _, e in options)
    ranked = sorted(
        (
            (e.quality + ucb_bonus(e.quality_evidence, total, c), -e.cost, cand)
            for cand, e in options
            if cand.key not in skip and e.quality_evidence < enough_evidence
        ),
        key=lambda t: (t[0], t[1]),
        reverse=True,
    )
    return [cand for _, _, cand in ranked[:slots]]
