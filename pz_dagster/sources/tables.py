"""A DuckDB table watched for new rows: rows as batch items, and reading one batch back.

Each row is an item named by its id (``FileRef.path``) with the hash of its values
(``FileRef.sha256``), so batching, content-derived keys and edited-item handling are the same
as for the files of a folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import duckdb

from pz_dagster.errors import SourceError
from pz_dagster.sources.batches import Batch, FileRef

Record = dict[str, Any]
CHANGED = "row changed since its batch was registered; the new version is a new batch"
DELETED = "row no longer in the table"


def row_sha256(row: Record) -> str:
    text = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _rows(database: str, sql: str, id_column: str, ids: Sequence[str] | None) -> list[Record]:
    """Rows of ``sql`` (all, or those whose id is in ``ids``), read-only."""
    where = f'WHERE CAST("{id_column}" AS VARCHAR) IN (SELECT unnest($ids))' if ids else ""
    try:
        with duckdb.connect(database, read_only=True) as con:
            cur = con.execute(
                f"SELECT * FROM ({sql}) AS t {where}", {"ids": list(ids)} if ids else None
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    except duckdb.IOException as exc:  # another process holds the writer lock
        raise SourceError(
            f"cannot open {database} read-only now (locked by a writer?): {exc}"
        ) from None
    except duckdb.Error as exc:
        raise SourceError(f"cannot read {sql!r} from {database}: {exc}") from None


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
