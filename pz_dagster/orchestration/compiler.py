"""Compile a Dataset into Dagster definitions: one asset per plan node, partitioned by batch."""

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field
from tqdm import tqdm

from pz_dagster.errors import PlanError
from pz_dagster.models.cache import CachedChatModel, ResponseCache
from pz_dagster.operators import needs_model, run_operator
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress
from pz_dagster.orchestration.metadata import operator_metadata
from pz_dagster.orchestration.resources import RecordStoreResource
from pz_dagster.orchestration.store import to_table
from pz_dagster.query import plan, rewrites
from pz_dagster.query.dataset import Dataset
from pz_dagster.sources import changed_files, read_file

MODEL_KEY = "pz_model"
EMBEDDINGS_KEY = "pz_embeddings"
STORE_KEY = "pz_store"
IO_MANAGER_KEY = "pz_io_manager"


class OperatorConfig(dg.Config):
    """Run-config knobs of one operator asset (launchpad: ops.<asset>.config)."""

    strategy: str = Field(default="direct", description="Physical strategy of a semantic operator.")
    use_cache: bool = Field(
        default=True,
        description="Answer repeated prompts from the response cache under the instance's storage.",
    )


@dataclass(frozen=True)
class CompiledQuery:
    name: str
    dataset: Dataset  # as declared
    plan: plan.PlanNode  # after the logical rewrites: what the assets run
    partitions_def: dg.DynamicPartitionsDefinition
    assets: list[dg.AssetsDefinition]
    job: Any  # what dg.define_asset_job returns (its class is not public API): per batch
    summary_job: Any = None  # the unpartitioned assets after an aggregation, over all batches
    reference_job: Any = None  # the unpartitioned tables the query joins with

    def asset_key(self, node_name: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, node_name])

    @property
    def batch_output_key(self) -> dg.AssetKey:
        """The last per-batch asset: a batch is done when it is materialized."""
        return [a.key for a in self.assets if a.partitions_def is not None][-1]

    @property
    def output_key(self) -> dg.AssetKey:
        """The asset holding the query's result (the last operator of the optimized plan)."""
        return self.asset_key(self.plan.name)


@contextmanager
def _progress(context: dg.AssetExecutionContext, name: str) -> Iterator[Progress]:
    """Progress of one operator: a log line every 10% (the UI's run log) and, when the run is
    in a terminal (``pz-dagster run``), a tqdm bar on stderr."""
    step = {"next": 0.0}
    bar: tqdm | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and sys.stderr.isatty():
            bar = tqdm(total=total, desc=name, unit="rec", leave=False)
        if bar is not None:
            bar.update(done - bar.n)
        if done / total >= step["next"] or done == total:
            context.log.info(f"{name}: {done}/{total} records")
            step["next"] = done / total + 0.1

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def response_cache(instance: dg.DagsterInstance) -> ResponseCache:
    """The response cache that lives with the instance's storage (shared by its runs)."""
    return ResponseCache(Path(instance.storage_directory()) / "pz_response_cache")


def _source_asset(query: str, node: plan.DirectorySource, parts: dg.DynamicPartitionsDefinition):
    columns = plan.column_types(node)

    @dg.asset(
        key=dg.AssetKey([query, node.name]),
        partitions_def=parts,
        io_manager_key=IO_MANAGER_KEY,
        group_name=query,
        kinds={"pz", "files"},
        description=f"Documents of {node.path}, one record per document. {node.describe()}",
    )
    def _source(context: dg.AssetExecutionContext, pz_store: RecordStoreResource) -> dg.Output:
        start = time.perf_counter()
        store = pz_store.get_store()
        batch = store.load_batch(query, context.partition_key)
        root = Path(node.path)
        records = [rec for ref in batch.files for rec in read_file(root, ref.path)]
        changed = changed_files(root, batch)
        for rec in records:
            if rec["filename"] in changed and not rec["error"]:
                rec["error"] = (
                    "file changed since its batch was registered; the new version is a new batch"
                )
        stats = OperatorStats(
            records_in=len(batch.files), records_out=len(records), evaluated=len(records)
        )
        stats.passed_through_errors = sum(1 for r in records if r["error"])
        result = OperatorResult(records, stats, strategy="read")
        md = operator_metadata(
            node.kind, result, columns, time.perf_counter() - start, with_selectivity=False
        )
        md["read_errors"] = stats.passed_through_errors
        if stats.passed_through_errors:
            context.log.warning(
                f"{stats.passed_through_errors} file(s) could not be read; see the error column"
            )
        return dg.Output(to_table(records, columns), metadata=md)

    return _source


def _operator_asset(
    query: str,
    node: plan.UnaryNode,
    parts: dg.DynamicPartitionsDefinition | None,
    pool: str | None,
    *,
    reads_all_partitions: bool = False,
):
    """One operator's asset. ``parts`` None makes it unpartitioned; ``reads_all_partitions``
    makes it read every partition of its (partitioned) input."""
    columns = plan.column_types(node)
    semantic = needs_model(node)
    mapping = dg.AllPartitionMapping() if reads_all_partitions else None

    ins = {
        "upstream": dg.AssetIn(
            key=dg.AssetKey([query, node.parent.name]), partition_mapping=mapping
        )
    }
    if isinstance(node, plan.SemanticJoin):
        assert node.right is not None
        ins["right"] = dg.AssetIn(key=dg.AssetKey([query, node.right.name]))

    needs_embeddings = isinstance(node, plan.SemanticTopK)
    resource_keys = ({MODEL_KEY} if semantic else set()) | (
        {EMBEDDINGS_KEY} if needs_embeddings else set()
    )

    def run(
        context: dg.AssetExecutionContext,
        config: OperatorConfig,
        upstream: pa.Table,
        right: pa.Table | None = None,
    ) -> dg.Output:
        start = time.perf_counter()
        records = upstream.to_pylist()
        model = getattr(context.resources, MODEL_KEY).get_client() if semantic else None
        with ExitStack() as cleanup:
            progress = cleanup.enter_context(_progress(context, node.name))
            if model is not None and config.use_cache:
                cache = response_cache(context.instance)
                cleanup.callback(cache.close)
                model = CachedChatModel(model, cache)
            result = run_operator(
                node,
                records,
                model,
                strategy=config.strategy,
                progress=progress,
                right=right.to_pylist() if right is not None else None,
                embedder=(
                    getattr(context.resources, EMBEDDINGS_KEY).get_client()
                    if needs_embeddings
                    else None
                ),
            )
        seconds = time.perf_counter() - start
        # A global operator (agg, top-k) has no per-record selectivity to learn from.
        with_selectivity = not isinstance(node, plan.GlobalNode)
        md = operator_metadata(
            node.kind, result, columns, seconds, with_selectivity=with_selectivity
        )
        if result.stats.failures:
            context.log.warning(
                f"{node.name}: {result.stats.failures} record(s) failed and are kept with the error "
                f"column set, e.g. {result.stats.failure_examples[0]}"
            )
        if result.stats.truncated:
            context.log.warning(
                f"{node.name}: {result.stats.truncated} record(s) were cut to fit the model's "
                f"context: {', '.join(result.stats.truncated_ids[:10])}"
            )
        return dg.Output(to_table(result.records, columns), metadata=md)

    decorate = dg.asset(
        key=dg.AssetKey([query, node.name]),
        ins=ins,
        partitions_def=parts,
        io_manager_key=IO_MANAGER_KEY,
        required_resource_keys=resource_keys,
        group_name=query,
        kinds={"pz", "llm"} if semantic else {"pz", "python"},
        description=node.describe(),
        pool=pool if semantic else None,
    )
    if "right" in ins:

        @decorate
        def _join(
            context: dg.AssetExecutionContext,
            config: OperatorConfig,
            upstream: pa.Table,
            right: pa.Table,
        ) -> dg.Output:
            return run(context, config, upstream, right)

        return _join

    @decorate
    def _op(
        context: dg.AssetExecutionContext, config: OperatorConfig, upstream: pa.Table
    ) -> dg.Output:
        return run(context, config, upstream)

    return _op


def _table_asset(query: str, node: plan.TableSource):
    columns = plan.column_types(node)

    @dg.asset(
        key=dg.AssetKey([query, node.name]),
        io_manager_key=IO_MANAGER_KEY,
        group_name=query,
        kinds={"pz", "duckdb"} if node.database else {"pz", "python"},
        description=node.describe(),
    )
    def _table(context: dg.AssetExecutionContext) -> dg.Output:
        start = time.perf_counter()
        records = node.read()
        n = len(records)
        stats = OperatorStats(records_in=n, records_out=n, evaluated=n)
        result = OperatorResult(records, stats, strategy="read")
        seconds = time.perf_counter() - start
        md = operator_metadata(node.kind, result, columns, seconds, with_selectivity=False)
        return dg.Output(to_table(records, columns), metadata=md)

    return _table


def _reference_assets(
    query: str, optimized: plan.PlanNode, pool: str | None
) -> list[dg.AssetsDefinition]:
    """Unpartitioned assets of every join's right side (a table and the operators on it)."""
    out = []
    for n in optimized.lineage():
        if isinstance(n, plan.SemanticJoin):
            assert n.right is not None
            right = n.right.lineage()  # already optimized with the plan
            assert isinstance(right[0], plan.TableSource)
            out.append(_table_asset(query, right[0]))
            out += [_operator_asset(query, r, None, pool) for r in right[1:]]  # type: ignore[arg-type]
    return out


def compile_query(dataset: Dataset, name: str, *, model_pool: str | None = None) -> CompiledQuery:
    """Turn a Dataset into Dagster assets (one per plan node) sharing one dynamic partitioning.

    ``model_pool`` puts the assets that call the model into a Dagster pool (for GPU engines).

    >>> q = compile_query(Dataset.from_directory("emails").sem_filter("about fraud"), "enron")
    >>> [k.to_user_string() for a in q.assets for k in a.keys]
    ['enron/documents', 'enron/sem_filter_1']
    """
    optimized = rewrites.optimize(dataset.node)
    lineage = optimized.lineage()
    source = lineage[0]
    if not isinstance(source, plan.DirectorySource):
        raise PlanError(f"a query must start from a directory source, got {type(source).__name__}")
    try:
        plan.DirectorySource(name=name, path="-")  # same naming rules as operators
    except PlanError:
        raise PlanError(
            f"invalid query name {name!r}: use letters, digits and underscores"
        ) from None
    parts = dg.DynamicPartitionsDefinition(name=f"{name}_batches")
    assets = [_source_asset(name, source, parts)]
    partitioned = True
    global_assets = []
    for n in lineage[1:]:
        assert isinstance(n, plan.UnaryNode)
        starts_global = partitioned and isinstance(n, plan.GlobalNode)
        partitioned = partitioned and not starts_global
        asset = _operator_asset(
            name, n, parts if partitioned else None, model_pool, reads_all_partitions=starts_global
        )
        (assets if partitioned else global_assets).append(asset)
    job = dg.define_asset_job(
        f"{name}_job",
        selection=dg.AssetSelection.assets(*[a.key for a in assets]),
        description=f"Run query {name!r} on one document batch.",
    )
    reference = _reference_assets(name, optimized, model_pool)
    reference_job = None
    if reference:
        reference_job = dg.define_asset_job(
            f"{name}_reference_job",
            selection=dg.AssetSelection.assets(*[a.key for a in reference]),
            description=f"Read the tables query {name!r} joins with (run before the batches).",
        )
    summary_job = None
    if global_assets:
        summary_job = dg.define_asset_job(
            f"{name}_summary_job",
            selection=dg.AssetSelection.assets(*[a.key for a in global_assets]),
            description=f"Aggregate query {name!r} over every materialized batch.",
        )
    return CompiledQuery(
        name,
        dataset,
        optimized,
        parts,
        reference + assets + global_assets,
        job,
        summary_job,
        reference_job,
    )
