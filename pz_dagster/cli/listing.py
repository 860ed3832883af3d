"""`pz-dagster register`, `history` and `partitions`: the query's batches and what each of its
operators did, as terminal tables that keep every value when piped (or JSON lines)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import dagster as dg
from rich.table import Table

from pz_dagster import metadata_keys as K
from pz_dagster.cli.common import (
    asset_key,
    console,
    instance_dir,
    load,
    ordered_batches,
    prepare_home,
    record_store,
)
from pz_dagster.metadata_keys import metadata_value
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.compiler import CompiledQuery, asset_keys
from pz_dagster.orchestration.optimization import latest_materialization, materializations
from pz_dagster.orchestration.runs import fail_dead_runs
from pz_dagster.sources import Batch
from pz_dagster.tuning.history import HistoryRecord, holds_history

HISTORY_COLUMNS = (
    K.MODEL,
    K.STRATEGY,
    K.RECORDS_IN,
    K.RECORDS_OUT,
    K.SELECTIVITY,
    K.FAILURES,
    K.INPUT_TOKENS,
    K.OUTPUT_TOKENS,
    K.DOLLARS,
    K.SECONDS,
    K.QUALITY,
    K.QUALITY_SOURCE,
)
TEXT_COLUMNS = ("asset", K.MODEL, K.STRATEGY, K.QUALITY_SOURCE, "key", "files", "first file",
                "last file", "materialized", "latest run")  # fmt: skip


def table(title: str, columns: Sequence[str]) -> Table:
    """A table whose cells fold where the terminal is too narrow: no value is cut."""
    out = Table(title=title, title_justify="left")
    for c in columns:
        out.add_column(c, justify="left" if c in TEXT_COLUMNS else "right", overflow="fold")
    return out


def _utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def echo_json_lines(rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        click.echo(json.dumps(row, default=str))


def register_batches(module: str, query_file: Path | None, home: str | None) -> None:
    prepare_home(home)
    defs, query = load(module, query_file)
    with dg.DagsterInstance.get() as instance:
        batches = register_partitions(record_store(defs), query, instance)
    console.print(f"{len(batches)} batch partition(s) of {query.partitions_def.name}:")
    for b in batches:
        console.print(
            f"  {b.key}  {len(b.files)} files, first {b.files[0].path if b.files else '-'}",
            markup=False,
            soft_wrap=True,
        )


def _history_rows(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], limit: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in keys:
        for rec, mat in materializations(instance, key, limit):
            md = dict(mat.metadata)
            where = f"{key.to_user_string()}, run {rec.run_id}"
            record = HistoryRecord.from_metadata(md, where) if holds_history(md) else None
            rows.append(
                {
                    "asset": key.path[-1],
                    "time": _utc(rec.timestamp),
                    "partition": mat.partition,
                    "run_id": rec.run_id,
                    **{c: metadata_value(md, c) for c in HISTORY_COLUMNS},
                    "config": record.config_dict() if record else {},
                }
            )
    return rows


def _history_cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == K.DOLLARS:
        return f"{value:.4f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def print_history(
    module: str,
    query_file: Path | None,
    home: str | None,
    asset_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    prepare_home(home)
    defs, query = load(module, query_file)
    keys = (
        [asset_key(query, asset_name)] if asset_name else [k for a in query.assets for k in a.keys]
    )
    with dg.DagsterInstance.get() as instance:
        for run_id in fail_dead_runs(instance):
            console.print(f"run {run_id}: the process that ran it is gone; marked failed")
        rows = _history_rows(instance, keys, limit)
    if as_json:
        echo_json_lines(rows)
        return
    if not rows:
        console.print(
            f"no materializations of query {query.name!r} in {instance_dir()}: "
            "run `pz-dagster run` (or materialize from the UI) first",
            markup=False,
            soft_wrap=True,
        )
        return
    columns = ("time", "partition", *HISTORY_COLUMNS)
    for key in keys:
        mine = [r for r in rows if r["asset"] == key.path[-1]]
        if not mine:
            continue
        out = table(f"{key.to_user_string()}: {len(mine)} materialization(s)", columns)
        for r in mine:
            out.add_row(*[_history_cell(c, r[c]) for c in columns])
        console.print(out)


def _batch_assets(query: CompiledQuery) -> list[dg.AssetKey]:
    """The query's assets materialized per batch of its main folder, in plan order."""
    return [
        k for a in query.assets if a.partitions_def == query.partitions_def for k in asset_keys(a)
    ]


def _latest_run(
    instance: dg.DagsterInstance, query: CompiledQuery, keys: set[dg.AssetKey], partition: str
) -> dg.DagsterRun | None:
    """The newest run of this query's assets on ``partition`` (the same files in another
    query's folder have the same key: its runs are not this one's)."""
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": partition}), limit=20)
    for run in runs:
        if run.job_name == query.job.name or (run.asset_selection or set()) & keys:
            return run
    return None


def _partition_row(
    instance: dg.DagsterInstance,
    query: CompiledQuery,
    batch: Batch,
    done: dict[dg.AssetKey, set[str]],
) -> dict[str, Any]:
    """What one batch is: its files, the assets materialized for it, the records that could
    not be read or that an operator failed on (in the latest materialization of each) and its
    latest run."""
    keys = list(done)
    materialized = [k.path[-1] for k in keys if batch.key in done[k]]
    failures = read_errors = 0
    for k in keys:
        if batch.key in done[k]:
            latest = latest_materialization(instance, k, batch.key)
            md = latest[1].metadata if latest else {}
            failures += int(metadata_value(md, K.FAILURES, 0) or 0)
            read_errors += int(metadata_value(md, K.READ_ERRORS, 0) or 0)
    run = _latest_run(instance, query, set(keys), batch.key)
    return {
        "key": batch.key,
        "files": [f.path for f in batch.files],
        "registered_at": _utc(batch.registered_at) if batch.registered_at else None,
        "materialized": materialized,
        "assets": [k.path[-1] for k in keys],
        "read_errors": read_errors,
        "record_failures": failures,
        "latest_run": None if run is None else {"id": run.run_id, "status": run.status.value},
    }


def print_partitions(
    module: str,
    query_file: Path | None,
    home: str | None,
    all_files: bool,
    register_new: bool,
    as_json: bool,
) -> None:
    prepare_home(home)
    defs, query = load(module, query_file)
    store = record_store(defs)
    with dg.DagsterInstance.get() as instance:
        if register_new:
            register_partitions(store, query, instance)
        batches = ordered_batches(store, query)
        done = {k: instance.get_materialized_partitions(k) for k in _batch_assets(query)}
        rows = [_partition_row(instance, query, b, done) for b in batches]
    if as_json:
        echo_json_lines(rows)
        return
    if not rows:
        console.print(
            f"no batches of query {query.name!r} yet: `pz-dagster register` (or `run`) groups "
            "the folder's files into batches",
            markup=False,
            soft_wrap=True,
        )
        return
    print_partition_table(query, rows, all_files)


def _materialized(done: list[str], assets: list[str]) -> str:
    if len(done) == len(assets):
        return f"all {len(assets)}"
    if not done:
        return "none"
    missing = ", ".join(a for a in assets if a not in done)
    return f"{len(done)} of {len(assets)} (not {missing})"


def print_partition_table(
    query: CompiledQuery, rows: list[dict[str, Any]], all_files: bool
) -> None:
    shown = ["files"] if all_files else ["files", "first file", "last file"]
    out = table(
        f"query {query.name}: {len(rows)} batch(es)",
        ["#", "key", *shown, "materialized", "unreadable", "failed records", "latest run"],
    )
    for i, r in enumerate(rows, start=1):
        files = r["files"]
        if all_files:
            listed = ["\n".join(files) or "-"]
        else:
            listed = [str(len(files)), files[0] if files else "-", files[-1] if files else "-"]
        run = r["latest_run"]
        out.add_row(
            str(i),
            r["key"],
            *listed,
            _materialized(r["materialized"], r["assets"]),
            str(r["read_errors"]),
            str(r["record_failures"]),
            "-" if run is None else f"{run['status']} {run['id'][:8]}",
        )
    console.print(out)
    console.print(
        "Run one: pz-dagster run --partition KEY; new files are batched by `pz-dagster register`.",
        markup=False,
        soft_wrap=True,
    )
