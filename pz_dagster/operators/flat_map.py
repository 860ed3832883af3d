"""Semantic flat map: zero or more output records per input record."""

from __future__ import annotations

from pydantic import BaseModel, Field, create_model

from pz_dagster.models.base import ChatModel, json_schema_for
from pz_dagster.operators.base import (
    OperatorResult,
    Outcome,
    Progress,
    Record,
    Tally,
    run_per_record,
)
from pz_dagster.operators.map import TOKENS_PER_FIELD
from pz_dagster.operators.prompts import document_prompt, render_fields, split_to_context
from pz_dagster.query.plan import PARENT_ID, SemanticFlatMap
from pz_dagster.query.schema import describe_fields

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
    answer_model = items_model(node)
    schema = json_schema_for(answer_model)
    fields = describe_fields(node.output)
    max_tokens = min(MAX_FLAT_MAP_TOKENS, TOKENS_PER_FIELD * len(fields) * node.max_items // 2 + 32)
    lines = "\n".join(f'- "{n}" ({t}): {d}' for n, t, d in fields)
    instruction = (
        f"List every item in the document above (at most {node.max_items}); each item has:\n{lines}\n"
        'Reply {"items": [...]} with one object per item, or {"items": []} if there is none.'
    )
    empty = dict.fromkeys(node.output_fields)

    def expand(record: Record) -> Outcome:
        # A long document is read chunk by chunk; items are the union, in order, without repeats.
        chunks = split_to_context(render_fields(record, node.depends_on), model, max_tokens)
        tally, items = Tally(), []
        for chunk in chunks:
            prompt = document_prompt(chunk, instruction)
            answer = tally.ask(model, prompt, answer_model, schema, max_tokens)
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
        return Outcome(out or None, tally.usage, chunks=len(chunks))

    out, stats = run_per_record(
        records,
        expand,
        op_name=node.name,
        concurrency=model.max_concurrency,
        progress=progress,
        on_failure=lambda r: {**r, PARENT_ID: r["record_id"], **empty},
    )
    return OperatorResult(out, stats, strategy="direct", model=model.model_name)
