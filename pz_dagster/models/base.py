"""Framework-free model client protocol, usage accounting and pricing."""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

Message = dict[str, str]

# Characters per token where a client cannot count tokens. English prose runs at 3.5-4.5 with
# the SmolLM2 and GPT tokenizers. Fitting text into a context window must not under-count (the
# prompt would be refused or cut), so it assumes 3; an estimate that is no bound (the tokens a
# rate limit is charged before the answer says) takes the typical 4, OpenAI's rule of thumb.
CHARS_PER_TOKEN = 3
CHARS_PER_TOKEN_ESTIMATE = 4


@dataclass(frozen=True)
class Pricing:
    """Dollars per million tokens, plus dollars per second of model time.

    An API bills tokens; a local model costs the machine it runs on, so its price is
    ``per_model_second`` (see ``compute_pricing``) and its dollars are a compute estimate, not
    a bill.

    >>> Pricing(1.0, 2.0).dollars(1_000_000, 500_000)
    2.0
    >>> compute_pricing(3.6).dollars(0, 0, seconds=10.0)
    0.01
    """

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_model_second: float = 0.0

    @property
    def is_compute(self) -> bool:
        """Whether the dollars are a compute estimate (machine time), not token prices."""
        return self.per_model_second > 0

    def dollars(self, input_tokens: int, output_tokens: int, seconds: float = 0.0) -> float:
        tokens = (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6
        return tokens + seconds * self.per_model_second


def compute_pricing(per_hour: float, shared_by: int = 1) -> Pricing:
    """A local model's price: its machine's ``per_hour`` dollars, turned into dollars per
    second of one call's model time; ``shared_by`` calls in flight at once share the machine
    (a server or engine decoding several sequences together)."""
    if per_hour < 0:
        raise ValueError("a compute price per hour cannot be negative")
    return Pricing(per_model_second=per_hour / 3600 / max(shared_by, 1))


# List prices (USD per 1M tokens) of common hosted models. Local models are priced by their
# compute instead (``compute_pricing``). Users pass their own prices for anything else.
PRICES: dict[str, Pricing] = {
    "gpt-4o": Pricing(2.50, 10.00),
    "gpt-4o-mini": Pricing(0.15, 0.60),
    "gpt-4.1": Pricing(2.00, 8.00),
    "gpt-4.1-mini": Pricing(0.40, 1.60),
    "gpt-4.1-nano": Pricing(0.10, 0.40),
    "text-embedding-3-small": Pricing(0.02, 0.0),
    "text-embedding-3-large": Pricing(0.13, 0.0),
}
FREE = Pricing()
# Default machine prices of local models (dollars per hour), rough on-demand cloud prices of the
# machine that a laptop or workstation stands in for: a 4-vCPU VM (AWS c7i.xlarge is about
# $0.18/h) for llama.cpp on CPU, one data-center GPU (A100/H100 class: $1.5-3/h at GPU clouds)
# for vLLM. Absolute levels only matter against API prices and budgets; ratios decide MinCost.
DEFAULT_CPU_PRICE_PER_HOUR = 0.20
DEFAULT_GPU_PRICE_PER_HOUR = 2.00


def pricing_for(model: str, overrides: dict[str, Pricing] | None = None) -> Pricing:
    if overrides and model in overrides:
        return overrides[model]
    return PRICES.get(model, FREE)


@dataclass(frozen=True)
class Usage:
    """What model work cost. ``calls`` counts requests answered by a model (cache hits are not
    calls); ``retries`` counts re-sent requests (transport retries and validation retries)."""

    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    dollars: float = 0.0
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: Usage
    finish_reason: str | None = None
    cached: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@runtime_checkable
class ChatModel(Protocol):
    """What operators need from a model. Implementations: OpenAI-compatible, local llama.cpp."""

    @property
    def model_name(self) -> str: ...

    @property
    def context_tokens(self) -> int: ...

    @property
    def max_concurrency(self) -> int:
        """How many requests the operator may have in flight at once on this client."""
        ...

    @property
    def cache_namespace(self) -> str:
        """Identity of the model behind the client (name and endpoint), for the response cache."""
        ...

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Completion: ...


def json_schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """A closed JSON schema (no extra keys, every field required) from a pydantic model: what
    OpenAI's strict structured outputs and llama.cpp's grammar both accept."""
    schema = model.model_json_schema()

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for v in node.values():
                close(v)
        elif isinstance(node, list):
            for v in node:
                close(v)

    close(schema)
    return schema


def schema_digest(schema: dict[str, Any] | None) -> str:
    return json.dumps(schema, sort_keys=True) if schema else ""
