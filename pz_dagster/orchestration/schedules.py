"""Schedules: periodic re-materialization of a query's batches, and of its summary."""

from __future__ import annotations

from typing import Literal

import dagster as dg

from pz_dagster.orchestration.compiler import CompiledQuery

Refresh = Literal["all", "latest"]


def _tick(context: dg.ScheduleEvaluationContext) -> str:
    when = context.scheduled_execution_time
    return when.isoformat() if when else "now"


def build_refresh_schedule(
    query: CompiledQuery,
    cron_schedule: str,
    *,
    partitions: Refresh = "all",
    latest: int = 1,
    use_cache: bool = True,
    name: str | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    execution_timezone: str = "UTC",
) -> dg.ScheduleDefinition:
    """Re-materialize the query's batches on a cron schedule: one run per batch (``"all"``
    registered batches, or the ``latest`` most recently registered ones).

    Each operator asks the optimizer again, so a refresh applies a better plan, a new model or
    new labels to old batches. With ``use_cache`` the prompts that did not change are answered
    from the response cache; ``use_cache=False`` asks the models again (to watch a remote
    model drift). Run keys carry the tick's time: a tick evaluated twice requests each run once.
    Aggregates over all batches have their own schedule (``build_summary_schedule``).

    >>> from pz_dagster import Dataset
    >>> from pz_dagster.orchestration import compile_query
    >>> q = compile_query(Dataset.from_directory("emails").sem_filter("fraud"), "enron")
    >>> build_refresh_schedule(q, "0 3 * * *").name
    'enron_refresh'
    """
    if latest < 1:
        raise ValueError(f"latest must be at least 1, got {latest}")
    source = query.sources[0]
    per_batch = {
        k for a in query.assets if a.partitions_def == source.partitions_def for k in a.keys
    }
    # op names, not asset keys: adjacent semantic filters share one op (a multi-asset)
    semantic_ops = sorted(
        {
            query.op_name(n.name)
            for n in query.plan.lineage()[1:]
            if n.kind.startswith("sem_") and query.asset_key(n.name) in per_batch
        }
    )
    run_config = (
        {} if use_cache else {"ops": {op: {"config": {"use_cache": False}} for op in semantic_ops}}
    )

    @dg.schedule(
        name=name or f"{query.name}_refresh",
        cron_schedule=cron_schedule,
        job=query.job,
        default_status=default_status,
        execution_timezone=execution_timezone,
        description=f"Re-materialize {'every' if partitions == 'all' else f'the latest {latest}'} "
        f"batch(es) of query {query.name!r}"
        + ("" if use_cache else ", asking the models again (no response cache)")
        + ".",
    )
    def _refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        tick = _tick(context)
        keys = context.instance.get_dynamic_partitions(source.partitions_def.name)
        if partitions == "latest":
            keys = keys[-latest:]  # the instance lists dynamic partitions in the order added
        if not keys:
            return dg.SkipReason("no batches registered yet")
        return [
            dg.RunRequest(
                run_key=f"{tick}:{k}",
                partition_key=k,
                run_config=run_config,
                tags={"pz/refresh": tick},
            )
            for k in keys
        ]

    return _refresh


def build_summary_schedule(
    query: CompiledQuery,
    cron_schedule: str,
    *,
    name: str | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    execution_timezone: str = "UTC",
) -> dg.ScheduleDefinition:
    """Re-run the query's operators over all batches (aggregates, top-k) on a cron schedule.
    The run reads the batches as they are when it starts: put it after the batch refresh."""
    if query.summary_job is None:
        raise ValueError(f"query {query.name!r} has no operator over all batches to schedule")

    @dg.schedule(
        name=name or f"{query.name}_summary_refresh",
        cron_schedule=cron_schedule,
        job=query.summary_job,
        default_status=default_status,
        execution_timezone=execution_timezone,
        description=f"Aggregate query {query.name!r} over every materialized batch.",
    )
    def _summary(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = _tick(context)
        return dg.RunRequest(run_key=f"{tick}:summary", tags={"pz/refresh": tick})

    return _summary
