"""The record store's edge cases: an edit supersedes exactly its own document's records (not a
sibling whose name starts with it) in export, aggregates, joins and the DuckDB views; files are
written with the process umask; a reader holding the catalog open never makes a write wait."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from pz_dagster import Dataset
from pz_dagster.orchestration import RecordStore, build_definitions
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.store import to_table
from pz_dagster.sources import Batch, FileRef

COLUMNS = [("record_id", str), ("filename", str), ("contents", str), ("error", str)]
ASSET = ["q", "docs"]


def _batch(key: str, *paths: str, sha: str = "1") -> Batch:
    return Batch(key=key, files=tuple(FileRef(path=p, sha256=sha, size=1) for p in paths))


def _rows(*pairs: tuple[str, str], contents: str = "") -> list[dict]:
    return [{"record_id": rid, "filename": fn, "contents": contents} for rid, fn in pairs]


@pytest.fixture(params=[None, "schemes"], ids=["main-folder", "joined-folder"])
def edited(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[RecordStore, str | None]:
    """b1 holds a.txt, its sibling a.txt#notes.txt and b.txt; b2 (registered later) holds a
    new version of a.txt. Batches of the query's folder, or of a folder it joins with."""
    store = RecordStore(tmp_path / "store")
    store.save_batch("q", _batch("b1", "a.txt", "a.txt#notes.txt", "b.txt"), request.param)
    time.sleep(0.01)  # registration time orders the versions
    store.save_batch("q", _batch("b2", "a.txt", sha="2"), request.param)
    old = _rows(("a.txt", "a.txt"), ("a.txt#notes.txt", "a.txt#notes.txt"), ("b.txt", "b.txt"))
    store.write(ASSET, "b1", to_table(old, COLUMNS))
    store.write(ASSET, "b2", to_table(_rows(("a.txt", "a.txt"), contents="new"), COLUMNS))
    store.refresh_view(ASSET)
    return store, request.param


def test_an_edit_drops_its_own_records_only(edited: tuple[RecordStore, str | None]):
    store, source = edited
    tables = [store.read(ASSET, k) for k in ("b1", "b2")]
    out, dropped, files = store.without_superseded("q", ["b1", "b2"], tables, source)
    assert (dropped, files) == (1, 1)
    assert out[0].column("record_id").to_pylist() == ["a.txt#notes.txt", "b.txt"]
    table, missing = store.read_batches(ASSET, "q", source)  # what `pz-dagster export` writes
    assert missing == []
    assert sorted(
        zip(table["record_id"].to_pylist(), table["contents"].to_pylist(), strict=True)
    ) == [
        ("a.txt", "new"),
        ("a.txt#notes.txt", ""),
        ("b.txt", ""),
    ]


def test_derived_records_follow_their_own_document(edited: tuple[RecordStore, str | None]):
    """Flat-map items (``f#n``), join pairs (``f|r``) and records whose ``filename`` column was
    projected away are attributed to the document they came from, the longest name first."""
    rows = [
        {"record_id": "a.txt#0", "filename": "a.txt"},
        {"record_id": "a.txt#notes.txt#0", "filename": "a.txt#notes.txt"},
        {"record_id": "a.txt|x.txt", "filename": None},
        {"record_id": "a.txt#notes.txt|a.txt", "filename": None},  # right side named a.txt
        {"record_id": "a.txt#notes.txt#1", "filename": None},
        {"record_id": "b.txt#3", "filename": None},
    ]
    table = to_table(rows, COLUMNS)
    store, source = edited
    out, dropped, _ = store.without_superseded(
        "q", ["b1", "b2"], [table, table.slice(0, 0)], source
    )
    assert dropped == 2
    assert out[0].column("record_id").to_pylist() == [
        "a.txt#notes.txt#0",
        "a.txt#notes.txt|a.txt",
        "a.txt#notes.txt#1",
        "b.txt#3",
    ]


def test_the_view_shows_only_the_newest_version(edited: tuple[RecordStore, str | None]):
    with edited[0].connect() as con:
        rows = con.execute('select record_id, contents from "q__docs" order by 1').fetchall()
        cols = [d[0] for d in con.execute('select * from "q__docs" limit 0').description]
    assert rows == [("a.txt", "new"), ("a.txt#notes.txt", ""), ("b.txt", "")]
    assert cols == [c for c, _ in COLUMNS]  # no bookkeeping columns


def test_the_view_of_a_store_written_before_lineage_catches_up(
    edited: tuple[RecordStore, str | None],
):
    """Partitions written without a lineage file (older stores) get one at the next refresh."""
    store = edited[0]
    lineage = sorted((store.root / "q" / "docs" / "_lineage").glob("*.parquet"))
    assert [f.name for f in lineage] == ["b1.parquet", "b2.parquet"]
    for f in lineage:
        f.unlink()
    store.refresh_view(ASSET)
    with store.connect() as con:
        n = con.execute("select count(*) from \"q__docs\" where record_id = 'a.txt'").fetchone()
    assert n == (1,)


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_files_follow_the_process_umask(tmp_path: Path, umask_027: None):
    """A group that shares the store reads its files: modes are 0o666/0o777 less the umask,
    like any file a process writes (mkstemp's 0o600 left the group out)."""
    store = RecordStore(tmp_path / "store")
    store.save_batch("q", _batch("b1", "a.txt"))
    path = store.write(ASSET, "b1", to_table(_rows(("a.txt", "a.txt")), COLUMNS))
    store.refresh_view(ASSET)
    manifest = store.root / "q" / "_batches" / "b1.json"
    lineage = store.root / "q" / "docs" / "_lineage" / "b1.parquet"
    for f in (path, manifest, lineage, store.catalog_path):
        assert _mode(f) == 0o640, (f, oct(_mode(f)))
    for d in (path.parent, lineage.parent, manifest.parent):
        assert _mode(d) == 0o750, (d, oct(_mode(d)))


READER = (
    "import duckdb, sys\n"
    "con = duckdb.connect(sys.argv[1], read_only=True)\n"
    "con.execute('select 1').fetchall()\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"  # hold the catalog open until the test closes stdin
)


def test_a_reader_holding_the_catalog_never_makes_a_write_wait(tmp_path: Path):
    store = RecordStore(tmp_path / "store")
    store.write(["q", "first"], None, to_table(_rows(("a.txt", "a.txt")), COLUMNS))
    store.refresh_view(["q", "first"])
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(store.catalog_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == b"ready"
        start = time.monotonic()
        store.write(["q", "second"], None, to_table(_rows(("b.txt", "b.txt")), COLUMNS))
        store.refresh_view(["q", "second"])
        assert time.monotonic() - start < 5  # it waited 15 s for the lock, then gave up
        # The catalog was replaced: a new connection sees the new view at once.
        with store.connect() as con:
            assert con.execute('select record_id from "q__second"').fetchall() == [("b.txt",)]
            assert con.execute('select count(*) from "q__first"').fetchone() == (1,)
    finally:
        assert reader.stdin is not None
        reader.stdin.close()
        assert reader.wait(30) == 0


def _long(r: dict) -> dict:
    return {"long": len(r["contents"]) > 20}


def test_edit_with_a_sibling_through_dagster(tmp_path: Path):
    """Real materializations: editing a.txt keeps a.txt#notes.txt in the aggregate, the export
    and the per-batch view, which show a.txt in its newest version only."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("a long first version of the document a")
    (folder / "a.txt#notes.txt").write_text("notes on a, also quite long")
    (folder / "b.txt").write_text("short b")
    ds = (
        Dataset.from_directory(folder, batch_size=10)
        .map(_long, {"long": bool}, depends_on="contents", name="size")
        .groupby("long")
        .agg(n=("count", None), name="by_size")
    )
    store_root = tmp_path / "store"
    defs, q = build_definitions(ds, "hard", store_root=str(store_root))
    job, summary = defs.resolve_job_def(q.job.name), defs.resolve_job_def(q.summary_job.name)
    store = RecordStore(store_root)

    def run_all(instance: dg.DagsterInstance) -> dict:
        for b in register_partitions(store, q, instance):
            assert job.execute_in_process(partition_key=b.key, instance=instance).success
        assert summary.execute_in_process(instance=instance).success
        return {r["long"]: r["n"] for r in store.read(q.output_key.path, None).to_pylist()}

    with dg.instance_for_test() as instance:
        assert run_all(instance) == {True: 2, False: 1}
        (folder / "a.txt").write_text("a is short")
        assert run_all(instance) == {True: 1, False: 2}
    exported, missing = store.read_batches(q.asset_key("size").path, "hard")
    assert missing == []
    newest = {"a.txt": False, "a.txt#notes.txt": True, "b.txt": False}
    got = dict(zip(exported["record_id"].to_pylist(), exported["long"].to_pylist(), strict=True))
    assert got == newest
    with store.connect() as con:
        assert dict(con.execute('select record_id, long from "hard__size"').fetchall()) == newest
        assert con.execute('select count(*) from "hard__documents"').fetchone() == (3,)
        contents = con.execute("select contents from hard__documents where record_id = 'a.txt'")
        assert contents.fetchall() == [("a is short",)]


def test_tables_without_record_ids_are_kept(tmp_path: Path):
    """An asset without record ids cannot be attributed to a document: nothing is dropped."""
    store = RecordStore(tmp_path)
    store.save_batch("q", _batch("b1", "a.txt"))
    time.sleep(0.01)
    store.save_batch("q", _batch("b2", "a.txt", sha="2"))
    table = pa.table({"n": [1, 2]})
    out, dropped, _ = store.without_superseded("q", ["b1", "b2"], [table, table])
    assert dropped == 0 and [t.num_rows for t in out] == [2, 2]


def test_a_view_that_cannot_be_created_is_reported_and_the_others_stay(tmp_path: Path):
    store = RecordStore(tmp_path)
    store.write(["q", "good"], None, to_table(_rows(("a.txt", "a.txt")), COLUMNS))
    store.refresh_view(["q", "good"])
    bad = tmp_path / "q" / "bad"
    bad.mkdir()
    (bad / "b1.parquet").write_bytes(b"not parquet")  # e.g. a file copied in by hand
    with pytest.raises(duckdb.Error, match="q__bad"):
        store.refresh_view(["q", "bad"])
    with store.connect() as con:
        assert con.execute('select record_id from "q__good"').fetchall() == [("a.txt",)]
