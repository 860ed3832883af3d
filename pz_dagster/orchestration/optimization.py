"""The optimizer's Dagster side: its settings as a resource, and each operator's history read
from the instance's event log into tuning's records (``tuning.HistoryRecord``)."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from pz_dagster.tuning.history import HistoryRecord, NodeHistory
from pz_dagster.tuning.settings import TuningSettings


class OptimizerResource(dg.ConfigurableResource, TuningSettings):
    """How the optimizer chooses each semantic operator's model and strategy.

    >>> OptimizerResource(policy="MinCostAtQuality(0.9)").get_policy()
    MinCostAtQuality(quality=0.9)
    """


def materializations(
    instance: dg.DagsterInstance, key: dg.AssetKey, limit: int
) -> Iterator[tuple[dg.EventLogRecord, dg.AssetMaterialization]]:
    """The latest ``limit`` materializations of ``key``, newest first, with their records."""
    for rec in instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key), limit=limit
    ).records:
        if rec.asset_materialization is not None:
            yield rec, rec.asset_materialization


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str
) -> tuple[dg.EventLogRecord, dg.AssetMaterialization] | None:
    """The newest materialization of ``key`` for ``partition``, with its record; None if none."""
    for rec in instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records:
        if rec.asset_materialization is not None:
            return rec, rec.asset_materialization
    return None


def history_records(
    instance: dg.DagsterInstance, key: dg.AssetKey, limit: int
) -> Iterator[tuple[HistoryRecord, float]]:
    """The history records of ``key``'s latest ``limit`` materializations with their times,
    newest first; one without a (well-formed) record is left out, with a logged warning."""
    for rec, mat in materializations(instance, key, limit):
        where = f"{key.to_user_string()} materialized in run {rec.run_id}"
        record = HistoryRecord.from_metadata(mat.metadata, where)
        if record is not None:
            yield record, rec.timestamp


def read_history(
    instance: dg.DagsterInstance, keys: dict[str, dg.AssetKey], limit: int
) -> dict[str, NodeHistory]:
    """History of each operator (by node name) from its latest ``limit`` materializations."""
    return {
        name: NodeHistory.of(history_records(instance, key, limit)) for name, key in keys.items()
    }
