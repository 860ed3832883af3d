"""Registering a source folder's new files as document batches (Dagster partitions)."""

from __future__ import annotations

import dagster as dg
from filelock import FileLock

from pz_dagster.orchestration.compiler import CompiledQuery, SourceBatches
from pz_dagster.orchestration.store import RecordStore
from pz_dagster.query.plan import BatchedSource, DirectorySource, TableBatchSource
from pz_dagster.sources import Batch, FileRef, make_batches, scan_folder
from pz_dagster.sources.batches import in_order, next_ordinal
from pz_dagster.sources.tables import scan_table


def scan_source(source: BatchedSource) -> list[FileRef]:
    """The items of a batched source now: a folder's files, or a watched table's rows."""
    if isinstance(source, DirectorySource):
        return scan_folder(source.path)
    assert isinstance(source, TableBatchSource), type(source).__name__
    return scan_table(source.database, source.sql, source.id_column)


def register_new_batches(
    store: RecordStore, query: str, source: BatchedSource, manifest: str | None = None
) -> list[Batch]:
    """Group items (files, or rows of a watched table) not yet in any batch of the source into
    new batches and save their manifests.

    Idempotent: an item already in a batch (same path or id, and content) is never batched
    again, so a repeated call adds nothing. New batches are numbered after the source's
    batches (``0003-<first item>``): the lock makes that numbering, like the batching, one
    registration's at a time.
    """
    # One registration at a time per source (sensor ticks, CLI runs, other processes): two
    # that interleave would each batch the files the other has not saved yet, so a file that
    # arrived between their scans would land in two batches.
    with registration_lock(store, query, manifest):
        files = scan_source(source)
        existing = store.batches(query, manifest)
        new = make_batches(
            files,
            source.batch_size,
            seen=[f for b in existing for f in b.files],
            first=next_ordinal(existing),
            label=source.id_column if isinstance(source, TableBatchSource) else "",
        )
        return [store.save_batch(query, batch, manifest) for batch in new]


def registration_lock(store: RecordStore, query: str, manifest: str | None) -> FileLock:
    """The lock on one source's manifests; waits up to 10 minutes for another registration,
    which takes a scan of the folder."""
    return store.lock(query, f"register-{manifest or 'main'}", timeout=600)


def pending_batches(
    store: RecordStore,
    query: CompiledQuery,
    instance: dg.DagsterInstance,
    source: SourceBatches | None = None,
) -> tuple[list[Batch], list[str]]:
    """Register new batches of ``source`` (default: the query's main folder); return all its
    batches (in registration order, that of their keys) and the keys the instance does not know
    as partitions."""
    src = source or query.sources[0]
    register_new_batches(store, query.name, src.node, src.manifest)
    batches = in_order(store.batches(query.name, src.manifest))
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
