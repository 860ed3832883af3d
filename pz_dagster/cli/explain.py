"""`pz-dagster explain`: the logical plan and the optimizer's decision now, as terminal tables
(or one JSON object)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import dagster as dg
from rich.table import Table

from optimizer import Decision
from pz_dagster.cli.common import console, instance_dir, load, prepare_home
from pz_dagster.operators.guaranteed import DEFAULT_LABEL_BUDGET
from pz_dagster.orchestration.compiler import CompiledQuery, segment_of
from pz_dagster.orchestration.filter_chain import filter_runs
from pz_dagster.orchestration.keys import MODEL_KEY, OPTIMIZER_KEY
from pz_dagster.orchestration.optimization import OptimizerResource, read_history
from pz_dagster.query import plan
from pz_dagster.query.plan import DirectorySource
from pz_dagster.tuning.ordering import estimates_of, order_filters
from pz_dagster.tuning.planning import OPTIMIZED, plan_operator


def explain_query(module: str, query_file: Path | None, home: str | None, as_json: bool) -> None:
    prepare_home(home)
    defs, query = load(module, query_file)
    out: dict[str, Any] = {"query": query.name, "plan": query.dataset.explain()}
    lineage = query.plan.lineage()
    _warn_of_missing_folders(query)
    chain = segment_of(lineage, lineage[1]) if len(lineage) > 1 else ()
    targets = [n for n in chain if isinstance(n, OPTIMIZED)]
    if not as_json:
        console.print(f"[bold]query {query.name!r}[/bold]")
        # its own lines, never wrapped (the plan text has [brackets]: no markup)
        console.print(out["plan"], markup=False, soft_wrap=True)
    if not targets:
        if as_json:
            click_json(out)
        return
    model = defs.resources[MODEL_KEY]
    optimizer = defs.resources.get(OPTIMIZER_KEY) or OptimizerResource()
    with dg.DagsterInstance.get() as instance:
        history = read_history(
            instance,
            {n.name: query.asset_key(n.name) for n in chain},
            optimizer.history_limit,  # type: ignore[union-attr]
        )
    # Every operator asset decides over the whole plan at its own start; the first one's
    # decision shows the candidates of all of them.
    decision = plan_operator(targets[0], chain, history, model.profiles(), optimizer, [], None)  # type: ignore[union-attr,arg-type]
    seen = sum(len(h.observations) for h in history.values())
    orders = _filter_orders(chain, history, model.profiles(), optimizer)  # type: ignore[union-attr,arg-type]
    guarantees = [guarantee_dict(n, decision, history) for n in chain if _has_target(n)]
    if as_json:
        out |= {"observations": seen, "home": instance_dir(), **decision_dict(decision)}
        out["filter_orders"] = orders
        out["guarantees"] = guarantees
        click_json(out)
        return
    for g in guarantees:
        console.print(f"\n[bold]guarantee of {g['operator']}[/bold]: {g['target']}", soft_wrap=True)
        console.print(g["how"], markup=False, soft_wrap=True)
        console.print(g["now"], markup=False, soft_wrap=True)
    console.print(
        f"\n[bold]optimizer's decision now[/bold] ({seen} observation(s) in the history of "
        f"{instance_dir()})"
    )
    print_decision(decision)
    for order in orders:
        console.print(
            "\n[bold]filter order of the next batch[/bold]: "
            + ", ".join(f"{f['name']} (rank {f['rank']:.3g} {f['basis']})" for f in order),
            soft_wrap=True,
        )


def _has_target(node: Any) -> bool:
    return isinstance(node, plan.SemanticFilter) and bool(node.target)


def guarantee_dict(
    node: plan.SemanticFilter, decision: Decision, history: dict[str, Any]
) -> dict[str, Any]:
    """A filter's declared target, how it is met, and the certificates the next batch audits."""
    cand = decision.candidate(node.name)
    budget = node.label_budget if node.label_budget is not None else DEFAULT_LABEL_BUDGET
    scorer = cand.models[0] if len(cand.models) > 1 else "the lexical proxy (the predicate's terms)"
    how = (
        f"met by a certified cascade: {scorer} scores every record; {cand.model} (the oracle) "
        f"decides what the certified thresholds leave to it; at most {budget} oracle labels "
        "per batch certify the thresholds (Clopper-Pearson bounds, fixed-sequence testing)"
    )
    hist = history.get(node.name)
    carried = hist.certificates_for(cand.key) if hist is not None else []
    if carried:
        now = "now: " + "; ".join(
            f"{c['kind']} threshold {c['threshold']} (bound {c['bound']:.3f} on {c['labels']} "
            "labels), audited on the next batch"
            if c["threshold"] is not None
            else f"{c['kind']}: no threshold certified (the oracle decides)"
            for c in carried
        )
    else:
        now = "now: no certificate yet: the next batch certifies its thresholds"
    return {
        "operator": node.name,
        "target": "; ".join(t.describe() for t in node.target),
        "label_budget": budget,
        "strategy": cand.key,
        "how": how,
        "now": now,
        "certificates": carried,
    }


def click_json(data: dict[str, Any]) -> None:
    """One JSON object on stdout, as it is (no colour, no wrapping)."""
    click.echo(json.dumps(data, default=str))


def _warn_of_missing_folders(query: CompiledQuery) -> None:
    """The plan is explained without reading the documents: say where they are missing (on
    stderr, one line each), since `run` will stop there."""
    for src in query.sources:
        if isinstance(src.node, DirectorySource) and not Path(src.node.path).is_dir():
            click.echo(
                f"Warning: source folder {src.node.path!r} does not exist or is not a "
                "directory; `pz-dagster run` needs it",
                err=True,
            )


def _filter_orders(
    chain: tuple[Any, ...],
    history: dict[str, Any],
    profiles: list[Any],
    optimizer: OptimizerResource,
) -> list[list[dict[str, Any]]]:
    """The order each run of adjacent semantic filters would take on the next batch."""
    orders = []
    for run in filter_runs(chain):
        decisions = {
            f.name: plan_operator(f, chain, history, profiles, optimizer, [], None) for f in run
        }
        names = [f.name for f in run]
        ranked = order_filters(estimates_of(names, decisions, optimizer.get_policy()))
        orders.append([{"name": f.name, "rank": f.rank, "basis": f.basis} for f in ranked])
    return orders


def decision_dict(decision: Decision) -> dict[str, Any]:
    """The decision's choice, frontier and candidates as plain values."""
    chosen = decision.result.chosen
    frontier = [
        {
            "plan": p.describe(),
            "chosen": p is chosen,
            "dollars_per_record": p.cost,
            "seconds_per_record": p.seconds,
            "quality": p.quality,
            "records_out_per_record": p.records_out,
        }
        for p in decision.result.frontier
    ]
    operators = {}
    for op, options in decision.options.items():
        champion = decision.champions.get(op)
        explored = {c.key for c in decision.exploration.get(op, ())}
        operators[op] = [
            {
                "candidate": c.key,
                "dollars_per_record": e.cost,
                "seconds_per_record": e.seconds,
                "selectivity": e.selectivity,
                "quality": e.quality,
                "records_seen": e.records_seen,
                "roles": [
                    r
                    for r, on in (
                        ("chosen", c.key == decision.candidate(op).key),
                        ("champion", champion is not None and c.key == champion.key),
                        ("explore", c.key in explored),
                    )
                    if on
                ],
            }
            for c, e in sorted(options, key=lambda ce: ce[1].cost)
        ]
    return {
        "policy": decision.result.reason,
        "chosen": chosen.describe(),
        "pinned": sorted(decision.pinned),
        "dollars_note": decision.dollars_note(),
        "plans_considered": decision.result.plans_considered,
        "frontier": frontier,
        "candidates": operators,
        "champions": {op: c.key for op, c in decision.champions.items()},
    }


def _table(title: str, columns: list[str]) -> Table:
    """A table whose cells fold (never cut) where the terminal is narrow."""
    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 or c == "role" else "right", overflow="fold")
    return table


def print_decision(decision: Decision) -> None:
    data = decision_dict(decision)
    console.print(f"policy: {data['policy']}", markup=False, soft_wrap=True)
    console.print(f"chosen: {data['chosen']}", markup=False, soft_wrap=True)
    if data["pinned"]:
        console.print(f"pinned by run config: {', '.join(data['pinned'])}", markup=False)
    if data["dollars_note"]:
        console.print(data["dollars_note"], markup=False, soft_wrap=True)
    frontier = _table(
        f"frontier ({len(data['frontier'])} of {data['plans_considered']} plans)",
        ["plan", "$/record", "s/record", "quality", "out/record"],
    )
    for p in data["frontier"]:
        frontier.add_row(
            p["plan"] + (" (chosen)" if p["chosen"] else ""),
            f"{p['dollars_per_record']:.3g}",
            f"{p['seconds_per_record']:.3g}",
            f"{p['quality']:.3f}",
            f"{p['records_out_per_record']:.3f}",
        )
    console.print(frontier)
    columns = ["candidate", "$/record", "s/record", "selectivity", "quality", "records seen"]
    for op, rows in data["candidates"].items():
        table = _table(f"{op}: candidates", [*columns, "role"])
        for r in rows:
            table.add_row(
                r["candidate"],
                f"{r['dollars_per_record']:.3g}",
                f"{r['seconds_per_record']:.3g}",
                f"{r['selectivity']:.3f}",
                f"{r['quality']:.3f}",
                f"{r['records_seen']:.0f}",
                ", ".join(r["roles"]),
            )
        console.print(table)
        champion = decision.champions.get(op)
        if champion and champion.key not in {r["candidate"] for r in rows}:
            console.print(
                "champion (the reference on a sample where there are no labels): "
                f"{champion.key}, not one of the strategies offered",
                markup=False,
                soft_wrap=True,
            )
