"""Relational operators over records: Python filter, projection, limit. No model involved."""

from __future__ import annotations

from pz_dagster.errors import RecordFailure
from pz_dagster.operators.base import OperatorResult, OperatorStats, Outcome, Record, run_per_record
from pz_dagster.query.plan import Filter, Limit, Project


def run_filter(node: Filter, records: list[Record]) -> OperatorResult:
    """Records that already carry an error pass through; a predicate that raises marks its record."""
    assert node.predicate is not None
    predicate = node.predicate

    def test(record: Record) -> Outcome:
        try:
            keep = predicate(dict(record))
        except Exception as exc:  # user code: record the failure, keep the run going
            raise RecordFailure(f"predicate raised {type(exc).__name__}: {exc}") from None
        return Outcome(record if keep else None)

    out, stats = run_per_record(records, test, op_name=node.name, concurrency=1)
    return OperatorResult(out, stats, strategy="python")


def run_project(node: Project, records: list[Record]) -> OperatorResult:
    stats = OperatorStats(records_in=len(records), evaluated=len(records))
    out = [{c: r.get(c) for c in node.columns} for r in records]
    stats.records_out = len(out)
    return OperatorResult(out, stats, strategy="relational")


def run_limit(node: Limit, records: list[Record]) -> OperatorResult:
    """The first n healthy records; records carrying an error are kept so none vanish unseen."""
    stats = OperatorStats(records_in=len(records), evaluated=len(records))
    out, kept = [], 0
    for r in records:
        if r.get("error"):
            out.append(r)
        elif kept < node.n:
            out.append(r)
            kept += 1
    stats.records_out = len(out)
    return OperatorResult(out, stats, strategy="relational")
