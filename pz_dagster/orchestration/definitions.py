"""One call from a declared query to a complete Dagster ``Definitions``."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from pz_dagster.orchestration.attributes import AssetAttributes
from pz_dagster.orchestration.checks import CheckSettings
from pz_dagster.orchestration.compiler import (
    CompiledQuery,
    compile_query,
)
from pz_dagster.orchestration.keys import (
    EMBEDDINGS_KEY,
    IO_MANAGER_KEY,
    MODEL_KEY,
    OPTIMIZER_KEY,
    STORE_KEY,
)
from pz_dagster.orchestration.optimization import OptimizerResource
from pz_dagster.orchestration.resources import (
    EmbeddingResource,
    LocalEmbeddingResource,
    LocalLlamaModel,
    ModelResource,
    RecordIOManager,
    RecordStoreResource,
    VLLMModel,
)
from pz_dagster.orchestration.schedules import build_refresh_schedule, build_summary_schedule
from pz_dagster.orchestration.sensors import build_new_documents_sensor
from pz_dagster.query.dataset import Dataset


def default_store_root() -> str:
    """``$PZ_DAGSTER_STORE``, else ``$DAGSTER_HOME/pz_store``, else ``./.pz_home/pz_store``."""
    if os.environ.get("PZ_DAGSTER_STORE"):
        return os.environ["PZ_DAGSTER_STORE"]
    home = os.environ.get("DAGSTER_HOME") or ".pz_home"
    return str(Path(home) / "pz_store")


def model_note(model: ModelResource, optimizer: OptimizerResource) -> str:
    """What the optimizer of this code location chooses among, for the descriptions of the
    assets that call a model.

    >>> note = model_note(LocalLlamaModel(), OptimizerResource(strategies=["direct", "few_shot"]))
    >>> print(note)  # doctest: +NORMALIZE_WHITESPACE
    Here it chooses among the model(s) `smollm2-135m-instruct-q4_1` (`LocalLlamaModel`) and the strategies `direct`, `few_shot`, under the policy `MaxQuality`.
    """
    try:
        names = [p.name for p in model.profiles()]
    except NotImplementedError:  # a resource without priors: its class says what it is
        names = []
    models = f"the model(s) {', '.join(f'`{n}`' for n in names)} " if names else "the models "
    strategies = ", ".join(f"`{s}`" for s in optimizer.strategies)
    return (
        f"Here it chooses among {models}(`{type(model).__name__}`) "
        f"and the strategies {strategies}, under the policy `{optimizer.policy}`."
    )


def build_definitions(
    dataset: Dataset,
    name: str,
    *,
    model: ModelResource | None = None,
    embeddings: EmbeddingResource | None = None,
    store_root: str | None = None,
    optimizer: OptimizerResource | None = None,
    checks: CheckSettings | None = None,
    refresh_cron: str | None = None,
    summary_cron: str | None = None,
    asset_attributes: AssetAttributes | None = None,
) -> tuple[dg.Definitions, CompiledQuery]:
    """Assets, job and new-documents sensor of a query, with its resources. ``optimizer`` sets
    the policy, the strategies to choose among and the labels to judge quality by; ``checks``
    the thresholds and severities of the asset checks. The columns of the query's DuckDB tables
    are read when it is compiled. ``refresh_cron`` adds a schedule (stopped
    until turned on) that re-materializes every batch (``build_refresh_schedule``),
    ``summary_cron`` one for the operators over all batches (``build_summary_schedule``).
    ``asset_attributes`` gives every asset owners, tags, a group and a key prefix (keys
    ``[*key_prefix, name, operator]``).

    >>> defs, q = build_definitions(Dataset.from_directory("emails").sem_filter("fraud"), "enron")
    >>> q.job.name
    'enron_job'
    """
    model = model or LocalLlamaModel()
    optimizer = optimizer or OptimizerResource()
    compiled = compile_query(
        dataset,
        name,
        model_pool=model.pool if isinstance(model, VLLMModel) else None,
        checks=checks,
        attributes=asset_attributes,
        model_note=model_note(model, optimizer),
    )
    store = RecordStoreResource(root=store_root or default_store_root())
    defs = dg.Definitions(
        assets=compiled.assets,
        jobs=[j for j in (compiled.reference_job, compiled.job, compiled.summary_job) if j],
        sensors=[build_new_documents_sensor(compiled)],
        schedules=[
            *([build_refresh_schedule(compiled, refresh_cron)] if refresh_cron else []),
            *([build_summary_schedule(compiled, summary_cron)] if summary_cron else []),
        ],
        resources={
            MODEL_KEY: model,
            EMBEDDINGS_KEY: embeddings or LocalEmbeddingResource(),
            OPTIMIZER_KEY: optimizer,
            STORE_KEY: store,
            IO_MANAGER_KEY: RecordIOManager(store=store),
        },
    )
    return defs, compiled
