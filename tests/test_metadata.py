"""What a partition and a materialization look like in Dagster's UI: partition keys a person can
read (ordered, naming their first file; older stores' hash keys still work), a source's files,
previews with the output columns first and a filter's kept and dropped records, numbers rounded
but numbers, grouped keys, and no model counters on a source. Real store, real instance."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset
from pz_dagster.metadata_keys import MODEL_CALLS, RECORDS_IN, metadata_value
from pz_dagster.orchestration import OpenAICompatibleModel, RecordStore, build_definitions
from pz_dagster.orchestration.batches import pending_batches, register_partitions
from pz_dagster.orchestration.optimization import read_history
from pz_dagster.orchestration.resources import ModelPrice
from pz_dagster.sources import scan_folder
from pz_dagster.sources.batches import Batch, content_digest
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from pz_dagster.tuning.history import HistoryRecord
from tests.conftest import EMAILS, oracle

LONG_EMAIL = (
    "From: lay@enron.com\nSubject: Raptor, again\n\nPeople: Ken Lay\n"
    + "The Raptor structures need another look before the board meeting. " * 6
)
SCHEME = "The email is about a scheme"


def inbox(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    for i, name in enumerate(names):
        (folder / name).write_text(f"From: p{i}@enron.com\n\nnote {i}")
    return folder


def test_partition_keys_are_ordered_readable_and_name_their_first_file(tmp_path: Path):
    folder = inbox(tmp_path, ["allen-p-inbox-42.txt", "allen-p-inbox-45.txt", "taylor M (2).eml"])
    store = RecordStore(tmp_path / "store")
    defs, q = build_definitions(
        Dataset.from_directory(folder, name="mail", batch_size=2),
        "keys",
        store_root=str(store.root),
    )
    with dg.instance_for_test() as instance:
        batches = register_partitions(store, q, instance)
        assert [b.key for b in batches] == ["0001-allen-p-inbox-42", "0002-taylor-m-2"]
        # registering again adds nothing; a new file (first by name) comes after, by its key
        assert [b.key for b in register_partitions(store, q, instance)] == [b.key for b in batches]
        (folder / "aaron.txt").write_text("From: a@enron.com\n\nhello")
        batches, new = pending_batches(store, q, instance)
        assert new == ["0003-aaron"] and [b.key for b in batches][-1] == "0003-aaron"
        instance.add_dynamic_partitions(q.partitions_def.name, new)  # a valid partition key
        assert instance.get_dynamic_partitions(q.partitions_def.name) == [b.key for b in batches]
    # the manifest keeps the content hash: what a key held is checkable later
    manifest = json.loads(
        (store.root / "keys" / "_batches" / "0001-allen-p-inbox-42.json").read_text()
    )
    assert manifest["digest"] == content_digest(batches[0].files)


def test_an_older_store_s_hash_keys_keep_working_and_new_batches_follow_them(tmp_path: Path):
    folder = inbox(tmp_path, ["m1.txt", "m2.txt"])
    store = RecordStore(tmp_path / "store")
    defs, q = build_definitions(
        Dataset.from_directory(folder, name="mail", batch_size=2).filter(
            lambda r: "note" in r["contents"], depends_on="contents", name="notes"
        ),
        "old",
        store_root=str(store.root),
    )
    files = tuple(scan_folder(folder))
    old = Batch(key="b-" + content_digest(files), files=files)
    store.save_batch("old", old)  # what an older store holds: a hash key
    (folder / "a0.txt").write_text("From: z@enron.com\n\nnote z")
    with dg.instance_for_test() as instance:
        batches = register_partitions(store, q, instance)
        assert [b.key for b in batches] == [old.key, "0002-a0"]  # the old one first
        result = defs.resolve_job_def(q.job.name).execute_in_process(
            partition_key=old.key, instance=instance
        )
        assert result.success
        md = (
            instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=q.asset_key("mail"), asset_partitions=[old.key]),
                limit=1,
            )
            .records[0]
            .asset_materialization.metadata
        )
    assert [r.data["file"] for r in md["batch/files"].value.records] == ["m1.txt", "m2.txt"]
    assert md["batch/digest"].value == old.key.removeprefix("b-")
    with pytest.raises(Exception, match="already saved with other files"):
        store.save_batch("old", Batch(key=old.key, files=batches[1].files))


def _scheme_query(folder: Path) -> Dataset:
    return (
        Dataset.from_directory(folder, name="mail", batch_size=10)
        .sem_filter(SCHEME, depends_on="contents", name="schemes")
        .sem_add_columns(
            [{"name": "sender", "type": "str", "desc": "The sender's address"}],
            depends_on="contents",
            name="senders",
        )
    )


def _significant_digits(x: float) -> int:
    return len(f"{x:.15g}".lstrip("-0.").replace(".", "").split("e")[0].rstrip("0"))


def test_a_materialization_shows_its_files_outputs_first_kept_and_dropped_and_numbers(
    tmp_path: Path,
):
    folder = tmp_path / "mail"
    folder.mkdir()
    for name, text in {**EMAILS, "e_long.txt": LONG_EMAIL}.items():
        (folder / name).write_text(text)
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        model = OpenAICompatibleModel(
            model="sim",
            base_url=sim.base_url,
            prices={"sim": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)},
        )
        defs, q = build_definitions(_scheme_query(folder), "ui", model=model, store_root=str(store))
        with dg.instance_for_test() as instance:
            (batch,) = register_partitions(RecordStore(store), q, instance)
            assert batch.key == "0001-a"
            job = defs.resolve_job_def(q.job.name)
            assert job.execute_in_process(partition_key=batch.key, instance=instance).success
            md = {
                n: instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=q.asset_key(n)), limit=1
                )
                .records[0]
                .asset_materialization.metadata
                for n in ("mail", "schemes", "senders")
            }
            history = read_history(instance, {"schemes": q.asset_key("schemes")}, 10)
    source, schemes, senders = md["mail"], md["schemes"], md["senders"]

    # the source: its files, no model counters, no history record
    files = source["batch/files"].value
    assert [r.data["file"] for r in files.records] == sorted([*EMAILS, "e_long.txt"])
    assert all(len(r.data["sha256"]) == 12 and r.data["bytes"] > 0 for r in files.records)
    assert not [k for k in source if k.startswith(("usage/", "cost/", "history/", "model"))]
    assert source["records/in"].value == 5 and "strategy" not in source

    # previews: the filter's kept and dropped records, the extraction's output column first
    preview = schemes["preview"].value
    assert preview.startswith("| kept or dropped | record_id |")
    assert "| kept | a.txt |" in preview and "| dropped | b.txt |" in preview
    assert "_kept 3 of 5 records_" in preview
    header, *_ = senders["preview"].value.splitlines()
    assert header.startswith("| sender | record_id |")
    long_cell = next(c for c in preview.split(" | ") if c.startswith("From: lay@enron.com"))
    assert len(long_cell) == 120 and long_cell.endswith("…") and "\n" not in long_cell

    # numbers: numbers, in groups, rounded for reading; the history record keeps them exact
    for asset, entries in md.items():
        for key, value in entries.items():
            if isinstance(value, dg.IntMetadataValue | dg.FloatMetadataValue):
                assert "/" in key, f"{asset}: {key} is in no group"
            if isinstance(value, dg.FloatMetadataValue) and math.isfinite(value.value):
                assert _significant_digits(value.value) <= 4, (asset, key, value.value)
            if isinstance(value, dg.TextMetadataValue) and key != "batch/digest":
                assert not re.fullmatch(r"[$\d.e+-]+(/record)?", value.value), (asset, key)
    assert schemes["cost/dollars"].value > 0 and schemes["cost/dollars_per_record"].value > 0
    exact = HistoryRecord.from_metadata(schemes)
    assert exact is not None and exact.run.dollars == pytest.approx(
        schemes["cost/dollars"].value, rel=1e-3
    )
    assert history["schemes"].observations  # the optimizer reads it back
    assert "e+00" not in schemes["decision"].value  # no $0.00e+00/record


def test_a_materialization_written_with_the_old_keys_is_still_read(tmp_path: Path):
    """Stores materialized before the grouped keys: history and the CLI's columns read them."""
    key = dg.AssetKey(["q", "f"])
    config = {"operator": "sem_filter", "model": "m", "strategy": "direct", "params": {}}
    old = {
        "physical_config": dg.MetadataValue.json(config),
        "records_in": 10,
        "records_out": 4,
        "evaluated": 10,
        "model_calls": 10,
        "dollars": 0.5,
        "model_seconds": 20.0,
        "selectivity": 0.4,
        "input_tokens": 5000,
    }
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, metadata=old))
        (seen,) = read_history(instance, {"f": key}, 10)["f"].observations
        md = (
            instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1)
            .records[0]
            .asset_materialization.metadata
        )
    assert seen.records == 10 and seen.dollars == 0.5 and seen.records_out == 4
    assert metadata_value(md, MODEL_CALLS) == 10 and metadata_value(md, RECORDS_IN) == 10
