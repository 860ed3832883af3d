"""Dagster resources wrapping the framework-free model clients and the record store."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from optimizer import ModelProfile
from pz_dagster.errors import ModelError, SourceError
from pz_dagster.models.base import (
    DEFAULT_CPU_PRICE_PER_HOUR,
    DEFAULT_GPU_PRICE_PER_HOUR,
    PRICES,
    ChatModel,
    Pricing,
    compute_pricing,
    pricing_for,
)
from pz_dagster.models.breaker import CircuitBreaker
from pz_dagster.models.embeddings import EmbeddingModel, LocalEmbeddingClient, OpenAIEmbeddingClient
from pz_dagster.models.local_llama import BUNDLED_MODEL_NAME, LocalLlamaClient
from pz_dagster.models.openai_compat import OpenAICompatibleClient, StructuredOutput
from pz_dagster.models.retry import RetryPolicy
from pz_dagster.models.vllm_engine import VLLMClient
from pz_dagster.orchestration.store import RecordStore
from pz_dagster.redact import check_env_name


class ModelPrior(dg.Config):
    """What the optimizer assumes of a model before it has observed it (observations from the
    asset's history replace these)."""

    quality: float = Field(default=0.8, description="Prior probability of a correct answer.")
    prompt_tokens_per_s: float = Field(default=2000.0, description="Prompt tokens read per second.")
    output_tokens_per_s: float = Field(default=50.0, description="Tokens generated per second.")
    latency_s: float = Field(default=0.5, description="Seconds per call before the first token.")


def _env_var_named(value: Any) -> Any:
    """An ``EnvVar`` must be named by a variable, not by the key itself (Dagster's "variable
    not set" error would print it); the check needs the raw value, hence mode="before"."""
    if isinstance(value, dg.EnvVar):
        check_env_name(value.env_var_name, "the argument of dg.EnvVar")
    return value


def _non_negative(value: Any) -> Any:
    if isinstance(value, (int, float)) and value < 0:
        raise ValueError("a compute price per hour cannot be negative (0 makes the model free)")
    return value


# The ``dollars_basis`` metadata: what a run's ``dollars`` are.
COMPUTE_ESTIMATE = "compute estimate"  # a local model's machine time at its price per hour
TOKEN_PRICES = "token prices"  # what an API bills (list prices or the resource's own)


class ModelResource(dg.ConfigurableResource):
    """Base of the model resources: operator assets ask it for a ``ChatModel``."""

    def get_client(self, model: str | None = None) -> ChatModel:
        """The client for ``model`` (default: the resource's default model)."""
        raise NotImplementedError

    def profiles(self) -> list[ModelProfile]:
        """The optimizer's priors of every model this resource serves, default model first."""
        raise NotImplementedError

    def dollars_basis(self, models: Iterable[str | None]) -> str:
        """What the dollars of a run on ``models`` are: ``COMPUTE_ESTIMATE`` when one of them is
        priced by its machine time (a local model), else ``TOKEN_PRICES``."""
        try:
            compute = {p.name for p in self.profiles() if p.compute_priced}
        except NotImplementedError:  # a resource without priors bills what its clients say
            return TOKEN_PRICES
        return COMPUTE_ESTIMATE if compute.intersection(models) else TOKEN_PRICES


def _profile(name: str, price: Pricing, prior: ModelPrior, concurrency: int) -> ModelProfile:
    return ModelProfile(
        name,
        input_price=price.input_per_mtok / 1e6,
        output_price=price.output_per_mtok / 1e6,
        second_price=price.per_model_second,
        prompt_tokens_per_s=prior.prompt_tokens_per_s,
        output_tokens_per_s=prior.output_tokens_per_s,
        latency_s=prior.latency_s,
        quality=prior.quality,
        max_concurrency=concurrency,
    )


class LocalLlamaModel(ModelResource):
    """A GGUF model run in-process by llama.cpp; by default the bundled SmolLM2-135M-Instruct.

    The model is loaded once per process, when a step that needs it starts.
    """

    model_path: str | None = Field(
        default=None,
        description="Path of a GGUF file; empty means the bundled SmolLM2-135M-Instruct.",
    )
    n_ctx: int = Field(default=4096, description="Context window in tokens.")
    n_threads: int | None = Field(
        default=None, description="CPU threads; empty: llama.cpp decides."
    )
    prompt_cache_mb: int = Field(
        default=4096,
        description="RAM for KV states by prompt prefix, so later operators on the same document "
        "skip re-reading it (within one process: the in-process executor); 0 turns it off.",
    )
    compute_price_per_hour: float = Field(
        default=DEFAULT_CPU_PRICE_PER_HOUR,
        description="Dollars per hour of the machine the model runs on (default 0.20: about a "
        "4-vCPU cloud VM); a call costs its model time at this rate, so the dollars are a "
        "compute estimate, not a bill, and MinCost weighs local work like API tokens; 0: free.",
    )
    _price_per_hour = field_validator("compute_price_per_hour", mode="before")(_non_negative)

    _client: LocalLlamaClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.get_client()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # Each run loads the model; free it when the run ends rather than whenever the garbage
        # collector gets to it (see LocalLlamaClient.close).
        if self._client is not None:
            self._client.close()
            self._client = None

    def get_client(self, model: str | None = None) -> ChatModel:
        if self._client is None:
            self._client = LocalLlamaClient(
                self.model_path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                prompt_cache_mb=self.prompt_cache_mb,
                pricing=compute_pricing(self.compute_price_per_hour),
            )
        if model not in (None, self._client.model_name):
            raise ModelError(f"this resource serves {self._client.model_name!r}, not {model!r}")
        return self._client

    def profiles(self) -> list[ModelProfile]:
        # Measured on 2 CPU cores with the bundled model (PEERS.md): ~160 prompt tokens/s,
        # 50-70 generated tokens/s. A 135M model's answers are weak: a low quality prior.
        name = BUNDLED_MODEL_NAME if self.model_path is None else Path(self.model_path).stem
        prior = ModelPrior(
            quality=0.5, prompt_tokens_per_s=160, output_tokens_per_s=60, latency_s=0.05
        )
        return [_profile(name, compute_pricing(self.compute_price_per_hour), prior, 1)]


class ModelPrice(dg.Config):
    """An API model's token prices (the Component's ``prices`` use this too)."""

    input_per_mtok: float = Field(description="USD per 1M input tokens.")
    output_per_mtok: float = Field(description="USD per 1M output tokens.")


class OpenAICompatibleModel(ModelResource):
    """Any OpenAI-compatible chat endpoint: OpenAI, a vLLM server, a llama.cpp server.

    Pass the key as ``dg.EnvVar("OPENAI_API_KEY")`` so that it never lands in run config, logs or
    metadata.

    >>> OpenAICompatibleModel(model="gpt-4o-mini", max_concurrency=32, rpm=500).model
    'gpt-4o-mini'
    """

    model: str = Field(description="Default model name as the endpoint knows it.")
    models: list[str] = Field(
        default_factory=list, description="Other models of the endpoint that operators may use."
    )
    base_url: str | None = Field(default=None, description="Endpoint URL; empty means OpenAI.")
    api_key: str | None = Field(default=None, description="API key; use an EnvVar.")
    # pydantic's messages must not repeat input: it may hold the key (or a URL's credentials)
    model_config = ConfigDict(hide_input_in_errors=True)
    _api_key_env = field_validator("api_key", mode="before")(_env_var_named)
    context_tokens: int = Field(default=128_000, description="Context window of the models.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per 1M tokens by model name; models not listed use the built-in table "
        "(OpenAI list prices), else compute_price_per_hour, else cost $0.",
    )
    compute_price_per_hour: float | None = Field(
        default=None,
        description="For a local server (vLLM, llama.cpp): dollars per hour of its machine. "
        "Models without a token price then cost their model time at this rate, shared by "
        "max_concurrency requests in flight (a compute estimate, not a bill); empty: $0.",
    )
    _price_per_hour = field_validator("compute_price_per_hour", mode="before")(_non_negative)
    max_concurrency: int = Field(default=8, description="Requests in flight at once per operator.")
    rpm: int | None = Field(default=None, description="Requests-per-minute limit; empty: none.")
    tpm: int | None = Field(default=None, description="Tokens-per-minute limit; empty: none.")
    timeout_s: float = Field(default=120.0, description="Per-request timeout in seconds.")
    max_retries: int = Field(default=4, description="Re-sends on 429/5xx/timeouts, with backoff.")
    max_retry_seconds: float = Field(default=120.0, description="Give up retrying after this long.")
    priors: dict[str, ModelPrior] = Field(
        default_factory=dict,
        description="The optimizer's priors by model name (quality, speed); unlisted models get "
        "the defaults until their history says more.",
    )
    structured_output: StructuredOutput = Field(
        default="auto",
        description="How the endpoint takes a JSON schema: json_schema (OpenAI, vLLM), json_object "
        "(llama-cpp-python's server), or auto (try the first, fall back to the second).",
    )
    breaker_failures: int = Field(
        default=5,
        description="Circuit breaker: after this many transport failures in a row (timeouts, "
        "refused connections, HTTP 5xx; each attempt counts) the endpoint is not asked again "
        "and the remaining records fail at once with 'circuit open'; 0 turns it off.",
    )
    breaker_cooldown_s: float = Field(
        default=30.0,
        description="Seconds the open circuit waits before letting one probe request through; "
        "if it is answered the circuit closes and records are sent again.",
    )

    _clients: dict[str, OpenAICompatibleClient] = PrivateAttr(default_factory=dict)
    # One per resource, shared by its models' clients: they all talk to the same endpoint.
    _breaker: CircuitBreaker | None = PrivateAttr(default=None)

    @property
    def available_models(self) -> list[str]:
        return list(dict.fromkeys([self.model, *self.models]))

    def _pricing(self, model: str) -> Pricing:
        overrides = {
            m: Pricing(p.input_per_mtok, p.output_per_mtok) for m, p in self.prices.items()
        }
        if model in overrides or model in PRICES or self.compute_price_per_hour is None:
            return pricing_for(model, overrides)
        return compute_pricing(self.compute_price_per_hour, self.max_concurrency)

    def _build(self, model: str) -> OpenAICompatibleClient:
        if self._breaker is None:
            self._breaker = CircuitBreaker(self.breaker_failures, self.breaker_cooldown_s)
        return OpenAICompatibleClient(
            model,
            base_url=self.base_url,
            api_key=self.api_key,
            context_tokens=self.context_tokens,
            prices={model: self._pricing(model)},
            timeout_s=self.timeout_s,
            retry=RetryPolicy(max_retries=self.max_retries, max_total_s=self.max_retry_seconds),
            max_concurrency=self.max_concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            structured_output=self.structured_output,
            breaker=self._breaker,
        )

    def profiles(self) -> list[ModelProfile]:
        return [
            _profile(m, self._pricing(m), self.priors.get(m, ModelPrior()), self.max_concurrency)
            for m in self.available_models
        ]

    def get_client(self, model: str | None = None) -> ChatModel:
        name = model or self.model
        if name not in self.available_models:
            raise ModelError(
                f"model {name!r} is not configured; available: {self.available_models}"
            )
        if name not in self._clients:
            self._clients[name] = self._build(name)
        return self._clients[name]


class VLLMModel(ModelResource):
    """vLLM in-process engine on a GPU. The engine loads once per process (when a step that needs
    it starts); assets using it run under the Dagster pool ``pool`` so that two runs never load
    models onto the same GPU at once (set the limit with ``dagster instance concurrency set gpu 1``
    or in dagster.yaml).
    """

    model: str = Field(description="Hugging Face model id or local path vLLM can load.")
    gpu_memory_utilization: float = Field(
        default=0.9, description="Fraction of GPU memory for vLLM."
    )
    max_num_seqs: int = Field(default=64, description="Sequences vLLM decodes at once.")
    max_batch_requests: int = Field(
        default=256, description="Requests of a partition handed to the engine in one call."
    )
    max_model_len: int | None = Field(
        default=None, description="Context length; empty: model's own."
    )
    dtype: str = Field(default="auto", description="Weights dtype (auto, float16, bfloat16).")
    pool: str = Field(default="gpu", description="Dagster pool that serializes GPU use.")
    compute_price_per_hour: float = Field(
        default=DEFAULT_GPU_PRICE_PER_HOUR,
        description="Dollars per hour of the GPU machine (default 2.00: about one A100/H100-class "
        "GPU on demand); a call costs its share of the engine's time at this rate, a compute "
        "estimate, not a bill; 0: free.",
    )
    _price_per_hour = field_validator("compute_price_per_hour", mode="before")(_non_negative)

    _client: VLLMClient | None = PrivateAttr(default=None)

    def get_client(self, model: str | None = None) -> ChatModel:
        if model not in (None, self.model):
            raise ModelError(f"this resource serves {self.model!r}, not {model!r}")
        if self._client is None:
            self._client = VLLMClient(
                self.model,
                gpu_memory_utilization=self.gpu_memory_utilization,
                max_num_seqs=self.max_num_seqs,
                max_batch_requests=self.max_batch_requests,
                max_model_len=self.max_model_len,
                dtype=self.dtype,
                pricing=compute_pricing(self.compute_price_per_hour),
            )
        return self._client

    def profiles(self) -> list[ModelProfile]:
        prior = ModelPrior(quality=0.8, prompt_tokens_per_s=5000, output_tokens_per_s=500)
        # a prior call's seconds are one sequence's; max_num_seqs of them share the GPU at once
        price = compute_pricing(self.compute_price_per_hour, self.max_num_seqs)
        return [_profile(self.model, price, prior, self.max_num_seqs)]


class EmbeddingResource(dg.ConfigurableResource):
    """Base of the embedding resources."""

    def get_client(self) -> EmbeddingModel:
        raise NotImplementedError


class LocalEmbeddingResource(EmbeddingResource):
    """The bundled all-MiniLM-L6-v2 (or another sentence-transformers folder) in this process."""

    model_dir: str | None = Field(
        default=None, description="Model folder; empty: the bundled MiniLM."
    )
    device: str = Field(default="cpu", description="torch device.")

    _client: LocalEmbeddingClient | None = PrivateAttr(default=None)

    def get_client(self) -> EmbeddingModel:
        if self._client is None:
            self._client = LocalEmbeddingClient(self.model_dir, device=self.device)
        return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._client = None


class OpenAIEmbeddingResource(EmbeddingResource):
    """Embeddings from OpenAI or any OpenAI-compatible endpoint; key through an EnvVar."""

    model: str = Field(default="text-embedding-3-small", description="Embedding model name.")
    base_url: str | None = Field(default=None, description="Endpoint URL; empty means OpenAI.")
    api_key: str | None = Field(default=None, description="API key; use an EnvVar.")
    model_config = ConfigDict(hide_input_in_errors=True)  # as OpenAICompatibleModel's
    _api_key_env = field_validator("api_key", mode="before")(_env_var_named)

    _client: OpenAIEmbeddingClient | None = PrivateAttr(default=None)

    def get_client(self) -> EmbeddingModel:
        if self._client is None:
            self._client = OpenAIEmbeddingClient(
                self.model, base_url=self.base_url, api_key=self.api_key
            )
        return self._client


class RecordStoreResource(dg.ConfigurableResource):
    """Where records, batch manifests and the DuckDB catalog live."""

    root: str = Field(description="Folder of the record store.")

    def get_store(self) -> RecordStore:
        return RecordStore(self.root)


BATCHES_METADATA = "pz/batches"  # input metadata: {"query": ..., "source": ...} of the batches


def _drop_superseded(
    context: dg.InputContext,
    store: RecordStore,
    batches: dict[str, Any],
    keys: list[str],
    tables: list[pa.Table],
) -> list[pa.Table]:
    """Leave out records that a later batch holds a newer version of (see
    ``RecordStore.without_superseded``), so an edited document counts once."""
    out, dropped, files = store.without_superseded(
        batches["query"], keys, tables, batches.get("source")
    )
    if dropped:
        context.log.info(
            f"{context.asset_key.to_user_string()}: left out {dropped} record(s) of {files} "
            "file(s) that a later batch holds a newer version of"
        )
    return out


class RecordIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition's Arrow table as Parquet in the record store (see store.py)."""

    store: RecordStoreResource

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, pa.Table):
            raise TypeError(f"RecordIOManager stores pyarrow Tables, got {type(obj).__name__}")
        store = self.store.get_store()
        path_parts = context.asset_key.path
        partition = context.partition_key if context.has_partition_key else None
        path = store.write(path_parts, partition, obj)
        try:
            store.refresh_view(path_parts)
        except duckdb.Error as exc:  # the data is stored; only the convenience view lags
            context.log.warning(
                f"records stored at {path}, but the DuckDB catalog view could not be refreshed "
                f"({type(exc).__name__}); it is refreshed by the next write"
            )
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pa.Table:
        """One partition's table; for an unpartitioned asset reading a partitioned one, every
        materialized partition concatenated (missing ones are named in a warning)."""
        store = self.store.get_store()
        path = context.asset_key.path
        if not context.has_asset_partitions:
            return store.read(path, None)
        keys = list(context.asset_partition_keys)
        if len(keys) == 1:
            return store.read(path, keys[0])
        present = [k for k in keys if store.partition_path(path, k).exists()]
        missing = [k for k in keys if k not in present]
        if missing:
            context.log.warning(
                f"{context.asset_key.to_user_string()}: {len(missing)} of {len(keys)} partitions are "
                f"not materialized yet and are not included: {', '.join(missing[:10])}"
            )
        tables = [store.read(path, k) for k in present]
        if not tables:
            raise SourceError(
                f"no partition of {context.asset_key.to_user_string()} is materialized yet"
            )
        batches = (context.definition_metadata or {}).get(BATCHES_METADATA)
        if batches:
            tables = _drop_superseded(context, store, batches, present, tables)
        return pa.concat_tables(tables, promote_options="default")
