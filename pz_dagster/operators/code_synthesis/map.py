"""The ``code_synthesis`` strategy of a semantic map: synthesized functions extract the fields
(``run``: how), the model answers where they cannot tell. The model reads only the chunks of a
document that name a field (``field_chunks``, as Evaporate filters chunks by attribute), for its
answers and its code; the functions run on the whole document.
"""

from __future__ import annotations

from typing import Unpack

from pz_dagster.models.base import ChatModel
from pz_dagster.operators.base import OperatorResult, Outcome, Progress, Record, split_failed
from pz_dagster.operators.code_synthesis.run import SynthesisOptions, run_synthesis
from pz_dagster.operators.evidence import evidence_column, line_holding, location_column
from pz_dagster.operators.map import direct_map, locate_evidence
from pz_dagster.operators.prompts import FIELD_CHUNK_CHARS, field_chunks, render_fields
from pz_dagster.query.plan import SemanticMap
from pz_dagster.query.schema import ERROR, describe_fields

__all__ = ["code_synthesis_map"]


def _type_names(node: SemanticMap) -> dict[str, tuple[str, str]]:
    assert node.output is not None
    return {n: (t, d) for n, t, d in describe_fields(node.output)}


def code_synthesis_map(
    node: SemanticMap,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
    *,
    chunk_chars: int | None = FIELD_CHUNK_CHARS,
    **options: Unpack[SynthesisOptions],
) -> OperatorResult:
    """Extract the map's fields with synthesized functions (steps 1-4 of ``run``'s docstring).
    ``chunk_chars``: the model reads only the chunks of this size that name a field, for its
    answers and its code (None: whole documents)."""
    types = _type_names(node)
    ok, failed = split_failed(records)

    def shown(text: str) -> str:
        return field_chunks(text, list(types), chunk_chars) if chunk_chars else text

    def judge(batch: list[Record]) -> tuple[list[Record], OperatorResult]:
        # one record out per record in, in order
        answered = direct_map(
            node, batch, model, text_of=lambda r: shown(render_fields(r, node.depends_on))
        )
        return answered.records, answered

    run = run_synthesis(
        types,
        [r for _, r in ok],
        [render_fields(r, node.depends_on) for _, r in ok],
        judge,
        model,
        progress,
        **options,
        shown=shown,
    )
    emitted: dict[int, Record] = {i: {**r, **dict.fromkeys(node.adds)} for i, r in failed}
    for k, (i, record) in enumerate(ok):
        if k in run.answers:
            emitted[i] = run.answers[k]
        else:
            emitted[i] = {
                **record,
                **run.values[k],
                **function_evidence(node, record, run.values[k]),
            }
    result = run.result(records, [emitted[i] for i in range(len(records))], model)
    count_grounding(node, result)
    return result


def count_grounding(node: SemanticMap, result: OperatorResult) -> None:
    """Per evidence field, the answers (the model's and the functions') whose quote was
    found in the document and those whose was not."""
    for record in result.records:
        if record.get(ERROR):
            continue
        found = {
            f: record.get(location_column(f)) is not None
            for f in node.evidence
            if record.get(f) is not None
        }
        result.stats.count_reading(record, Outcome(None, grounding=found))
    if node.evidence:
        result.extras["grounding"] = result.stats.grounding()


def function_evidence(node: SemanticMap, record: Record, values: dict) -> dict:
    """A function's value's evidence: the line of the document it occurs on (located like a
    model's quote); none when the value does not occur as written."""
    if not node.evidence:
        return {}
    text = render_fields(record, node.depends_on)
    quotes = {evidence_column(f): line_holding(values.get(f), text) for f in node.evidence}
    return locate_evidence(node, record, {**values, **quotes})[0]
