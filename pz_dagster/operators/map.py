"""Semantic map: add typed columns extracted or computed by a model, one output per record."""

from __future__ import annotations

from collections.abc import Callable

from pz_dagster.models.base import ChatModel, json_schema_for
from pz_dagster.operators.base import (
    OperatorResult,
    Outcome,
    Progress,
    Record,
    ask_json,
    run_per_record,
)
from pz_dagster.operators.prompts import document_prompt, fit_to_context, render_fields
from pz_dagster.query.plan import SemanticMap
from pz_dagster.query.schema import describe_fields

# Room for one bounded string value (~240 characters) per field, plus the JSON around it.
TOKENS_PER_FIELD = 96


def map_instruction(node: SemanticMap) -> str:
    assert node.output is not None
    lines = [f'- "{n}" ({t}): {d}' for n, t, d in describe_fields(node.output)]
    return (
        "From the document above, extract these fields:\n"
        + "\n".join(lines)
        + "\nReply with one JSON object with exactly these keys."
    )


def direct_map(
    node: SemanticMap,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
    *,
    text_of: Callable[[Record], str] | None = None,
) -> OperatorResult:
    """One prompt per record; the answer is decoded under the output model's JSON schema.
    The model reads the record's ``depends_on`` columns, or ``text_of(record)`` when given
    (code synthesis shows it only the chunks that name the fields).

    A record whose answer fails validation (also after one corrective retry) keeps its place,
    with null output columns and the ``error`` column saying why.
    """
    assert node.output is not None
    output = node.output
    schema = json_schema_for(output)
    max_tokens = TOKENS_PER_FIELD * len(node.output_fields) + 16
    empty = dict.fromkeys(node.output_fields)
    instruction = map_instruction(node)

    def extract(record: Record) -> Outcome:
        shown = text_of(record) if text_of else render_fields(record, node.depends_on)
        text, cut = fit_to_context(shown, model, max_tokens)
        values, usage = ask_json(
            model, document_prompt(text, instruction), output, schema, max_tokens
        )
        return Outcome({**record, **values.model_dump()}, usage, cut)

    out, stats = run_per_record(
        records,
        extract,
        op_name=node.name,
        concurrency=model.max_concurrency,
        progress=progress,
        on_failure=lambda r: {**r, **empty},
    )
    return OperatorResult(out, stats, strategy="direct", model=model.model_name)
