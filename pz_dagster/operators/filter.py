"""Semantic filter: keep the records for which a natural-language predicate holds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from pz_dagster.errors import RecordFailure
from pz_dagster.models.base import ChatModel, json_schema_for
from pz_dagster.operators.base import (
    OperatorResult,
    OperatorStats,
    Progress,
    Record,
    parse_json_output,
    split_failed,
)
from pz_dagster.operators.prompts import document_prompt, fit_to_context, render_fields
from pz_dagster.query.plan import SemanticFilter


class FilterAnswer(BaseModel):
    answer: Literal["YES", "NO"]


FILTER_SCHEMA = json_schema_for(FilterAnswer)
FILTER_MAX_TOKENS = 16


def filter_instruction(predicate: str) -> str:
    return (
        f"Condition: {predicate.strip()}\n"
        "Does the document above satisfy the condition? "
        'Reply {"answer": "YES"} or {"answer": "NO"}.'
    )


def direct_filter(
    node: SemanticFilter, records: list[Record], model: ChatModel, progress: Progress | None = None
) -> OperatorResult:
    """One prompt per record; the answer is decoded as ``{"answer": "YES" | "NO"}``.

    A record whose answer cannot be had or parsed is neither kept nor dropped silently: it is
    passed on with its ``error`` column set and counted as a failure.
    """
    stats = OperatorStats(records_in=len(records))
    ok, failed = split_failed(records)
    stats.passed_through_errors = len(failed)
    decided: dict[int, Record | None] = {i: r for i, r in failed}
    instruction = filter_instruction(node.predicate)
    for done, (i, record) in enumerate(ok, start=1):
        stats.evaluated += 1
        text, cut = fit_to_context(render_fields(record, node.depends_on), model, FILTER_MAX_TOKENS)
        if cut:
            stats.truncated += 1
            stats.truncated_ids.append(str(record["record_id"]))
        try:
            completion = model.complete(
                document_prompt(text, instruction),
                json_schema=FILTER_SCHEMA,
                max_tokens=FILTER_MAX_TOKENS,
            )
            stats.usage += completion.usage
            keep = parse_json_output(completion, FilterAnswer).answer == "YES"  # type: ignore[attr-defined]
            decided[i] = record if keep else None
        except RecordFailure as exc:
            decided[i] = stats.fail(record, node.name, str(exc))
        if progress:
            progress(done, len(ok))
    out = [decided[i] for i in range(len(records)) if decided.get(i) is not None]
    stats.records_out = len(out)
    return OperatorResult(out, stats, strategy="direct", model=model.model_name)  # type: ignore[arg-type]


STRATEGIES = {"direct": direct_filter}
