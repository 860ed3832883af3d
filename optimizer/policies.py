"""Policies: what the user wants from a plan, stated once, applied to the Pareto frontier.

Costs are dollars per input record of the plan and times are seconds per input record, so a
constraint does not depend on the size of a partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Scored(Protocol):
    @property
    def cost(self) -> float: ...

    @property
    def seconds(self) -> float: ...

    @property
    def quality(self) -> float: ...


P = TypeVar("P", bound="Scored")


@dataclass(frozen=True)
class Policy:
    """Base: choose from ``plans`` by ``key`` among those meeting the constraint; when none
    does, fall back to the best quality and say so."""

    def feasible(self, plan: Scored) -> bool:
        return True

    def key(self, plan: Scored) -> tuple[float, ...]:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def choose(self, plans: Sequence[P]) -> tuple[P, str]:
        """The chosen plan and the reason, in words."""
        if not plans:
            raise ValueError("no plan to choose from")
        ok = [p for p in plans if self.feasible(p)]
        if ok:
            best = min(ok, key=self.key)
            return best, f"{self.describe()}: {_scores(best)}, best of {len(ok)} plan(s) meeting it"
        best = min(plans, key=lambda p: (-p.quality, p.cost, p.seconds))
        return best, (
            f"{self.describe()}: no plan meets the constraint; fell back to the highest "
            f"quality, {_scores(best)}"
        )


def _scores(p: Scored) -> str:
    return f"quality {p.quality:.3f}, ${p.cost:.3g}/record, {p.seconds:.3g} s/record"


@dataclass(frozen=True)
class MaxQuality(Policy):
    def key(self, p: Scored) -> tuple[float, ...]:
        return (-p.quality, p.cost, p.seconds)


@dataclass(frozen=True)
class MinCost(Policy):
    def key(self, p: Scored) -> tuple[float, ...]:
        return (p.cost, -p.quality, p.seconds)


@dataclass(frozen=True)
class MinTime(Policy):
    def key(self, p: Scored) -> tuple[float, ...]:
        return (p.seconds, -p.quality, p.cost)


@dataclass(frozen=True)
class MinCostAtQuality(MinCost):
    """The cheapest plan whose quality is at least ``quality``."""

    quality: float = 0.9

    def feasible(self, p: Scored) -> bool:
        return p.quality >= self.quality

    def describe(self) -> str:
        return f"MinCostAtQuality({self.quality})"


@dataclass(frozen=True)
class MinTimeAtQuality(MinTime):
    """The fastest plan whose quality is at least ``quality``."""

    quality: float = 0.9

    def feasible(self, p: Scored) -> bool:
        return p.quality >= self.quality

    def describe(self) -> str:
        return f"MinTimeAtQuality({self.quality})"


@dataclass(frozen=True)
class MaxQualityAtCost(MaxQuality):
    """The best plan costing at most ``cost`` dollars per input record."""

    cost: float = 0.0

    def feasible(self, p: Scored) -> bool:
        return p.cost <= self.cost

    def describe(self) -> str:
        return f"MaxQualityAtCost({self.cost:g})"


POLICIES = {
    "MaxQuality": MaxQuality,
    "MinCost": MinCost,
    "MinTime": MinTime,
    "MinCostAtQuality": MinCostAtQuality,
    "MinTimeAtQuality": MinTimeAtQuality,
    "MaxQualityAtCost": MaxQualityAtCost,
}


def _number(text: str, arg: str) -> float:
    try:
        return float(arg)
    except ValueError:
        raise ValueError(f"{text}: {arg!r} is not a number") from None


def parse_policy(text: str) -> Policy:
    """A policy from its name, with an optional argument: ``MinCostAtQuality(0.9)``.

    >>> parse_policy("MinCostAtQuality(0.9)")
    MinCostAtQuality(quality=0.9)
    >>> parse_policy("MaxQuality")
    MaxQuality()
    """
    text = text.strip()
    name, _, arg = text.partition("(")
    cls = POLICIES.get(name.strip())
    if cls is None:
        raise ValueError(f"unknown policy {text!r}; known: {sorted(POLICIES)}")
    arg = arg.rstrip(")").strip()
    if cls in (MinCostAtQuality, MinTimeAtQuality):
        if not arg:
            raise ValueError(f"{name} needs a quality, e.g. {name}(0.9)")
        quality = _number(text, arg)
        if not 0.0 <= quality <= 1.0:  # a target no plan can meet would silently fall back
            raise ValueError(f"{text}: the quality is a share between 0 and 1, e.g. {name}(0.9)")
        return cls(quality=quality)
    if cls is MaxQualityAtCost:
        if not arg:
            raise ValueError(
                "MaxQualityAtCost needs dollars per record, e.g. MaxQualityAtCost(0.001)"
            )
        cost = _number(text, arg)
        if cost < 0:
            raise ValueError(f"{text}: dollars per record cannot be negative")
        return cls(cost=cost)
    if arg:
        raise ValueError(f"{name} takes no argument")
    return cls()
