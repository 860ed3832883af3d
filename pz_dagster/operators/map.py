"""Semantic map: add typed columns extracted or computed by a model, one output per record."""

from __future__ import annotations

from collections.abc import Callable

from pz_dagster.models.base import ChatModel
from pz_dagster.operators.base import OperatorResult, Outcome, Progress, Record, run_on_model
from pz_dagster.operators.prompts import Question, field_lines, render_fields
from pz_dagster.query.plan import SemanticMap

# Room for one bounded string value (~240 characters) per field, plus the JSON around it.
TOKENS_PER_FIELD = 96


def map_instruction(node: SemanticMap) -> str:
    assert node.output is not None
    return (
        f"From the document above, extract these fields:\n{field_lines(node.output)}\n"
        "Reply with one JSON object with exactly these keys."
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
    max_tokens = TOKENS_PER_FIELD * len(node.output_fields) + 16
    question = Question(map_instruction(node), node.output, max_tokens)
    empty = dict.fromkeys(node.output_fields)

    def extract(record: Record) -> Outcome:
        shown = text_of(record) if text_of else render_fields(record, node.depends_on)
        values, usage, cut = question.on_document(shown, model)
        return Outcome({**record, **values.model_dump()}, usage, cut)

    return run_on_model(
        records,
        extract,
        model,
        op_name=node.name,
        strategy="direct",
        progress=progress,
        on_failure=lambda r: {**r, **empty},
    )
