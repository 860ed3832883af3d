"""The ``code_synthesis`` strategy of a semantic map: the model's cost is fixed with respect to
the number of documents (Evaporate).

1. Functions: reused from an earlier batch (``functions``) while they keep answering, else
   synthesized: the model answers a small sample of the batch directly (the reference), then
   writes ``candidates`` functions per field, each from a different sample document. More
   candidates are induced from the reference answers themselves (the labelled line an answer
   sits on: no model call), which is what a model too small to write Python still gets right.
   Each candidate runs in the sandbox on the sample and is scored against the reference; the
   ones agreeing best are kept.
2. Every record: the kept functions run in the sandbox and vote per field.
3. Fallback: a record with a field on which they abstain or disagree is answered by the model
   (counted in ``extras["fallback"]``); sample records keep the model's reference answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pz_dagster.models.base import ChatModel, Usage
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record, split_failed
from pz_dagster.operators.map import direct_map
from pz_dagster.operators.prompts import render_fields
from pz_dagster.operators.sandbox import Sandbox, SandboxLimits
from pz_dagster.operators.synthesis import (
    CODE_MAX_TOKENS,
    ScoredFunction,
    as_type,
    functions_from,
    induce_functions,
    parse_function,
    sample_indices,
    score,
    select,
    synthesis_messages,
    vote,
)
from pz_dagster.query.plan import SemanticMap
from pz_dagster.query.schema import describe_fields

STRATEGY = "code_synthesis"


def _type_names(node: SemanticMap) -> dict[str, tuple[str, str]]:
    assert node.output is not None
    return {n: (t, d) for n, t, d in describe_fields(node.output)}


def synthesize(
    fields: Mapping[str, tuple[str, str]],
    texts: Sequence[str],
    reference: Sequence[Record],
    model: ChatModel,
    box: Sandbox,
    candidates: int,
    min_precision: float,
) -> tuple[dict[str, list[ScoredFunction]], Usage, list[str]]:
    """Kept functions per field (name -> (type, description)), what writing them cost, and why
    candidates were dropped. ``reference``: the sample's answers, one record per text."""
    usage, problems = Usage(), []
    kept: dict[str, list[ScoredFunction]] = {}
    usable = [i for i, r in enumerate(reference) if not r.get("error")]
    for field, (type_name, desc) in fields.items():
        truth = [reference[i][field] for i in usable]
        sources: list[tuple[str, str]] = []
        for c in range(candidates):
            doc = texts[usable[c % len(usable)]] if usable else ""
            answer = model.complete(
                synthesis_messages(field, type_name, desc, doc),
                max_tokens=CODE_MAX_TOKENS,
                temperature=0.0 if c < len(usable) else 0.7,
            )
            usage += answer.usage
            parsed = parse_function(answer.text)
            if parsed is None:
                problems.append(f"{field} #{c}: no function in the answer")
            else:
                sources.append(parsed)
        sources += induce_functions([texts[i] for i in usable], truth)
        scored = []
        for c, (source, entry) in enumerate(sources):
            name = f"{field}#{c}"
            error = box.load(name, source, entry)
            if error:
                problems.append(f"{field} #{c}: {error}")
                continue
            outs = box.call(name, [texts[i] for i in usable])
            values = [as_type(o.value, type_name) if not o.error else None for o in outs]
            scored.append(score(field, source, entry, values, truth))
        kept[field] = select(scored, min_precision=min_precision)
    return kept, usage, problems


def outputs_of(
    functions: Mapping[str, Sequence[ScoredFunction]],
    texts: Sequence[str],
    types: Mapping[str, tuple[str, str]],
    box: Sandbox,
) -> dict[str, list[list[Any]]]:
    """Each kept function's output on every text (None where it abstained or failed)."""
    out: dict[str, list[list[Any]]] = {}
    for field, fs in functions.items():
        out[field] = []
        for k, f in enumerate(fs):
            name = f"{field}@{k}"
            if box.load(name, f.source, f.entry):
                out[field].append([None] * len(texts))
                continue
            out[field].append(
                [
                    as_type(o.value, types[field][0]) if not o.error else None
                    for o in box.call(name, texts)
                ]
            )
    return out


def decide(
    functions: Mapping[str, Sequence[ScoredFunction]],
    outputs: Mapping[str, list[list[Any]]],
    types: Mapping[str, tuple[str, str]],
    k: int,
) -> tuple[dict[str, Any], bool]:
    """Record ``k``'s voted values and whether every field was decided."""
    values, decided = {}, True
    for field in types:
        fs = functions.get(field) or []
        value, ok = vote([o[k] for o in outputs[field]], fs) if fs else (None, False)
        values[field] = value
        decided = decided and ok
    return values, decided


def learn(
    functions: dict[str, list[ScoredFunction]],
    outputs: Mapping[str, list[list[Any]]],
    k: int,
    answer: Record,
) -> None:
    """The model's answer on a fallback record scores the functions once more, so that what
    they keep getting right (or rightly leaving empty) is trusted on the next records."""
    if answer.get("error"):
        return
    for field, fs in functions.items():
        functions[field] = [
            f.observe(outputs[field][j][k], answer.get(field)) for j, f in enumerate(fs)
        ]


FALLBACK_CHUNK = 50  # records decided between two rounds of learning from the model's answers


def code_synthesis_map(
    node: SemanticMap,
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
    """Extract the map's fields with synthesized functions; see the module docstring."""
    types = _type_names(node)
    ok, failed = split_failed(records)
    texts = [render_fields(r, node.depends_on) for _, r in ok]
    usage, problems = Usage(), []
    reference_at: dict[int, Record] = {}
    reused = bool(functions)
    with Sandbox(limits or SandboxLimits()) as box:
        kept = functions_from(functions) if functions else {}
        outputs = outputs_of(kept, texts, types, box) if kept else {}
        undecided = (
            sum(1 for k in range(len(texts)) if not decide(kept, outputs, types, k)[1])
            if kept
            else len(texts)
        )
        if not kept or (texts and undecided / len(texts) > max_fallback):
            reused = False
            picks = sample_indices([str(r.get("record_id")) for _, r in ok], sample_size)
            ref = direct_map(node, [ok[i][1] for i in picks], model)
            usage += ref.stats.usage
            reference_at = dict(zip(picks, ref.records, strict=True))
            kept, spent, problems = synthesize(
                types,
                [texts[i] for i in picks],
                ref.records,
                model,
                box,
                candidates,
                min_precision,
            )
            usage += spent
            outputs = outputs_of(kept, texts, types, box)
    synthesis_usage = usage  # the one-time part: the sample's answers and the candidates

    stats = OperatorStats(records_in=len(records), evaluated=len(ok))
    stats.passed_through_errors = len(failed)
    for k in reference_at:
        if reference_at[k].get("error"):
            stats.failures += 1
    emitted: dict[int, Record] = {i: {**r, **dict.fromkeys(types)} for i, r in failed}
    todo = [k for k in range(len(ok)) if k not in reference_at]
    fallback, fallback_usage = 0, Usage()
    for start in range(0, len(todo), FALLBACK_CHUNK):
        ask = []
        for k in todo[start : start + FALLBACK_CHUNK]:
            values, decided = decide(kept, outputs, types, k)
            if decided:
                emitted[ok[k][0]] = {**ok[k][1], **values}
            else:
                ask.append(k)
        if ask:
            answers = direct_map(node, [ok[k][1] for k in ask], model)
            fallback_usage += answers.stats.usage
            stats.failures += answers.stats.failures
            stats.failure_examples = (stats.failure_examples + answers.stats.failure_examples)[:5]
            fallback += len(ask)
            for k, answer in zip(ask, answers.records, strict=True):
                emitted[ok[k][0]] = answer
                learn(kept, outputs, k, answer)
        if progress:
            progress(min(start + FALLBACK_CHUNK, len(todo)), max(len(todo), 1))
    for k, answer in reference_at.items():
        emitted[ok[k][0]] = answer
    stats.usage = synthesis_usage + fallback_usage
    out = [emitted[i] for i in range(len(records))]
    stats.records_out = len(out)
    return OperatorResult(
        out,
        stats,
        strategy=STRATEGY,
        model=model.model_name,
        extras={
            "functions": {f: [s.to_dict() for s in fs] for f, fs in kept.items()},
            "fallback": fallback,
            "synthesis_tokens": synthesis_usage.input_tokens + synthesis_usage.output_tokens,
            "fallback_tokens": fallback_usage.input_tokens + fallback_usage.output_tokens,
            "sample": len(reference_at),
            "reused_functions": reused,
            "synthesis_problems": problems[:10],
        },
    )
