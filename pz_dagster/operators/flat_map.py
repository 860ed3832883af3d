"""Semantic flat map: zero or more output records per input record."""

from __future__ import annotations

from pydantic import BaseModel, Field, create_model

from pz_dagster.models.base import ChatModel
from pz_dagster.operators.base import OperatorResult, Outcome, Progress, Record, run_on_model
from pz_dagster.operators.map import TOKENS_PER_FIELD
from pz_dagster.operators.prompts import MAX_CHUNKS, Question, field_lines, render_fields
from pz_dagster.query.plan import PARENT_ID, SemanticFlatMap

MAX_FLAT_MAP_TOKENS = 1024


def items_model(node: SemanticFlatMap) -> type[BaseModel]:
    assert node.output is not None
    return create_model("Items", items=(list[node.output], Field(max_length=node.max_items)))  # type: ignore[name-defined]


def direct_flat_map(
    node: SemanticFlatMap, records: list[Record], model: ChatModel, progress: Progress | None = None
) -> OperatorResult:
    """One prompt per record asking for a list of items; each item becomes a record.

    A record the model fails on is kept once, with null item fields and the error set.
    """
    assert node.output is not None
    per_item = TOKENS_PER_FIELD * len(node.output_fields)
    question = Question(
        f"List every item in the document above (at most {node.max_items}); each item has:\n"
        f"{field_lines(node.output)}\n"
        'Reply {"items": [...]} with one object per item, or {"items": []} if there is none.',
        items_model(node),
        min(MAX_FLAT_MAP_TOKENS, per_item * node.max_items // 2 + 32),
    )
    empty = dict.fromkeys(node.output_fields)

    def expand(record: Record) -> Outcome:
        # A long document is read chunk by chunk; items are the union, in order, without repeats.
        answers, usage, chunks = question.on_each_chunk(
            render_fields(record, node.depends_on), model
        )
        items: list[dict] = []
        for answer in answers:
            for item in answer.items:  # type: ignore[attr-defined]
                if (value := item.model_dump()) not in items:
                    items.append(value)
        items = items[: node.max_items]
        out = [
            {
                **record,
                "record_id": f"{record['record_id']}#{i}",
                PARENT_ID: record["record_id"],
                **item,
            }
            for i, item in enumerate(items, start=1)
        ]
        return Outcome(out or None, usage, chunks > MAX_CHUNKS, chunks, min(chunks, MAX_CHUNKS))

    return run_on_model(
        records,
        expand,
        model,
        op_name=node.name,
        strategy="direct",
        progress=progress,
        on_failure=lambda r: {**r, PARENT_ID: r["record_id"], **empty},
    )
