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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as default
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
from pz_dagster.query.schema import ERROR, RECORD_ID, describe_fields

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

# The model's answers for some records: one row per record, in order, with the fields (or the
# error), and the operator run that produced them (its usage and failures).
Judge = Callable[[list[Record]], tuple[list[Record], OperatorResult]]


@dataclass
class SynthesisRun:
    """What ``run_synthesis`` decided: per healthy record (by position), either the model's
    answer row (``answers``: the sample's and the fallbacks') or the functions' voted values
    (``values``); the functions as they stand after learning; and the counts and costs."""

    answers: dict[int, Record] = default(default_factory=dict)
    values: dict[int, dict[str, Any]] = default(default_factory=dict)
    functions: dict[str, list[ScoredFunction]] = default(default_factory=dict)
    synthesis_usage: Usage = default(default_factory=Usage)
    fallback_usage: Usage = default(default_factory=Usage)
    failures: int = 0
    failure_examples: list[str] = default(default_factory=list)
    fallback: int = 0
    sample: int = 0
    reused: bool = False
    problems: list[str] = default(default_factory=list)

    def count(self, run: OperatorResult) -> None:
        self.failures += run.stats.failures
        self.failure_examples = (self.failure_examples + run.stats.failure_examples)[:5]

    def result(
        self, records: Sequence[Record], out: list[Record], model: ChatModel
    ) -> OperatorResult:
        """The operator's result: ``out`` emitted for ``records``, with this run's counts."""
        stats = OperatorStats(
            records_in=len(records),
            records_out=len(out),
            evaluated=len(self.answers) + len(self.values),
            passed_through_errors=sum(1 for r in records if r.get(ERROR)),
            failures=self.failures,
            usage=self.synthesis_usage + self.fallback_usage,
            failure_examples=self.failure_examples,
        )
        return OperatorResult(out, stats, STRATEGY, model.model_name, self.extras())

    def extras(self) -> dict[str, Any]:
        return {
            "functions": {f: [s.to_dict() for s in fs] for f, fs in self.functions.items()},
            "fallback": self.fallback,
            "synthesis_tokens": self.synthesis_usage.input_tokens
            + self.synthesis_usage.output_tokens,
            "fallback_tokens": self.fallback_usage.input_tokens + self.fallback_usage.output_tokens,
            "sample": self.sample,
            "reused_functions": self.reused,
            "synthesis_problems": self.problems[:10],
        }


def run_synthesis(
    fields: Mapping[str, tuple[str, str]],
    records: Sequence[Record],
    texts: Sequence[str],
    judge: Judge,
    model: ChatModel,
    progress: Progress | None,
    *,
    functions: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    sample_size: int,
    candidates: int,
    min_precision: float,
    max_fallback: float,
    limits: SandboxLimits | None,
) -> SynthesisRun:
    """Steps 1-3 of the module docstring over healthy ``records`` (``texts``: what the model
    reads of each), for a map's fields or a filter's single yes/no "field"."""
    run = SynthesisRun(reused=bool(functions))
    with Sandbox(limits or SandboxLimits()) as box:
        kept = functions_from(functions) if functions else {}
        outputs = outputs_of(kept, texts, fields, box) if kept else {}
        undecided = (
            sum(1 for k in range(len(texts)) if not decide(kept, outputs, fields, k)[1])
            if kept
            else len(texts)
        )
        if not kept or (texts and undecided / len(texts) > max_fallback):
            run.reused = False
            picks = sample_indices([str(r.get(RECORD_ID)) for r in records], sample_size)
            rows, sample_run = judge([records[i] for i in picks])
            run.synthesis_usage += sample_run.stats.usage
            run.count(sample_run)
            run.answers = dict(zip(picks, rows, strict=True))
            run.sample = len(picks)
            kept, spent, run.problems = synthesize(
                fields, [texts[i] for i in picks], rows, model, box, candidates, min_precision
            )
            run.synthesis_usage += spent
            outputs = outputs_of(kept, texts, fields, box)

    todo = [k for k in range(len(records)) if k not in run.answers]
    for start in range(0, len(todo), FALLBACK_CHUNK):
        ask = []
        for k in todo[start : start + FALLBACK_CHUNK]:
            values, decided = decide(kept, outputs, fields, k)
            if decided:
                run.values[k] = values
            else:
                ask.append(k)
        if ask:
            rows, fallback_run = judge([records[k] for k in ask])
            run.fallback_usage += fallback_run.stats.usage
            run.count(fallback_run)
            run.fallback += len(ask)
            for k, row in zip(ask, rows, strict=True):
                run.answers[k] = row
                learn(kept, outputs, k, row)
        if progress:
            progress(min(start + FALLBACK_CHUNK, len(todo)), max(len(todo), 1))
    run.functions = kept
    return run


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

    def judge(batch: list[Record]) -> tuple[list[Record], OperatorResult]:
        answered = direct_map(node, batch, model)  # one record out per record in, in order
        return answered.records, answered

    run = run_synthesis(
        types,
        [r for _, r in ok],
        [render_fields(r, node.depends_on) for _, r in ok],
        judge,
        model,
        progress,
        functions=functions,
        sample_size=sample_size,
        candidates=candidates,
        min_precision=min_precision,
        max_fallback=max_fallback,
        limits=limits,
    )
    emitted: dict[int, Record] = {i: {**r, **dict.fromkeys(types)} for i, r in failed}
    for k, (i, record) in enumerate(ok):
        emitted[i] = run.answers[k] if k in run.answers else {**record, **run.values[k]}
    return run.result(records, [emitted[i] for i in range(len(records))], model)
