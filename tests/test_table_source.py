"""A DuckDB table watched by the sensor: new rows become batches (partitions), re-seen rows
never do, edited rows join a new batch, a locked table is tried again on the next tick."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pz_dagster import Dataset
from pz_dagster.errors import PlanError
from pz_dagster.orchestration import (
    OpenAICompatibleModel,
    RecordStore,
    build_definitions,
    describe_tables,
)
from pz_dagster.testing import OpenAISimulator, SimulatedModel


@pytest.fixture
def tickets(tmp_path: Path) -> Path:
    db = tmp_path / "tickets.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE tickets (id INTEGER, opened DATE, body VARCHAR)")
        con.execute(
            "INSERT INTO tickets VALUES (1, '2026-11-01', 'Raptor hedge is failing'), "
            "(2, '2026-11-02', 'Lunch on Friday?'), (3, '2026-11-03', 'Chewco paperwork'), "
            "(4, '2026-11-04', 'Printer jam')"
        )
    return db


WRITER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("INSERT INTO tickets VALUES (6, '2026-11-06', 'Fat Boy')")
print("locked", flush=True)
sys.stdin.readline()
con.close()
"""


def watched(db: Path) -> Dataset:
    return Dataset.from_duckdb(
        db, "tickets", name="tickets", id_column="id", batch_size=2
    ).sem_filter("The ticket mentions Raptor or Chewco", depends_on="body", name="schemes")


def tick(sensor, defs, instance, cursor):
    with dg.build_sensor_context(
        instance=instance, resources={"pz_store": defs.resources["pz_store"]}, cursor=cursor
    ) as ctx:
        result = sensor(ctx)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result, result.cursor or cursor


def test_sensor_batches_new_rows_once_and_runs_them(tickets: Path, tmp_path: Path):
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}) as sim:
        defs, q = build_definitions(
            watched(tickets),
            "helpdesk",
            model=OpenAICompatibleModel(model="sim", base_url=sim.base_url),
            store_root=str(store),
        )
        sensor = defs.resolve_sensor_def("helpdesk_new_documents")
        with dg.instance_for_test() as instance:
            first, cursor = tick(sensor, defs, instance, None)
            assert len(first.run_requests) == 2  # 4 rows, 2 per batch
            # keys a person can read: the batch's ordinal, the id column and the first id
            assert [r.partition_key for r in first.run_requests] == ["0001-id-1", "0002-id-3"]
            again, cursor = tick(sensor, defs, instance, cursor)
            assert again.skip_reason.skip_message == "no new documents"
            assert len(instance.get_dynamic_partitions("helpdesk_batches")) == 2

            with duckdb.connect(str(tickets)) as con:
                con.execute("INSERT INTO tickets VALUES (5, '2026-11-05', 'Raptor again')")
                con.execute("UPDATE tickets SET body = 'Printer jam, Chewco office' WHERE id = 4")
            third, cursor = tick(sensor, defs, instance, cursor)
            (new,) = third.run_requests
            assert new.partition_key == "0003-id-4"
            batch = RecordStore(store).load_batch("helpdesk", new.partition_key)
            assert sorted(f.path for f in batch.files) == [
                "4",
                "5",
            ]  # the edited row and the new one
            assert len(instance.get_dynamic_partitions("helpdesk_batches")) == 3

            # Another process writing holds DuckDB's lock: the tick says so and skips; the row
            # it is adding is batched by the next tick.
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(tickets)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert writer.stdout.readline().strip() == "locked"
                locked, cursor = tick(sensor, defs, instance, cursor)
            finally:
                writer.communicate("done\n", timeout=60)
            assert "locked by a writer" in locked.skip_reason.skip_message
            fourth, cursor = tick(sensor, defs, instance, cursor)
            assert len(fourth.run_requests) == 1

            job = defs.resolve_job_def(q.job.name)
            for req in [*first.run_requests, new]:
                assert job.execute_in_process(
                    partition_key=req.partition_key, instance=instance
                ).success
    rs = RecordStore(store)
    first_batch = rs.read(["helpdesk", "tickets"], first.run_requests[0].partition_key).to_pylist()
    assert [r["record_id"] for r in first_batch] == ["1", "2"]
    assert first_batch[0]["opened"] == str(dt.date(2026, 11, 1)) and not first_batch[0]["error"]
    # Row 4 was edited after the second batch was registered: that batch flags its old version.
    second = rs.read(["helpdesk", "tickets"], first.run_requests[1].partition_key).to_pylist()
    assert [bool(r["error"]) for r in second] == [False, True]
    assert "row changed" in second[1]["error"]
    newest = rs.read(["helpdesk", "tickets"], new.partition_key).to_pylist()
    assert newest[0]["body"] == "Printer jam, Chewco office" and not newest[0]["error"]


def test_a_watched_table_needs_its_id_column(tickets: Path):
    wrong_id = Dataset.from_duckdb(tickets, "tickets", id_column="ticket_id", batch_size=2)
    with pytest.raises(PlanError, match="id column 'ticket_id' is not one of its columns"):
        describe_tables(wrong_id)  # the columns are read when the query is compiled
    with pytest.raises(PlanError, match="needs both id_column and batch_size"):
        Dataset.from_duckdb(tickets, "tickets", batch_size=2)


def test_declaring_a_table_opens_nothing_and_its_column_checks_wait_for_its_columns(
    tickets: Path, tmp_path: Path
):
    """No file is opened (or made) at declaration; the operators' column checks, and their
    default columns, run once the columns are read, before any model call."""
    absent = tmp_path / "later.duckdb"
    declared = Dataset.from_duckdb(absent, "tickets", id_column="id", batch_size=2).sem_filter(
        "x", depends_on="nope"
    )
    assert not absent.exists() and not declared.node.described
    assert "read from the table when compiled" in declared.explain()
    with pytest.raises(PlanError, match="columns are read from .* when the query is compiled"):
        _ = declared.columns
    with pytest.raises(PlanError, match=r"unknown column\(s\) \['nope'\]"):
        describe_tables(watched(tickets).sem_filter("x", depends_on="nope", name="bad"))
    described = describe_tables(
        Dataset.from_duckdb(tickets, "tickets", name="tickets").sem_map(
            [{"name": "topic", "type": "str", "desc": "d"}], name="topics"
        )
    )
    assert described.columns == ("record_id", "id", "opened", "body", "topic", "error")
    assert described.node.depends_on == ("id", "opened", "body")  # the default, filled in now
    assert dict(described.node.parent.schema)["id"] is int
