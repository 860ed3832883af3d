"""Real materializations: temporary Dagster instance, bundled model in-process and behind
llama.cpp's OpenAI-compatible server on 127.0.0.1, records in the Parquet/DuckDB store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset
from pz_dagster.models.base import DEFAULT_CPU_PRICE_PER_HOUR
from pz_dagster.orchestration import (
    LocalLlamaModel,
    OpenAICompatibleModel,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.tuning.history import HistoryRecord
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SOURCE_NUMERIC = {
    "records/in": dg.IntMetadataValue,
    "records/out": dg.IntMetadataValue,
    "records/read_errors": dg.IntMetadataValue,
    "time/seconds": dg.FloatMetadataValue,
}
NUMERIC = {
    "records/in": dg.IntMetadataValue,
    "records/out": dg.IntMetadataValue,
    "records/failures": dg.IntMetadataValue,
    "usage/input_tokens": dg.IntMetadataValue,
    "usage/output_tokens": dg.IntMetadataValue,
    "usage/model_calls": dg.IntMetadataValue,
    "cost/dollars": dg.FloatMetadataValue,
    "cost/dollars_per_record": dg.FloatMetadataValue,
    "time/seconds": dg.FloatMetadataValue,
    "time/model_seconds": dg.FloatMetadataValue,
}


def raptor_query(folder: Path) -> Dataset:
    return (
        Dataset.from_directory(folder, name="emails", batch_size=10)
        .sem_filter("The email mentions Raptor", depends_on="contents", name="mentions_raptor")
        .sem_add_columns(
            [{"name": "sender", "type": "str", "desc": "The email address of the sender"}],
            depends_on="contents",
            name="extract_sender",
        )
    )


def materialize_once(
    defs: dg.Definitions, query, instance: dg.DagsterInstance, store_root: Path
) -> str:
    batches = register_partitions(RecordStore(store_root), query, instance)
    assert len(batches) == 1 and len(batches[0].files) == 4
    result = defs.resolve_job_def(query.job.name).execute_in_process(
        partition_key=batches[0].key, instance=instance
    )
    assert result.success
    return batches[0].key


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{key.to_user_string()} was not materialized"
    return records[0].asset_materialization.metadata  # type: ignore[union-attr]


def check_run(
    instance,
    query,
    partition: str,
    store_root: Path,
    expected_model: str,
    price_per_hour: float = DEFAULT_CPU_PRICE_PER_HOUR,
    shared_by: int = 1,
) -> None:
    source = query.asset_key("emails")
    for asset in query.assets:
        md = latest_metadata(instance, asset.key, partition)
        for name, kind in (SOURCE_NUMERIC if asset.key == source else NUMERIC).items():
            assert isinstance(md[name], kind), (asset.key, name, md.get(name))
        assert isinstance(md["preview"], dg.MarkdownMetadataValue)
        assert md["dagster/row_count"].value == 4  # the two bad files travel along, flagged
    source_md = latest_metadata(instance, source, partition)
    assert source_md["records/read_errors"].value == 2
    # a source calls no model: no model counters, no history record
    assert not [k for k in source_md if k.startswith(("usage/", "cost/", "history/"))]
    filter_md = latest_metadata(instance, query.asset_key("mentions_raptor"), partition)
    assert filter_md["model"].value == expected_model and filter_md["strategy"].value == "direct"
    assert filter_md["records/evaluated"].value == 2
    assert filter_md["usage/model_calls"].value == 2
    assert filter_md["usage/input_tokens"].value > 50
    assert filter_md["usage/output_tokens"].value > 0
    # a local model costs its compute: model time at the machine's price per hour (exact in
    # the history record; the entries beside it are rounded for reading)
    run = HistoryRecord.from_metadata(filter_md).run  # type: ignore[union-attr]
    assert run.seconds > 0
    assert run.dollars == pytest.approx(run.seconds * price_per_hour / 3600 / shared_by, rel=1e-6)
    assert filter_md["time/model_seconds"].value == pytest.approx(run.seconds, rel=1e-3)
    assert filter_md["cost/dollars"].value == pytest.approx(run.dollars, rel=1e-3)
    assert filter_md["cost/basis"].value == "compute estimate"
    assert 0.0 <= filter_md["records/selectivity"].value <= 1.0

    with RecordStore(store_root).connect() as con:
        rows = con.execute(
            'select record_id, sender, error from "raptor__extract_sender" order by record_id'
        ).fetchall()
    by_id = {r[0]: r for r in rows}
    assert by_id["c_latin1.txt"][2].startswith("not valid UTF-8")
    assert by_id["d_empty.txt"][2] == "empty file: nothing to analyse"
    if "a_raptor.txt" in by_id:  # the tiny model decides; when kept, the extraction ran
        assert by_id["a_raptor.txt"][2] is not None or by_id["a_raptor.txt"][1]


def test_materialize_with_bundled_model_in_process(mini_emails: Path, tmp_path: Path):
    store_root = tmp_path / "store"
    defs, query = build_definitions(
        raptor_query(mini_emails),
        "raptor",
        model=LocalLlamaModel(n_ctx=2048),
        store_root=str(store_root),
    )
    with dg.instance_for_test() as instance:
        partition = materialize_once(defs, query, instance, store_root)
        check_run(instance, query, partition, store_root, "smollm2-135m-instruct-q4_1")


def test_materialize_through_llama_cpp_server(mini_emails: Path, tmp_path: Path, llama_server: str):
    store_root = tmp_path / "store"
    # a local server is priced by its machine hour only when asked: it may as well be an API
    model = OpenAICompatibleModel(
        model="smollm2", base_url=llama_server, context_tokens=2048, compute_price_per_hour=0.5
    )
    defs, query = build_definitions(
        raptor_query(mini_emails), "raptor", model=model, store_root=str(store_root)
    )
    with dg.instance_for_test() as instance:
        partition = materialize_once(defs, query, instance, store_root)
        check_run(instance, query, partition, store_root, "smollm2", 0.5, model.max_concurrency)
        # The same partition again: every answer comes from the response cache.
        again = defs.resolve_job_def(query.job.name).execute_in_process(
            partition_key=partition, instance=instance
        )
        assert again.success
        for name in ("mentions_raptor", "extract_sender"):
            md = latest_metadata(instance, query.asset_key(name), partition)
            assert md["usage/model_calls"].value == 0 and md["cost/dollars"].value == 0.0
            assert md["usage/cache_hits"].value == md["records/evaluated"].value


def test_sensor_registers_each_batch_once(mini_emails: Path, tmp_path: Path):
    defs, query = build_definitions(
        raptor_query(mini_emails), "raptor", store_root=str(tmp_path / "s")
    )
    sensor = defs.resolve_sensor_def("raptor_new_documents")
    with dg.instance_for_test() as instance:
        cursor: list[str | None] = [None]

        def tick():  # what the daemon does: evaluate, apply the requests, keep the cursor
            with dg.build_sensor_context(
                instance=instance,
                resources={"pz_store": defs.resources["pz_store"]},
                cursor=cursor[0],
            ) as ctx:
                result = sensor(ctx)
            for req in result.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            cursor[0] = result.cursor or cursor[0]
            return result

        first = tick()
        assert [f"raptor_batches:{r.partition_key}" for r in first.run_requests] == [
            r.run_key for r in first.run_requests
        ] and len(first.run_requests) == 1
        assert tick().skip_reason.skip_message == "no new documents"
        (mini_emails / "e_new.txt").write_text("From: x@enron.com\n\nChewco again")
        third = tick()
        assert (
            len(third.run_requests) == 1
            and third.run_requests[0].partition_key != first.run_requests[0].partition_key
        )
        assert len(instance.get_dynamic_partitions("raptor_batches")) == 2
        # A batch registered outside the sensor (pz-dagster register) and never run is requested.
        (mini_emails / "f_cli.txt").write_text("From: y@enron.com\n\nFat Boy")
        cli_batch = register_partitions(RecordStore(tmp_path / "s"), query, instance)
        assert len(cli_batch) == 3
        fourth = tick()
        assert len(fourth.run_requests) == 1 and not fourth.dynamic_partitions_requests
        assert tick().skip_reason.skip_message == "no new documents"


def test_dagster_asset_materialize_cli_one_partition(
    mini_emails: Path, dagster_home: Path, tmp_path: Path
):
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "PZ_ENRON_DIR": str(mini_emails),
        "PZ_DAGSTER_STORE": str(tmp_path / "store"),
    }
    reg = subprocess.run(
        [sys.executable, "-m", "pz_dagster.cli", "register"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reg.returncode == 0, reg.stderr
    # a key a person can read: the batch's ordinal and its first file
    key = next(w for line in reg.stdout.splitlines() for w in line.split()[:1] if w[:5] == "0001-")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "definitions",
            "--select",
            "group:enron",
            "--partition",
            key,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and "RUN_SUCCESS" in run.stdout + run.stderr, run.stderr[-3000:]
    assert (tmp_path / "store" / "enron" / "sender_and_subject" / f"{key}.parquet").exists()
