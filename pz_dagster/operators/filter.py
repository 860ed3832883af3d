"""Semantic filter: keep the records for which a natural-language predicate holds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, create_model

from pz_dagster.errors import PlanError, RecordFailure
from pz_dagster.models.base import CHARS_PER_TOKEN, ChatModel, Usage, json_schema_for
from pz_dagster.operators.base import (
    OperatorResult,
    OperatorStats,
    Outcome,
    Progress,
    Record,
    Tally,
    ask_json,
    run_on_model,
    run_per_record,
    split_failed,
)
from pz_dagster.operators.evidence import MAX_QUOTE_CHARS, find_quote
from pz_dagster.operators.prompts import (
    MAX_CHUNKS,
    budget_chars,
    context_chars,
    document_prompt,
    render_fields,
    split_to_context,
)
from pz_dagster.query.plan import SemanticFilter


class FilterAnswer(BaseModel):
    answer: Literal["YES", "NO"]


FILTER_SCHEMA = json_schema_for(FilterAnswer)
FILTER_MAX_TOKENS = 16


def filter_instruction(predicate: str) -> str:
    return (
        f"Condition: {predicate.strip()}\n"
        "Does the document above satisfy the condition? "
        'Reply {"answer": "YES"} or {"answer": "NO"}.'
    )


ReasonedAnswer = create_model(
    "ReasonedAnswer",
    reasoning=(str, Field(max_length=400, description="A few sentences of reasoning.")),
    answer=(Literal["YES", "NO"], ...),
)
REASONED_SCHEMA = json_schema_for(ReasonedAnswer)
REASONED_MAX_TOKENS = 220
CheckedAnswer = create_model(
    "CheckedAnswer",
    check=(str, Field(max_length=300, description="What in the document decides it.")),
    answer=(Literal["YES", "NO"], ...),
)
CHECKED_SCHEMA = json_schema_for(CheckedAnswer)

# How one chunk of a document is judged: (chunk, predicate, model, tally) -> keep?
ChunkJudge = Callable[[str, str, ChatModel, Tally], bool]


def judge_direct(chunk: str, predicate: str, model: ChatModel, tally: Tally) -> bool:
    prompt = document_prompt(chunk, filter_instruction(predicate))
    answer = tally.ask(model, prompt, FilterAnswer, FILTER_SCHEMA, FILTER_MAX_TOKENS)
    return answer.answer == "YES"  # type: ignore[attr-defined]


def judge_chain_of_thought(chunk: str, predicate: str, model: ChatModel, tally: Tally) -> bool:
    """Reason first, then answer (the reasoning comes before the answer in the schema, so the
    answer is decoded after it)."""
    instruction = (
        f"Condition: {predicate.strip()}\n"
        "Think step by step about whether the document above satisfies the condition, then "
        'answer. Reply {"reasoning": "...", "answer": "YES" or "NO"}.'
    )
    answer = tally.ask(
        model,
        document_prompt(chunk, instruction),
        ReasonedAnswer,
        REASONED_SCHEMA,
        REASONED_MAX_TOKENS,
    )
    return answer.answer == "YES"  # type: ignore[attr-defined]


def judge_critique(chunk: str, predicate: str, model: ChatModel, tally: Tally) -> bool:
    """Answer, then check that answer against the document and give the final one."""
    prompt = document_prompt(chunk, filter_instruction(predicate))
    first = tally.ask(model, prompt, FilterAnswer, FILTER_SCHEMA, FILTER_MAX_TOKENS)
    review = [
        *prompt,
        {"role": "assistant", "content": first.model_dump_json()},
        {
            "role": "user",
            "content": "Check that answer: say what in the document decides whether the "
            "condition holds, then give the final answer. "
            'Reply {"check": "...", "answer": "YES" or "NO"}.',
        },
    ]
    final = tally.ask(model, review, CheckedAnswer, CHECKED_SCHEMA, REASONED_MAX_TOKENS)
    return final.answer == "YES"  # type: ignore[attr-defined]


def holds(
    text: str,
    predicate: str,
    model: ChatModel,
    tally: Tally,
    judge: ChunkJudge = judge_direct,
    max_tokens: int = FILTER_MAX_TOKENS,
) -> tuple[bool, int]:
    """Whether ``text`` satisfies the predicate, and how many chunks it was cut into.

    A text that fits the context is one judgement. A longer one is judged chunk by chunk, and
    a chunk's YES counts only once confirmed (``confirmed``): with many chunks, one chunk's
    mistaken YES would otherwise keep the document, and the chance of one grows with its
    length."""
    chunks = split_to_context(text, model, max_tokens)
    if len(chunks) == 1:
        return judge(text, predicate, model, tally), 1
    return any(
        judge(chunk, predicate, model, tally) and confirmed(chunk, text, predicate, model, tally)
        for chunk in chunks[:MAX_CHUNKS]
    ), len(chunks)


Confirmation = create_model(
    "Confirmation",
    quote=(
        str,
        Field(
            max_length=MAX_QUOTE_CHARS,
            description="The sentence of the document that decides it, copied verbatim.",
        ),
    ),
    answer=(Literal["YES", "NO"], ...),
)
CONFIRMATION_SCHEMA = json_schema_for(Confirmation)
CONFIRMATION_MAX_TOKENS = MAX_QUOTE_CHARS // CHARS_PER_TOKEN + 24


def confirmed(chunk: str, document: str, predicate: str, model: ChatModel, tally: Tally) -> bool:
    """One part of a long document was judged to satisfy the predicate: ask for the sentence
    that decides it, then the answer. It holds when the answer is YES and the document holds
    the quoted sentence (``evidence.find_quote``): an answer that cannot point to its reason in
    the text is not taken."""
    instruction = (
        f"The document above is one part of a longer document.\nCondition: {predicate.strip()}\n"
        "Copy the sentence of this part that shows whether the condition holds, then answer "
        'whether it does. Reply {"quote": "...", "answer": "YES" or "NO"}.'
    )
    prompt = document_prompt(chunk, instruction)
    answer = tally.ask(model, prompt, Confirmation, CONFIRMATION_SCHEMA, CONFIRMATION_MAX_TOKENS)
    yes = answer.answer == "YES"  # type: ignore[attr-defined]
    return yes and find_quote(answer.quote, document) is not None  # type: ignore[attr-defined]


EXAMPLE_CHARS = 600


def few_shot_judge(examples: Sequence[tuple[str, bool]]) -> ChunkJudge:
    """Judge with labelled examples shown after the document (the document stays the prompt's
    prefix, so a prefix cache still serves it)."""
    shown = "\n\n".join(
        f"Example {i} (excerpt):\n{text[:EXAMPLE_CHARS]}\nAnswer: {'YES' if label else 'NO'}"
        for i, (text, label) in enumerate(examples, start=1)
    )

    def judge(chunk: str, predicate: str, model: ChatModel, tally: Tally) -> bool:
        instruction = (
            f"Condition: {predicate.strip()}\nHow other documents were judged:\n\n{shown}\n\n"
            "Does the document above (not the examples) satisfy the condition? "
            'Reply {"answer": "YES"} or {"answer": "NO"}.'
        )
        answer = tally.ask(
            model,
            document_prompt(chunk, instruction),
            FilterAnswer,
            FILTER_SCHEMA,
            FILTER_MAX_TOKENS,
        )
        return answer.answer == "YES"  # type: ignore[attr-defined]

    return judge


def few_shot_filter(
    node: SemanticFilter,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
    *,
    examples: Sequence[tuple[str, bool]] = (),
) -> OperatorResult:
    """One prompt per record with labelled examples (excerpts of earlier records and their
    answers) after the document."""
    if not examples:
        raise PlanError(f"few_shot of {node.name!r} needs labelled examples")
    budget = FILTER_MAX_TOKENS + len(examples) * EXAMPLE_CHARS // CHARS_PER_TOKEN + 60
    return _per_record_filter(
        node, records, model, few_shot_judge(examples), "few_shot", budget, progress
    )


def _per_record_filter(
    node: SemanticFilter,
    records: list[Record],
    model: ChatModel,
    judge: ChunkJudge,
    strategy: str,
    max_tokens: int,
    progress: Progress | None = None,
) -> OperatorResult:
    def decide(record: Record) -> Outcome:
        tally = Tally()
        text = render_fields(record, node.depends_on)
        keep, chunks = holds(text, node.predicate, model, tally, judge, max_tokens)
        cut = chunks > MAX_CHUNKS
        return Outcome(record if keep else None, tally.usage, cut, chunks, min(chunks, MAX_CHUNKS))

    return run_on_model(
        records, decide, model, op_name=node.name, strategy=strategy, progress=progress
    )


def direct_filter(
    node: SemanticFilter, records: list[Record], model: ChatModel, progress: Progress | None = None
) -> OperatorResult:
    """One prompt per record (per chunk of a long one); the answer is decoded as
    ``{"answer": "YES" | "NO"}``.

    A record whose answer cannot be had or parsed is neither kept nor dropped silently: it is
    passed on with its ``error`` column set and counted as a failure.
    """
    return _per_record_filter(
        node, records, model, judge_direct, "direct", FILTER_MAX_TOKENS, progress
    )


def chain_of_thought_filter(
    node: SemanticFilter, records: list[Record], model: ChatModel, progress: Progress | None = None
) -> OperatorResult:
    """One prompt per record asking for bounded reasoning before the answer."""
    return _per_record_filter(
        node,
        records,
        model,
        judge_chain_of_thought,
        "chain_of_thought",
        REASONED_MAX_TOKENS,
        progress,
    )


def critique_filter(
    node: SemanticFilter, records: list[Record], model: ChatModel, progress: Progress | None = None
) -> OperatorResult:
    """Two calls per record: an answer, then a check of it that gives the final answer (the
    second call shares the first one's prefix, so a prefix-caching server reads it once)."""
    return _per_record_filter(
        node, records, model, judge_critique, "critique", REASONED_MAX_TOKENS, progress
    )


def ensemble_filter(
    node: SemanticFilter,
    records: list[Record],
    models: Sequence[ChatModel],
    progress: Progress | None = None,
) -> OperatorResult:
    """Every model answers directly; a record is kept when most of them say YES. A model that
    fails on a record abstains; the record fails only when every model does."""
    if len(models) < 2:
        raise PlanError("an ensemble needs at least two models")

    def decide(record: Record) -> Outcome:
        text = render_fields(record, node.depends_on)
        usage, votes, errors, transport = Usage(), [], [], True
        for m in models:
            tally = Tally()
            try:
                votes.append(holds(text, node.predicate, m, tally)[0])
            except RecordFailure as exc:
                errors.append(f"{m.model_name}: {exc}")
                transport = transport and exc.transport
                if isinstance(exc.usage, Usage):
                    tally.usage += exc.usage
            usage += tally.usage
        if not votes:  # a transport failure only when no model's endpoint answered
            raise RecordFailure("; ".join(errors), usage, transport=transport)
        return Outcome(record if sum(votes) * 2 > len(votes) else None, usage)

    concurrency = min(m.max_concurrency for m in models)
    out, stats = run_per_record(
        records, decide, op_name=node.name, concurrency=concurrency, progress=progress
    )
    names = "+".join(m.model_name for m in models)
    return OperatorResult(out, stats, strategy="ensemble", model=names)


ConfidentAnswer = create_model(
    "ConfidentAnswer",
    answer=(Literal["YES", "NO"], ...),
    confidence=(int, Field(ge=1, le=5, description="1 = a guess, 5 = certain")),
)
CONFIDENT_SCHEMA = json_schema_for(ConfidentAnswer)
CONFIDENT_MAX_TOKENS = 24
# Before a cascade has learned its thresholds: decide only on the cheap model's surest answers.
CASCADE_DEFAULT_LOW, CASCADE_DEFAULT_HIGH = -4.5, 4.5


def confidence_score(
    text: str, predicate: str, model: ChatModel, tally: Tally, stop_at: float | None = None
) -> tuple[float, int]:
    """A cheap model's signed confidence that ``text`` satisfies ``predicate``: +confidence
    (1 to 5) for YES, -confidence for NO; over a long text's chunks the highest (reading stops
    once a chunk reaches ``stop_at``). Returns the score and the number of chunks."""
    instruction = (
        f"Condition: {predicate.strip()}\n"
        "Does the document above satisfy the condition, and how sure are you? "
        'Reply {"answer": "YES" or "NO", "confidence": 1 to 5}.'
    )
    score = -5.0
    chunks = split_to_context(text, model, CONFIDENT_MAX_TOKENS)
    for chunk in chunks[:MAX_CHUNKS]:
        a = tally.ask(
            model,
            document_prompt(chunk, instruction),
            ConfidentAnswer,
            CONFIDENT_SCHEMA,
            CONFIDENT_MAX_TOKENS,
        )
        signed = a.confidence if a.answer == "YES" else -a.confidence  # type: ignore[attr-defined]
        score = max(score, float(signed))
        if stop_at is not None and score >= stop_at:
            break
    return score, len(chunks)


def cascade_filter(
    node: SemanticFilter,
    records: list[Record],
    models: Sequence[ChatModel],
    progress: Progress | None = None,
    *,
    low: float = CASCADE_DEFAULT_LOW,
    high: float = CASCADE_DEFAULT_HIGH,
) -> OperatorResult:
    """The cheap model (``models[0]``) answers with a confidence; its signed score (+confidence
    for YES, -confidence for NO) keeps the record at ``>= high``, drops it below ``low``, and in
    between the strong model (``models[-1]``) decides. ``extras["cascade"]`` holds each judged
    record's score and the strong model's answer where it was asked, which is what the
    optimizer learns the thresholds from."""
    if len(models) < 2:
        raise PlanError("a cascade needs a cheap and a strong model")
    cheap, strong = models[0], models[-1]
    seen: dict[str, tuple[float, bool | None]] = {}

    def decide(record: Record) -> Outcome:
        text = render_fields(record, node.depends_on)
        tally = Tally()
        score, chunks = confidence_score(text, node.predicate, cheap, tally, stop_at=high)
        strong_says = None
        if low <= score < high:
            strong_says, _ = holds(text, node.predicate, strong, tally)
            keep = strong_says
        else:
            keep = score >= high
        seen[str(record.get("record_id"))] = (score, strong_says)
        return Outcome(record if keep else None, tally.usage, chunks=chunks)

    concurrency = min(m.max_concurrency for m in models)
    out, stats = run_per_record(
        records, decide, op_name=node.name, concurrency=concurrency, progress=progress
    )
    result = OperatorResult(
        out, stats, strategy="cascade", model=f"{cheap.model_name}+{strong.model_name}"
    )
    result.extras["cascade"] = seen
    result.extras["escalated"] = sum(1 for _, s in seen.values() if s is not None)
    return result


BATCH_RECORDS = 8


@dataclass
class GroupResult:
    # (index, kept record or None, the record's failure or None)
    verdicts: list[tuple[int, Record | None, RecordFailure | None]]
    usage: Usage
    cut: bool


def group_answer_model(n: int) -> type[BaseModel]:
    return create_model(
        "GroupAnswer", answers=(list[Literal["YES", "NO"]], Field(min_length=n, max_length=n))
    )


def record_groups(
    ok: list[tuple[int, Record]], length: Callable[[Record], int], model: ChatModel
) -> list[list[tuple[int, Record]]]:
    """Groups of up to ``BATCH_RECORDS`` records for one prompt each. A record longer than
    its share of the context is a group of its own, read whole (chunk by chunk) rather than
    cut to its share."""
    share = context_chars(model, 8 * BATCH_RECORDS + 16) // BATCH_RECORDS
    groups: list[list[tuple[int, Record]]] = []
    short: list[tuple[int, Record]] = []
    for item in ok:
        if length(item[1]) > share:
            groups.append([item])
            continue
        short.append(item)
        if len(short) == BATCH_RECORDS:
            groups.append(short)
            short = []
    return groups + ([short] if short else [])


def batched_filter(
    node: SemanticFilter, records: list[Record], model: ChatModel, progress: Progress | None = None
) -> OperatorResult:
    """Up to ``BATCH_RECORDS`` records per prompt, answered as a list of YES/NO: fewer requests,
    and the instruction is paid once per group. A group whose answer does not validate (also
    after the corrective retry) falls back to one prompt per record, so it costs calls, never
    records. Records longer than their share of the context are cut (counted as truncated)."""
    ok, failed = split_failed(records)
    ok_ids = {i: r.get("record_id") for i, r in ok}
    stats = OperatorStats(records_in=len(records), passed_through_errors=len(failed))
    emitted: dict[int, Record | None] = dict(failed)
    groups = record_groups(ok, lambda r: len(render_fields(r, node.depends_on)), model)

    def judge_one(record: Record) -> tuple[bool, Usage]:
        tally = Tally()
        keep, _ = holds(render_fields(record, node.depends_on), node.predicate, model, tally)
        return keep, tally.usage

    def judge_alone(group: list[tuple[int, Record]]) -> GroupResult:
        usage, verdicts = Usage(), []
        for i, record in group:
            try:
                keep, spent = judge_one(record)
                usage += spent
                verdicts.append((i, record if keep else None, None))
            except RecordFailure as again:
                if isinstance(again.usage, Usage):
                    usage += again.usage
                verdicts.append((i, record, again))
        return GroupResult(verdicts, usage, cut=False)

    def judge_group(group: list[tuple[int, Record]]) -> GroupResult:
        if len(group) == 1:  # a long record, or the last one: read whole, chunk by chunk
            return judge_alone(group)
        texts = [render_fields(r, node.depends_on) for _, r in group]
        max_tokens = 8 * len(group) + 16
        share = budget_chars("\n\n".join(texts), model, max_tokens)
        if share is not None:
            texts = [t[: max(share // len(group), 200)] for t in texts]
        docs = "\n\n".join(f"[{k}]\n{t}" for k, t in enumerate(texts, start=1))
        instruction = (
            f"Condition: {node.predicate.strip()}\nFor each of the {len(group)} numbered documents "
            'above, does it satisfy the condition? Reply {"answers": [...]} with one "YES" or "NO" '
            "per document, in order."
        )
        answer_model = group_answer_model(len(group))
        schema = json_schema_for(answer_model)
        try:
            answer, usage = ask_json(
                model, document_prompt(docs, instruction), answer_model, schema, max_tokens
            )
        except RecordFailure as exc:  # fall back to one prompt per record
            alone = judge_alone(group)
            if isinstance(exc.usage, Usage):
                alone.usage += exc.usage
            return alone
        kept = [
            (i, r if v == "YES" else None, None)
            for (i, r), v in zip(group, answer.answers, strict=True)
        ]  # type: ignore[attr-defined]
        return GroupResult(kept, usage, cut=share is not None)

    done = 0
    if progress and ok:
        progress(0, len(ok), stats.usage)
    workers = max(1, min(model.max_concurrency, len(groups)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(judge_group, groups):
            stats.usage += result.usage
            for i, record, error in result.verdicts:
                stats.evaluated += 1
                if result.cut:
                    stats.truncated += 1
                    stats.truncated_ids.append(str(ok_ids[i]))
                emitted[i] = (
                    stats.fail(record, node.name, str(error), error.transport)
                    if error and record
                    else record
                )
                done += 1
                if progress:
                    progress(done, len(ok), stats.usage)
    out = [r for i in range(len(records)) if (r := emitted.get(i)) is not None]
    stats.records_out = len(out)
    return OperatorResult(
        out, stats, strategy=f"batched ({BATCH_RECORDS} per prompt)", model=model.model_name
    )
