"""Record store: one Parquet file per asset partition, DuckDB views over them.

Why not dagster-duckdb: DuckDB admits one writer process per database file and dagster-duckdb
always opens it read-write (dagster issues #18746, #16248), so two partitions materializing at
once fail on the lock. Here every partition is its own Parquet file, written to a temporary name
and renamed into place (atomic on POSIX), so concurrent writers never meet. A DuckDB catalog file
holds one view per asset over its files' glob; refreshing it needs the lock only briefly and is
retried, and since views read the glob, data written while the lock was busy still shows up.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random_exponential

from pz_dagster.errors import SourceError
from pz_dagster.query.schema import RECORD_ID
from pz_dagster.sources.batches import Batch

UNPARTITIONED = "__all__"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

ARROW_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    list[str]: pa.list_(pa.string()),
    list[int]: pa.list_(pa.int64()),
    list[float]: pa.list_(pa.float64()),
}


def arrow_schema(columns: Sequence[tuple[str, Any]]) -> pa.Schema:
    return pa.schema([(name, ARROW_TYPES.get(typ, pa.string())) for name, typ in columns])


def to_table(records: Sequence[dict[str, Any]], columns: Sequence[tuple[str, Any]]) -> pa.Table:
    """Records as an Arrow table with the declared column types (missing keys become null)."""
    schema = arrow_schema(columns)
    return pa.Table.from_pylist(
        [{c: r.get(c) for c in schema.names} for r in records], schema=schema
    )


def view_name(asset_path: Sequence[str]) -> str:
    return "__".join(asset_path)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix keeps a half-written file out of the views' "*.parquet" glob.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RecordStore:
    """Files under ``root``: ``<query>/<asset>/<partition>.parquet``, ``<query>/_batches/<key>.json``
    and ``catalog.duckdb`` with a view ``<query>__<asset>`` per asset."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def partition_path(self, asset_path: Sequence[str], partition: str | None) -> Path:
        name = _SAFE.sub("_", partition) if partition else UNPARTITIONED
        return self.root.joinpath(*asset_path) / f"{name}.parquet"

    def write(self, asset_path: Sequence[str], partition: str | None, table: pa.Table) -> Path:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        path = self.partition_path(asset_path, partition)
        _atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    def read(self, asset_path: Sequence[str], partition: str | None) -> pa.Table:
        path = self.partition_path(asset_path, partition)
        if not path.exists():
            raise SourceError(
                f"no stored records for {'/'.join(asset_path)} partition {partition!r}: "
                "materialize the upstream asset for this partition first"
            )
        return pq.read_table(path)

    # --- catalog -------------------------------------------------------------------------

    @retry(
        retry=retry_if_exception_type(duckdb.IOException),
        wait=wait_random_exponential(multiplier=0.05, max=1.0),
        stop=stop_after_delay(15),
        reraise=True,
    )
    def refresh_view(self, asset_path: Sequence[str]) -> None:
        """Create or replace the asset's view in the catalog (retried while another process holds
        the DuckDB lock)."""
        glob = (self.root.joinpath(*asset_path) / "*.parquet").as_posix()
        self.root.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(self.catalog_path)) as con:
            con.execute(
                f'CREATE OR REPLACE VIEW "{view_name(asset_path)}" AS '
                f"SELECT * FROM read_parquet('{glob}', union_by_name = true, filename = false)"
            )

    def connect(self, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection on the catalog; query ``SELECT * FROM "<query>__<asset>"``."""
        return duckdb.connect(str(self.catalog_path), read_only=read_only)

    # --- batch manifests -----------------------------------------------------------------

    def _batch_dir(self, query: str, source: str | None = None) -> Path:
        """Manifests of the query's main folder, or of another folder it joins with."""
        d = self.root / query / "_batches"
        return d / _SAFE.sub("_", source) if source else d

    def save_batch(self, query: str, batch: Batch, source: str | None = None) -> Batch:
        """Save a new batch's manifest, stamped with its registration time; returns it as saved
        (an existing manifest is kept as it is)."""
        path = self._batch_dir(query, source) / f"{batch.key}.json"
        if path.exists():
            return Batch.model_validate(json.loads(path.read_text()))
        stamped = batch.model_copy(update={"registered_at": time.time()})
        _atomic_write_bytes(path, stamped.model_dump_json(indent=1).encode())
        return stamped

    def load_batch(self, query: str, key: str, source: str | None = None) -> Batch:
        path = self._batch_dir(query, source) / f"{_SAFE.sub('_', key)}.json"
        if not path.exists():
            raise SourceError(
                f"partition {key!r} of query {query!r} has no batch manifest under {path.parent}; "
                "register batches with the query's sensor or `pz-dagster register`"
            )
        return Batch.model_validate(json.loads(path.read_text()))

    def batches(self, query: str, source: str | None = None) -> list[Batch]:
        d = self._batch_dir(query, source)
        if not d.is_dir():
            return []
        return [Batch.model_validate(json.loads(p.read_text())) for p in sorted(d.glob("*.json"))]

    def batch_files_seen(self, query: str, source: str | None = None) -> Iterable:
        for b in self.batches(query, source):
            yield from b.files

    def superseded(
        self, query: str, keys: Sequence[str], source: str | None = None
    ) -> dict[str, set[str]]:
        """For each batch of ``keys``, the files a later-registered batch holds a newer version
        of (an edited file is batched again): its records there are out of date."""
        batches = []
        for k in keys:
            try:
                batches.append(self.load_batch(query, k, source))
            except SourceError:
                continue
        latest: dict[str, tuple[float, str]] = {}
        for b in batches:
            for f in b.files:
                seen = latest.get(f.path)
                if seen is None or (b.registered_at, b.key) > seen:
                    latest[f.path] = (b.registered_at, b.key)
        return {
            b.key: {f.path for f in b.files if latest[f.path][1] != b.key}
            for b in batches
            if any(latest[f.path][1] != b.key for f in b.files)
        }

    def without_superseded(
        self, query: str, keys: Sequence[str], tables: Sequence[pa.Table], source: str | None = None
    ) -> tuple[list[pa.Table], int, int]:
        """``tables`` (one per batch of ``keys``) without the records of files that a later
        batch holds a newer version of; also the count of records left out and of such files.
        A record belongs to file F when its record_id is F or starts with F followed by '#' or
        '|' (rows of a CSV, items of a flat map, pairs of a join)."""
        stale = self.superseded(query, keys, source)
        if not stale:
            return list(tables), 0, 0
        out, dropped = [], 0
        for key, table in zip(keys, tables, strict=True):
            files = stale.get(key)
            if not files:
                out.append(table)
                continue
            ids = table.column(RECORD_ID).to_pylist()
            keep = [
                not any(rid == f or rid.startswith((f + "#", f + "|")) for f in files)
                for rid in ids
            ]
            dropped += keep.count(False)
            out.append(table.filter(pa.array(keep, type=pa.bool_())))
        return out, dropped, sum(len(f) for f in stale.values())

    def read_batches(
        self, asset_path: Sequence[str], query: str, source: str | None = None
    ) -> tuple[pa.Table, list[str]]:
        """Every materialized batch of a per-batch asset, concatenated, each document in its
        newest version; also the keys of the batches not materialized (yet)."""
        keys = [b.key for b in self.batches(query, source)]
        present = [k for k in keys if self.partition_path(asset_path, k).exists()]
        if not present:
            raise SourceError(f"no batch of {'/'.join(asset_path)} is materialized yet")
        tables, _, _ = self.without_superseded(
            query, present, [self.read(asset_path, k) for k in present], source
        )
        missing = [k for k in keys if k not in present]
        return pa.concat_tables(tables, promote_options="default"), missing
