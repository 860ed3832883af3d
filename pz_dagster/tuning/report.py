"""What a materialization shows beside its history record, as plain values: the run's counts,
a preview of its records, the optimizer's decision, the functions code synthesis kept.

``Markdown`` marks text meant to be shown as Markdown; orchestration renders the values for
Dagster's UI (``orchestration.metadata.render``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optimizer import Decision
from pz_dagster.operators.base import OperatorResult, Record
from pz_dagster.tuning.history import HistoryRecord

PREVIEW_ROWS = 5
PREVIEW_CHARS = 60


class Markdown(str):
    """Metadata text shown as Markdown."""


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def markdown_preview(records: Sequence[Record], columns: Sequence[str]) -> str:
    """The first records as a Markdown table.

    >>> print(markdown_preview([{"a": 1}], ["a"]))
    | a |
    |---|
    | 1 |
    """
    if not records:
        return "_no records_"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    rows = [
        "| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in records[:PREVIEW_ROWS]
    ]
    more = f"\n\n_{len(records) - PREVIEW_ROWS} more rows_" if len(records) > PREVIEW_ROWS else ""
    return head + "\n".join(rows) + more


def _bullets(lines: Sequence[str]) -> Markdown:
    return Markdown("\n".join(f"- {line}" for line in lines))


def run_report(
    result: OperatorResult, columns: Sequence[str], wall_seconds: float
) -> dict[str, Any]:
    """A run's counts beside those its history record holds, and a preview of its records."""
    s = result.stats
    md: dict[str, Any] = {
        "model": result.model or "none",
        "strategy": result.strategy,
        "records_in": s.records_in,
        "records_out": s.records_out,
        "failures": s.failures,
        "passed_through_errors": s.passed_through_errors,
        "truncated": s.truncated,
        "chunked": s.chunked,
        "output_tokens": s.usage.output_tokens,
        "retries": s.usage.retries,
        "seconds": float(wall_seconds),
        "preview": Markdown(markdown_preview(result.records, columns)),
    }
    if s.failure_examples:
        md["failure_examples"] = _bullets(s.failure_examples)
    if s.truncated_ids:
        md["truncated_records"] = _bullets(s.truncated_ids[:20])
    return md


def code_report(result: OperatorResult) -> dict[str, Any]:
    """What code synthesis ran: the kept functions' source, and how many records the model
    answered instead (the functions themselves are in the history record)."""
    functions = result.extras.get("functions")
    if functions is None:
        return {}
    blocks = []
    for field, fs in functions.items():
        if not fs:
            blocks.append(f"**{field}**: no function kept; the model answered")
        for f in fs:
            blocks.append(
                f"**{field}** (accuracy {f['accuracy']:.2f}, precision {f['precision']:.2f}, "
                f"coverage {f['coverage']:.2f}, weight {f['weight']:.2f})\n"
                f"```python\n{f['source']}\n```"
            )
    evaluated = result.stats.evaluated
    fallback = result.extras.get("fallback", 0)
    return {
        "code_functions_source": Markdown("\n\n".join(blocks)),
        "fallback": int(fallback),
        "fallback_rate": float(fallback / evaluated) if evaluated else 0.0,
        "reused_functions": bool(result.extras.get("reused_functions")),
        # records the model failed on (invalid JSON) that the functions decided instead
        "recovered_by_functions": int(result.extras.get("recovered", 0)),
        # records the model answered (sample, fallbacks) whose value the functions' vote set
        "overruled_by_functions": int(result.extras.get("overruled", 0)),
        # candidates that did not load, raised, stalled or attempted a forbidden operation
        # (the sandbox stopped them): the first 10, so a hostile model shows in the UI
        "synthesis_problems": list(result.extras.get("synthesis_problems", [])),
    }


def decision_report(
    decision: Decision, node: str, sample_dollars: float, cold: bool
) -> dict[str, Any]:
    """The optimizer's decision for ``node``: the policy, the reason, the frontier and the
    candidates, the estimated quality, and what the sample runs cost."""
    return {
        "policy": decision.policy.describe(),
        "decision": Markdown(
            f"**{decision.result.reason}**\n\nchosen plan: `{decision.result.chosen.describe()}`\n\n"
            + (
                f"pinned by run config: {', '.join(sorted(decision.pinned))}\n\n"
                if decision.pinned
                else ""
            )
            + (f"{note}\n\n" if (note := decision.dollars_note()) else "")
            + f"### frontier\n{decision.frontier_markdown()}\n\n"
            f"### candidates of {node}\n{decision.candidates_markdown(node)}"
        ),
        "estimated_quality": float(decision.estimate(node, decision.candidate(node)).quality),
        "sample_dollars": float(sample_dollars),
        "cold_start_sample": cold,
    }


def run_metadata(
    result: OperatorResult, columns: Sequence[str], wall_seconds: float, record: HistoryRecord
) -> dict[str, Any]:
    """Everything a run's materialization shows: its report and its history record."""
    return run_report(result, columns, wall_seconds) | record.to_metadata() | code_report(result)
