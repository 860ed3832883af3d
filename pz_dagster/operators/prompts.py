"""Prompt layout shared by the semantic operators, and asking a model about a document.

The document comes first and the instruction after it, so that consecutive calls on the same
document share a prompt prefix that llama.cpp and vLLM reuse from their KV cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from pz_dagster.models.base import CHARS_PER_TOKEN, ChatModel, Message, Usage, json_schema_for
from pz_dagster.operators.base import Tally, ask_json
from pz_dagster.query.schema import describe_fields

SYSTEM = "You read documents carefully and answer questions about them with JSON only."
# Tokens kept free for the chat template, the instruction and the answer.
PROMPT_OVERHEAD_TOKENS = 350


def render_fields(record: dict[str, Any], depends_on: Sequence[str]) -> str:
    if list(depends_on) == ["contents"]:
        return str(record.get("contents") or "")
    return "\n".join(f"{c}: {record.get(c, '')}" for c in depends_on)


CHUNK_OVERLAP_CHARS = 200
# A document past this many context-sized chunks is read in its first ones and counted as cut
# (``truncated``): a 2,000-page file must not cost 2,000 calls per operator unnoticed.
MAX_CHUNKS = 64


def budget_chars(text: str, model: ChatModel, max_tokens: int) -> int | None:
    """Characters of ``text`` that fit the prompt budget, or None when all of it fits."""
    budget = max(model.context_tokens - max_tokens - PROMPT_OVERHEAD_TOKENS, 64)
    counter = getattr(model, "count_tokens", None)
    if counter is None:
        limit = budget * CHARS_PER_TOKEN
        return None if len(text) <= limit else limit
    tokens = counter(text)
    if tokens <= budget:
        return None
    # The document's own characters-per-token ratio, with a margin for uneven density.
    return max(int(len(text) * budget / tokens * 0.9), 256)


def context_chars(model: ChatModel, max_tokens: int) -> int:
    """Characters of document one prompt takes, at a conservative characters-per-token rate."""
    return max(model.context_tokens - max_tokens - PROMPT_OVERHEAD_TOKENS, 64) * CHARS_PER_TOKEN


def split_to_context(text: str, model: ChatModel, max_tokens: int) -> list[str]:
    """The text in chunks that each fit the model's context (one chunk when it all fits), as
    ``split_text`` cuts them."""
    size = budget_chars(text, model, max_tokens)
    return [text] if size is None else split_text(text, size)


def split_text(text: str, size: int) -> list[str]:
    """``text`` in chunks of at most ``size`` characters. A chunk ends at a paragraph or line
    break where one is in its second half, and the next one starts ``CHUNK_OVERLAP_CHARS``
    before that end, so that a sentence cut at a boundary is whole in one of them.

    >>> split_text("aaaa\\nbbbb\\ncccc\\n", 10)
    ['aaaa\\nbbbb\\n', 'b\\ncccc\\n']
    """
    overlap = min(CHUNK_OVERLAP_CHARS, size // 4)
    chunks, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            window = text[start + size // 2 : end]
            brk = max(window.rfind("\n\n"), window.rfind("\n"))
            if brk >= 0:
                end = start + size // 2 + brk + 1
        chunks.append(text[start:end])
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return chunks


FIELD_CHUNK_CHARS = 1000  # chunk size when a document is cut to the chunks naming a field
FIELD_CHUNKS_KEPT = 2  # per field, the first chunks naming it
OMITTED = "[...]\n"  # between kept chunks that were not adjacent


def line_chunks(text: str, size: int) -> list[str]:
    """``text`` in consecutive chunks of whole lines, each at most ``size`` characters; a
    longer line is cut at the last space before the limit (or at the limit).

    >>> line_chunks("ab\\ncd\\nef\\n", 6)
    ['ab\\ncd\\n', 'ef\\n']
    """
    pieces: list[str] = []
    for line in text.splitlines(keepends=True):
        while len(line) > size:
            cut = line.rfind(" ", size // 2, size) + 1 or size
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + len(piece) <= size:
            chunks[-1] += piece
        else:
            chunks.append(piece)
    return chunks


def field_chunks(
    text: str,
    names: Sequence[str],
    size: int = FIELD_CHUNK_CHARS,
    keep: int = FIELD_CHUNKS_KEPT,
) -> str:
    """The part of ``text`` a model reads to extract the fields ``names`` (Evaporate's chunk
    filter): for each field, the first ``keep`` chunks that contain its name (``date_sent``
    also as "date sent" or "datesent"), else the chunks holding most of its words; the union,
    in document order, with ``[...]`` where chunks were skipped. The whole text when it is one
    chunk, or when no field's name occurs in it (nothing says where to look).

    >>> field_chunks("Subject: hi\\n" + "x" * 30 + "\\n" + "y" * 30 + "\\n", ["subject"], 20, 1)
    'Subject: hi\\n[...]\\n'
    """
    chunks = line_chunks(text, size)
    if len(chunks) <= 1:
        return text
    lowered = [c.lower() for c in chunks]
    picked: set[int] = set()
    for name in names:
        words = [w for w in re.split(r"[^0-9a-z]+", name.lower()) if w]
        forms = {name.lower(), " ".join(words), "".join(words)} - {""}
        hits = [i for i, c in enumerate(lowered) if any(f in c for f in forms)]
        if not hits and len(words) > 1:
            counts = [(sum(w in c for w in words), i) for i, c in enumerate(lowered)]
            hits = [i for n, i in sorted(counts, key=lambda x: (-x[0], x[1])) if n]
        picked.update(hits[:keep])
    if not picked:
        return text
    out, last = [], -1
    for i in sorted(picked):
        if i != last + 1:
            out.append(OMITTED)
        out.append(chunks[i] if chunks[i].endswith("\n") else chunks[i] + "\n")
        last = i
    if last != len(chunks) - 1:
        out.append(OMITTED)
    return "".join(out)


def fit_to_context(text: str, model: ChatModel, max_tokens: int) -> tuple[str, bool]:
    """The first context-sized part of ``text`` and whether anything was left out (counted and
    logged by the operator as ``truncated``)."""
    chunks = split_to_context(text, model, max_tokens)
    return chunks[0], len(chunks) > 1


def document_prompt(document: str, instruction: str) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f'Document:\n"""\n{document}\n"""\n\n{instruction}'},
    ]


def field_lines(output: type[BaseModel]) -> str:
    """One line per field of ``output`` (name, type, description), for an instruction."""
    return "\n".join(f'- "{n}" ({t}): {d}' for n, t, d in describe_fields(output))


@dataclass(frozen=True)
class Question:
    """What an operator asks about each document: the instruction after it, the answer's model
    (decoded under its JSON schema) and the tokens the answer may take."""

    instruction: str
    output: type[BaseModel]
    max_tokens: int
    schema: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", json_schema_for(self.output))

    def on_document(self, text: str, model: ChatModel) -> tuple[BaseModel, Usage, bool]:
        """The answer on the first context-sized part of ``text``, what it cost, and whether
        anything was left out (``fit_to_context``)."""
        shown, cut = fit_to_context(text, model, self.max_tokens)
        prompt = document_prompt(shown, self.instruction)
        answer, usage = ask_json(model, prompt, self.output, self.schema, self.max_tokens)
        return answer, usage, cut

    def on_each_chunk(self, text: str, model: ChatModel) -> tuple[list[BaseModel], Usage, int]:
        """The answer on each context-sized chunk of ``text`` (``split_to_context``; the first
        ``MAX_CHUNKS``), what they cost together and how many chunks there were; a failure on a
        later chunk carries the cost of the earlier ones (``Tally``)."""
        chunks = split_to_context(text, model, self.max_tokens)
        tally, answers = Tally(), []
        for chunk in chunks[:MAX_CHUNKS]:
            prompt = document_prompt(chunk, self.instruction)
            answers.append(tally.ask(model, prompt, self.output, self.schema, self.max_tokens))
        return answers, tally.usage, len(chunks)
