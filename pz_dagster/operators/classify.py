"""Semantic classification: one label out of a fixed set per record."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, create_model

from pz_dagster.models.base import ChatModel
from pz_dagster.operators.base import OperatorResult, Outcome, Progress, Record, run_on_model
from pz_dagster.operators.prompts import MAX_CHUNKS, Question, render_fields
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
    options = ", ".join(f'"{c}"' for c in node.classes)
    question = Question(
        f"Task: {node.instruction.strip()}\nChoose exactly one label among: {options}.\n"
        'Reply {"label": "<one of the labels>"}.',
        label_model(node),
        max(len(c) for c in node.classes) + CLASSIFY_EXTRA_TOKENS,
    )

    def classify(record: Record) -> Outcome:
        # A long document is labelled chunk by chunk; the most frequent label wins (first on ties).
        answers, usage, chunks = question.on_each_chunk(
            render_fields(record, node.depends_on), model
        )
        labels = [a.label for a in answers]  # type: ignore[attr-defined]
        label = max(dict.fromkeys(labels), key=labels.count)
        return Outcome(
            {**record, node.output: label},
            usage,
            chunks > MAX_CHUNKS,
            chunks,
            min(chunks, MAX_CHUNKS),
        )

    return run_on_model(
        records,
        classify,
        model,
        op_name=node.name,
        strategy="direct",
        progress=progress,
        on_failure=lambda r: {**r, node.output: None},
    )
