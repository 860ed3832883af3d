"""Sensors: new files in a query's source folder become partitions and runs."""

import dagster as dg

from pz_dagster.orchestration.batches import pending_batches
from pz_dagster.orchestration.compiler import CompiledQuery
from pz_dagster.orchestration.resources import RecordStoreResource
from pz_dagster.query.plan import DirectorySource


def build_new_documents_sensor(
    query: CompiledQuery, minimum_interval_seconds: int = 60
) -> dg.SensorDefinition:
    """Batch new files of the source folder, add one dynamic partition per batch and request one
    run per partition (run key = partition key, so a batch never runs twice from the sensor).

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
        _, new_keys = pending_batches(pz_store.get_store(), query, context.instance)
        if not new_keys:
            return dg.SensorResult(skip_reason="no new documents")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=k, run_key=k) for k in new_keys],
            dynamic_partitions_requests=[query.partitions_def.build_add_request(new_keys)],
        )

    return _sensor
