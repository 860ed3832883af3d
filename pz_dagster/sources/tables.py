"""DuckDB tables, declared in ``pz_dagster.query`` and read here (always read-only, so the
process writing a table keeps DuckDB's single writer lock): their columns when a query is
compiled (``describe_table``), a reference table's rows (``read_table``), and a watched table's
rows as batch items and one batch read back.

Each row of a watched table is an item named by its id (``FileRef.path``) with the hash of its
values (``FileRef.sha256``), so batching, content-derived keys and edited-item handling are the
same as for the files of a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import duckdb

from pz_dagster.errors import SourceError
from pz_dagster.sources.batches import Batch, FileRef

Record = dict[str, Any]
CHANGED = "row changed since its batch was registered; the new version is a new batch"
DELETED = "row no longer in the table"
_DUCKDB_TYPES = {
    "VARCHAR": str,
    "BIGINT": int,
    "INTEGER": int,
    "SMALLINT": int,
    "HUGEINT": int,
    "DOUBLE": float,
    "FLOAT": float,
    "REAL": float,
    "BOOLEAN": bool,
}


def row_sha256(row: Record) -> str:
    text = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def select_of(table_or_sql: str) -> str:
    """The SELECT that reads a table (by name) or a query.

    >>> select_of("tickets"), select_of("select id from tickets")
    ('SELECT * FROM "tickets"', 'select id from tickets')
    """
    if table_or_sql.lstrip().lower().startswith("select"):
        return table_or_sql
    return f'SELECT * FROM "{table_or_sql}"'


def _query(database: str, table_or_sql: str, sql: str, params: Any = None) -> list[Record]:
    """The rows of ``sql`` (which reads ``table_or_sql``) on the file opened read-only."""
    try:
        with duckdb.connect(database, read_only=True) as con:
            cur = con.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    except duckdb.IOException as exc:
        if not os.path.exists(database):  # read-only never makes the file
            raise SourceError(
                f"cannot read {table_or_sql!r} from {database}: no such file"
            ) from None
        raise SourceError(  # another process holds the writer lock
            f"cannot open {database} read-only now (locked by a writer?): {exc}"
        ) from None
    except duckdb.Error as exc:
        raise SourceError(f"cannot read {table_or_sql!r} from {database}: {exc}") from None


def describe_table(database: str, table_or_sql: str) -> tuple[tuple[str, Any], ...]:
    """(column, Python type) of a DuckDB table or SELECT; a type with no Python counterpart
    (DATE, DECIMAL, TIMESTAMP...) is text."""
    described = _query(database, table_or_sql, f"DESCRIBE {select_of(table_or_sql)}")
    return tuple(
        (row["column_name"], _DUCKDB_TYPES.get(str(row["column_type"]).upper(), str))
        for row in described
    )


def read_table(database: str, table_or_sql: str) -> list[Record]:
    """Every row of a DuckDB table or SELECT, as DuckDB returns its values."""
    return _query(database, table_or_sql, select_of(table_or_sql))


def _rows(database: str, sql: str, id_column: str, ids: Sequence[str] | None) -> list[Record]:
    """Rows of ``sql`` (all, or those whose id is in ``ids``), read-only."""
    where = f'WHERE CAST("{id_column}" AS VARCHAR) IN (SELECT unnest($ids))' if ids else ""
    return _query(
        database,
        sql,
        f"SELECT * FROM ({select_of(sql)}) AS t {where}",
        {"ids": list(ids)} if ids else None,
    )


def scan_table(database: str, sql: str, id_column: str) -> list[FileRef]:
    """Every row as a batch item (id, content hash), sorted by id; duplicate ids are an error
    (a batch key must name its rows unambiguously)."""
    refs: dict[str, FileRef] = {}
    for row in _rows(database, sql, id_column, None):
        rid = row.get(id_column)
        if rid is None:
            raise SourceError(f"{database}: a row of {sql!r} has no {id_column!r}")
        key = str(rid)
        if key in refs:
            raise SourceError(
                f"{database}: id {key!r} appears twice in {sql!r}; ids must be unique"
            )
        refs[key] = FileRef(path=key, sha256=row_sha256(row), size=0)
    return sorted(refs.values(), key=lambda r: r.path)


def read_table_batch(
    database: str, sql: str, id_column: str, columns: Sequence[str], batch: Batch
) -> list[Record]:
    """The batch's rows as records (record_id = the row's id). A row edited since the batch was
    registered, or deleted, is kept as a record with the error column set."""
    rows = {
        str(r[id_column]): r for r in _rows(database, sql, id_column, [f.path for f in batch.files])
    }
    out = []
    for ref in batch.files:
        row = rows.get(ref.path)
        error = DELETED if row is None else CHANGED if row_sha256(row) != ref.sha256 else None
        values = {c: (row or {}).get(c) for c in columns}
        out.append({**values, "record_id": ref.path, "error": error})
    return out
