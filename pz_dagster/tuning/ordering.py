"""The order adjacent semantic filters run in on a batch, from each filter's own decision.

A filter's rank is its estimated cost per input record divided by the share of records it
drops, ``cost / (1 - selectivity)``: the filter that drops the most per unit spent runs first,
so the filters after it see fewer records. The sort is stable: equal ranks (equal priors, before
any observation) keep the declared order.

>>> from optimizer import MinTime
>>> ranked = order_filters([FilterEstimate("broad", 1.0, 0.9), FilterEstimate("narrow", 1.0, 0.1)])
>>> [f.name for f in ranked]
['narrow', 'broad']
>>> cost_basis(MinTime())
'seconds'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from optimizer import Decision, MinTime, Policy

CostBasis = Literal["dollars", "seconds"]


@dataclass(frozen=True)
class FilterEstimate:
    """A filter's estimated cost per input record (in its ``basis``) and selectivity."""

    name: str
    cost: float
    selectivity: float
    basis: CostBasis = "dollars"

    @property
    def rank(self) -> float:
        """Cost per record dropped: lower runs earlier."""
        return self.cost / max(1.0 - self.selectivity, 1e-9)


def cost_basis(policy: Policy) -> CostBasis:
    """What a filter's cost is measured in: seconds under a time policy (MinTime,
    MinTimeAtQuality), else dollars (token prices, or a local model's compute estimate)."""
    return "seconds" if isinstance(policy, MinTime) else "dollars"


def filter_estimate(name: str, decision: Decision, basis: CostBasis) -> FilterEstimate:
    """The estimate of ``name``'s chosen candidate in its own ``decision``. Selectivity is a
    property of the predicate: when the chosen candidate has not run yet (an exploration), the
    selectivity observed under the filter's other candidates is used, weighted by the records
    behind each; the prior only when the filter has no observation at all."""
    chosen = decision.estimate(name, decision.candidate(name))
    selectivity = chosen.selectivity
    if not chosen.observed:
        seen = [e for _, e in decision.options.get(name, ()) if e.observed]
        weight = sum(e.records_seen for e in seen)
        if weight > 0:
            selectivity = sum(e.selectivity * e.records_seen for e in seen) / weight
    cost = chosen.seconds if basis == "seconds" else chosen.cost
    return FilterEstimate(name, cost, selectivity, basis)


def estimates_of(
    names: Sequence[str], decisions: Mapping[str, Decision], policy: Policy
) -> list[FilterEstimate]:
    """Each filter's estimate (declared order) in the policy's cost basis. When every filter
    costs $0 (unpriced models), dollars cannot tell them apart and seconds are used."""
    basis = cost_basis(policy)
    found = [filter_estimate(n, decisions[n], basis) for n in names]
    if basis == "dollars" and all(f.cost == 0.0 for f in found):
        found = [filter_estimate(n, decisions[n], "seconds") for n in names]
    return found


def order_filters(estimates: Sequence[FilterEstimate]) -> list[FilterEstimate]:
    """``estimates`` (in declared order) in the order to run them: ascending rank, ties in
    declared order."""
    return sorted(estimates, key=lambda f: f.rank)
