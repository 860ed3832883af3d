"""The Parquet-per-partition record store and its DuckDB catalog, including concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from pz_dagster import SourceError
from pz_dagster.orchestration.store import RecordStore, to_table

COLUMNS = [("record_id", str), ("n", int), ("tags", list[str]), ("error", str)]


def _write_many(root: str, partition: str, count: int) -> None:
    store = RecordStore(root)
    for i in range(count):
        rows = [
            {"record_id": f"{partition}-{i}-{j}", "n": j, "tags": ["a"], "error": None}
            for j in range(50)
        ]
        store.write(["q", "op"], f"{partition}-{i}", to_table(rows, COLUMNS))
        store.refresh_view(["q", "op"])


def test_roundtrip_types_and_missing_keys(tmp_path: Path):
    store = RecordStore(tmp_path)
    table = to_table(
        [{"record_id": "r1", "n": 3, "tags": ["x", "y"]}, {"record_id": "r2"}], COLUMNS
    )
    store.write(["q", "op"], "p1", table)
    assert store.read(["q", "op"], "p1").to_pylist() == [
        {"record_id": "r1", "n": 3, "tags": ["x", "y"], "error": None},
        {"record_id": "r2", "n": None, "tags": None, "error": None},
    ]
    with pytest.raises(SourceError, match="materialize the upstream asset"):
        store.read(["q", "op"], "p2")
    assert not list((tmp_path / "q" / "op").glob(".tmp-*")), "no temporary files left behind"


def test_two_processes_write_partitions_at_once(tmp_path: Path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), p, 8)) for p in ("left", "right")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with RecordStore(tmp_path).connect() as con:
        total, parts = con.execute(
            "select count(*), count(distinct split_part(record_id, '-', 2) || split_part(record_id, '-', 1)) from \"q__op\""
        ).fetchone()
    assert (total, parts) == (2 * 8 * 50, 16)


def test_a_half_written_file_does_not_break_the_view(tmp_path: Path):
    store = RecordStore(tmp_path)
    store.write(["q", "op"], "p1", to_table([{"record_id": "r1", "n": 1}], COLUMNS))
    (tmp_path / "q" / "op" / ".tmp-abc.partial").write_bytes(b"PAR1 half")  # a writer died here
    store.refresh_view(["q", "op"])
    with store.connect() as con:
        assert con.execute('select count(*) from "q__op"').fetchone()[0] == 1
