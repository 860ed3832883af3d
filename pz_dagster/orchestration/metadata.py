"""Materialization metadata for Dagster's UI: tuning's plain values rendered as
``MetadataValue``s (Markdown as Markdown, JSON as JSON; numbers stay numbers, so the UI plots
them), with Dagster's row count and column schema, and the files of a source's batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from pz_dagster import metadata_keys as K
from pz_dagster.operators.base import OperatorResult
from pz_dagster.query import plan
from pz_dagster.sources import Batch
from pz_dagster.tuning.report import Markdown, preview, source_report
from pz_dagster.tuning.step import EndpointUnanswered

BATCH_FILES_SHOWN = 50  # of a batch's files, in its source's materialization


def column_schema(columns: Sequence[tuple[str, Any]]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, getattr(t, "__name__", str(t))) for name, t in columns]
    )


def _value(value: Any) -> Any:
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(str(value))
    if isinstance(value, dict | list):
        return dg.MetadataValue.json(value)
    return value


def render(md: Mapping[str, Any]) -> dict[str, Any]:
    """Plain metadata values as Dagster takes them.

    >>> render({"n": 1, "note": Markdown("**x**"), "pairs": [[1, True]]})["note"]
    MarkdownMetadataValue(md_str='**x**')
    """
    return {k: _value(v) for k, v in md.items()}


def materialization_metadata(
    md: Mapping[str, Any], records: int, columns: Sequence[tuple[str, Any]]
) -> dict[str, Any]:
    """An asset's materialization metadata: ``md`` rendered, with Dagster's row count and the
    column schema of its ``records`` records."""
    return render(md) | {
        "dagster/row_count": records,
        "dagster/column_schema": column_schema(columns),
    }


def batch_files(batch: Batch) -> dg.TableMetadataValue:
    """The files (or a watched table's rows) of a batch as a table: path, size, the start of
    the content hash; past ``BATCH_FILES_SHOWN``, a last row says how many more.

    >>> from pz_dagster.sources import FileRef
    >>> refs = tuple(FileRef(path=f"{i}.txt", sha256="ab" * 32, size=i) for i in range(52))
    >>> table = batch_files(Batch(key="0001-0", files=refs))
    >>> len(table.records), table.records[-1].data["file"]
    (51, '… and 2 more')
    """
    rows = [
        dg.TableRecord({"file": f.path, "bytes": f.size, "sha256": f.sha256[:12]})
        for f in batch.files[:BATCH_FILES_SHOWN]
    ]
    if (more := len(batch.files) - BATCH_FILES_SHOWN) > 0:
        rows.append(dg.TableRecord({"file": f"… and {more} more", "bytes": None, "sha256": None}))
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("file", "string", description="path in the folder, or the row's id"),
            dg.TableColumn("bytes", "int", description="size when registered (-1: unreadable)"),
            dg.TableColumn("sha256", "string", description="start of the content hash"),
        ]
    )
    return dg.MetadataValue.table(rows, schema)


def source_metadata(
    node: plan.PlanNode, result: OperatorResult, wall_seconds: float, batch: Batch | None = None
) -> dict[str, Any]:
    """The materialization metadata of a source's read: its counts and preview (no model ran:
    no model counters, no history record), and the batch's files."""
    columns = plan.column_types(node)
    md = source_report(result, wall_seconds, preview(node, result))
    if batch is not None:
        md |= {K.BATCH_FILES: batch_files(batch), K.BATCH_DIGEST: batch.digest}
    return materialization_metadata(md, result.stats.records_out, columns)


def unanswered_failure(exc: EndpointUnanswered) -> dg.Failure:
    """A step whose endpoint did not answer, as the ``Failure`` that fails its asset."""
    return dg.Failure(description=str(exc), metadata=render(exc.metadata))
