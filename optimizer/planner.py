"""The optimizer's entry point: operators + models + history + policy -> a decision.

``decide`` estimates every candidate of every operator (priors blended with observations),
searches whole plans, applies the policy, names each operator's champion (the reference for
quality without labels) and the candidates to explore on a sample. ``Decision.explain()`` says
all of it in text for the CLI and the Dagster UI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from optimizer.candidates import Candidate, ModelProfile, OperatorSpec, candidates_for
from optimizer.config import PhysicalConfig
from optimizer.exploration import explore
from optimizer.observations import (
    DEFAULT_SETTINGS,
    Estimate,
    EstimateSettings,
    Observation,
    estimate,
)
from optimizer.policies import Policy
from optimizer.search import SearchResult, search


@dataclass(frozen=True)
class Decision:
    policy: Policy
    result: SearchResult
    options: Mapping[str, Sequence[tuple[Candidate, Estimate]]]
    champions: Mapping[str, Candidate]
    exploration: Mapping[str, Sequence[Candidate]]
    pinned: frozenset[str] = frozenset()
    compute_priced: frozenset[str] = frozenset()  # models whose dollars are compute estimates

    def candidate(self, operator: str) -> Candidate:
        return self.result.chosen.candidate(operator)

    def config(self, operator: str) -> PhysicalConfig:
        return self.candidate(operator).config()

    def estimate(self, operator: str, candidate: Candidate) -> Estimate:
        for c, e in self.options[operator]:
            if c.key == candidate.key:
                return e
        raise KeyError(candidate.key)

    def frontier_markdown(self) -> str:
        chosen = self.result.chosen
        rows = [
            "| plan | $/record | s/record | quality | out/record |",
            "|---|---:|---:|---:|---:|",
        ]
        for p in self.result.frontier:
            mark = " **(chosen)**" if p is chosen else ""
            rows.append(
                f"| {p.describe()}{mark} | {p.cost:.3g} | {p.seconds:.3g} | {p.quality:.3f} | "
                f"{p.records_out:.3f} |"
            )
        return "\n".join(rows)

    def candidates_markdown(self, operator: str) -> str:
        chosen = self.candidate(operator).key
        champion = self.champions.get(operator)
        explored = {c.key for c in self.exploration.get(operator, ())}
        rows = [
            "| candidate | $/record | s/record | selectivity | quality | records seen | role |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for c, e in sorted(self.options[operator], key=lambda ce: ce[1].cost):
            role = ", ".join(
                r
                for r, on in (
                    ("chosen", c.key == chosen),
                    ("champion", champion is not None and c.key == champion.key),
                    ("explore", c.key in explored),
                )
                if on
            )
            rows.append(
                f"| {c.key} | {e.cost:.3g} | {e.seconds:.3g} | {e.selectivity:.3f} | "
                f"{e.quality:.3f} | {e.records_seen:.0f} | {role} |"
            )
        return "\n".join(rows)

    def dollars_note(self) -> str:
        """What the dollars of local models are ("" when every model bills tokens)."""
        if not self.compute_priced:
            return ""
        return (
            f"dollars of {', '.join(sorted(self.compute_priced))} are a compute estimate "
            "(machine price per hour x model time), not a bill"
        )

    def explain(self) -> str:
        lines = [f"policy: {self.result.reason}", f"chosen: {self.result.chosen.describe()}"]
        if self.pinned:
            lines.append(f"pinned by run config: {', '.join(sorted(self.pinned))}")
        if note := self.dollars_note():
            lines.append(note)
        lines += [
            f"frontier ({len(self.result.frontier)} of {self.result.plans_considered} plans):",
            self.frontier_markdown(),
        ]
        for op in self.options:
            lines += [f"\n{op}:", self.candidates_markdown(op)]
            champion = self.champions.get(op)
            if champion and champion.key not in {c.key for c, _ in self.options[op]}:
                lines.append(
                    f"champion (the reference on a sample where there are no labels): "
                    f"{champion.key}, not one of the strategies offered"
                )
        return "\n".join(lines)


def champion_of(operator: str, models: Mapping[str, ModelProfile]) -> Candidate:
    """The reference for quality without labels: the direct strategy of the model with the
    highest quality prior (ties: the more expensive one). It need not be among the strategies
    offered: it only judges them, on a sample, as long as there are no labels."""
    if not models:
        raise ValueError(f"operator {operator!r}: a champion needs a model")
    best = max(models.values(), key=lambda m: (m.quality, m.input_price))
    return Candidate(operator, "direct", best.name, (best.name,))


def decide(
    operators: Sequence[OperatorSpec],
    models: Sequence[ModelProfile],
    observations: Iterable[Observation],
    policy: Policy,
    *,
    strategies: Sequence[str] | Mapping[str, Sequence[str]] = ("direct",),
    available: frozenset[str] | Mapping[str, frozenset[str]] = frozenset(),
    pinned: Mapping[str, Candidate] | None = None,
    fixed: Mapping[str, Estimate] | None = None,
    settings: EstimateSettings = DEFAULT_SETTINGS,
    exploration_slots: int = 1,
) -> Decision:
    """Choose a candidate per operator.

    ``fixed`` gives operators that have one way to run (Python filters and maps) their
    estimate; ``pinned`` forces a candidate on an operator (a run-config override);
    ``strategies`` may differ by operator name (what each operator implements);
    ``available`` says what strategies may rely on (a proxy's name: there are scored examples
    to learn its threshold from), for all operators or by operator name.

    >>> from optimizer.policies import MinCost
    >>> ops = [OperatorSpec("f", "sem_filter", selectivity=0.1), OperatorSpec("m", "sem_map")]
    >>> ms = [ModelProfile("small", input_price=1e-7, quality=0.7),
    ...       ModelProfile("big", input_price=1e-5, quality=0.95)]
    >>> d = decide(ops, ms, [], MinCost())
    >>> d.config("f").model, d.champions["f"].model
    ('small', 'big')
    """
    by_name = {m.name: m for m in models}
    seen = list(observations)
    pinned = dict(pinned or {})
    options: dict[str, list[tuple[Candidate, Estimate]]] = {}
    champions: dict[str, Candidate] = {}

    def tried(op: OperatorSpec) -> Sequence[str]:
        if isinstance(strategies, Mapping):
            return strategies.get(op.name, ("direct",))
        return strategies

    def has(op: OperatorSpec) -> frozenset[str]:
        if isinstance(available, frozenset):
            return available
        return available.get(op.name, frozenset())

    for op in operators:
        if fixed and op.name in fixed:
            options[op.name] = [(Candidate(op.name, "python", None), fixed[op.name])]
            continue
        # None of the strategies offered can run yet (a proxy before its threshold is learned):
        # the direct ones run meanwhile, and their answers teach the others.
        cands = candidates_for(op, models, tried(op), has(op)) or candidates_for(op, models)
        if not cands:
            raise ValueError(f"operator {op.name!r}: no candidate (models: {sorted(by_name)})")
        champions[op.name] = champion_of(op.name, by_name)
        if op.name in pinned:
            keep = pinned[op.name]
            if keep.key not in {c.key for c in cands} and keep.strategy != "python":
                cands = [*cands, keep]  # a pinned config outside the search space still runs
            cands = [c for c in cands if c.key == keep.key]
        options[op.name] = [(c, estimate(op, c, by_name, seen, settings)) for c in cands]
    concurrency = {m.name: m.max_concurrency for m in models}
    result = search(operators, options, policy, concurrency)
    exploration: dict[str, list[Candidate]] = {}
    for op in operators:
        # an operator that is not pinned was estimated with all its candidates above
        if op.name in champions and op.name not in pinned and exploration_slots > 0:
            exploration[op.name] = explore(
                options[op.name],
                chosen=result.chosen.candidate(op.name),
                champion=champions[op.name],
                slots=exploration_slots,
            )
    compute = frozenset(m.name for m in models if m.compute_priced)
    return Decision(policy, result, options, champions, exploration, frozenset(pinned), compute)
