"""Whole-plan search: one candidate per operator, scored as a plan.

A filter's selectivity changes how many records every later operator sees, so the cost and
time of a plan are ``sum_i n_i * c_i`` with ``n_{i+1} = n_i * selectivity_i`` (per input record,
``n_0 = 1``); quality is the product of the operators' qualities (independent errors, as in
Palimpzest). Partial plans are pruned to their Pareto set after each operator, on (cost, time,
quality, records passed on): a partial plan that passes on fewer records at the same cost may
still make a cheaper whole plan, so it is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from optimizer.candidates import Candidate, OperatorSpec
from optimizer.observations import Estimate
from optimizer.policies import Policy

T = TypeVar("T")


@dataclass(frozen=True)
class PlanEstimate:
    """A physical plan: a candidate per operator, with its estimates per input record."""

    choices: tuple[Candidate, ...]
    cost: float
    seconds: float  # wall seconds per input record, with each model's concurrency
    quality: float
    records_out: float  # output records per input record

    def candidate(self, operator: str) -> Candidate:
        for c in self.choices:
            if c.operator == operator:
                return c
        raise KeyError(operator)

    def describe(self) -> str:
        return " -> ".join(f"{c.operator}={c.key}" for c in self.choices)


@dataclass(frozen=True)
class SearchResult:
    frontier: tuple[PlanEstimate, ...]  # Pareto-optimal on (cost, seconds, quality), by cost
    chosen: PlanEstimate
    reason: str
    plans_considered: int


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (all minimized)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def pareto(items: Sequence[T], key: Callable[[T], tuple[float, ...]]) -> list[T]:
    """The items no other item dominates on ``key`` (every component minimized); among items
    with equal keys the first is kept.

    >>> pareto([(1, 5), (2, 2), (3, 3), (1, 5)], key=lambda t: t)
    [(1, 5), (2, 2)]
    """
    keys = [key(i) for i in items]
    out, seen = [], set()
    for i, (item, k) in enumerate(zip(items, keys, strict=True)):
        if k in seen:
            continue
        if any(_dominates(other, k) for j, other in enumerate(keys) if j != i):
            continue
        seen.add(k)
        out.append(item)
    return out


def search(
    operators: Sequence[OperatorSpec],
    options: Mapping[str, Sequence[tuple[Candidate, Estimate]]],
    policy: Policy,
    concurrency: Mapping[str, int] | None = None,
) -> SearchResult:
    """The Pareto frontier of plans over ``operators`` (in execution order) and the plan
    ``policy`` chooses from it. ``options[op.name]`` lists the op's candidates with their
    estimates; ``concurrency[model]`` divides that model's seconds (default 1).

    >>> from optimizer.candidates import Candidate, OperatorSpec
    >>> from optimizer.policies import MinCost
    >>> f = OperatorSpec("f", "sem_filter")
    >>> cheap, good = Candidate("f", "direct", "s", ("s",)), Candidate("f", "direct", "b", ("b",))
    >>> r = search([f], {"f": [(cheap, Estimate(1.0, 1.0, 0.5, 0.7)),
    ...                        (good, Estimate(5.0, 2.0, 0.5, 0.95))]}, MinCost())
    >>> [p.choices[0].key for p in r.frontier], r.chosen.choices[0].key
    (['direct:s', 'direct:b'], 'direct:s')
    """
    conc = dict(concurrency or {})
    # partial plans: (choices, cost, seconds, quality, records passed on)
    partial: list[tuple[tuple[Candidate, ...], float, float, float, float]] = [
        ((), 0.0, 0.0, 1.0, 1.0)
    ]
    considered = 1
    for op in operators:
        opts = options.get(op.name)
        if not opts:
            raise ValueError(f"no candidate for operator {op.name!r}")
        considered *= len(opts)
        grown = []
        for choices, cost, secs, qual, n in partial:
            for cand, est in opts:
                parallel = max(1, min((conc.get(m, 1) for m in cand.models), default=1))
                grown.append(
                    (
                        (*choices, cand),
                        cost + n * est.cost,
                        secs + n * est.seconds / parallel,
                        qual * est.quality,
                        n * est.selectivity,
                    )
                )
        partial = pareto(grown, key=lambda p: (p[1], p[2], -p[3], p[4]))
    plans = [PlanEstimate(c, cost, secs, q, n) for c, cost, secs, q, n in partial]
    frontier = sorted(
        pareto(plans, key=lambda p: (p.cost, p.seconds, -p.quality)),
        key=lambda p: (p.cost, p.seconds, -p.quality),
    )
    chosen, reason = policy.choose(frontier)
    return SearchResult(tuple(frontier), chosen, reason, considered)
