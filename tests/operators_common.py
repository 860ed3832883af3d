"""What the operator tests share (``tests/test_operators_*.py``): running a query's one
partition through Dagster, the simulator as the query's model, the dataset the declaration tests
build on. The emails and the simulator answering them are ``tests/conftest.py``'s ``folder`` and
``sim`` fixtures."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pz_dagster import Dataset
from pz_dagster.orchestration import OpenAICompatibleModel, RecordStore, build_definitions
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import OpenAISimulator


def materialize(
    ds: Dataset, name: str, model, tmp_path: Path, optimizer=None
) -> tuple[dict, list[dict]]:
    """Run the query's one partition; return {asset: metadata} and the output records."""
    store = tmp_path / f"store-{name}"
    defs, q = build_definitions(ds, name, model=model, optimizer=optimizer, store_root=str(store))
    with dg.instance_for_test() as instance:
        key = register_partitions(RecordStore(store), q, instance)[0].key
        assert (
            defs.resolve_job_def(q.job.name)
            .execute_in_process(partition_key=key, instance=instance)
            .success
        )
        md = {}
        for a in q.assets:
            rec = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=a.key), limit=1
            ).records[0]
            md[a.key.path[-1]] = {k: v.value for k, v in rec.asset_materialization.metadata.items()}
        rows = RecordStore(store).read(q.output_key.path, key).to_pylist()
    return md, rows


def sim_model(sim: OpenAISimulator) -> OpenAICompatibleModel:
    return OpenAICompatibleModel(model="sim", base_url=sim.base_url, max_concurrency=4)


def emails() -> Dataset:
    return Dataset.from_directory("/d")


SENDER = [{"name": "sender", "type": "str", "desc": "sender"}]
