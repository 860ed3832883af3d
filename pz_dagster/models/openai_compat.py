"""A client for any OpenAI-compatible chat endpoint: OpenAI, vLLM's server, llama.cpp's server."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai

from pz_dagster.errors import ModelError, RecordFailure
from pz_dagster.models.base import (
    CHARS_PER_TOKEN_ESTIMATE,
    Completion,
    Message,
    Pricing,
    Usage,
    pricing_for,
)
from pz_dagster.models.breaker import CircuitBreaker, CircuitOpenError
from pz_dagster.models.limits import RateLimiter
from pz_dagster.models.retry import RetryPolicy, endpoint_failed
from pz_dagster.redact import redact_library_logs, redact_url

# openai and httpx log request URLs, which may carry credentials (userinfo, query string).
redact_library_logs()

# How an endpoint takes a JSON schema for structured output:
# - "json_schema": OpenAI's {"type": "json_schema", "json_schema": {...}} (OpenAI, vLLM, llama.cpp's
#   C++ server);
# - "json_object": {"type": "json_object", "schema": {...}} (llama-cpp-python's server, which
#   rejects the OpenAI form);
# - "auto": the OpenAI form first, and the other one from then on if the endpoint rejects it.
StructuredOutput = Literal["auto", "json_schema", "json_object"]


def split_query(base_url: str | None) -> tuple[str | None, dict[str, str] | None]:
    """``base_url`` without its query string, and the query's parameters: the openai package
    appends request paths after the whole base URL (``/v1?key=k/chat/completions``), so
    parameters such as ``api-version`` or a key go in ``default_query``, sent with each request.

    >>> split_query("http://h/v1?api-version=2024-06-01")
    ('http://h/v1', {'api-version': '2024-06-01'})
    """
    if not base_url or "?" not in base_url:
        return base_url, None
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query)) or None


# Connecting takes milliseconds when the endpoint is up: an endpoint that is down or dropping
# connections is found out in this time, not after the whole answer's timeout_s.
CONNECT_TIMEOUT_S = 10.0


def openai_client(
    base_url: str | None, api_key: str | None, timeout_s: float, what: str = "base_url"
) -> openai.OpenAI:
    """The openai package's client for an endpoint, query parameters in ``default_query`` (see
    ``split_query``). Retries are ours (counted, bounded in time), so its own are off; the key
    "unused" keeps it from demanding one for local servers that need none. A malformed URL is
    a ModelError that names it without its credentials."""
    url, query = split_query(base_url)
    try:
        return openai.OpenAI(
            base_url=url,
            default_query=query,
            api_key=api_key or "unused",
            timeout=openai.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S)),
            max_retries=0,
        )
    except Exception as exc:  # its message would repeat the URL
        raise ModelError(
            f"invalid {what} {redact_url(base_url)} ({type(exc).__name__}); check the endpoint URL"
        ) from None


class OpenAICompatibleClient:
    """Chat completions with JSON-schema structured output, retries, rate limits and usage.

    Thread-safe: operators call it from a pool of ``max_concurrency`` threads.

    >>> client = OpenAICompatibleClient("gpt-4o-mini", api_key="...")  # doctest: +SKIP
    >>> client.complete([{"role": "user", "content": "hi"}], max_tokens=5).text  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        context_tokens: int = 128_000,
        prices: dict[str, Pricing] | None = None,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 8,
        rpm: int | None = None,
        tpm: int | None = None,
        structured_output: StructuredOutput = "auto",
        breaker: CircuitBreaker | None = None,
    ):
        self._model = model
        self._structured = structured_output
        self._lock = threading.Lock()
        self._context_tokens = context_tokens
        self._pricing = pricing_for(model, prices)
        self._base_url = base_url
        # What messages and the cache namespace show of the endpoint: never its credentials.
        self._endpoint = redact_url(base_url) or "api.openai.com"
        self._retry = retry or RetryPolicy()
        self._timeout_s = timeout_s
        # Shared by the clients of one endpoint (the resource passes one): a dead endpoint is
        # found out once, then every remaining record fails at once instead of waiting out
        # its own timeouts and retries.
        self._breaker = breaker or CircuitBreaker()
        self._max_concurrency = max(1, max_concurrency)
        self._limiter = RateLimiter(rpm, tpm)
        self._client = openai_client(base_url, api_key, timeout_s)

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    @property
    def max_concurrency(self) -> int:
        return self._max_concurrency

    @property
    def cache_namespace(self) -> str:
        return f"{self._model}@{redact_url(self._base_url) or 'openai'}"

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Completion:
        retries = 0

        def count(_: BaseException) -> None:
            nonlocal retries
            retries += 1

        estimate = sum(len(str(m.get("content", ""))) for m in messages) // CHARS_PER_TOKEN_ESTIMATE
        start = time.perf_counter()
        try:
            resp = self._retry.call(
                lambda: self._breaker.call(
                    lambda: self._send(
                        messages, json_schema, max_tokens, temperature, estimate + max_tokens
                    ),
                    is_failure=endpoint_failed,
                ),
                on_retry=count,
            )
        except CircuitOpenError as exc:  # not a transient error: the retries stop at once
            raise self._circuit_open(exc, max(retries - 1, 0)) from None
        except openai.APIConnectionError as exc:  # includes timeouts, after every retry
            if isinstance(exc, openai.APITimeoutError):
                raise RecordFailure(
                    f"model call timed out {retries + 1} time(s) waiting for {self._endpoint} "
                    f"(timeout_s={self._timeout_s:g})",
                    Usage(retries=retries),
                    transport=True,
                ) from None
            raise ModelError(
                f"cannot reach the model endpoint {self._endpoint} for "
                f"{self._model!r} after {retries + 1} attempt(s); check that the server is up"
            ) from None
        except (
            openai.AuthenticationError,
            openai.PermissionDeniedError,
            openai.NotFoundError,
        ) as exc:
            # Whole-asset problems: the key is wrong or the model unknown. The key is never shown.
            raise ModelError(
                f"the model endpoint {self._endpoint} refused {self._model!r} "
                f"with HTTP {exc.status_code}; check the model name and the API key"
            ) from None
        except openai.APIStatusError as exc:  # 429 and 5xx (the rest were raised above)
            raise RecordFailure(
                f"model call failed with HTTP {exc.status_code} after {retries + 1} attempt(s) "
                f"({self._endpoint})",
                Usage(retries=retries),
                transport=exc.status_code == 429 or exc.status_code >= 500,
            ) from None
        seconds = time.perf_counter() - start
        choice = resp.choices[0] if resp.choices else None
        text = (choice.message.content if choice and choice.message else None) or ""
        u = resp.usage
        inp, out = (u.prompt_tokens, u.completion_tokens) if u else (0, 0)
        return Completion(
            text=text,
            model=self._model,
            usage=Usage(inp, out, seconds, self._pricing.dollars(inp, out, seconds), 1, 0, retries),
            finish_reason=choice.finish_reason if choice else None,
        )

    def _circuit_open(self, exc: CircuitOpenError, retries: int) -> ModelError | RecordFailure:
        """What a record gets once the circuit is open. Refused connections were a whole-asset
        error before the breaker (the server is down), and stay one."""
        when = (
            "a probe request is in flight"
            if exc.probing
            else f"not asking it again for {exc.retry_in_s:.0f} s"
        )
        what = (
            f"circuit open: endpoint {self._endpoint} failed {exc.failures} times in a row "
            f"(last: {self._failure_text(exc.last)}); {when}"
        )
        refused = isinstance(exc.last, openai.APIConnectionError) and not isinstance(
            exc.last, openai.APITimeoutError
        )
        if refused:
            return ModelError(
                f"cannot reach the model endpoint {self._endpoint} for {self._model!r} ({what}); "
                "check that the server is up"
            )
        return RecordFailure(
            f"{what}; check that it is up and answers within timeout_s={self._timeout_s:g}",
            Usage(retries=retries),
            transport=True,
        )

    @staticmethod
    def _failure_text(exc: BaseException | None) -> str:
        """A failure in a few words, without the response body (it may echo the request)."""
        if isinstance(exc, openai.APITimeoutError):
            return "timed out"
        if isinstance(exc, openai.APIStatusError):
            return f"HTTP {exc.status_code}"
        if isinstance(exc, openai.APIConnectionError):
            return "connection failed"
        return type(exc).__name__

    def _send(
        self,
        messages: list[Message],
        json_schema: dict[str, Any] | None,
        max_tokens: int,
        temperature: float,
        token_estimate: int,
    ) -> Any:
        self._limiter.acquire(token_estimate)
        try:
            return self._create(messages, json_schema, max_tokens, temperature)
        except openai.APIStatusError as exc:
            # llama-cpp-python's server answers the OpenAI form with a validation error that
            # names response_format (as HTTP 500); other servers use 400 or 422.
            if (
                json_schema is None
                or self._structured != "auto"
                or "response_format" not in str(exc)
            ):
                raise
            resp = self._create(messages, json_schema, max_tokens, temperature, fallback=True)
            with self._lock:
                self._structured = "json_object"
            return resp

    def _create(
        self,
        messages: list[Message],
        json_schema: dict[str, Any] | None,
        max_tokens: int,
        temperature: float,
        fallback: bool = False,
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if json_schema is not None:
            if fallback or self._structured == "json_object":
                kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
            else:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": json_schema, "strict": True},
                }
        # max_tokens, not max_completion_tokens: llama.cpp's server ignores the latter.
        return self._client.chat.completions.create(
            model=self._model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=temperature,
            **kwargs,
        )
