"""The ``code_synthesis`` strategy of a semantic filter, for predicates that code can decide
(a keyword, a header, a pattern): the model judges a sample of the batch, writes candidate
functions ``extract(text) -> True | False | None`` from sample documents, and the functions
that agree with its judgements decide every other record by weighted vote. Where they abstain
or disagree the model judges the record (counted as ``fallback``), and its judgement scores the
functions again. Nothing is induced from the answers here (a yes/no answer does not point at a
line of the document); the lexical proxy is the code-free alternative for keyword predicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

from pz_dagster.models.base import ChatModel
from pz_dagster.operators.base import OperatorResult, Progress, Record, split_failed
from pz_dagster.operators.code_synthesis.run import SynthesisOptions, run_synthesis
from pz_dagster.operators.filter import direct_filter
from pz_dagster.operators.prompts import render_fields
from pz_dagster.query.plan import SemanticFilter
from pz_dagster.query.schema import ERROR, RECORD_ID

KEEP = "keep"  # the one "field" a filter's functions compute


def _judge(
    node: SemanticFilter, records: Sequence[Record], model: ChatModel
) -> tuple[list[Record], OperatorResult]:
    """The model's direct judgement of ``records`` as reference rows ``{keep: bool}`` (a record
    it failed on gets the error, and no ``keep``), and the run itself."""
    run = direct_filter(node, list(records), model)
    by_id = {r[RECORD_ID]: r for r in run.records}
    rows = []
    for r in records:
        out = by_id.get(r[RECORD_ID])
        if out is not None and out.get(ERROR):
            rows.append({KEEP: None, ERROR: out[ERROR]})
        else:
            rows.append({KEEP: out is not None, ERROR: None})
    return rows, run


def code_synthesis_filter(
    node: SemanticFilter,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
    **options: Unpack[SynthesisOptions],
) -> OperatorResult:
    """Keep the records the synthesized functions (or, where they cannot tell, the model)
    judge to satisfy the predicate; failures pass on with the error set, counted."""
    ok, failed = split_failed(records)
    run = run_synthesis(
        {KEEP: ("bool", node.predicate)},
        [r for _, r in ok],
        [render_fields(r, node.depends_on) for _, r in ok],
        lambda batch: _judge(node, batch, model),
        model,
        progress,
        **options,
    )
    emitted: dict[int, Record] = dict(failed)
    for k, (i, record) in enumerate(ok):
        row = run.answers.get(k) or run.values[k]
        if row.get(ERROR):  # the model failed on it: passed on with the error, counted
            emitted[i] = {**record, ERROR: row[ERROR]}
        elif row[KEEP]:
            emitted[i] = record
    return run.result(records, [emitted[i] for i in sorted(emitted)], model)
