"""Semantic classification: one label out of a fixed set per record."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, create_model

from pz_dagster.models.base import ChatModel, json_schema_for
from pz_dagster.operators.base import (
    OperatorResult,
    Outcome,
    Progress,
    Record,
    Tally,
    run_per_record,
)
from pz_dagster.operators.prompts import document_prompt, render_fields, split_to_context
from pz_dagster.query.plan import SemanticClassify

CLASSIFY_EXTRA_TOKENS = 16


def label_model(node: SemanticClassify) -> type[BaseModel]:
    return create_model("Label", label=(Literal[node.classes], ...))  # type: ignore[valid-type]


def direct_classify(
    node: SemanticClassify,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
) -> OperatorResult:
    """One prompt per record; the label is decoded from an enum of the classes."""
    answer_model = label_model(node)
    schema = json_schema_for(answer_model)
    max_tokens = max(len(c) for c in node.classes) + CLASSIFY_EXTRA_TOKENS
    options = ", ".join(f'"{c}"' for c in node.classes)
    instruction = (
        f"Task: {node.instruction.strip()}\nChoose exactly one label among: {options}.\n"
        'Reply {"label": "<one of the labels>"}.'
    )

    def classify(record: Record) -> Outcome:
        # A long document is labelled chunk by chunk; the most frequent label wins (first on ties).
        chunks = split_to_context(render_fields(record, node.depends_on), model, max_tokens)
        tally, labels = Tally(), []
        for chunk in chunks:
            prompt = document_prompt(chunk, instruction)
            answer = tally.ask(model, prompt, answer_model, schema, max_tokens)
            labels.append(answer.label)  # type: ignore[attr-defined]
        label = max(dict.fromkeys(labels), key=labels.count)
        return Outcome({**record, node.output: label}, tally.usage, chunks=len(chunks))

    out, stats = run_per_record(
        records,
        classify,
        op_name=node.name,
        concurrency=model.max_concurrency,
        progress=progress,
        on_failure=lambda r: {**r, node.output: None},
    )
    return OperatorResult(out, stats, strategy="direct", model=model.model_name)
