"""Transport retries: exponential backoff with jitter on 429, 5xx, timeouts and lost connections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import openai
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def endpoint_failed(exc: BaseException) -> bool:
    """Whether ``exc`` says the endpoint gave no answer (what the circuit breaker counts): a
    timeout, a lost or refused connection, HTTP 5xx. Not 429: a rate limit is an answer from a
    live endpoint asking to slow down, which the retries' backoff does."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_retries`` re-sends, waits drawn from an exponential window with jitter
    (``initial_wait_s`` doubling up to ``max_wait_s``), and never past ``max_total_s``."""

    max_retries: int = 4
    initial_wait_s: float = 0.5
    max_wait_s: float = 20.0
    max_total_s: float = 120.0

    def call(
        self, fn: Callable[[], T], on_retry: Callable[[BaseException], None] | None = None
    ) -> T:
        def before_sleep(state: RetryCallState) -> None:
            if on_retry and state.outcome is not None:
                exc = state.outcome.exception()
                if exc is not None:
                    on_retry(exc)

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=self.initial_wait_s, max=self.max_wait_s),
            stop=stop_after_attempt(self.max_retries + 1) | stop_after_delay(self.max_total_s),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)
