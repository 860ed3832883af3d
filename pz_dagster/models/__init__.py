"""Framework-free model clients, usage accounting and pricing."""

from pz_dagster.models.base import ChatModel, Completion, Pricing, Usage, json_schema_for
from pz_dagster.models.local_llama import LocalLlamaClient, bundled_gguf_path
from pz_dagster.models.openai_compat import OpenAICompatibleClient

__all__ = [
    "ChatModel",
    "Completion",
    "LocalLlamaClient",
    "OpenAICompatibleClient",
    "Pricing",
    "Usage",
    "bundled_gguf_path",
    "json_schema_for",
]
