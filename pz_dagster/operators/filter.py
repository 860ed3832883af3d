"""Semantic filter: keep the records for which a natural-language predicate holds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from pz_dagster.models.base import ChatModel, Usage, json_schema_for
from pz_dagster.operators.base import (
    OperatorResult,
    Outcome,
    Progress,
    Record,
    ask_json,
    run_per_record,
)
from pz_dagster.operators.prompts import document_prompt, render_fields, split_to_context
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
    """One prompt per record (per chunk of a long one); the answer is decoded as
    ``{"answer": "YES" | "NO"}``.

    A record whose answer cannot be had or parsed is neither kept nor dropped silently: it is
    passed on with its ``error`` column set and counted as a failure.
    """
    instruction = filter_instruction(node.predicate)

    def judge(record: Record) -> Outcome:
        # A long document is read chunk by chunk; it passes as soon as one chunk does.
        text = render_fields(record, node.depends_on)
        chunks = split_to_context(text, model, FILTER_MAX_TOKENS)
        usage, keep = Usage(), False
        for chunk in chunks:
            prompt = document_prompt(chunk, instruction)
            answer, spent = ask_json(model, prompt, FilterAnswer, FILTER_SCHEMA, FILTER_MAX_TOKENS)
            usage += spent
            if answer.answer == "YES":  # type: ignore[attr-defined]
                keep = True
                break
        return Outcome(record if keep else None, usage, chunks=len(chunks))

    out, stats = run_per_record(
        records, judge, op_name=node.name, concurrency=model.max_concurrency, progress=progress
    )
    return OperatorResult(out, stats, strategy="direct", model=model.model_name)


STRATEGIES = {"direct": direct_filter}
