"""Scale-out as configuration: two batches materialized at once by separate `dagster` processes
with the multiprocess executor (the DuckDB catalog has one writer at a time), and the demo with
the instance on a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pz_dagster.orchestration import RecordStore
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from tests.conftest import RAPTOR_EMAIL, REPO

BIN = Path(sys.executable).parent

QUERY_MODULE = """
import os
from pz_dagster import Dataset
from pz_dagster.orchestration import OpenAICompatibleModel, build_definitions

defs, query = build_definitions(
    Dataset.from_directory(os.environ["PZQ_FOLDER"], batch_size=5)
    .sem_filter("The email mentions Raptor", depends_on="contents", name="raptor")
    .sem_add_columns(
        [{"name": "sender", "type": "str", "desc": "The sender's email address"}],
        depends_on="contents",
        name="sender",
    ),
    "scale",
    model=OpenAICompatibleModel(model="sim", base_url=os.environ["PZQ_SIM"], max_concurrency=1),
    store_root=os.environ["PZQ_STORE"],
)
"""

MULTIPROCESS = {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}


@pytest.mark.slow
def test_two_partitions_materialize_at_once_with_the_multiprocess_executor(
    tmp_path: Path, dagster_home: Path
):
    folder = tmp_path / "emails"
    folder.mkdir()
    for i in range(10):
        (folder / f"m{i:02d}.txt").write_text(RAPTOR_EMAIL.replace("quarter", f"quarter {i}"))
    (tmp_path / "pzq.py").write_text(QUERY_MODULE)
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel(latency_s=0.4)}) as sim:
        env = {
            **os.environ,
            "PZQ_FOLDER": str(folder),
            "PZQ_SIM": sim.base_url,
            "PZQ_STORE": str(store),
            "PYTHONPATH": str(tmp_path),
        }
        reg = subprocess.run(
            [str(BIN / "pz-dagster"), "register", "--module", "pzq"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reg.returncode == 0, reg.stderr
        keys = [b.key for b in RecordStore(store).batches("scale")]
        assert len(keys) == 2
        runs = [
            subprocess.Popen(
                [
                    str(BIN / "dagster"),
                    "asset",
                    "materialize",
                    "-m",
                    "pzq",
                    "--select",
                    "group:scale",
                    "--partition",
                    key,
                    "--config-json",
                    json.dumps(MULTIPROCESS),
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for key in keys
        ]
        logs = [r.communicate(timeout=400)[0] for r in runs]
        for r, log in zip(runs, logs, strict=True):
            assert r.returncode == 0 and "RUN_SUCCESS" in log, log[-3000:]
            assert "multiprocess executor" in log

    rs = RecordStore(store)
    for key in keys:
        docs = {f.path for f in rs.load_batch("scale", key).files}
        out = rs.read(["scale", "sender"], key).to_pylist()
        assert {r["record_id"] for r in out} == docs and len(docs) == 5
        assert all(r["sender"] and not r["error"] for r in out)
    with duckdb.connect(str(rs.catalog_path), read_only=True) as con:
        (n,) = con.execute('select count(*) from "scale__sender"').fetchone()
    assert n == 10
    with dg.DagsterInstance.get() as instance:
        mats = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["scale", "sender"])), limit=10
        ).records
        assert sorted(m.partition_key for m in mats) == sorted(keys)
        # The two runs were in progress at the same time (each started before the other ended).
        a, b = instance.get_run_records(dg.RunsFilter(job_name="__ASSET_JOB"))[:2]
        assert a.start_time < b.end_time and b.start_time < a.end_time


@pytest.mark.slow
def test_demo_runs_with_the_instance_on_postgresql(
    postgres_url: str, mini_emails: Path, tmp_path: Path
):
    psycopg2 = pytest.importorskip("psycopg2")
    home = tmp_path / "pg_home"
    home.mkdir()
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dagster-postgres ships psycopg2.
    dagster_url = postgres_url.replace("postgresql://", "postgresql+psycopg2://")
    (home / "dagster.yaml").write_text(
        f"telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url: {dagster_url}\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PZ_ENRON_DIR": str(mini_emails),
        "PZ_DAGSTER_STORE": str(tmp_path / "store"),
    }
    run = subprocess.run(
        [str(BIN / "pz-dagster"), "run", "--partitions", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "ok" in run.stdout
    with psycopg2.connect(postgres_url) as con, con.cursor() as cur:
        cur.execute("select count(*) from runs where status = 'SUCCESS'")
        (runs,) = cur.fetchone()
        cur.execute(
            "select count(distinct asset_key) from event_logs "
            "where dagster_event_type = 'ASSET_MATERIALIZATION'"
        )
        (assets,) = cur.fetchone()
    assert runs == 1
    assert assets >= 4  # the emails and the three operators of the demo (plus rewrites)
    # The optimizer's history is read back from PostgreSQL.
    hist = subprocess.run(
        [str(BIN / "pz-dagster"), "history", "--json", "--asset", "mentions_fraud_scheme"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert hist.returncode == 0, hist.stderr
    (row,) = [json.loads(line) for line in hist.stdout.splitlines()]
    assert row["model"].startswith("smollm2") and row["records/in"] == 4
