"""The ``code_synthesis`` strategy of a semantic filter, for predicates that code can decide
(a keyword, a header, a pattern): the model judges a sample of the batch, writes candidate
functions ``extract(text) -> True | False | None`` from sample documents, and the functions
that agree with its judgements decide every other record by weighted vote. Where they abstain
or disagree the model judges the record (counted as ``fallback``), and its judgement scores the
functions again. Nothing is induced from the answers here (a yes/no answer does not point at a
line of the document); the lexical proxy is the code-free alternative for keyword predicates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pz_dagster.models.base import ChatModel, Usage
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record, split_failed
from pz_dagster.operators.code_synthesis import STRATEGY, decide, learn, outputs_of, synthesize
from pz_dagster.operators.filter import direct_filter
from pz_dagster.operators.prompts import render_fields
from pz_dagster.operators.sandbox import Sandbox, SandboxLimits
from pz_dagster.operators.synthesis import functions_from, sample_indices
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
    *,
    functions: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    sample_size: int = 8,
    candidates: int = 2,
    min_precision: float = 0.3,
    max_fallback: float = 0.5,
    limits: SandboxLimits | None = None,
) -> OperatorResult:
    """Keep the records the synthesized functions (or, where they cannot tell, the model)
    judge to satisfy the predicate; failures pass on with the error set, counted."""
    fields = {KEEP: ("bool", node.predicate)}
    ok, failed = split_failed(records)
    texts = [render_fields(r, node.depends_on) for _, r in ok]
    synthesis_usage, problems = Usage(), []
    reference_at: dict[int, Record] = {}
    reused = bool(functions)
    stats = OperatorStats(records_in=len(records), evaluated=len(ok))
    stats.passed_through_errors = len(failed)
    with Sandbox(limits or SandboxLimits()) as box:
        kept = functions_from(functions) if functions else {}
        outputs = outputs_of(kept, texts, fields, box) if kept else {}
        undecided = (
            sum(1 for k in range(len(texts)) if not decide(kept, outputs, fields, k)[1])
            if kept
            else len(texts)
        )
        if not kept or (texts and undecided / len(texts) > max_fallback):
            reused = False
            picks = sample_indices([str(r.get(RECORD_ID)) for _, r in ok], sample_size)
            rows, run = _judge(node, [ok[i][1] for i in picks], model)
            synthesis_usage += run.stats.usage
            stats.failures += run.stats.failures
            reference_at = dict(zip(picks, rows, strict=True))
            kept, spent, problems = synthesize(
                fields, [texts[i] for i in picks], rows, model, box, candidates, min_precision
            )
            synthesis_usage += spent
            outputs = outputs_of(kept, texts, fields, box)

    verdict: dict[int, bool | str] = {
        k: row[KEEP] if not row[ERROR] else row[ERROR] for k, row in reference_at.items()
    }
    todo = [k for k in range(len(ok)) if k not in reference_at]
    fallback, fallback_usage = 0, Usage()
    for start in range(0, len(todo), 50):
        ask = []
        for k in todo[start : start + 50]:
            values, decided = decide(kept, outputs, fields, k)
            if decided:
                verdict[k] = bool(values[KEEP])
            else:
                ask.append(k)
        if ask:
            rows, run = _judge(node, [ok[k][1] for k in ask], model)
            fallback_usage += run.stats.usage
            stats.failures += run.stats.failures
            stats.failure_examples = (stats.failure_examples + run.stats.failure_examples)[:5]
            fallback += len(ask)
            for k, row in zip(ask, rows, strict=True):
                verdict[k] = row[KEEP] if not row[ERROR] else row[ERROR]
                learn(kept, outputs, k, row)
        if progress:
            progress(min(start + 50, len(todo)), max(len(todo), 1))

    emitted: dict[int, Record] = dict(failed)
    for k, (i, record) in enumerate(ok):
        v = verdict[k]
        if isinstance(v, str):  # the model failed on it: passed on with the error, counted
            emitted[i] = {**record, ERROR: v}
        elif v:
            emitted[i] = record
    out = [emitted[i] for i in sorted(emitted)]
    stats.usage = synthesis_usage + fallback_usage
    stats.records_out = len(out)
    return OperatorResult(
        out,
        stats,
        strategy=STRATEGY,
        model=model.model_name,
        extras={
            "functions": {f: [s.to_dict() for s in fs] for f, fs in kept.items()},
            "fallback": fallback,
            "sample": len(reference_at),
            "reused_functions": reused,
            "synthesis_problems": problems[:10],
            "synthesis_tokens": synthesis_usage.input_tokens + synthesis_usage.output_tokens,
            "fallback_tokens": fallback_usage.input_tokens + fallback_usage.output_tokens,
        },
    )
