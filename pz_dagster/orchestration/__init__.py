"""Dagster side: compiler, resources, record store, sensors, schedules, checks, and the
optimizer's resource and history reader (the optimizer in the loop itself is ``tuning``)."""

from pz_dagster.orchestration.attributes import AssetAttributes
from pz_dagster.orchestration.checks import CheckSettings
from pz_dagster.orchestration.compiler import CompiledQuery, compile_query
from pz_dagster.orchestration.definitions import build_definitions, default_store_root
from pz_dagster.orchestration.operator_assets import OperatorConfig
from pz_dagster.orchestration.optimization import OptimizerResource
from pz_dagster.orchestration.resources import (
    EmbeddingResource,
    LocalEmbeddingResource,
    LocalLlamaModel,
    ModelPrice,
    ModelPrior,
    ModelResource,
    OpenAICompatibleModel,
    OpenAIEmbeddingResource,
    RecordIOManager,
    RecordStoreResource,
    VLLMModel,
)
from pz_dagster.orchestration.schedules import build_refresh_schedule, build_summary_schedule
from pz_dagster.orchestration.sensors import build_new_documents_sensor
from pz_dagster.orchestration.source_assets import describe_tables
from pz_dagster.orchestration.store import RecordStore

__all__ = [
    "AssetAttributes",
    "CheckSettings",
    "CompiledQuery",
    "EmbeddingResource",
    "LocalEmbeddingResource",
    "ModelPrice",
    "ModelPrior",
    "OptimizerResource",
    "OpenAIEmbeddingResource",
    "VLLMModel",
    "LocalLlamaModel",
    "ModelResource",
    "OpenAICompatibleModel",
    "OperatorConfig",
    "RecordIOManager",
    "RecordStore",
    "RecordStoreResource",
    "build_definitions",
    "build_new_documents_sensor",
    "build_refresh_schedule",
    "build_summary_schedule",
    "compile_query",
    "default_store_root",
    "describe_tables",
]
