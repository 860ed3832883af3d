"""`pz-dagster score`: the query's stored answer against labels it was not given, and the plan
each operator ended on with the model calls it made, as terminal tables (or one JSON object)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import dagster as dg
from rich.table import Table

from optimizer.quality import ValidationSet
from pz_dagster.cli.common import console, load, ordered_batches, prepare_home, record_store
from pz_dagster.orchestration.scoring import (
    OperatorSummary,
    OutputScore,
    plan_summary,
    score_output,
)


def score_query(
    module: str, query_file: Path | None, home: str | None, labels_path: Path, as_json: bool
) -> None:
    prepare_home(home)
    defs, query = load(module, query_file)
    try:
        labels = ValidationSet.from_json(labels_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    store = record_store(defs)
    keys = [b.key for b in ordered_batches(store, query)]
    with dg.DagsterInstance.get() as instance:
        score = score_output(store, query, labels, keys)
        operators = plan_summary(instance, query, keys)
    if score.labelled == 0:
        raise click.ClickException(
            f"none of the {len(labels)} records labelled in {labels_path} has been read by query "
            f"{query.name!r} yet: run it first (`pz-dagster run --partitions 0`)"
        )
    if as_json:
        click.echo(json.dumps(_as_dict(score, operators), sort_keys=True))
        return
    console.print(_score_table(score, labels_path))
    console.print(_plan_table(operators))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _score_table(score: OutputScore, labels_path: Path) -> Table:
    c = score.counts
    table = Table(title=f"the answer against {labels_path.name}", title_justify="left")
    columns = ["labelled", "relevant", "kept", "precision", "recall", "F1"]
    columns += [f"{name} exact" for name in score.fields]
    for name in columns:
        table.add_column(name, justify="right")
    kept = c.tp + c.fp
    precision = c.tp / kept if kept else None
    recall = c.tp / (c.tp + c.fn) if c.tp + c.fn else None
    table.add_row(
        str(score.labelled),
        str(int(c.tp + c.fn)),
        str(int(kept)),
        _pct(precision),
        _pct(recall),
        _pct(c.f1),
        *[
            f"{_pct(score.exact_match(n))} ({score.fields[n][0]}/{score.fields[n][1]})"
            for n in score.fields
        ],
    )
    if score.failed:
        table.caption = f"{score.failed} labelled record(s) an operator failed on count as dropped"
    return table


def _plan_table(operators: list[OperatorSummary]) -> Table:
    table = Table(
        title="the plan each operator ended on",
        title_justify="left",
        caption="quality: measured on the labelled batches (F1 for a filter, exact match for "
        "a map); calls: every model call, the quality checks' and exploration's included",
    )
    for name in ("operator", "final plan", "its quality", "the model direct", "records",
                 "model calls", "calls saved"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("operator", "final plan") else "right")
    for op in operators:
        direct = next((q for p, q in op.judged.items() if p.startswith("direct:")), None)
        final = op.judged.get(op.final_plan)
        table.add_row(
            op.name,
            op.final_plan.removesuffix(":-"),
            _pct(final.score if final and final.evidence else None),
            _pct(direct.score if direct and direct.evidence else None),
            str(op.records),
            str(op.model_calls),
            str(op.calls_saved),
        )
    return table


def _as_dict(score: OutputScore, operators: list[OperatorSummary]) -> dict[str, Any]:
    c = score.counts
    return {
        "labelled": score.labelled,
        "tp": c.tp,
        "fp": c.fp,
        "fn": c.fn,
        "f1": c.f1,
        "failed": score.failed,
        "exact_match": {n: score.exact_match(n) for n in score.fields},
        "fields_scored": {n: s for n, (_, s) in score.fields.items()},
        "operators": [
            {
                "name": op.name,
                "final_plan": op.final_plan,
                "plans": op.plans,
                "records": op.records,
                "model_calls": op.model_calls,
                "calls_saved": op.calls_saved,
                "judged": {p: q.score for p, q in op.judged.items() if q.evidence},
            }
            for op in operators
        ],
    }
