"""The assets that read a query's inputs: a batch of a folder or of a watched table (one record
per document or row, unreadable ones kept with the error set), or a whole reference table; and
the DuckDB tables' columns, read before the query is compiled."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from pz_dagster.errors import SourceError
from pz_dagster.operators.base import OperatorResult, OperatorStats
from pz_dagster.orchestration.asset_docs import asset_description, definition_metadata
from pz_dagster.orchestration.checks import CheckSettings, check_specs, evaluate
from pz_dagster.orchestration.keys import IO_MANAGER_KEY
from pz_dagster.orchestration.metadata import source_metadata
from pz_dagster.orchestration.resources import RecordStoreResource
from pz_dagster.orchestration.store import to_table
from pz_dagster.query import plan
from pz_dagster.query.dataset import Dataset
from pz_dagster.query.join import describe_tables as describe_plan_tables
from pz_dagster.query.nodes import Columns
from pz_dagster.query.schema import ERROR, RECORD_ID, coerce_value
from pz_dagster.sources import Batch, read_file
from pz_dagster.sources.tables import describe_table, read_table, read_table_batch


def _columns_of(table: plan.TableSource | plan.TableBatchSource) -> Columns:
    assert table.database is not None and table.sql is not None
    try:
        return describe_table(table.database, table.sql)
    except SourceError as exc:
        raise SourceError(f"table {table.name!r}: {exc}") from None


def describe_tables(dataset: Dataset) -> Dataset:
    """The query with the columns of its DuckDB tables read now (their declaration opened
    nothing), and every check that needed them run: what ``build_definitions`` compiles.

    >>> describe_tables(Dataset.from_directory("emails")).columns
    ('record_id', 'filename', 'contents', 'provenance', 'error')
    """
    node = describe_plan_tables(dataset.node, _columns_of)
    return dataset if node is dataset.node else Dataset(node)


def table_records(node: plan.TableSource) -> list[dict[str, Any]]:
    """A reference table's records now (record_id from the data, or the row number)."""
    if node.database is None:
        return [dict(r) for r in node.records]
    assert node.sql is not None
    try:
        rows = read_table(node.database, node.sql)
    except SourceError as exc:
        raise SourceError(f"table {node.name!r}: {exc}") from None
    types = dict(node.fields)
    out = []
    for i, row in enumerate(rows, start=1):
        # DATE, DECIMAL, TIMESTAMP... arrive as Python objects: stored as their text.
        rec = {k: coerce_value(v, types.get(k, str)) for k, v in row.items()}
        out.append({**rec, RECORD_ID: str(rec.get(RECORD_ID, f"{node.name}#{i}")), ERROR: None})
    return out


def _read_batch(node: plan.BatchedSource, batch: Batch) -> list[dict[str, Any]]:
    """A batch's records: one per document of a folder (edited files flagged), or one per row
    of a watched table (edited or deleted rows flagged)."""
    if isinstance(node, plan.TableBatchSource):
        types = dict(node.fields)
        rows = read_table_batch(node.database, node.sql, node.id_column, list(types), batch)
        # DATE, DECIMAL, TIMESTAMP... arrive as Python objects: stored as their text.
        return [{c: coerce_value(v, types.get(c, str)) for c, v in r.items()} for r in rows]
    assert isinstance(node, plan.DirectorySource)
    root = Path(node.path)
    # The bytes read are checked against the manifest's hash, so no edit can slip in between a
    # second hashing and the read: read_file flags the records of a file changed since.
    return [
        rec
        for ref in batch.files
        for rec in read_file(root, ref.path, expected_sha256=ref.sha256, unit=node.unit)
    ]


def source_asset(
    query: str,
    node: plan.BatchedSource,
    parts: dg.DynamicPartitionsDefinition,
    manifest: str | None,
    checks: CheckSettings,
    key_prefix: tuple[str, ...] = (),
):
    columns = plan.column_types(node)
    key = dg.AssetKey([*key_prefix, query, node.name])

    @dg.asset(
        key=key,
        partitions_def=parts,
        check_specs=check_specs(node, key, checks),
        io_manager_key=IO_MANAGER_KEY,
        group_name=query,
        kinds={"pz", "duckdb" if isinstance(node, plan.TableBatchSource) else "files"},
        description=asset_description(node, key),
        metadata=definition_metadata(node, key),
    )
    def _source(
        context: dg.AssetExecutionContext, pz_store: RecordStoreResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        start = time.perf_counter()
        store = pz_store.get_store()
        batch = store.load_batch(query, context.partition_key, manifest)
        records = _read_batch(node, batch)
        stats = OperatorStats(
            records_in=len(batch.files), records_out=len(records), evaluated=len(records)
        )
        stats.passed_through_errors = sum(1 for r in records if r["error"])
        result = OperatorResult(records, stats, strategy="read")
        md = source_metadata(node, result, time.perf_counter() - start, batch)
        if stats.passed_through_errors:
            context.log.warning(
                f"{stats.passed_through_errors} item(s) could not be read; see the error column"
            )
        yield dg.Output(to_table(records, columns), metadata=md)
        yield from evaluate(node, key, result, checks, context.partition_key)

    return _source


def table_asset(
    query: str, node: plan.TableSource, checks: CheckSettings, key_prefix: tuple[str, ...] = ()
):
    columns = plan.column_types(node)
    key = dg.AssetKey([*key_prefix, query, node.name])

    @dg.asset(
        key=key,
        check_specs=check_specs(node, key, checks),
        io_manager_key=IO_MANAGER_KEY,
        group_name=query,
        kinds={"pz", "duckdb"} if node.database else {"pz", "python"},
        description=asset_description(node, key),
        metadata=definition_metadata(node, key),
    )
    def _table(context: dg.AssetExecutionContext) -> Iterator[dg.Output | dg.AssetCheckResult]:
        start = time.perf_counter()
        records = table_records(node)
        n = len(records)
        stats = OperatorStats(records_in=n, records_out=n, evaluated=n)
        result = OperatorResult(records, stats, strategy="read")
        md = source_metadata(node, result, time.perf_counter() - start)
        yield dg.Output(to_table(records, columns), metadata=md)
        yield from evaluate(node, key, result, checks, None)

    return _table
