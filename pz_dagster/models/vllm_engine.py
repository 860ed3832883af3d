"""vLLM in-process engine for GPU machines: whole partitions decoded as batches, JSON output
constrained by the schema (vLLM's structured outputs / guided decoding).

vLLM is an optional dependency (``pip install -e ".[gpu]"``); nothing here imports it until an
engine is built, so request building and batching are testable without it.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType
from typing import Any

from pz_dagster.errors import ModelError, RecordFailure
from pz_dagster.models.base import (
    DEFAULT_GPU_PRICE_PER_HOUR,
    Completion,
    Message,
    Pricing,
    Usage,
    compute_pricing,
)
from pz_dagster.models.batching import GenerationRequest, MicroBatcher


def import_vllm() -> ModuleType:
    try:
        import vllm
    except ImportError:
        raise ModelError(
            "vLLM is not installed: on a machine with a CUDA GPU run pip install -e '.[gpu]'"
        ) from None
    return vllm


def sampling_params(vllm: Any, request: GenerationRequest) -> Any:
    """vLLM SamplingParams for one request; the JSON schema goes to structured outputs (vLLM >= 0.10)
    or to guided decoding (older releases), whichever this vLLM has."""
    kwargs: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature}
    if request.json_schema is not None:
        sp = vllm.sampling_params
        if hasattr(sp, "StructuredOutputsParams"):
            kwargs["structured_outputs"] = sp.StructuredOutputsParams(json=request.json_schema)
        elif hasattr(sp, "GuidedDecodingParams"):
            kwargs["guided_decoding"] = sp.GuidedDecodingParams(json=request.json_schema)
        else:
            raise ModelError("this vLLM has neither structured outputs nor guided decoding")
    return vllm.SamplingParams(**kwargs)


class VLLMClient:
    """Runs a model in this process with vLLM. Concurrent ``complete`` calls (an operator runs a
    partition's records on ``max_batch_requests`` threads) are gathered into one engine call,
    so a partition reaches vLLM as one batch and vLLM's scheduler decodes ``max_num_seqs`` of it
    at a time. One engine per process: build the client once (the Dagster resource does).

    >>> client = VLLMClient("Qwen/Qwen2.5-1.5B-Instruct", gpu_memory_utilization=0.8)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        *,
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: int = 64,
        max_model_len: int | None = None,
        dtype: str = "auto",
        max_batch_requests: int = 256,
        batch_wait_s: float = 0.05,
        engine: Any = None,
        vllm_module: Any = None,
        pricing: Pricing | None = None,
    ):
        """``pricing``: what a call costs; default: its share of the engine's time at
        ``DEFAULT_GPU_PRICE_PER_HOUR`` (a compute estimate)."""
        self._model = model
        self._vllm = vllm_module
        self._max_batch = max(1, max_batch_requests)
        self._pricing = pricing or compute_pricing(DEFAULT_GPU_PRICE_PER_HOUR)
        if engine is None:
            self._vllm = self._vllm or import_vllm()
            kwargs: dict[str, Any] = {
                "model": model,
                "gpu_memory_utilization": gpu_memory_utilization,
                "max_num_seqs": max_num_seqs,
                "dtype": dtype,
            }
            if max_model_len:
                kwargs["max_model_len"] = max_model_len
            engine = self._vllm.LLM(**kwargs)
        self._engine = engine
        self._context = max_model_len or _engine_context(engine) or 4096
        self._engine_lock = threading.Lock()
        self._batcher = MicroBatcher(
            self.complete_many, max_batch=max_num_seqs, max_wait_s=batch_wait_s
        )

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def context_tokens(self) -> int:
        return self._context

    @property
    def max_concurrency(self) -> int:
        return self._max_batch

    @property
    def cache_namespace(self) -> str:
        return f"{self._model}@vllm"

    @property
    def batch_sizes(self) -> list[int]:
        return self._batcher.batch_sizes

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Completion:
        try:
            return self._batcher.submit(
                GenerationRequest(messages, json_schema, max_tokens, temperature)
            )
        except ValueError as exc:  # vLLM rejects a prompt longer than max_model_len this way
            raise RecordFailure(f"vLLM rejected the prompt: {exc}") from None

    def complete_many(self, requests: list[GenerationRequest]) -> list[Completion]:
        """One engine call for the whole batch; time is shared out evenly over its requests."""
        params = [sampling_params(self._vllm, r) for r in requests]
        start = time.perf_counter()
        with self._engine_lock:
            outputs = self._engine.chat(
                [r.messages for r in requests], sampling_params=params, use_tqdm=False
            )
        each = (time.perf_counter() - start) / max(len(requests), 1)
        completions = []
        for out in outputs:
            gen = out.outputs[0]
            inp, out_tokens = len(out.prompt_token_ids or []), len(gen.token_ids or [])
            completions.append(
                Completion(
                    text=gen.text,
                    model=self._model,
                    usage=Usage(
                        inp, out_tokens, each, self._pricing.dollars(inp, out_tokens, each), 1
                    ),
                    finish_reason=gen.finish_reason,
                )
            )
        return completions


def _engine_context(engine: Any) -> int | None:
    try:
        return int(engine.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        return None
