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


def fit_to_context(text: str, model: ChatModel, max_tokens: int) -> tuple[str, bool]:
    """Cut ``text`` so the prompt fits the model's context; says whether it cut.

    Chunking instead of cutting is a strategy of its own; here the cut is counted and logged.
    """
    budget = model.context_tokens - max_tokens - PROMPT_OVERHEAD_TOKENS
    counter = getattr(model, "count_tokens", None)
    if counter is None:
        limit = max(budget, 0) * CHARS_PER_TOKEN
        return (text, False) if len(text) <= limit else (text[:limit], True)
    if counter(text) <= budget:
        return text, False
    # Shrink by the measured ratio until it fits (two or three rounds at most).
    cut = text
    while cut and counter(cut) > budget:
        cut = cut[: int(len(cut) * budget / max(counter(cut), 1) * 0.95)]
    return cut, True


def document_prompt(document: str, instruction: str) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f'Document:\n"""\n{document}\n"""\n\n{instruction}'},
    ]
