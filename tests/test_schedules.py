"""The refresh schedule, evaluated with Dagster's test helpers and its runs executed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset
from pz_dagster.orchestration import (
    OpenAICompatibleModel,
    RecordStore,
    build_definitions,
    build_refresh_schedule,
    build_summary_schedule,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import OpenAISimulator, SimulatedModel

TICK = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)


def counted(folder: Path) -> Dataset:
    return (
        Dataset.from_directory(folder, batch_size=2)
        .sem_filter("The email mentions Raptor", depends_on="contents", name="raptor")
        .agg(name="counts", n=("count", None))
    )


def evaluate(schedule: dg.ScheduleDefinition, defs: dg.Definitions, instance, when=TICK):
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        repository_def=dg.Definitions.merge(
            defs, dg.Definitions(schedules=[schedule])
        ).get_repository_def(),
    ) as ctx:
        return schedule.evaluate_tick(ctx)


def test_refresh_schedules_request_every_batch_and_the_summary(mini_emails: Path, tmp_path):
    store = tmp_path / "s"
    with OpenAISimulator({"sim": SimulatedModel()}) as sim:
        model = OpenAICompatibleModel(model="sim", base_url=sim.base_url)
        defs, q = build_definitions(
            counted(mini_emails),
            "nightly",
            model=model,
            store_root=str(store),
            refresh_cron="0 3 * * *",
            summary_cron="0 4 * * *",
        )
        schedule = defs.resolve_schedule_def("nightly_refresh")
        assert schedule.cron_schedule == "0 3 * * *"
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
        with dg.instance_for_test() as instance:
            assert evaluate(schedule, defs, instance).skip_message == "no batches registered yet"
            batches = register_partitions(RecordStore(store), q, instance)
            assert len(batches) == 2

            requests = evaluate(schedule, defs, instance).run_requests
            assert [r.partition_key for r in requests] == [b.key for b in batches]
            assert len({r.run_key for r in requests}) == 2
            assert all(r.run_key.startswith(TICK.isoformat()) for r in requests)
            # The next night's tick gets new run keys: the daemon runs them again.
            later = evaluate(schedule, defs, instance, TICK + dt.timedelta(days=1)).run_requests
            assert not {r.run_key for r in later} & {r.run_key for r in requests}

            summary = defs.resolve_schedule_def("nightly_summary_refresh")
            (aggregate,) = evaluate(
                summary, defs, instance, TICK + dt.timedelta(hours=1)
            ).run_requests
            # The requested runs execute as the daemon would launch them, batches first.
            for schedule_def, r in [(schedule, r) for r in requests] + [(summary, aggregate)]:
                job = defs.resolve_job_def(schedule_def.job_name)
                result = job.execute_in_process(
                    partition_key=r.partition_key,
                    run_config=r.run_config,
                    instance=instance,
                    tags=r.tags,
                )
                assert result.success
            rs = RecordStore(store)
            kept = sum(  # records that failed (the empty file) are not counted
                sum(
                    1
                    for r in rs.read(q.asset_key("raptor").path, b.key).to_pylist()
                    if not r["error"]
                )
                for b in batches
            )
            assert kept >= 2 and rs.read(q.output_key.path, None).to_pylist()[0]["n"] == kept


def test_refresh_without_cache_configures_every_semantic_operator(mini_emails: Path, tmp_path):
    defs, q = build_definitions(counted(mini_emails), "fresh", store_root=str(tmp_path / "s"))
    schedule = build_refresh_schedule(
        q, "0 * * * *", partitions="latest", latest=1, use_cache=False
    )
    with dg.instance_for_test() as instance:
        batches = register_partitions(RecordStore(tmp_path / "s"), q, instance)
        (request,) = evaluate(schedule, defs, instance).run_requests
    assert request.partition_key == batches[-1].key
    assert request.run_config == {"ops": {"fresh__raptor": {"config": {"use_cache": False}}}}
    assert dg.validate_run_config(defs.resolve_job_def("fresh_job"), request.run_config)


def test_a_summary_schedule_needs_a_summary(mini_emails: Path, tmp_path):
    _, q = build_definitions(
        Dataset.from_directory(mini_emails).sem_filter("Raptor"), "plain", store_root=str(tmp_path)
    )
    with pytest.raises(ValueError, match="no operator over all batches"):
        build_summary_schedule(q, "0 3 * * *")
