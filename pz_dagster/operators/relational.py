"""Relational operators over records: Python filter, projection, limit. No model involved."""

from __future__ import annotations

from pz_dagster.errors import PzError, RecordFailure
from pz_dagster.operators.base import OperatorResult, OperatorStats, Outcome, Record, run_per_record
from pz_dagster.query.plan import Distinct, Filter, Limit, Map, Project, Sort
from pz_dagster.query.schema import coerce_value


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
    """The first n records, those carrying an error included (they count toward n), so that a
    limit gives the same records before or after a one-to-one operator that flags failures."""
    out = records[: node.n]
    stats = OperatorStats(records_in=len(records), evaluated=len(records), records_out=len(out))
    stats.passed_through_errors = sum(1 for r in out if r.get("error"))
    return OperatorResult(out, stats, strategy="relational")


def run_map(node: Map, records: list[Record]) -> OperatorResult:
    """New columns from a Python function; a function that raises or returns the wrong keys marks
    its record (with null new columns)."""
    assert node.fn is not None
    fn, wanted = node.fn, [c for c, _ in node.output]
    empty = dict.fromkeys(wanted)

    def apply(record: Record) -> Outcome:
        try:
            values = fn(dict(record))
        except Exception as exc:  # user code
            raise RecordFailure(f"function raised {type(exc).__name__}: {exc}") from None
        if not isinstance(values, dict) or set(values) != set(wanted):
            got = sorted(values) if isinstance(values, dict) else type(values).__name__
            raise RecordFailure(f"function must return a dict with keys {wanted}, got {got}")
        try:
            typed = {c: coerce_value(values[c], t) for c, t in node.output}
        except TypeError as exc:
            raise RecordFailure(f"function returned a value of the wrong type: {exc}") from None
        return Outcome({**record, **typed})

    out, stats = run_per_record(
        records, apply, op_name=node.name, concurrency=1, on_failure=lambda r: {**r, **empty}
    )
    return OperatorResult(out, stats, strategy="python")


def run_sort(node: Sort, records: list[Record]) -> OperatorResult:
    """Stable sort by the columns, nulls last in either direction; records with an error go last.

    One stable pass per column, last column first, gives the multi-column order."""
    ordered = [r for r in records if not r.get("error")]
    failed = [r for r in records if r.get("error")]
    try:
        for col in reversed(node.by):
            present = [r for r in ordered if r.get(col) is not None]
            present.sort(key=lambda r, col=col: r[col], reverse=node.descending)
            ordered = present + [r for r in ordered if r.get(col) is None]
    except TypeError as exc:
        raise PzError(
            f"sort {node.name!r}: values of {list(node.by)} cannot be compared ({exc})"
        ) from None
    stats = OperatorStats(records_in=len(records), evaluated=len(ordered), records_out=len(records))
    stats.passed_through_errors = len(failed)
    return OperatorResult(ordered + failed, stats, strategy="relational")


def run_distinct(node: Distinct, records: list[Record]) -> OperatorResult:
    seen: set[str] = set()
    out = []
    for r in records:
        if r.get("error"):
            out.append(r)
            continue
        key = repr(tuple(r.get(c) for c in node.on))
        if key not in seen:
            seen.add(key)
            out.append(r)
    stats = OperatorStats(records_in=len(records), evaluated=len(records), records_out=len(out))
    return OperatorResult(out, stats, strategy="relational")
