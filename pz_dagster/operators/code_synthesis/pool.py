"""The pool of candidate functions of one batch: every candidate that loaded in the sandbox,
its output on every text and its score against the model's answers so far; the model asked for
more (``synthesize``); and the vote of the best ones on a record (``decide``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

from pz_dagster.models.base import ChatModel, Usage
from pz_dagster.operators.base import Record
from pz_dagster.operators.code_synthesis.functions import (
    CODE_MAX_TOKENS,
    ScoredFunction,
    agreement,
    as_type,
    induce_functions,
    parse_function,
    score,
    select,
    synthesis_messages,
    vote,
)
from pz_dagster.operators.code_synthesis.sandbox import Sandbox
from pz_dagster.query.schema import ERROR

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
    if not positions:  # no document to write from, no answer to score against
        return usage
    # documents the model answered, else (every answer failed) those it was asked about
    usable = [k for k in positions if not answers[k].get(ERROR)] or list(positions)
    for field, (type_name, desc) in pool.fields.items():
        for c in range(candidates):
            doc = shown(pool.texts[usable[c % len(usable)]])
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
    got: Mapping[str, Any], types: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, Any], bool]:
    """A record's values of every field from those ``decided_fields`` found (None where the
    functions could not tell), and whether every field was decided."""
    return {field: got.get(field) for field in types}, len(got) == len(types)
