"""Semantic map: add typed columns extracted or computed by a model, one output per record."""

from __future__ import annotations

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
    node: SemanticMap, records: list[Record], model: ChatModel, progress: Progress | None = None
) -> OperatorResult:
    """One prompt per record; the answer is decoded under the output model's JSON schema.

    A record whose answer fails validation keeps its place, with null output columns and the
    ``error`` column saying why.
    """
    assert node.output is not None
    schema = json_schema_for(node.output)
    max_tokens = TOKENS_PER_FIELD * len(node.output_fields) + 16
    stats = OperatorStats(records_in=len(records))
    ok, failed = split_failed(records)
    stats.passed_through_errors = len(failed)
    empty = dict.fromkeys(node.output_fields)
    out: dict[int, Record] = {i: {**r, **empty} for i, r in failed}
    instruction = map_instruction(node)
    for done, (i, record) in enumerate(ok, start=1):
        stats.evaluated += 1
        text, cut = fit_to_context(render_fields(record, node.depends_on), model, max_tokens)
        if cut:
            stats.truncated += 1
            stats.truncated_ids.append(str(record["record_id"]))
        try:
            completion = model.complete(
                document_prompt(text, instruction), json_schema=schema, max_tokens=max_tokens
            )
            stats.usage += completion.usage
            values = parse_json_output(completion, node.output).model_dump()
            out[i] = {**record, **values}
        except RecordFailure as exc:
            out[i] = stats.fail({**record, **empty}, node.name, str(exc))
        if progress:
            progress(done, len(ok))
    result = [out[i] for i in range(len(records))]
    stats.records_out = len(result)
    return OperatorResult(result, stats, strategy="direct", model=model.model_name)


STRATEGIES = {"direct": direct_map}
