"""Prompt layout shared by the semantic operators.

The document comes first and the instruction after it, so that consecutive calls on the same
document share a prompt prefix that llama.cpp and vLLM reuse from their KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pz_dagster.models.base import ChatModel, Message
from pz_dagster.operators.base import CHARS_PER_TOKEN

SYSTEM = "You read documents carefully and answer questions about them with JSON only."
# Tokens kept free for the chat template, the instruction and the answer.
PROMPT_OVERHEAD_TOKENS = 350


def render_fields(record: dict[str, Any], depends_on: Sequence[str]) -> str:
    if list(depends_on) == ["contents"]:
        return str(record.get("contents") or "")
    return "\n".join(f"{c}: {record.get(c, '')}" for c in depends_on)


CHUNK_OVERLAP_CHARS = 200


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


def split_to_context(text: str, model: ChatModel, max_tokens: int) -> list[str]:
    """The text in chunks that each fit the model's context (one chunk when it all fits).

    Chunks end at a paragraph or line break where one is near, and overlap a little so that a
    sentence cut at a boundary is whole in one of them.
    """
    size = budget_chars(text, model, max_tokens)
    if size is None:
        return [text]
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
        start = max(end - CHUNK_OVERLAP_CHARS, start + 1)
    return chunks


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
