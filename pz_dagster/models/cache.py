"""Persistent, content-addressed response cache (diskcache: SQLite, safe across processes)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import diskcache

from pz_dagster.models.base import ChatModel, Completion, Message, Usage


def cache_key(
    namespace: str,
    messages: list[Message],
    json_schema: dict[str, Any] | None,
    max_tokens: int,
    temperature: float,
) -> str:
    payload = json.dumps(
        {
            "model": namespace,
            "messages": messages,
            "schema": json_schema,
            "max_tokens": max_tokens,
            "temperature": temperature,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


CACHE_KEY = "pz/cache_key"  # in Completion.raw: where CachedChatModel stored the answer


class ResponseCache:
    """Completions by key, on disk. Re-running the same prompts with the same model and
    parameters costs no model call and $0."""

    def __init__(self, directory: str | Path):
        self._cache = diskcache.Cache(str(directory))

    def get(self, key: str) -> dict[str, Any] | None:
        return self._cache.get(key)  # type: ignore[return-value]

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._cache.set(key, value)

    def delete(self, key: str) -> None:
        self._cache.delete(key)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()


class CachedChatModel:
    """Wraps a ChatModel; answers from the cache when it can, stores what the model says.

    Answers cut off at max_tokens are stored too: with the same parameters the model would cut
    them off again. An answer that fails validation is taken back out (``discard``), so the next
    run asks the model again instead of failing the record again without a call.
    """

    def __init__(self, inner: ChatModel, cache: ResponseCache):
        self._inner = inner
        self._cache = cache

    @property
    def model_name(self) -> str:
        return self._inner.model_name

    @property
    def context_tokens(self) -> int:
        return self._inner.context_tokens

    @property
    def max_concurrency(self) -> int:
        return self._inner.max_concurrency

    @property
    def cache_namespace(self) -> str:
        return self._inner.cache_namespace

    def __getattr__(self, name: str) -> Any:  # count_tokens and other optional capabilities
        return getattr(self._inner, name)

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Completion:
        start = time.perf_counter()
        key = cache_key(self._inner.cache_namespace, messages, json_schema, max_tokens, temperature)
        hit = self._cache.get(key)
        if hit is not None:
            return Completion(
                text=hit["text"],
                model=self.model_name,
                finish_reason=hit["finish_reason"],
                usage=Usage(seconds=time.perf_counter() - start, cache_hits=1),
                cached=True,
                raw={CACHE_KEY: key},
            )
        completion = self._inner.complete(
            messages, json_schema=json_schema, max_tokens=max_tokens, temperature=temperature
        )
        self._cache.put(key, {"text": completion.text, "finish_reason": completion.finish_reason})
        return dataclasses.replace(completion, raw={**completion.raw, CACHE_KEY: key})

    def discard(self, completion: Completion) -> None:
        """Take an answer that failed validation (not JSON, not the schema) back out of the
        cache. Cut-off answers stay: see the class docstring."""
        key = completion.raw.get(CACHE_KEY)
        if key is not None and completion.finish_reason != "length":
            self._cache.delete(key)
