"""Split and gather: how a semantic map reads a document longer than its model's context.

A document that fits the context is one prompt, as always. A longer one is read by ``Reading``:

- ``all``: cut into context-sized chunks (or ``chunk_chars``), every chunk asked for every field;
- ``select``: cut into chunks of ``chunk_chars``, and for each field the ``keep`` chunks that
  matter most (BM25 of the field's name and description, or embeddings when the operator has an
  embedder) are read, packed into as few prompts as the context takes; a field no answer backed
  by a quote yet gets its next ``keep`` chunks, for up to ``SELECT_ROUNDS`` rounds;
- ``first``: only the first context-sized chunk (the old behaviour; the record counts as cut).

A chunk's prompt says it is a part of a longer document and allows ``null`` for a field that
part does not state. The answers are gathered per field by a stated rule (``gather_field``): the
value most chunks gave, among the answers whose quote the document holds (and names the value)
when there are such; on a tie between different values the model is asked once to choose among
them, shown the passages they came from. Every part is asked for a quote per field, whether or
not the map declares evidence: the quotes decide among the parts' answers. A list field is the union of the chunks' lists, in order.
Documents past ``max_chunks`` chunks are read in their first ``max_chunks`` and counted as cut.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from pz_dagster.errors import PlanError
from pz_dagster.models.base import ChatModel, Message, json_schema_for
from pz_dagster.models.embeddings import EmbeddingModel, cosine
from pz_dagster.operators.base import Tally
from pz_dagster.operators.evidence import (
    MAX_QUOTE_CHARS,
    blank,
    evidence_column,
    find_quote,
    holds_value,
    value_key,
)
from pz_dagster.operators.prompts import (
    MAX_CHUNKS,
    OMITTED,
    budget_chars,
    split_text,
)

ReadMode = Literal["all", "select", "first"]
READ_MODES: tuple[str, ...] = ("all", "select", "first")
SELECT_CHUNK_CHARS = 1500
SELECT_KEEP = 2
SELECT_ROUNDS = 3  # chunk selection: rounds of next-best chunks for fields still unanswered
DEFAULT_MAX_CHUNKS = MAX_CHUNKS
MERGE_MAX_TOKENS = 16
PASSAGE_CHARS = 240


@dataclass(frozen=True)
class Reading:
    """How a document past the model's context is read (see the module docstring).

    >>> Reading("select").chunk_size
    1500
    >>> Reading("sideways")
    Traceback (most recent call last):
    ...
    pz_dagster.errors.PlanError: unknown reading mode 'sideways'; use one of ['all', 'select', 'first']
    """

    mode: ReadMode = "all"
    chunk_chars: int | None = None
    keep: int = SELECT_KEEP
    max_chunks: int = DEFAULT_MAX_CHUNKS

    def __post_init__(self) -> None:
        if self.mode not in READ_MODES:
            raise PlanError(f"unknown reading mode {self.mode!r}; use one of {list(READ_MODES)}")
        if self.chunk_chars is not None and self.chunk_chars < 200:
            raise PlanError(f"chunk_chars must be at least 200, got {self.chunk_chars}")
        if self.keep < 1 or self.max_chunks < 1:
            raise PlanError("keep and max_chunks must be at least 1")

    @property
    def chunk_size(self) -> int | None:
        if self.mode == "select":
            return self.chunk_chars or SELECT_CHUNK_CHARS
        return self.chunk_chars

    def describe(self) -> str:
        size = f", chunks of {self.chunk_size} characters" if self.chunk_size else ""
        keep = f", {self.keep} per field" if self.mode == "select" else ""
        return f"{self.mode}{size}{keep}"


@dataclass(frozen=True)
class Chunk:
    """``text`` is ``document[start:start + len(text)]``; ``index`` is its place among all."""

    index: int
    start: int
    text: str


def spans(text: str, pieces: Sequence[str]) -> list[Chunk]:
    """Consecutive (possibly overlapping) pieces of ``text`` located in it, in order."""
    out, pos = [], 0
    for i, piece in enumerate(pieces):
        at = text.find(piece, max(pos - len(piece), 0))
        at = pos if at < 0 else at
        out.append(Chunk(i, at, piece))
        pos = at + len(piece)
    return out


@dataclass
class Read:
    """What reading one document did: chunks it had, chunks read, the model's tie-breaks,
    whether a limit left part of it unread, and the prompts whose answer stayed invalid (those
    parts abstain; the record fails only when every part does)."""

    chunks: int = 1
    read: int = 1
    merges: int = 0
    cut: bool = False
    abstained: int = 0  # prompts whose answer stayed invalid (also after the retry)


def part_instruction(fields_text: str) -> str:
    return (
        "The document above is one part of a longer document. From this part, extract these "
        f"fields:\n{fields_text}\nUse null for a field this part does not state; do not guess."
        "\nReply with one JSON object with exactly these keys."
    )


def part_model(output: type[BaseModel], evidence: Sequence[str]) -> type[BaseModel]:
    """``output`` with every field optional (null: this part does not say), and a verbatim
    quote after each field of ``evidence``."""
    definitions: dict[str, Any] = {}
    for name, info in output.model_fields.items():
        definitions[name] = (info.annotation | None, Field(description=info.description))
        if name in evidence:
            definitions[evidence_column(name)] = evidence_field(optional=True)
    return create_model(f"{output.__name__}Part", **definitions)


def evidence_field(optional: bool = False) -> tuple[Any, Any]:
    typ: Any = str | None if optional else str
    return (
        typ,
        Field(
            max_length=MAX_QUOTE_CHARS,
            description="The exact words of the document the value comes from, copied "
            "verbatim" + (" (null when the value is null)." if optional else "."),
        ),
    )


def with_evidence(output: type[BaseModel], evidence: Sequence[str]) -> type[BaseModel]:
    """``output`` with a required verbatim quote after each field of ``evidence``."""
    if not evidence:
        return output
    definitions: dict[str, Any] = {}
    for name, info in output.model_fields.items():
        definitions[name] = (info.annotation, Field(description=info.description))
        if name in evidence:
            definitions[evidence_column(name)] = evidence_field()
    return create_model(f"{output.__name__}Evidence", **definitions)


_TERM = re.compile(r"[0-9a-z]{3,}")
# Words of a field's description that say nothing about where its value is.
_GENERIC = frozenset({"document", "value", "field", "name", "text", "stated", "given"})


@functools.cache
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # heavy: only when ranking

    return frozenset(ENGLISH_STOP_WORDS) | _GENERIC


def terms(text: str) -> list[str]:
    """The words of ``text`` BM25 ranks by: lower case, three characters or more, no stop word.

    >>> terms("The monthly rent of the premises")
    ['monthly', 'rent', 'premises']
    """
    stop = _stop_words()
    return [t for t in _TERM.findall(text.lower()) if t not in stop]


def bm25(query: Sequence[str], docs: Sequence[Sequence[str]]) -> list[float]:
    """Okapi BM25 (k1 1.2, b 0.75) of each of ``docs`` for ``query``, idf over ``docs``.

    >>> [round(s, 2) for s in bm25(["rent"], [["rent", "due"], ["lease", "term"]])]
    [0.69, 0.0]
    """
    n = len(docs)
    avg = sum(len(d) for d in docs) / max(n, 1) or 1.0
    df = Counter(t for d in docs for t in set(d))
    scores = []
    for d in docs:
        tf, s = Counter(d), 0.0
        for t in set(query):
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                s += idf * tf[t] * 2.2 / (tf[t] + 1.2 * (0.25 + 0.75 * len(d) / avg))
        scores.append(s)
    return scores


def field_queries(output: type[BaseModel]) -> dict[str, str]:
    """What each field is about, for ranking chunks: its name's words and its description."""
    return {
        name: f"{name.replace('_', ' ')} {info.description or ''}"
        for name, info in output.model_fields.items()
    }


def rank_chunks(
    chunks: Sequence[Chunk],
    queries: dict[str, str],
    embedder: EmbeddingModel | None = None,
) -> tuple[dict[str, list[int]], Any]:
    """Per field, the indices of the chunks that may state it, best first (those scoring
    above zero; the first chunk where none does), and the embedder's usage, if it ran."""
    usage = None
    if embedder is not None:
        got = embedder.embed([*queries.values(), *(c.text for c in chunks)])
        usage, vectors = got.usage, got.vectors
        scores = {
            name: [cosine(vectors[q], vectors[len(queries) + i]) for i in range(len(chunks))]
            for q, name in enumerate(queries)
        }
    else:
        bags = [terms(c.text) for c in chunks]
        scores = {name: bm25(terms(q), bags) for name, q in queries.items()}
    orders = {}
    for name, per_chunk in scores.items():
        order = sorted(range(len(chunks)), key=lambda i: (-per_chunk[i], i))
        orders[name] = [chunks[i].index for i in order if per_chunk[i] > 0] or [chunks[0].index]
    return orders, usage


def pack(chunks: Sequence[Chunk], size: int | None) -> list[list[Chunk]]:
    """Consecutive groups of ``chunks`` whose texts together stay under ``size`` characters
    (one group when ``size`` is None): one prompt per group."""
    groups: list[list[Chunk]] = []
    total = 0
    for c in chunks:
        if groups and (size is None or total + len(c.text) + len(OMITTED) <= size):
            groups[-1].append(c)
            total += len(c.text) + len(OMITTED)
        else:
            groups.append([c])
            total = len(c.text)
    return groups


def shown_text(group: Sequence[Chunk]) -> str:
    """The text of a prompt over ``group``: its chunks, with ``[...]`` where chunks between
    them were skipped."""
    out, last = [], None
    for c in group:
        if last is not None and c.index != last + 1:
            out.append(OMITTED)
        out.append(c.text if c.text.endswith("\n") else c.text + "\n")
        last = c.index
    return "".join(out)


@dataclass
class Candidate:
    """One chunk's answer for one field."""

    value: Any
    quote: str | None
    grounded: bool
    passage: str
    names_value: bool = False  # the grounded quote contains the value itself

    @property
    def support(self) -> int:
        """How well the document backs the answer: 2, a quote it holds that contains the
        value; 1, a quote it holds; 0, none."""
        return 2 if self.grounded and self.names_value else int(self.grounded)


@dataclass
class Gathered:
    values: dict[str, Any] = field(default_factory=dict)
    quotes: dict[str, str | None] = field(default_factory=dict)


def chunks_for(text: str, model: ChatModel, max_tokens: int, reading: Reading) -> list[Chunk]:
    """The chunks ``reading`` cuts ``text`` into (one when it fits the context)."""
    context = budget_chars(text, model, max_tokens)
    if context is None:
        return [Chunk(0, 0, text)]
    size = reading.chunk_size
    return spans(text, split_text(text, context if size is None else min(size, context)))


def passage(value: Any, quote: str | None, chunk_text: str) -> str:
    """What the model is shown of where a candidate came from: its quote, else the chunk's
    words around the value, else the chunk's start."""
    if quote:
        return quote[:PASSAGE_CHARS]
    at = chunk_text.lower().find(str(value).lower()) if not blank(value) else -1
    start = max(at - PASSAGE_CHARS // 2, 0) if at >= 0 else 0
    return " ".join(chunk_text[start : start + PASSAGE_CHARS].split())


def merge_prompt(name: str, desc: str, candidates: Sequence[Candidate]) -> list[Message]:
    listed = "\n".join(
        f'{i}. {c.value!r}, from the passage: "{c.passage}"'
        for i, c in enumerate(candidates, start=1)
    )
    return [
        {"role": "system", "content": "You reconcile answers about a document; reply with JSON."},
        {
            "role": "user",
            "content": f"Different parts of one long document gave these answers for the field "
            f'"{name}" ({desc}):\n{listed}\n\nWhich one is the document\'s answer for "{name}"? '
            'Reply {"choice": <its number>}.',
        },
    ]


def choose(
    name: str, desc: str, candidates: Sequence[Candidate], model: ChatModel, tally: Tally
) -> Candidate:
    """The model's choice among tied candidates (one short call)."""
    numbers = tuple(range(1, len(candidates) + 1))
    choice_model = create_model("Choice", choice=(Literal[numbers], ...))  # type: ignore[valid-type]
    answer = tally.ask(
        model,
        merge_prompt(name, desc, candidates),
        choice_model,
        json_schema_for(choice_model),
        MERGE_MAX_TOKENS,
    )
    return candidates[answer.choice - 1]  # type: ignore[attr-defined]


def gather_field(
    name: str,
    desc: str,
    candidates: Sequence[Candidate],
    model: ChatModel,
    tally: Tally,
    is_list: bool = False,
) -> tuple[Candidate | None, bool]:
    """The answer for one field from its chunks' answers, and whether the model broke a tie.

    A list field: the union of the lists, in document order, without repeats. Otherwise the
    value most chunks gave (compared by ``value_key``; one vote per distinct quote, so a
    sentence in the overlap of two chunks counts once), among the answers the document backs
    best (``Candidate.support``: a quote it holds naming the value, else a quote it holds, else
    none); the model chooses among the values tied for most."""
    given = [c for c in candidates if not blank(c.value)]
    if not given:
        return None, False
    if is_list:
        items: list[Any] = []
        for c in given:
            items += [v for v in c.value if v not in items]
        return Candidate(items, given[0].quote, given[0].grounded, given[0].passage), False
    best = max(c.support for c in given)
    given = [c for c in given if c.support == best]
    # the same quote seen twice (in the overlap of two chunks) is one vote
    votes = {(value_key(c.value), value_key(c.quote or c.passage)): c for c in reversed(given)}
    counts = Counter(value for value, _ in votes)
    top = max(counts.values())
    tied = [k for k, n in counts.items() if n == top]
    firsts = [next(c for c in given if value_key(c.value) == k) for k in tied]
    if len(firsts) == 1:
        return firsts[0], False
    return choose(name, desc, firsts, model, tally), True


def candidates_of(
    answers: Sequence[tuple[BaseModel, str]], name: str, evidence: Sequence[str], document: str
) -> list[Candidate]:
    """Each prompt's answer for field ``name`` (prompts in document order), with its quote
    checked against the whole document."""
    out = []
    for answer, shown in answers:
        value = getattr(answer, name)
        quote = getattr(answer, evidence_column(name), None) if name in evidence else None
        span = find_quote(quote, document) if quote else None
        names = span is not None and holds_value(value, document[span.start : span.end])
        out.append(Candidate(value, quote, span is not None, passage(value, quote, shown), names))
    return out


def is_list_field(output: type[BaseModel], name: str) -> bool:
    return getattr(output.model_fields[name].annotation, "__origin__", None) is list
