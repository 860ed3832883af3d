"""Dagster resources wrapping the framework-free model clients and the record store."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field, PrivateAttr

from pz_dagster.models.base import ChatModel, Pricing
from pz_dagster.models.local_llama import LocalLlamaClient
from pz_dagster.models.openai_compat import OpenAICompatibleClient, StructuredOutput
from pz_dagster.orchestration.store import RecordStore


class ModelResource(dg.ConfigurableResource):
    """Base of the model resources: operator assets ask it for a ``ChatModel``."""

    def get_client(self) -> ChatModel:
        raise NotImplementedError


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
        default=None, description="CPU threads; empty lets llama.cpp choose."
    )

    _client: LocalLlamaClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = LocalLlamaClient(self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads)

    def get_client(self) -> ChatModel:
        if self._client is None:
            self._client = LocalLlamaClient(
                self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads
            )
        return self._client


class OpenAICompatibleModel(ModelResource):
    """Any OpenAI-compatible chat endpoint: OpenAI, a vLLM server, a llama.cpp server.

    Pass the key as ``dg.EnvVar("OPENAI_API_KEY")`` so that it never lands in run config.
    """

    model: str = Field(description="Model name as the endpoint knows it.")
    base_url: str | None = Field(default=None, description="Endpoint URL; empty means OpenAI.")
    api_key: str | None = Field(default=None, description="API key; use an EnvVar.")
    context_tokens: int = Field(default=128_000, description="Context window of the model.")
    input_price_per_mtok: float | None = Field(
        default=None, description="USD per 1M input tokens; empty uses the built-in price table."
    )
    output_price_per_mtok: float | None = Field(
        default=None, description="USD per 1M output tokens; empty uses the built-in price table."
    )
    timeout_s: float = Field(default=120.0, description="Per-request timeout in seconds.")
    max_retries: int = Field(default=3, description="Retries on 429/5xx/timeouts, with backoff.")
    structured_output: StructuredOutput = Field(
        default="auto",
        description="How the endpoint takes a JSON schema: json_schema (OpenAI, vLLM), json_object "
        "(llama-cpp-python's server), or auto (try the first, fall back to the second).",
    )

    _client: OpenAICompatibleClient | None = PrivateAttr(default=None)

    def _build(self) -> OpenAICompatibleClient:
        prices: dict[str, Pricing] | None = None
        if self.input_price_per_mtok is not None or self.output_price_per_mtok is not None:
            prices = {
                self.model: Pricing(
                    self.input_price_per_mtok or 0.0, self.output_price_per_mtok or 0.0
                )
            }
        return OpenAICompatibleClient(
            self.model,
            base_url=self.base_url,
            api_key=self.api_key,
            context_tokens=self.context_tokens,
            prices=prices,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            structured_output=self.structured_output,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = self._build()

    def get_client(self) -> ChatModel:
        if self._client is None:
            self._client = self._build()
        return self._client


class RecordStoreResource(dg.ConfigurableResource):
    """Where records, batch manifests and the DuckDB catalog live."""

    root: str = Field(description="Folder of the record store.")

    def get_store(self) -> RecordStore:
        return RecordStore(self.root)


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
        store.refresh_view(path_parts)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pa.Table:
        partition = context.partition_key if context.has_partition_key else None
        return self.store.get_store().read(context.asset_key.path, partition)
