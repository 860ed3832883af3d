"""Record store: one Parquet file per asset partition, DuckDB views over them.

Why not dagster-duckdb: DuckDB admits one writer process per database file and dagster-duckdb
always opens it read-write (dagster issues #18746, #16248), so two partitions materializing at
once fail on the lock. Here every partition is its own Parquet file, written to a temporary name
and renamed into place (atomic on POSIX), so concurrent writers never meet.

The DuckDB catalog (``catalog.duckdb``) holds one view per asset over its files' glob. It is
never opened read-write in place: a refresh builds a new catalog in a temporary file and renames
it over the old one, so a reader holding the catalog open (even read-only, which DuckDB locks)
never makes a write wait; the reader keeps the catalog it opened, whose views read the same
globs. Open it read-only: changes made in it are lost at the next refresh.

Edited documents: a file edited after its batch was registered is batched again, and its newer
version supersedes exactly the records that came from that file (``record_items``). Next to each
partition of a per-batch asset, ``_lineage/<partition>.parquet`` says which batch item each row
came from; the asset's view leaves out the rows of items a later-registered, materialized batch
holds again, as ``RecordStore.without_superseded`` does for export, aggregates and joins.

Permissions: files are created with mode 0o666 and directories with 0o777, less the process
umask, as any file a process writes (umask 0o027 gives 0o640 / 0o750, readable by the group
that shares the store). See docs/store.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from pz_dagster.errors import SourceError
from pz_dagster.query.schema import RECORD_ID
from pz_dagster.sources.batches import Batch, in_order

log = logging.getLogger(__name__)

UNPARTITIONED = "__all__"
BATCHES_DIR = "_batches"
LINEAGE_DIR = "_lineage"
VIEWS_TABLE = "_pz_views"  # in the catalog: the views it was built with, to skip rebuilds
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_FILE_MODE = 0o666  # less the umask, applied by the kernel at creation
_DERIVED = "#|"  # f#...: rows of a CSV/JSONL file, flat-map items; f|...: join pairs

ARROW_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    list[str]: pa.list_(pa.string()),
    list[int]: pa.list_(pa.int64()),
    list[float]: pa.list_(pa.float64()),
}

LINEAGE_SCHEMA = pa.schema(
    [
        ("part", pa.string()),  # the partition file's name without .parquet
        ("batch", pa.string()),
        ("registered_at", pa.float64()),
        ("item", pa.string()),  # a file path of the batch (or a watched table's row id)
        ("row", pa.int64()),  # row of the partition file; null: the batch holds the item
    ]
)


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


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix keeps a half-written file out of the views' "*.parquet" glob. os.open with
    # 0o666 lets the kernel apply the umask like open() does; mkstemp forces 0o600, which
    # locked the group that shares the store out of its files.
    tmp = path.parent / f".tmp-{secrets.token_hex(8)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _item_of(record_id: str | None, filename: str | None, items: set[str]) -> str | None:
    """The item a record came from: its ``filename`` when the id derives from it (exact where
    the column survived), else the longest item the id is or extends with '#' or '|'."""
    if record_id is None:
        return None
    if filename in items and (
        record_id == filename or record_id.startswith((filename + "#", filename + "|"))
    ):
        return filename
    # Longest first: a.txt#notes.txt is its own document, not an item of a.txt.
    for end in range(len(record_id), 0, -1):
        if (end == len(record_id) or record_id[end] in _DERIVED) and record_id[:end] in items:
            return record_id[:end]
    return None


def record_items(table: pa.Table, items: Iterable[str]) -> list[str | None]:
    """For each row of ``table``, the batch item (file path, or a watched table's row id) it
    came from; None where no item fits (such rows are never left out).

    Records are ids derived from their document's: ``f`` itself, ``f#...`` (rows of a CSV or
    JSONL file, flat-map items) or ``f|...`` (join pairs, the left document first). Sources,
    maps, flat maps and joins keep the document's ``filename`` column, which settles the rare
    id that fits two items; a projection may drop it, and then the longest item wins.

    >>> t = pa.table({"record_id": ["a.txt#0", "a.txt#notes.txt", "a.txt#notes.txt|b"]})
    >>> record_items(t, ["a.txt", "a.txt#notes.txt"])
    ['a.txt', 'a.txt#notes.txt', 'a.txt#notes.txt']
    """
    names = set(items)
    if RECORD_ID not in table.column_names:
        return [None] * table.num_rows
    ids = table.column(RECORD_ID).to_pylist()
    files = (
        table.column("filename").to_pylist()
        if "filename" in table.column_names
        else [None] * table.num_rows
    )
    return [
        _item_of(None if rid is None else str(rid), None if fn is None else str(fn), names)
        for rid, fn in zip(ids, files, strict=True)
    ]


def lineage_table(part: str, batch: Batch, table: pa.Table) -> pa.Table:
    """Which item of ``batch`` each row of ``table`` (partition ``part``) came from, plus one
    row-less entry per item: an item the batch holds supersedes older versions even when none
    of its records reached this asset (a filter dropped them)."""
    items = [f.path for f in batch.files]
    rows = [(i, it) for i, it in enumerate(record_items(table, items)) if it is not None]
    n = len(items) + len(rows)
    return pa.table(
        {
            "part": [part] * n,
            "batch": [batch.key] * n,
            "registered_at": [batch.registered_at] * n,
            "item": items + [it for _, it in rows],
            "row": [None] * len(items) + [i for i, _ in rows],
        },
        schema=LINEAGE_SCHEMA,
    )


def _view_sql(asset_dir: Path) -> str:
    """The view of one asset: every partition file, less the rows of superseded items."""
    data = _sql_str((asset_dir / "*.parquet").as_posix())
    if not any((asset_dir / LINEAGE_DIR).glob("*.parquet")):
        return f"SELECT * FROM read_parquet({data}, union_by_name = true, filename = false)"
    lineage = _sql_str((asset_dir / LINEAGE_DIR / "*.parquet").as_posix())
    # Only partitions whose data file exists take part (like `present` in read_batches); an
    # item's newest version is its latest (registered_at, batch), as in superseded().
    return (
        f"WITH lineage AS (SELECT * FROM read_parquet({lineage}) WHERE part IN "
        f"(SELECT parse_filename(file, true) FROM glob({data}))), "
        "newest AS (SELECT item, max({'t': registered_at, 'b': batch}) AS v "
        "FROM lineage GROUP BY item), "
        "stale AS (SELECT l.part, l.row FROM lineage l JOIN newest n USING (item) "
        "WHERE l.row IS NOT NULL AND {'t': l.registered_at, 'b': l.batch} < n.v) "
        "SELECT * EXCLUDE (__pz_file, file_row_number) FROM read_parquet("
        f"{data}, union_by_name = true, filename = '__pz_file', file_row_number = true) d "
        "WHERE NOT EXISTS (SELECT 1 FROM stale s WHERE s.part = parse_filename(d.__pz_file, "
        "true) AND s.row = d.file_row_number)"
    )


class RecordStore:
    """Files under ``root``: ``<query>/<asset>/<partition>.parquet`` (with
    ``<query>/<asset>/_lineage/<partition>.parquet`` for per-batch assets),
    ``<query>/_batches/<key>.json`` and ``catalog.duckdb`` with a view ``<query>__<asset>``
    per asset. Modes follow the process umask (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def partition_path(self, asset_path: Sequence[str], partition: str | None) -> Path:
        name = _SAFE.sub("_", partition) if partition else UNPARTITIONED
        return self.root.joinpath(*asset_path) / f"{name}.parquet"

    def write(self, asset_path: Sequence[str], partition: str | None, table: pa.Table) -> Path:
        """Store one partition; a batch's partition also gets its lineage file, written after
        the data so that a reader never sees rows hidden on behalf of data not yet there."""
        path = self.partition_path(asset_path, partition)
        _atomic_write_bytes(path, _parquet_bytes(table))
        if partition is not None:
            self._write_lineage(asset_path, path, table)
        return path

    def read(self, asset_path: Sequence[str], partition: str | None) -> pa.Table:
        path = self.partition_path(asset_path, partition)
        if not path.exists():
            raise SourceError(
                f"no stored records for {'/'.join(asset_path)} partition {partition!r}: "
                "materialize the upstream asset for this partition first"
            )
        return pq.read_table(path)

    # --- lineage -------------------------------------------------------------------------

    def _find_batch(self, query: str, key: str) -> Batch | None:
        """The manifest of batch ``key`` of the query's main folder or of a folder it joins
        with (keys hash the items, so one key names the same files wherever it is found)."""
        d = self._batch_dir(query)
        name = f"{_SAFE.sub('_', key)}.json"
        for path in (d / name, *sorted(d.glob(f"*/{name}"))):
            if path.is_file():
                return Batch.model_validate_json(path.read_bytes())
        return None

    def _write_lineage(self, asset_path: Sequence[str], path: Path, table: pa.Table) -> None:
        # Asset paths are [*key prefix, query, asset]: the query's manifests name the batch.
        batch = self._find_batch(asset_path[-2], path.stem) if len(asset_path) >= 2 else None
        if batch is None:
            return  # not a batch (e.g. a hand-written partition): nothing can supersede it
        lineage = lineage_table(path.stem, batch, table)
        _atomic_write_bytes(path.parent / LINEAGE_DIR / path.name, _parquet_bytes(lineage))

    def _backfill_lineage(self, asset_path: Sequence[str]) -> None:
        """Lineage files for partitions stored without one (by an older version)."""
        d = self.root.joinpath(*asset_path)
        for path in sorted(d.glob("*.parquet")):
            if path.stem == UNPARTITIONED or (d / LINEAGE_DIR / path.name).exists():
                continue
            try:
                names = pq.read_schema(path).names
                wanted = [c for c in (RECORD_ID, "filename") if c in names]
                table = pq.read_table(path, columns=wanted)
            except (OSError, pa.ArrowException) as exc:  # the view reports it when created
                log.warning("cannot read %s for its lineage: %s", path, exc)
                continue
            self._write_lineage(asset_path, path, table)

    # --- catalog -------------------------------------------------------------------------

    def _asset_dirs(self) -> Iterator[Path]:
        """Folders holding partition files: one per asset."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and d not in (BATCHES_DIR, LINEAGE_DIR)
            )
            here = Path(dirpath)
            if here != self.root and any(f.endswith(".parquet") for f in filenames):
                yield here

    def _wanted_views(self) -> dict[str, str]:
        return {view_name(d.relative_to(self.root).parts): _view_sql(d) for d in self._asset_dirs()}

    def _catalog_views(self) -> dict[str, str | None] | None:
        """The views the current catalog was built with; None when it cannot be read now. A
        fresh in-memory database attaches it, so this process's cached connections on the
        catalog's path (to the file it replaced, maybe) are not reused."""
        if not self.catalog_path.is_file():
            return None
        try:
            with duckdb.connect() as con:
                con.execute(f"ATTACH {_sql_str(str(self.catalog_path))} AS cat (READ_ONLY)")
                rows = con.execute(f"SELECT name, definition FROM cat.{VIEWS_TABLE}").fetchall()
        except duckdb.Error:  # locked read-write by someone, or built by an older version
            return None
        return dict(rows)

    def _replace_catalog(self, views: dict[str, str]) -> list[str]:
        """Build a catalog with ``views`` in a temporary file and rename it over the old one;
        returns the views that could not be created (recorded without a definition, so that
        the next refresh tries them again)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".catalog-{secrets.token_hex(8)}.duckdb"
        failed: list[str] = []
        try:
            with duckdb.connect(str(tmp)) as con:
                con.execute(f"CREATE TABLE {VIEWS_TABLE} (name VARCHAR, definition VARCHAR)")
                for name, sql in sorted(views.items()):
                    try:
                        con.execute(f'CREATE VIEW "{name}" AS {sql}')
                    except duckdb.Error as exc:
                        log.warning("DuckDB view %s could not be created: %s", name, exc)
                        failed.append(name)
                con.executemany(
                    f"INSERT INTO {VIEWS_TABLE} VALUES (?, ?)",
                    [(n, None if n in failed else s) for n, s in sorted(views.items())],
                )
                con.execute("CHECKPOINT")  # everything in the file itself, no WAL to carry
            os.replace(tmp, self.catalog_path)
        finally:
            tmp.unlink(missing_ok=True)
            Path(f"{tmp}.wal").unlink(missing_ok=True)
        return failed

    def refresh_view(self, asset_path: Sequence[str]) -> None:
        """Make the catalog hold the view of ``asset_path`` and of every other stored asset.

        Never waits on a lock: the catalog is rebuilt in a temporary file and renamed into
        place only when its views differ from the wanted ones. Writers refreshing at once may
        rename in any order, so the result is checked again (a catalog built before another
        writer's first partition of a new asset misses that view). Raises ``duckdb.Error``
        naming the views that could not be created; the others are in place."""
        self._backfill_lineage(asset_path)
        failed: list[str] = []
        for attempt in range(3):
            wanted = self._wanted_views()
            current = self._catalog_views()
            if current == wanted or (current is None and attempt):
                return  # up to date, or unreadable (held read-write elsewhere): ours is in
            failed = self._replace_catalog(wanted)
            if failed:
                break
        if failed:
            raise duckdb.Error(f"DuckDB view(s) {', '.join(failed)} could not be created")

    def connect(self, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection on the catalog; query ``SELECT * FROM "<query>__<asset>"``.

        The catalog is attached to a new in-memory database, so each call sees the catalog as
        it is now: ``duckdb.connect(path)`` would hand back this process's cached database
        while a connection on it is open, which is the file a refresh has since replaced. A
        connection keeps the catalog it opened (views added later need a new connection);
        views always read the current files. ``read_only=False`` takes DuckDB's write lock,
        and whatever is created there is lost at the next refresh."""
        con = duckdb.connect()
        mode = " (READ_ONLY)" if read_only else ""
        con.execute(f"ATTACH {_sql_str(str(self.catalog_path))} AS pz_catalog{mode}")
        con.execute("USE pz_catalog")
        return con

    # --- locks ---------------------------------------------------------------------------

    def lock(self, query: str, name: str, timeout: float = -1) -> FileLock:
        """An exclusive lock named ``name`` among the query's processes (``flock``: the kernel
        releases it if the holder dies), under ``<query>/_locks/``; ``timeout`` -1 waits."""
        path = self.root / query / "_locks" / f"{_SAFE.sub('_', name)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(path, timeout=timeout)  # created with the umask, like the files here

    # --- batch manifests -----------------------------------------------------------------

    def _batch_dir(self, query: str, source: str | None = None) -> Path:
        """Manifests of the query's main folder, or of another folder it joins with."""
        d = self.root / query / BATCHES_DIR
        return d / _SAFE.sub("_", source) if source else d

    def save_batch(self, query: str, batch: Batch, source: str | None = None) -> Batch:
        """Save a new batch's manifest, stamped with its registration time; returns it as saved
        (an existing manifest is kept as it is)."""
        path = self._batch_dir(query, source) / f"{batch.key}.json"
        if path.exists():
            saved = Batch.model_validate(json.loads(path.read_text()))
            if saved.digest != batch.digest:  # a key names one set of files, forever
                raise SourceError(
                    f"batch {batch.key!r} of query {query!r} is already saved with other files "
                    f"({path}); register batches only through the sensor or `pz-dagster "
                    "register`, which number them under a lock"
                )
            return saved
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
        """The source's batches, in registration order (``sources.batches.in_order``)."""
        d = self._batch_dir(query, source)
        if not d.is_dir():
            return []
        return in_order(Batch.model_validate(json.loads(p.read_text())) for p in d.glob("*.json"))

    def _loaded(self, query: str, keys: Sequence[str], source: str | None) -> dict[str, Batch]:
        out = {}
        for k in keys:
            try:
                out[k] = self.load_batch(query, k, source)
            except SourceError:
                continue
        return out

    @staticmethod
    def _stale(batches: Iterable[Batch]) -> dict[str, set[str]]:
        batches = list(batches)
        latest: dict[str, tuple[float, str]] = {}
        for b in batches:
            for f in b.files:
                seen = latest.get(f.path)
                if seen is None or (b.registered_at, b.key) > seen:
                    latest[f.path] = (b.registered_at, b.key)
        stale = {b.key: {f.path for f in b.files if latest[f.path][1] != b.key} for b in batches}
        return {k: files for k, files in stale.items() if files}

    def superseded(
        self, query: str, keys: Sequence[str], source: str | None = None
    ) -> dict[str, set[str]]:
        """For each batch of ``keys``, the files a later-registered batch of ``keys`` holds a
        newer version of (an edited file is batched again): its records there are out of date."""
        return self._stale(self._loaded(query, keys, source).values())

    def without_superseded(
        self, query: str, keys: Sequence[str], tables: Sequence[pa.Table], source: str | None = None
    ) -> tuple[list[pa.Table], int, int]:
        """``tables`` (one per batch of ``keys``) without the records of files that a later
        batch holds a newer version of; also the count of records left out and of such files.
        Each record is attributed to the one file of its batch it came from (``record_items``):
        a sibling whose name extends the edited file's (``a.txt#notes.txt``) is kept. A join
        pair follows its left record; the right side's edits were applied when it was joined."""
        loaded = self._loaded(query, keys, source)
        stale = self._stale(loaded.values())
        if not stale:
            return list(tables), 0, 0
        out, dropped = [], 0
        for key, table in zip(keys, tables, strict=True):
            files = stale.get(key)
            if not files:
                out.append(table)
                continue
            items = record_items(table, (f.path for f in loaded[key].files))
            keep = [it not in files for it in items]
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
