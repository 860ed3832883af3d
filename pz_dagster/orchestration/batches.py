"""Registering a source folder's new files as document batches (Dagster partitions)."""

from __future__ import annotations

import dagster as dg

from pz_dagster.orchestration.compiler import CompiledQuery
from pz_dagster.orchestration.store import RecordStore
from pz_dagster.query.plan import DirectorySource
from pz_dagster.sources import Batch, make_batches, scan_folder


def register_new_batches(store: RecordStore, query: str, source: DirectorySource) -> list[Batch]:
    """Group files not yet in any batch of ``query`` into new batches and save their manifests.

    Idempotent: a file already in a batch (same path and content) is never batched again, and
    a batch's key is derived from its files, so a repeated call adds nothing.
    """
    files = scan_folder(source.path)
    new = make_batches(files, source.batch_size, seen=store.batch_files_seen(query))
    for batch in new:
        store.save_batch(query, batch)
    return new


def pending_batches(
    store: RecordStore, query: CompiledQuery, instance: dg.DagsterInstance
) -> tuple[list[Batch], list[str]]:
    """Register new batches; return all batches of the query (ordered by their first file) and the
    keys of those the instance does not know as partitions yet."""
    source = query.dataset.node.lineage()[0]
    assert isinstance(source, DirectorySource)
    register_new_batches(store, query.name, source)
    batches = sorted(store.batches(query.name), key=lambda b: b.files[0].path if b.files else "")
    known = set(instance.get_dynamic_partitions(query.partitions_def.name))
    return batches, [b.key for b in batches if b.key not in known]


def register_partitions(
    store: RecordStore, query: CompiledQuery, instance: dg.DagsterInstance
) -> list[Batch]:
    """Register new batches and add them to the instance as partitions; returns all batches."""
    batches, new = pending_batches(store, query, instance)
    if new:
        instance.add_dynamic_partitions(query.partitions_def.name, new)
    return batches
