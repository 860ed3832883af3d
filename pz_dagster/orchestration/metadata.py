"""Materialization metadata for Dagster's UI: tuning's plain values rendered as
``MetadataValue``s (Markdown as Markdown, JSON as JSON; numbers stay numbers, so the UI plots
them), with Dagster's row count and column schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from pz_dagster.operators.base import OperatorResult
from pz_dagster.query import plan
from pz_dagster.tuning.report import Markdown, run_metadata
from pz_dagster.tuning.step import EndpointUnanswered, history_record


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


def source_metadata(
    node: plan.PlanNode, result: OperatorResult, wall_seconds: float
) -> dict[str, Any]:
    """The materialization metadata of a source's read (its history record included)."""
    columns = plan.column_types(node)
    md = run_metadata(result, [c for c, _ in columns], wall_seconds, history_record(node, result))
    return materialization_metadata(md, result.stats.records_out, columns)


def unanswered_failure(exc: EndpointUnanswered) -> dg.Failure:
    """A step whose endpoint did not answer, as the ``Failure`` that fails its asset."""
    return dg.Failure(description=str(exc), metadata=render(exc.metadata))
