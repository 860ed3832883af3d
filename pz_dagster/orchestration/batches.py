"""Registering a source folder's new files as document batches (Dagster partitions)."""

from __future__ import annotations

import dagster as dg

from pz_dagster.orchestration.compiler import CompiledQuery, SourceBatches
from pz_dagster.orchestration.store import RecordStore
from pz_dagster.query.plan import DirectorySource
from pz_dagster.sources import Batch, make_batches, scan_folder


def register_new_batches(
    store: RecordStore, query: str, source: DirectorySource, manifest: str | None = None
) -> list[Batch]:
    """Group files not yet in any batch of the folder into new batches and save their manifests.

    Idempotent: a file already in a batch (same path and content) is never batched again, and
    a batch's key is derived from its files, so a repeated call adds nothing.
    """
    files = scan_folder(source.path)
    new = make_batches(files, source.batch_size, seen=store.batch_files_seen(query, manifest))
    return [store.save_batch(query, batch, manifest) for batch in new]


def pending_batches(
    store: RecordStore,
    query: CompiledQuery,
    instance: dg.DagsterInstance,
    source: SourceBatches | None = None,
) -> tuple[list[Batch], list[str]]:
    """Register new batches of ``source`` (default: the query's main folder); return all its
    batches (ordered by their first file) and the keys the instance does not know as partitions."""
    src = source or query.sources[0]
    register_new_batches(store, query.name, src.node, src.manifest)
    batches = sorted(
        store.batches(query.name, src.manifest), key=lambda b: b.files[0].path if b.files else ""
    )
    known = set(instance.get_dynamic_partitions(src.partitions_def.name))
    return batches, [b.key for b in batches if b.key not in known]


def register_partitions(
    store: RecordStore,
    query: CompiledQuery,
    instance: dg.DagsterInstance,
    source: SourceBatches | None = None,
) -> list[Batch]:
    """Register new batches of ``source`` (default: the main folder) and add them to the
    instance as partitions; returns all its batches."""
    src = source or query.sources[0]
    batches, new = pending_batches(store, query, instance, src)
    if new:
        instance.add_dynamic_partitions(src.partitions_def.name, new)
    return batches
