"""What every physical operator returns, and the machinery they share: running records
concurrently, asking for validated JSON with one corrective retry, counting everything."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from pz_dagster.errors import RecordFailure
from pz_dagster.models.base import ChatModel, Completion, Message, Usage
from pz_dagster.query.schema import ERROR

Record = dict[str, Any]


class Progress(Protocol):
    """``progress(done, total, usage)``: ``done`` of ``total`` records settled (called with 0
    as the work starts), and the model work spent on them so far where the caller knows it."""

    def __call__(self, done: int, total: int, usage: Usage | None = None, /) -> None: ...


@dataclass
class OperatorStats:
    records_in: int = 0
    records_out: int = 0
    evaluated: int = 0  # records the operator actually processed (not passed-through failures)
    failures: int = 0  # records this operator failed on (kept, with the error column set)
    # of those, the ones no answer came back for (RecordFailure.transport): the endpoint's fault
    transport_failures: int = 0
    passed_through_errors: int = 0  # records that arrived with an error and were kept as they were
    truncated: int = 0  # records whose text was cut to fit the model's context (logged)
    chunked: int = 0  # records too long for one prompt, read in several chunks
    chunks_total: int = 0  # chunks the chunked records were cut into
    chunks_read: int = 0  # of those, the chunks a model read (chunk selection reads fewer)
    model_merges: int = 0  # fields whose chunks disagreed and the model chose among them
    chunks_abstained: int = 0  # chunks whose answer stayed invalid: they gave no answer
    # per field asking for evidence: answers whose quote the document holds, and those it does not
    grounded: dict[str, int] = field(default_factory=dict)
    ungrounded: dict[str, int] = field(default_factory=dict)
    ungrounded_examples: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    failure_examples: list[str] = field(default_factory=list)
    truncated_ids: list[str] = field(default_factory=list)
    transport_example: str | None = None  # the first transport failure, for the asset's error

    def fail(self, record: Record, op_name: str, message: str, transport: bool = False) -> Record:
        self.failures += 1
        example = f"{record.get('record_id')}: {message}"
        if len(self.failure_examples) < 5:
            self.failure_examples.append(example)
        if transport:
            self.transport_failures += 1
            self.transport_example = self.transport_example or example
        return {**record, ERROR: f"{op_name}: {message}"}

    def grounding(self) -> dict[str, int]:
        """Answers with evidence the document holds (``grounded``) and does not."""
        return {
            "grounded": sum(self.grounded.values()),
            "ungrounded": sum(self.ungrounded.values()),
        }

    def count_reading(self, record: Record, outcome: Outcome) -> None:
        """Add how ``outcome`` read its document (chunks, tie-breaks, grounding)."""
        if outcome.chunks > 1:
            self.chunked += 1
            self.chunks_total += outcome.chunks
            self.chunks_read += outcome.chunks if outcome.read is None else outcome.read
        self.model_merges += outcome.merges
        self.chunks_abstained += outcome.abstained
        for name, ok in outcome.grounding.items():
            tally = self.grounded if ok else self.ungrounded
            tally[name] = tally.get(name, 0) + 1
            if not ok and len(self.ungrounded_examples) < 5:
                self.ungrounded_examples.append(f"{record.get('record_id')}: {name}")


@dataclass
class OperatorResult:
    records: list[Record]
    stats: OperatorStats
    strategy: str
    model: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # strategy-specific observations


@dataclass
class Outcome:
    """What one record's work produced and its cost: the record to emit, None when it is
    filtered out, or a list of records for one-to-many operators."""

    record: Record | list[Record] | None
    usage: Usage = field(default_factory=Usage)
    truncated: bool = False
    chunks: int = 1
    read: int | None = None  # chunks read, when not all of them (chunk selection)
    merges: int = 0
    grounding: dict[str, bool] = field(default_factory=dict)  # field -> quote found
    abstained: int = 0  # chunks whose answer stayed invalid


def split_failed(
    records: list[Record],
) -> tuple[list[tuple[int, Record]], list[tuple[int, Record]]]:
    """(index, record) pairs of healthy records and of records that already carry an error."""
    ok, failed = [], []
    for i, r in enumerate(records):
        (failed if r.get(ERROR) else ok).append((i, r))
    return ok, failed


def run_per_record(
    records: list[Record],
    work: Callable[[Record], Outcome],
    *,
    op_name: str,
    concurrency: int,
    progress: Progress | None = None,
    on_failure: Callable[[Record], Record] = lambda r: r,
) -> tuple[list[Record], OperatorStats]:
    """Apply ``work`` to every healthy record with up to ``concurrency`` in flight, in order.

    Records that arrive with an error pass through untouched. A RecordFailure keeps its record,
    with the error column set (``on_failure`` shapes it, e.g. adds null output columns). Any
    other exception (a dead endpoint) cancels what has not started and fails the operator.
    """
    stats = OperatorStats(records_in=len(records))
    ok, failed = split_failed(records)
    stats.passed_through_errors = len(failed)
    emitted: dict[int, Record | list[Record] | None] = {i: on_failure(r) for i, r in failed}

    def settle(i: int, record: Record, fn: Callable[[], Outcome]) -> None:
        stats.evaluated += 1
        try:
            outcome = fn()
        except RecordFailure as exc:
            if isinstance(exc.usage, Usage):
                stats.usage += exc.usage
            emitted[i] = stats.fail(on_failure(record), op_name, str(exc), exc.transport)
            return
        stats.usage += outcome.usage
        if outcome.truncated:
            stats.truncated += 1
            stats.truncated_ids.append(str(record.get("record_id")))
        stats.count_reading(record, outcome)
        emitted[i] = outcome.record

    if progress and ok:
        progress(0, len(ok), stats.usage)
    if concurrency <= 1 or len(ok) <= 1:
        for done, (i, record) in enumerate(ok, start=1):
            settle(i, record, lambda record=record: work(record))
            if progress:
                progress(done, len(ok), stats.usage)
    else:
        with ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"pz-{op_name}"
        ) as pool:
            futures = {pool.submit(work, record): (i, record) for i, record in ok}
            pending, done_count = set(futures), 0
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    i, record = futures[fut]
                    exc = fut.exception()
                    if exc is not None and not isinstance(exc, RecordFailure):
                        for p in pending:
                            p.cancel()
                        raise exc
                    settle(i, record, fut.result)
                    done_count += 1
                    if progress:
                        progress(done_count, len(ok), stats.usage)
    out: list[Record] = []
    for i in range(len(records)):
        got = emitted.get(i)
        if isinstance(got, list):
            out.extend(got)
        elif got is not None:
            out.append(got)
    stats.records_out = len(out)
    return out, stats


def run_on_model(
    records: list[Record],
    work: Callable[[Record], Outcome],
    model: ChatModel,
    *,
    op_name: str,
    strategy: str,
    progress: Progress | None = None,
    on_failure: Callable[[Record], Record] = lambda r: r,
) -> OperatorResult:
    """``run_per_record`` with as many records in flight as ``model`` takes, as the result of
    ``strategy`` on it."""
    out, stats = run_per_record(
        records,
        work,
        op_name=op_name,
        concurrency=model.max_concurrency,
        progress=progress,
        on_failure=on_failure,
    )
    return OperatorResult(out, stats, strategy=strategy, model=model.model_name)


def parse_json_output(completion: Completion, model: type[BaseModel]) -> BaseModel:
    """Validate a model's JSON answer; a bad answer raises RecordFailure with the reason."""
    if completion.finish_reason == "length":
        raise RecordFailure(
            f"answer cut off at the max_tokens limit ({completion.usage.output_tokens} tokens): "
            f"{completion.text[:80]!r}"
        )
    try:
        # strict=False: a raw line break inside a string (a quote copied across lines) is text,
        # not a reason to fail the record
        return model.model_validate(json.loads(completion.text, strict=False))
    except json.JSONDecodeError as exc:
        raise RecordFailure(
            f"answer is not valid JSON ({exc.msg}): {completion.text[:80]!r}"
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise RecordFailure(
            f"answer does not match the schema at {where}: {first['msg']}"
        ) from None


def _validated(model: ChatModel, completion: Completion, output: type[BaseModel]) -> BaseModel:
    """``parse_json_output``; an answer that fails it is taken out of the response cache (when
    ``model`` has one), or the next run would be served the same invalid answer and fail the
    record again without asking."""
    try:
        return parse_json_output(completion, output)
    except RecordFailure:
        discard = getattr(model, "discard", None)
        if callable(discard):
            discard(completion)
        raise


class Tally:
    """Adds up what one record's several model calls cost; a failure on a later call carries
    the whole sum, so earlier calls are not lost from the books.

    >>> Tally().usage.calls
    0
    """

    def __init__(self) -> None:
        self.usage = Usage()

    def ask(
        self,
        model: ChatModel,
        messages: list[Message],
        output: type[BaseModel],
        schema: dict[str, Any],
        max_tokens: int,
    ) -> BaseModel:
        try:
            answer, spent = ask_json(model, messages, output, schema, max_tokens)
        except RecordFailure as exc:
            spent = exc.usage if isinstance(exc.usage, Usage) else Usage()
            raise exc.with_usage(self.usage + spent) from None
        self.usage += spent
        return answer


def ask_json(
    model: ChatModel,
    messages: list[Message],
    output: type[BaseModel],
    schema: dict[str, Any],
    max_tokens: int,
) -> tuple[BaseModel, Usage]:
    """Ask for JSON matching ``output``; an invalid answer is sent back once with the validation
    error, and a second invalid answer is a RecordFailure carrying the cost of both calls."""
    first = model.complete(messages, json_schema=schema, max_tokens=max_tokens)
    usage = first.usage
    try:
        return _validated(model, first, output), usage
    except RecordFailure as problem:
        retry_messages = [
            *messages,
            {"role": "assistant", "content": first.text},
            {
                "role": "user",
                "content": f"That answer is invalid: {problem}. Reply again with only "
                "a JSON object that matches the requested keys and types.",
            },
        ]
    second = model.complete(retry_messages, json_schema=schema, max_tokens=max_tokens)
    usage = usage + second.usage + Usage(retries=1)
    try:
        return _validated(model, second, output), usage
    except RecordFailure as again:
        raise RecordFailure(
            f"{again} (also after one retry with the validation error)", usage
        ) from None
