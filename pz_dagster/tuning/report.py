"""What a materialization shows beside its history record, as plain values: the run's counts,
a preview of its records, the optimizer's decision, the functions code synthesis kept.

Numbers stay numbers (so Dagster's UI plots them) rounded to 4 significant digits for reading
(``shown``); the exact values are the history record's. Keys: ``pz_dagster.metadata_keys``.
``Markdown`` marks text meant to be shown as Markdown; orchestration renders the values for
Dagster's UI (``orchestration.metadata.render``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from optimizer import Decision
from pz_dagster import metadata_keys as K
from pz_dagster.operators.base import OperatorResult, OperatorStats, Record
from pz_dagster.query import plan
from pz_dagster.query.schema import RECORD_ID
from pz_dagster.tuning.history import HistoryRecord

PREVIEW_ROWS = 5  # records in a preview; a filter's: as many kept and as many dropped
PREVIEW_CHARS = 120  # of a cell: long text as a one-line excerpt
SIGNIFICANT_DIGITS = 4
VERDICT = "kept or dropped"  # the first column of a filter's preview


class Markdown(str):
    """Metadata text shown as Markdown."""


def shown(x: float) -> float:
    """A number as a materialization shows it: a float of 4 significant digits.

    >>> shown(64.46048364099977), shown(0.000012345678), shown(0), shown(float("inf"))
    (64.46, 1.235e-05, 0.0, inf)
    """
    x = float(x)
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(x) else x


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Record], columns: Sequence[str]) -> str:
    """Records as a Markdown table, each cell a one-line excerpt.

    >>> print(markdown_table([{"a": 1, "b": "x | y"}], ["a", "b"]))
    | a | b |
    |---|---|
    | 1 | x \\| y |
    """
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join(
        "| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows
    )


def markdown_preview(records: Sequence[Record], columns: Sequence[str]) -> str:
    """The first records as a Markdown table.

    >>> print(markdown_preview([{"a": 1}], ["a"]))
    | a |
    |---|
    | 1 |
    """
    if not records:
        return "_no records_"
    more = len(records) - PREVIEW_ROWS
    return markdown_table(records[:PREVIEW_ROWS], columns) + (
        f"\n\n_{more} more rows_" if more > 0 else ""
    )


def filter_preview(
    kept: Sequence[Record], shown_to: Sequence[Record], columns: Sequence[str]
) -> str:
    """Some records a filter kept and some it dropped (of ``shown_to``, its input), marked in a
    first column, so the preview shows what the predicate did.

    >>> rows = [{"record_id": "a"}, {"record_id": "b"}]
    >>> print(filter_preview(rows[:1], rows, ["record_id"]))
    | kept or dropped | record_id |
    |---|---|
    | kept | a |
    | dropped | b |
    <BLANKLINE>
    _kept 1 of 2 records_
    """
    if not shown_to and not kept:
        return "_no records_"
    ids = {r.get(RECORD_ID) for r in kept}
    dropped = [r for r in shown_to if r.get(RECORD_ID) not in ids]
    # a column name no record has (a field name has no spaces)
    rows = [{**r, VERDICT: "kept"} for r in kept[:PREVIEW_ROWS]]
    rows += [{**r, VERDICT: "dropped"} for r in dropped[:PREVIEW_ROWS]]
    note = f"_kept {len(kept)} of {max(len(shown_to), len(kept))} records_"
    return markdown_table(rows, [VERDICT, *columns]) + "\n\n" + note


def preview_columns(node: plan.PlanNode) -> list[str]:
    """The node's columns, those it adds first (what a reader looks for), then the others.

    >>> from pz_dagster import Dataset
    >>> ds = Dataset.from_directory("d").sem_map([{"name": "sender", "type": "str", "desc": "x"}])
    >>> preview_columns(ds.node)
    ['sender', 'record_id', 'filename', 'contents', 'provenance', 'error']
    """
    columns = [c for c, _ in plan.column_types(node)]
    before = set(node.parent.columns) if node.parent is not None else set(columns)
    added = [c for c in columns if c in node.adds or c not in before]
    return added + [c for c in columns if c not in added]


def preview(
    node: plan.PlanNode, result: OperatorResult, shown_to: Sequence[Record] | None = None
) -> Markdown:
    """The preview of a materialization: its first records, output columns first; a filter's
    kept and dropped records when its input (``shown_to``) is given."""
    columns = preview_columns(node)
    if isinstance(node, plan.SemanticFilter | plan.Filter) and shown_to is not None:
        return Markdown(filter_preview(result.records, shown_to, columns))
    return Markdown(markdown_preview(result.records, columns))


def _bullets(lines: Sequence[str]) -> Markdown:
    return Markdown("\n".join(f"- {line}" for line in lines))


def run_counts(
    result: OperatorResult, record: HistoryRecord, wall_seconds: float
) -> dict[str, Any]:
    """A run's numbers, grouped by key prefix and rounded for reading (``shown``)."""
    s, run = result.stats, record.run
    md: dict[str, Any] = {
        K.RECORDS_IN: s.records_in,
        K.RECORDS_OUT: s.records_out,
        K.EVALUATED: run.records,
    }
    if run.records_out is not None and run.records:
        md[K.SELECTIVITY] = shown(run.records_out / run.records)
    md |= {
        K.FAILURES: s.failures,
        K.PASSED_THROUGH_ERRORS: s.passed_through_errors,
        K.TRUNCATED: s.truncated,
        K.CHUNKED: s.chunked,
        K.CHUNKS: s.chunks_total,
        K.CHUNKS_READ: s.chunks_read,
        K.CHUNKS_ABSTAINED: s.chunks_abstained,
        K.MODEL_MERGES: s.model_merges,
        K.MODEL_CALLS: run.model_calls,
        K.CACHE_HITS: run.cache_hits,
        K.INPUT_TOKENS: record.input_tokens,
        K.OUTPUT_TOKENS: s.usage.output_tokens,
        K.RETRIES: s.usage.retries,
        K.DOLLARS: shown(run.dollars),
    }
    if run.records:
        md[K.DOLLARS_PER_RECORD] = shown(run.dollars / run.records)
    md |= {K.SECONDS: shown(wall_seconds), K.MODEL_SECONDS: shown(run.seconds)}
    if run.quality is not None:
        md[K.QUALITY] = shown(run.quality.score)
        md[K.QUALITY_EVIDENCE] = shown(run.quality.evidence)
        md[K.QUALITY_SOURCE] = run.quality_source
    if run.one_time is not None:
        md[K.SYNTHESIS_SAMPLE] = run.one_time.sample
        md[K.SYNTHESIS_TOKENS] = run.one_time.synthesis_tokens
        md[K.FALLBACK_TOKENS] = run.one_time.fallback_tokens
    return md


def run_report(
    result: OperatorResult, record: HistoryRecord, wall_seconds: float, shown_records: Markdown
) -> dict[str, Any]:
    """What ran (model, strategy, physical config), the preview ``shown_records``, the run's
    numbers, and examples of what failed or was cut."""
    s = result.stats
    md: dict[str, Any] = {
        K.MODEL: result.model or "none",
        K.STRATEGY: result.strategy,
        K.PHYSICAL_CONFIG: record.model_dump(mode="json")["run"]["config"],
        K.PREVIEW: shown_records,
    }
    md |= run_counts(result, record, wall_seconds)
    if s.failure_examples:
        md[K.FAILURE_EXAMPLES] = _bullets(s.failure_examples)
    if s.truncated_ids:
        md[K.TRUNCATED_RECORDS] = _bullets(s.truncated_ids[:20])
    md |= grounding_counts(s)
    if "reading" in result.extras:
        md[K.READING] = result.extras["reading"]
    return md


def grounding_counts(s: OperatorStats) -> dict[str, Any]:
    """Per evidence field, the answers whose quote the document does not hold; the share it
    holds of all; examples. Empty when no answer came with evidence."""
    answers = sum(s.grounded.values()) + sum(s.ungrounded.values())
    if not answers:
        return {}
    fields = sorted(s.grounded.keys() | s.ungrounded.keys())
    md: dict[str, Any] = {f"{K.UNGROUNDED}/{f}": s.ungrounded.get(f, 0) for f in fields}
    md[K.GROUNDED_SHARE] = shown(sum(s.grounded.values()) / answers)
    if s.ungrounded_examples:
        md[K.UNGROUNDED_RECORDS] = _bullets(s.ungrounded_examples)
    return md


def source_report(
    result: OperatorResult, wall_seconds: float, shown_records: Markdown
) -> dict[str, Any]:
    """What a source's read shows: items in, records out, unreadable items, seconds, preview
    (no model ran: no model counters)."""
    s = result.stats
    return {
        K.PREVIEW: shown_records,
        K.RECORDS_IN: s.records_in,
        K.RECORDS_OUT: s.records_out,
        K.READ_ERRORS: s.passed_through_errors,
        K.SECONDS: shown(wall_seconds),
    }


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
        K.CODE_FUNCTIONS_SOURCE: Markdown("\n\n".join(blocks)),
        K.FALLBACK: int(fallback),
        K.FALLBACK_RATE: shown(fallback / evaluated) if evaluated else 0.0,
        K.REUSED_FUNCTIONS: bool(result.extras.get("reused_functions")),
        # records the model failed on (invalid JSON) that the functions decided instead
        K.RECOVERED_BY_FUNCTIONS: int(result.extras.get("recovered", 0)),
        # records the model answered (sample, fallbacks) whose value the functions' vote set
        K.OVERRULED_BY_FUNCTIONS: int(result.extras.get("overruled", 0)),
        # candidates that did not load, raised, stalled or attempted a forbidden operation
        # (the sandbox stopped them): the first 10, so a hostile model shows in the UI
        K.SYNTHESIS_PROBLEMS: list(result.extras.get("synthesis_problems", [])),
    }


def decision_report(
    decision: Decision, node: str, sample_dollars: float, cold: bool
) -> dict[str, Any]:
    """The optimizer's decision for ``node``: the policy, the reason, the frontier and the
    candidates, the estimated quality, and what the sample runs cost."""
    return {
        K.POLICY: decision.policy.describe(),
        K.DECISION: Markdown(
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
        K.ESTIMATED_QUALITY: shown(decision.estimate(node, decision.candidate(node)).quality),
        K.SAMPLE_DOLLARS: shown(sample_dollars),
        K.COLD_START_SAMPLE: cold,
    }


# What a reader looks at first, in this order; the history record (a machine's) goes last.
_FIRST = (K.MODEL, K.STRATEGY, K.PHYSICAL_CONFIG, K.POLICY, K.DECISION, K.PREVIEW)


def in_reading_order(md: dict[str, Any]) -> dict[str, Any]:
    """``md`` with what ran and why, and the preview, first; the history record last.

    >>> list(in_reading_order({"history/record": {}, "records/in": 1, "model": "m"}))
    ['model', 'records/in', 'history/record']
    """
    first = {k: md[k] for k in _FIRST if k in md}
    rest = {k: v for k, v in md.items() if k not in first and k != K.HISTORY}
    return first | rest | ({K.HISTORY: md[K.HISTORY]} if K.HISTORY in md else {})


def run_metadata(
    result: OperatorResult, record: HistoryRecord, wall_seconds: float, shown_records: Markdown
) -> dict[str, Any]:
    """Everything a run's materialization shows: its report, its history record (exact values,
    one entry) and what code synthesis kept."""
    return (
        run_report(result, record, wall_seconds, shown_records)
        | record.to_metadata()
        | code_report(result)
    )
