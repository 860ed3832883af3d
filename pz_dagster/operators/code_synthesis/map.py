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
   (counted in ``extras["fallback"]``). Every answer scores all candidates once more, and
   new candidates are induced from it (``Pool``), so when the sample's answers pointed at no
   usable function (a weak model's), the fallbacks find one and stop.
4. Output: the functions as they finally stand decide every field they can, on the records
   the model answered too (the sample's and the fallbacks': ``extras["overruled"]`` counts
   where their vote replaced its answer; a record it failed on, ``extras["recovered"]``); its
   answers stand where the functions cannot tell.

The model reads only the chunks of a document that name a field (``field_chunks``, as
Evaporate filters chunks by attribute), for its answers and its code; the functions run on the
whole document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

from optimizer.quality import normalize
from pz_dagster.models.base import ChatModel, Usage
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record, split_failed
from pz_dagster.operators.code_synthesis.functions import (
    CODE_MAX_TOKENS,
    ScoredFunction,
    agreement,
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
from pz_dagster.operators.code_synthesis.sandbox import Sandbox, SandboxLimits
from pz_dagster.operators.map import direct_map
from pz_dagster.operators.prompts import FIELD_CHUNK_CHARS, field_chunks, render_fields
from pz_dagster.query.plan import SemanticMap
from pz_dagster.query.schema import ERROR, RECORD_ID, describe_fields

STRATEGY = "code_synthesis"
SAMPLE_SIZE = 8  # records the model answers to write and score the functions from


def _type_names(node: SemanticMap) -> dict[str, tuple[str, str]]:
    assert node.output is not None
    return {n: (t, d) for n, t, d in describe_fields(node.output)}


MAX_CANDIDATES = 12  # per field: scored candidates kept in the pool (the vote uses the best)
VOTERS = 3  # per field: the best candidates that vote
RUN_SLICE = 25  # texts per sandbox call while a candidate runs over the batch
MAX_STALLS = 3  # timeouts or killed workers after which a candidate is dropped
MIN_AGREEMENT = 0.5  # with each better voter, where both answer, to vote beside it


@dataclass
class Pool:
    """Every candidate function per field that loaded in the sandbox, with its output on every
    text of the batch and its score against the model's answers so far. The vote uses the best
    few (``select``); the others keep being scored, so a function the sample did not favour is
    picked once the model's later answers show it right, and functions induced from those
    answers join the pool (a small model's sample answers may point at no usable line)."""

    fields: Mapping[str, tuple[str, str]]
    texts: Sequence[str]
    box: Sandbox
    min_precision: float
    functions: dict[str, list[ScoredFunction]] = default(default_factory=dict)
    outputs: dict[str, list[list[Any]]] = default(default_factory=dict)
    problems: list[str] = default(default_factory=list)
    dropped: set[str] = default(default_factory=set)

    def add(self, field: str, function: ScoredFunction) -> list[Any] | None:
        """Load ``function`` and run it on every text; its outputs, or None when it is already
        in the pool or does not load (a problem is recorded). A full pool makes room by
        dropping its least accurate candidate that does not vote."""
        fs = self.functions.setdefault(field, [])
        self.outputs.setdefault(field, [])
        if function.source in self.dropped or any(f.source == function.source for f in fs):
            return None
        if len(fs) >= MAX_CANDIDATES:
            voting = {id(f) for f in select(fs, min_precision=self.min_precision)}
            spare = [j for j, f in enumerate(fs) if id(f) not in voting]
            if not spare:
                return None
            worst = min(spare, key=lambda j: (fs[j].accuracy, fs[j].weight))
            self.dropped.add(fs[worst].source)  # not induced again on every later round
            del fs[worst], self.outputs[field][worst]
        name = f"{field}#{hashlib.sha256(function.source.encode()).hexdigest()[:12]}"
        error = self.box.load(name, function.source, function.entry)
        if error:
            self.problems.append(f"{name}: {error}")
            return None
        outs = self._run(name, self.fields[field][0])
        if isinstance(outs, str):
            self.problems.append(f"{name}: {outs}; dropped")
            self.dropped.add(function.source)
            return None
        fs.append(function)
        self.outputs[field].append(outs)
        return outs

    def _run(self, name: str, type_name: str) -> list[Any] | str:
        """The loaded function's output on every text (None where it abstained or raised), or
        why it was stopped: it attempted a forbidden operation (the sandbox stops it for
        good), or it stalled ``MAX_STALLS`` times (a function that loops or kills the worker
        costs the per-call timeout on every text, which a large batch cannot afford)."""
        outs: list[Any] = []
        stalls = 0
        while len(outs) < len(self.texts):  # a first short slice finds a looping one early
            step = RUN_SLICE if outs else MAX_STALLS + 2
            for o in self.box.call(name, self.texts[len(outs) : len(outs) + step]):
                if o.error and o.error.startswith("forbidden"):
                    return o.error
                stalls += bool(o.error and ("timeout" in o.error or "worker" in o.error))
                outs.append(as_type(o.value, type_name) if not o.error else None)
            if stalls >= MAX_STALLS:
                return "stalled (timeouts or a killed worker)"
        return outs

    def add_scored(self, field: str, source: str, entry: str, answers: Mapping[int, Record]):
        """Add a new candidate, scored against every answer so far (by text position)."""
        fresh = ScoredFunction(field, source, entry)
        outs = self.add(field, fresh)
        if outs is None:
            return
        usable = [k for k, row in answers.items() if not row.get(ERROR)]
        scored = score(
            field, source, entry, [outs[k] for k in usable], [answers[k].get(field) for k in usable]
        )
        self.functions[field][-1] = scored

    def induce(self, answers: Mapping[int, Record], positions: Sequence[int]) -> None:
        """Candidates induced from the answers at ``positions`` (the lines they sit on), scored
        against every answer so far."""
        for field in self.fields:
            usable = [k for k in positions if not answers[k].get(ERROR)]
            found = induce_functions(
                [self.texts[k] for k in usable], [answers[k].get(field) for k in usable]
            )
            for source, entry in found:
                self.add_scored(field, source, entry, answers)

    def learn(self, k: int, answer: Record) -> None:
        """The model's answer on record ``k`` scores every candidate once more, so that what
        they keep getting right (or rightly leaving empty) is trusted on the next records."""
        if answer.get(ERROR):
            return
        for field, fs in self.functions.items():
            outs = self.outputs[field]
            self.functions[field] = [
                f.observe(outs[j][k], answer.get(field)) for j, f in enumerate(fs)
            ]

    def chosen(self) -> tuple[dict[str, list[ScoredFunction]], dict[str, list[list[Any]]]]:
        """The functions that vote per field, best first (``select``), and their outputs. A
        candidate that mostly disagrees with a better one on the batch is left out: it reads
        something else, and its vote would only keep records undecided."""
        kept: dict[str, list[ScoredFunction]] = {}
        outputs: dict[str, list[list[Any]]] = {}
        for field in self.fields:
            fs = self.functions.get(field, [])
            at = {id(f): j for j, f in enumerate(fs)}
            kept[field], outputs[field] = [], []
            for f in select(fs, min_precision=self.min_precision, keep=len(fs)):
                outs = self.outputs[field][at[id(f)]]
                if all(agreement(outs, o) >= MIN_AGREEMENT for o in outputs[field]):
                    kept[field].append(f)
                    outputs[field].append(outs)
                if len(kept[field]) == VOTERS:
                    break
        return kept, outputs


def synthesize(
    pool: Pool,
    positions: Sequence[int],
    answers: Mapping[int, Record],
    model: ChatModel,
    candidates: int,
    shown: Callable[[str], str] = lambda text: text,
) -> Usage:
    """Ask the model for ``candidates`` functions per field, each from a sample document
    (``positions``, answered in ``answers``; the model sees ``shown(text)`` of it), and add
    them to the pool, scored against the answers; then the candidates induced from the
    answers. Returns what writing them cost."""
    usage = Usage()
    usable = [k for k in positions if not answers[k].get(ERROR)]
    for field, (type_name, desc) in pool.fields.items():
        for c in range(candidates):
            doc = shown(pool.texts[usable[c % len(usable)]]) if usable else ""
            answer = model.complete(
                synthesis_messages(field, type_name, desc, doc),
                max_tokens=CODE_MAX_TOKENS,
                temperature=0.0 if c < len(usable) else 0.7,
            )
            usage += answer.usage
            parsed = parse_function(answer.text)
            if parsed is None:
                pool.problems.append(f"{field} #{c}: no function in the answer")
            else:
                pool.add_scored(field, *parsed, answers)
    pool.induce(answers, positions)
    return usage


def decided_fields(
    functions: Mapping[str, Sequence[ScoredFunction]],
    outputs: Mapping[str, list[list[Any]]],
    types: Mapping[str, tuple[str, str]],
    k: int,
) -> dict[str, Any]:
    """Record ``k``'s voted value of each field the functions decide."""
    out = {}
    for field in types:
        fs = functions.get(field) or []
        if fs:
            value, ok = vote([o[k] for o in outputs[field]], fs)
            if ok:
                out[field] = value
    return out


def decide(
    functions: Mapping[str, Sequence[ScoredFunction]],
    outputs: Mapping[str, list[list[Any]]],
    types: Mapping[str, tuple[str, str]],
    k: int,
) -> tuple[dict[str, Any], bool]:
    """Record ``k``'s voted values and whether every field was decided."""
    got = decided_fields(functions, outputs, types, k)
    return {field: got.get(field) for field in types}, len(got) == len(types)


# Fallback records the model answers together before the functions learn from its answers:
# at first as many as it answers at once (its ``max_concurrency``; a weak sample may have
# left no usable function, and every answer may find one: learn as early as that costs no
# speed), doubling each round up to this many.
MAX_FALLBACKS_PER_ROUND = 50


def first_round(model: ChatModel) -> int:
    """How many fallback records the model answers before the functions first learn."""
    return max(1, min(model.max_concurrency, MAX_FALLBACKS_PER_ROUND))


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
    transport_failures: int = 0  # of ``failures``, those no answer came back for
    failure_examples: list[str] = default(default_factory=list)
    fallback: int = 0
    recovered: int = 0  # records the model failed on that the functions then decided
    overruled: int = 0  # records the model answered on which the functions' vote differs
    sample: int = 0
    reused: bool = False
    problems: list[str] = default(default_factory=list)

    def count(self, run: OperatorResult) -> None:
        self.failures += run.stats.failures
        self.transport_failures += run.stats.transport_failures
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
            transport_failures=self.transport_failures,
            usage=self.synthesis_usage + self.fallback_usage,
            failure_examples=self.failure_examples,
        )
        return OperatorResult(out, stats, STRATEGY, model.model_name, self.extras())

    def extras(self) -> dict[str, Any]:
        return {
            "functions": {f: [s.to_dict() for s in fs] for f, fs in self.functions.items()},
            "fallback": self.fallback,
            "recovered": self.recovered,
            "overruled": self.overruled,
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
    shown: Callable[[str], str] = lambda text: text,
) -> SynthesisRun:
    """Steps 1-4 of the module docstring over healthy ``records`` (``texts``: what the
    functions read of each; ``shown(text)``: what the model reads of it when asked for code,
    as ``judge`` does when it answers), for a map's fields or a filter's single yes/no
    "field"."""
    run = SynthesisRun(reused=bool(functions))
    with Sandbox(limits or SandboxLimits()) as box:
        pool = Pool(fields, texts, box, min_precision)
        for field, fs in functions_from(functions or {}).items():
            for f in fs:
                if field in fields:
                    pool.add(field, f)
        kept, outputs = pool.chosen()
        undecided = sum(1 for k in range(len(texts)) if not decide(kept, outputs, fields, k)[1])
        if not any(kept.values()) or (texts and undecided / len(texts) > max_fallback):
            run.reused = False
            pool = Pool(fields, texts, box, min_precision)
            picks = sample_indices([str(r.get(RECORD_ID)) for r in records], sample_size)
            rows, sample_run = judge([records[i] for i in picks])
            run.synthesis_usage += sample_run.stats.usage
            run.count(sample_run)
            run.answers = dict(zip(picks, rows, strict=True))
            run.sample = len(picks)
            run.synthesis_usage += synthesize(pool, picks, run.answers, model, candidates, shown)
            kept, outputs = pool.chosen()

        todo = [k for k in range(len(records)) if k not in run.answers]
        ask: list[int] = []
        round_size = first_round(model)
        for done, k in enumerate(todo, start=1):
            values, decided = decide(kept, outputs, fields, k)
            if decided:
                run.values[k] = values
            else:
                ask.append(k)
            if ask and (len(ask) >= round_size or done == len(todo)):
                rows, fallback_run = judge([records[j] for j in ask])
                run.fallback_usage += fallback_run.stats.usage
                run.count(fallback_run)
                run.fallback += len(ask)
                for j, row in zip(ask, rows, strict=True):
                    run.answers[j] = row
                    pool.learn(j, row)
                pool.induce(run.answers, ask)
                kept, outputs = pool.chosen()
                ask, round_size = [], min(round_size * 2, MAX_FALLBACKS_PER_ROUND)
                if progress:
                    progress(done, len(todo))
        # The functions as they finally stand decide every record they can, the model's
        # (the sample's, the fallbacks') included, as in Evaporate: its answers were their
        # reference, and stand where the functions cannot tell. A weak model's answer is
        # noisier than the line its answers, taken together, pointed the functions at.
        for k, row in list(run.answers.items()):
            got = decided_fields(kept, outputs, fields, k)
            if row.get(ERROR):  # the model failed on it (invalid JSON, also on the retry)
                if len(got) == len(fields):
                    run.values[k] = got
                    del run.answers[k]
                    run.recovered += 1
                    gone = f"{records[k].get(RECORD_ID)}: "
                    run.failure_examples = [
                        e for e in run.failure_examples if not e.startswith(gone)
                    ]
                continue
            changed = {f: v for f, v in got.items() if normalize(v) != normalize(row.get(f))}
            if changed:
                run.answers[k] = {**row, **changed}
                run.overruled += 1
        run.failures -= run.recovered
        if progress:
            progress(len(todo), max(len(todo), 1))
        run.problems = pool.problems
    run.functions = kept
    return run


def code_synthesis_map(
    node: SemanticMap,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
    *,
    functions: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    sample_size: int = SAMPLE_SIZE,
    candidates: int = 2,
    min_precision: float = 0.3,
    max_fallback: float = 0.5,
    limits: SandboxLimits | None = None,
    chunk_chars: int | None = FIELD_CHUNK_CHARS,
) -> OperatorResult:
    """Extract the map's fields with synthesized functions; see the module docstring.
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
        functions=functions,
        sample_size=sample_size,
        candidates=candidates,
        min_precision=min_precision,
        max_fallback=max_fallback,
        limits=limits,
        shown=shown,
    )
    emitted: dict[int, Record] = {i: {**r, **dict.fromkeys(types)} for i, r in failed}
    for k, (i, record) in enumerate(ok):
        emitted[i] = run.answers[k] if k in run.answers else {**record, **run.values[k]}
    return run.result(records, [emitted[i] for i in range(len(records))], model)
