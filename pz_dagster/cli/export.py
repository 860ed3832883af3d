"""`pz-dagster export`: an asset's records as CSV or Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pz_dagster.cli.common import (
    asset_key,
    check_partitions,
    console,
    load,
    ordered_batches,
    prepare_home,
    record_store,
)
from pz_dagster.errors import PzError


def export_records(
    module: str,
    query_file: Path | None,
    home: str | None,
    asset_name: str | None,
    fmt: str | None,
    partition: str | None,
    out: Path,
) -> None:
    prepare_home(home)
    defs, query = load(module, query_file)
    key = asset_key(query, asset_name)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in ("csv", "parquet"):
        raise click.BadParameter(
            f"cannot tell the format of {out.name!r}; name it .csv or .parquet or pass --format",
            param_hint="--format",
        )
    store = record_store(defs)
    partitioned = next(a for a in query.assets if key in a.keys).partitions_def
    source = next((s for s in query.sources if s.partitions_def == partitioned), None)
    if partition is not None and source is not None:
        known = [b.key for b in ordered_batches(store, query, source)]
        check_partitions(query, [partition], known)
    try:
        if partitioned is None:
            table = store.read(key.path, None)
        elif partition is not None:
            table = store.read(key.path, partition)
        else:
            assert source is not None
            table, missing = store.read_batches(key.path, query.name, source.manifest)
            if missing:
                console.print(
                    f"[yellow]{len(missing)} batch(es) not materialized yet are not included; "
                    "run them with `pz-dagster run --partitions 0`[/yellow]"
                )
    except PzError as exc:
        raise click.ClickException(f"{exc}; run `pz-dagster run` first") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, out)
    else:
        # CSV has no lists: list columns are written as JSON text.
        for i, field in enumerate(table.schema):
            if str(field.type).startswith("list"):
                texts = [None if v is None else json.dumps(v) for v in table.column(i).to_pylist()]
                table = table.set_column(i, field.name, pa.array(texts, type=pa.string()))
        pacsv.write_csv(table, out)
    console.print(f"{table.num_rows} record(s) of {key.to_user_string()} written to {out}")
