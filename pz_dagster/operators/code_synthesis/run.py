"""One run of code synthesis over a batch (Evaporate), for a map's fields or a filter's yes/no:
the model's cost is fixed with respect to the number of documents.

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

What the model reads of a document, for its answers and its code, is the caller's ``shown``
(a map's: only the chunks that name a field); the functions run on the whole text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any, TypedDict, Unpack

from optimizer.quality import normalize
from pz_dagster.models.base import ChatModel, Usage
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record
from pz_dagster.operators.code_synthesis.functions import (
    ScoredFunction,
    functions_from,
    sample_indices,
)
from pz_dagster.operators.code_synthesis.pool import Pool, decide, decided_fields, synthesize
from pz_dagster.operators.code_synthesis.sandbox import Sandbox, SandboxLimits
from pz_dagster.query.schema import ERROR, RECORD_ID

STRATEGY = "code_synthesis"
SAMPLE_SIZE = 8  # records the model answers to write and score the functions from


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


class SynthesisOptions(TypedDict, total=False):
    """The settings the optimizer may pass to a code-synthesis map or filter (``params``).

    ``functions``: functions synthesized for an earlier batch, tried first; ``sample_size``:
    records the model answers to synthesize from (default ``SAMPLE_SIZE``); ``candidates``:
    functions asked for per field (2); ``min_precision``: a function's agreement with the
    model's answers to be kept (0.3); ``max_fallback``: the fraction of records the reused
    functions may leave to the model before it synthesizes anew (0.5); ``limits``: the
    sandbox's."""

    functions: Mapping[str, Sequence[Mapping[str, Any]]] | None
    sample_size: int
    candidates: int
    min_precision: float
    max_fallback: float
    limits: SandboxLimits | None


def _reporter(run: SynthesisRun, total: int, progress: Progress | None) -> Callable[[], None]:
    """Tells ``progress`` how many of the ``total`` records have an answer (the model's or the
    functions') and what the model work cost so far."""

    def report() -> None:
        if progress:
            done = len(run.answers) + len(run.values)
            progress(done, total, run.synthesis_usage + run.fallback_usage)

    return report


def run_synthesis(
    fields: Mapping[str, tuple[str, str]],
    records: Sequence[Record],
    texts: Sequence[str],
    judge: Judge,
    model: ChatModel,
    progress: Progress | None,
    *,
    shown: Callable[[str], str] = lambda text: text,
    **options: Unpack[SynthesisOptions],
) -> SynthesisRun:
    """Steps 1-4 of the module docstring over healthy ``records`` (``texts``: what the
    functions read of each; ``shown(text)``: what the model reads of it when asked for code,
    as ``judge`` does when it answers), for a map's fields or a filter's single yes/no
    "field"."""
    functions = options.get("functions")
    sample_size = options.get("sample_size", SAMPLE_SIZE)
    candidates = options.get("candidates", 2)
    min_precision = options.get("min_precision", 0.3)
    max_fallback = options.get("max_fallback", 0.5)
    run = SynthesisRun(reused=bool(functions))
    report = _reporter(run, len(records), progress)
    report()
    with Sandbox(options.get("limits") or SandboxLimits()) as box:
        pool = Pool(fields, texts, box, min_precision)
        for field, fs in functions_from(functions or {}).items():
            for f in fs:
                if field in fields:
                    pool.add(field, f)
        kept, outputs = pool.chosen()
        undecided = sum(
            1
            for k in range(len(texts))
            if not decide(decided_fields(kept, outputs, fields, k), fields)[1]
        )
        if texts and (not any(kept.values()) or undecided / len(texts) > max_fallback):
            run.reused = False
            pool = Pool(fields, texts, box, min_precision)
            picks = sample_indices([str(r.get(RECORD_ID)) for r in records], sample_size)
            rows, sample_run = judge([records[i] for i in picks])
            run.synthesis_usage += sample_run.stats.usage
            run.count(sample_run)
            run.answers = dict(zip(picks, rows, strict=True))
            run.sample = len(picks)
            report()
            run.synthesis_usage += synthesize(pool, picks, run.answers, model, candidates, shown)
            kept, outputs = pool.chosen()

        todo = [k for k in range(len(records)) if k not in run.answers]
        ask: list[int] = []
        round_size = first_round(model)
        for done, k in enumerate(todo, start=1):
            values, decided = decide(decided_fields(kept, outputs, fields, k), fields)
            if decided:
                run.values[k] = values
                report()  # a record the functions decided is done
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
                report()
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
        report()
        run.problems = pool.problems
    run.functions = kept
    return run
