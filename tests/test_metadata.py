"""What a partition looks like in Dagster's UI: partition keys a person can read (ordered,
naming their first file). Real store, real instance."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from pz_dagster import Dataset
from pz_dagster.orchestration import RecordStore, build_definitions
from pz_dagster.orchestration.batches import pending_batches, register_partitions
from pz_dagster.sources.batches import content_digest


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
