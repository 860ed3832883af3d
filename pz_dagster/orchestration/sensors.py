"""Sensors: new files in a query's source folders become partitions and runs."""

import json

import dagster as dg

from pz_dagster.errors import SourceError
from pz_dagster.orchestration.batches import pending_batches
from pz_dagster.orchestration.compiler import CompiledQuery
from pz_dagster.orchestration.resources import RecordStoreResource


def _requested(cursor: str | None) -> dict[str, set[str]]:
    """The cursor: batch keys already requested, per partitions definition."""
    if not cursor:
        return {}
    return {k: set(v) for k, v in json.loads(cursor).items()}


def build_new_documents_sensor(
    query: CompiledQuery, minimum_interval_seconds: int = 60
) -> dg.SensorDefinition:
    """Batch new files of every folder of the query, add one dynamic partition per batch and
    request a run for every batch not materialized yet (run key = partitions definition and
    key, so the sensor requests a batch once, and batches registered by ``pz-dagster register``
    are not forgotten). Folders the query joins with are requested before the main folder.

    Batch manifests are the durable state: a batch saved by a tick that died before adding its
    partition is added by the next tick.
    """
    folders = ", ".join(s.node.location for s in query.sources)

    @dg.sensor(
        name=f"{query.name}_new_documents",
        jobs=[s.job for s in query.sources],
        minimum_interval_seconds=minimum_interval_seconds,
        description=f"Registers new items of {folders} as batches of query {query.name!r}.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, pz_store: RecordStoreResource
    ) -> dg.SensorResult:
        store = pz_store.get_store()
        requested = _requested(context.cursor)
        runs, adds, unreadable = [], [], []
        for src in (*query.joined_sources, query.sources[0]):
            pname = src.partitions_def.name
            try:
                batches, new_keys = pending_batches(store, query, context.instance, src)
            except SourceError as exc:  # a table locked by its writer, a folder gone: next tick
                context.log.warning(f"{src.node.location}: {exc}")
                unreadable.append(str(exc))
                continue
            done = context.instance.get_materialized_partitions(src.output_key)
            seen = requested.setdefault(pname, set())
            todo = [b.key for b in batches if b.key not in done and b.key not in seen]
            seen.update(todo)
            if new_keys:
                adds.append(src.partitions_def.build_add_request(new_keys))
            runs += [
                dg.RunRequest(partition_key=k, run_key=f"{pname}:{k}", job_name=src.job.name)
                for k in todo
            ]
        if not runs and not adds:
            reason = "; ".join(unreadable) if unreadable else "no new documents"
            return dg.SensorResult(skip_reason=reason)
        return dg.SensorResult(
            cursor=json.dumps({k: sorted(v) for k, v in requested.items()}),
            run_requests=runs,
            dynamic_partitions_requests=adds,
        )

    return _sensor
