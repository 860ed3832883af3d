"""Sensors: new files in a query's source folder become partitions and runs."""

import json

import dagster as dg

from pz_dagster.orchestration.batches import pending_batches
from pz_dagster.orchestration.compiler import CompiledQuery
from pz_dagster.orchestration.resources import RecordStoreResource
from pz_dagster.query.plan import DirectorySource


def build_new_documents_sensor(
    query: CompiledQuery, minimum_interval_seconds: int = 60
) -> dg.SensorDefinition:
    """Batch new files of the source folder, add one dynamic partition per batch and request a
    run for every batch not materialized yet (run key = partition key, so the sensor requests a
    batch once, and batches registered by ``pz-dagster register`` are not forgotten).

    Batch manifests are the durable state: a batch saved by a tick that died before adding its
    partition is added by the next tick.
    """
    source = query.dataset.node.lineage()[0]
    assert isinstance(source, DirectorySource)

    @dg.sensor(
        name=f"{query.name}_new_documents",
        job=query.job,
        minimum_interval_seconds=minimum_interval_seconds,
        description=f"Registers new files under {source.path} as batches of query {query.name!r}.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, pz_store: RecordStoreResource
    ) -> dg.SensorResult:
        batches, new_keys = pending_batches(pz_store.get_store(), query, context.instance)
        # Every batch neither materialized nor requested before gets a run, also batches
        # registered elsewhere (the CLI). The cursor remembers what was requested.
        requested = set(json.loads(context.cursor)) if context.cursor else set()
        done = context.instance.get_materialized_partitions(query.batch_output_key)
        todo = [b.key for b in batches if b.key not in done and b.key not in requested]
        if not todo:
            return dg.SensorResult(skip_reason="no new documents")
        return dg.SensorResult(
            cursor=json.dumps(sorted(requested | set(todo))),
            run_requests=[dg.RunRequest(partition_key=k, run_key=k) for k in todo],
            dynamic_partitions_requests=(
                [query.partitions_def.build_add_request(new_keys)] if new_keys else []
            ),
        )

    return _sensor
