"""Compile a Dataset into Dagster definitions: one asset per plan node, partitioned by batch."""

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
from pydantic import Field
from tqdm import tqdm

from pz_dagster.errors import PlanError
from pz_dagster.models.cache import CachedChatModel, ResponseCache
from pz_dagster.operators import needs_model, run_operator
from pz_dagster.operators.base import OperatorStats, Progress
from pz_dagster.operators.proxy import PROXIES
from pz_dagster.orchestration.assessment import assess, decision_metadata
from pz_dagster.orchestration.checks import CheckSettings, check_specs, evaluate
from pz_dagster.orchestration.keys import (
    EMBEDDINGS_KEY,
    IO_MANAGER_KEY,
    MODEL_KEY,
    OPTIMIZER_KEY,
)
from pz_dagster.orchestration.metadata import code_metadata, operator_metadata
from pz_dagster.orchestration.planning import (
    AUTO,
    OPTIMIZED,
    RUNNABLE_STRATEGIES,
    NodeHistory,
    learned_threshold,
    pinned_candidate,
    plan_operator,
    read_history,
    strategy_params,
    threshold_params,
    with_batch_labels,
)
from pz_dagster.orchestration.resources import BATCHES_METADATA
from pz_dagster.orchestration.source_assets import source_asset, table_asset
from pz_dagster.orchestration.store import to_table
from pz_dagster.query import plan, rewrites
from pz_dagster.query.dataset import Dataset

DEFAULT_CHECKS = CheckSettings()


RunStrategy = Literal[(AUTO, *RUNNABLE_STRATEGIES)]  # type: ignore[valid-type]


class OperatorConfig(dg.Config):
    """Run-config knobs of one operator asset (launchpad: ops.<asset>.config)."""

    # A Literal: Dagster checks the run config before the run starts and lists the names.
    strategy: RunStrategy = Field(
        default=AUTO,
        description="Physical strategy of a semantic operator; auto: the optimizer chooses. "
        "Setting it (or model) pins the operator's config for this run.",
    )
    model: str = Field(
        default="", description="Model of a semantic operator; empty: the optimizer chooses."
    )
    use_cache: bool = Field(
        default=True,
        description="Answer repeated prompts from the response cache under the instance's storage.",
    )
    max_failed_fraction: float = Field(
        default=1.0,
        description="Fail the asset, storing nothing for this partition, when at least this "
        "fraction of the records it evaluated got no answer from the model endpoint (timeouts, "
        "refused connections, HTTP 5xx/429 after every retry, an open circuit breaker). 1.0: "
        "only when all of them did; 0.5: when half did. Invalid answers (not JSON, wrong "
        "schema) do not count: those records are kept with the error column set.",
    )


@dataclass(frozen=True)
class SourceBatches:
    """A document folder of the query, batched into its own dynamic partitions."""

    node: plan.BatchedSource  # a document folder or a watched table
    partitions_def: dg.DynamicPartitionsDefinition
    job: Any  # materializes the folder's per-batch assets, one batch per run
    output_key: dg.AssetKey  # the folder's last per-batch asset: a batch is done when it is
    manifest: str | None = None  # None: the query's main folder; else its batch manifests' name


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
    sources: tuple[SourceBatches, ...] = ()  # the main folder first, then folders joined with

    @property
    def joined_sources(self) -> tuple[SourceBatches, ...]:
        """Folders the query joins with: run their batches before the main folder's."""
        return self.sources[1:]

    def asset_key(self, node_name: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, node_name])

    @property
    def batch_output_key(self) -> dg.AssetKey:
        """The last per-batch asset: a batch is done when it is materialized."""
        return self.sources[0].output_key

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


def fail_if_unanswered(name: str, stats: OperatorStats, max_failed_fraction: float) -> None:
    """Raise ``dagster.Failure`` when at least ``max_failed_fraction`` of the evaluated records
    failed for a transport reason. Such a partition says nothing about its documents: stored,
    it would read as a success (with every record flagged), the run would exit 0, and the next
    run would skip it as done."""
    unanswered, evaluated = stats.transport_failures, stats.evaluated
    if not unanswered or not evaluated or unanswered / evaluated < max_failed_fraction:
        return
    how_many = f"all {evaluated}" if unanswered == evaluated else f"{unanswered} of {evaluated}"
    example = stats.transport_example or (stats.failure_examples or ["-"])[0]
    raise dg.Failure(
        description=(
            f"{name}: {how_many} evaluated record(s) failed without an answer from the model "
            f"endpoint (max_failed_fraction={max_failed_fraction:g}), e.g. {example}. Nothing "
            "was stored for this partition. Check that the endpoint (the model resource's "
            "base_url) is up and reachable from here and answers within its timeout_s, then "
            "run the partition again."
        ),
        metadata={
            "evaluated": evaluated,
            "transport_failures": unanswered,
            "failures": stats.failures,
            "max_failed_fraction": max_failed_fraction,
            "examples": dg.MetadataValue.md(
                "\n".join(f"- {e}" for e in stats.failure_examples) or "-"
            ),
        },
    )


def response_cache(instance: dg.DagsterInstance) -> ResponseCache:
    """The response cache that lives with the instance's storage (shared by its runs)."""
    return ResponseCache(Path(instance.storage_directory()) / "pz_response_cache")


def _operator_asset(
    query: str,
    node: plan.UnaryNode,
    parts: dg.DynamicPartitionsDefinition | None,
    pool: str | None,
    *,
    reads_all_partitions: bool = False,
    manifest: str | None = None,
    right_manifest: str | None = None,
    chain: tuple[plan.PlanNode, ...] = (),
    checks: CheckSettings = DEFAULT_CHECKS,
):
    """One operator's asset. ``parts`` None makes it unpartitioned; ``reads_all_partitions``
    makes it read every partition of its (partitioned) input, whose batches are named by
    ``manifest``. A join whose right side is a folder reads all of that folder's partitions
    (``right_manifest``)."""
    columns = plan.column_types(node)
    semantic = needs_model(node)
    key = dg.AssetKey([query, node.name])

    def all_of(manifest: str | None) -> dict[str, Any]:
        return {
            "partition_mapping": dg.AllPartitionMapping(),
            "metadata": {BATCHES_METADATA: {"query": query, "source": manifest}},
        }

    ins = {
        "upstream": dg.AssetIn(
            key=dg.AssetKey([query, node.parent.name]),
            **(all_of(manifest) if reads_all_partitions else {}),
        )
    }
    if isinstance(node, plan.SemanticJoin):
        assert node.right is not None
        right_partitioned = isinstance(node.right.lineage()[0], plan.DirectorySource)
        ins["right"] = dg.AssetIn(
            key=dg.AssetKey([query, node.right.name]),
            **(all_of(right_manifest) if right_partitioned else {}),
        )

    # top-k searches by embeddings; a semantic filter may run (or judge) an embedding proxy
    needs_embeddings = isinstance(node, plan.SemanticTopK | plan.SemanticFilter)
    optimized = isinstance(node, OPTIMIZED)
    resource_keys = (
        ({MODEL_KEY} if semantic else set())
        | ({EMBEDDINGS_KEY} if needs_embeddings else set())
        | ({OPTIMIZER_KEY} if optimized else set())
    )
    chain_keys = {n.name: dg.AssetKey([query, n.name]) for n in chain}

    def runs_ahead(context: dg.AssetExecutionContext) -> int:
        """This batch and the query's batches this asset has not materialized yet."""
        if parts is None or parts.name is None or not context.has_partition_key:
            return 1
        known = set(context.instance.get_dynamic_partitions(parts.name))
        done = context.instance.get_materialized_partitions(key)
        return len((known - done) | {context.partition_key})

    def run(
        context: dg.AssetExecutionContext,
        config: OperatorConfig,
        upstream: pa.Table,
        right: pa.Table | None = None,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        start = time.perf_counter()
        records = upstream.to_pylist()
        with ExitStack() as cleanup:
            progress = cleanup.enter_context(_progress(context, node.name))
            clients: dict[str | None, Any] = {}
            cache: list[Any] = []

            def client_for(model_name: str | None) -> Any:
                if model_name not in clients:
                    client = getattr(context.resources, MODEL_KEY).get_client(model_name)
                    if config.use_cache:
                        if not cache:
                            cache.append(response_cache(context.instance))
                            cleanup.callback(cache[0].close)
                        client = CachedChatModel(client, cache[0])
                    clients[model_name] = client
                return clients[model_name]

            extra: dict[str, Any] = {}
            physical = None

            def embedder_for() -> Any:
                return getattr(context.resources, EMBEDDINGS_KEY).get_client()

            if optimized:
                resource = getattr(context.resources, MODEL_KEY)
                optimizer = getattr(context.resources, OPTIMIZER_KEY)
                profiles = resource.profiles()
                pinned = pinned_candidate(node, config.strategy, config.model, profiles)
                history = read_history(context.instance, chain_keys, optimizer.history_limit)
                cold = not history.get(node.name) or not history[node.name].observations
                recorded = history.get(node.name) or NodeHistory()  # what the assessment extends
                history[node.name] = with_batch_labels(
                    recorded, node, records, optimizer, embedder_for, context.log.warning
                )
                decision = plan_operator(
                    node, chain, history, profiles, optimizer, records, pinned, runs_ahead(context)
                )
                chosen = decision.candidate(node.name)
                context.log.info(
                    f"{node.name}: {chosen.key} ({decision.result.reason})"
                    + (" [pinned by run config]" if pinned else "")
                )
                own = history[node.name]
                threshold = None
                if chosen.strategy in PROXIES:
                    threshold = learned_threshold(own, chosen.strategy)
                result = run_operator(
                    node,
                    records,
                    client_for(chosen.model) if chosen.strategy not in PROXIES else None,
                    strategy=chosen.strategy,
                    progress=progress,
                    embedder=embedder_for() if chosen.strategy == "embedding_proxy" else None,
                    threshold=threshold,
                    models=[client_for(m) for m in chosen.models]
                    if len(chosen.models) > 1
                    else None,
                    params=strategy_params(chosen, own),
                )
                fail_if_unanswered(node.name, result.stats, config.max_failed_fraction)
                if "escalated" in result.extras:
                    extra_counts = {"escalated": result.extras["escalated"]}
                else:
                    extra_counts = {}
                learned = strategy_params(chosen, own)
                if "examples" in learned:  # recorded as a count: the texts are in history
                    learned = {**learned, "examples": len(learned["examples"])}
                if "functions" in learned:  # the code is in the metadata, not the config
                    learned = {k: v for k, v in learned.items() if k != "functions"}
                physical = chosen.config(
                    **learned,
                    **(threshold_params(threshold) if threshold else {}),
                )
                assessment = assess(
                    node,
                    records,
                    result,
                    decision,
                    client_for,
                    optimizer,
                    context.log.warning,
                    history=recorded,
                    embedder_for=embedder_for,
                )
                extra = decision_metadata(decision, node.name, assessment, cold) | extra_counts
            else:
                strategy = "direct" if config.strategy == AUTO else config.strategy
                result = run_operator(
                    node,
                    records,
                    client_for(config.model or None) if semantic else None,
                    strategy=strategy,
                    progress=progress,
                    right=right.to_pylist() if right is not None else None,
                    embedder=embedder_for() if isinstance(node, plan.SemanticTopK) else None,
                )
                fail_if_unanswered(node.name, result.stats, config.max_failed_fraction)
        seconds = time.perf_counter() - start
        # A global operator (agg, top-k) has no per-record selectivity to learn from.
        with_selectivity = not isinstance(node, plan.GlobalNode)
        md = operator_metadata(
            node.kind,
            result,
            columns,
            seconds,
            with_selectivity=with_selectivity,
            config=physical,
        )
        md.update(extra)
        md.update(code_metadata(result))
        if semantic:  # a local model's dollars are its compute at a price per hour, not a bill
            used = (physical.params.get("models") if physical else None) or [result.model]
            md["dollars_basis"] = getattr(context.resources, MODEL_KEY).dollars_basis(used)
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
        yield dg.Output(to_table(result.records, columns), metadata=md)
        partition = context.partition_key if context.has_partition_key else None
        yield from evaluate(node, key, result, md, checks, partition)

    decorate = dg.asset(
        key=key,
        check_specs=check_specs(node, key, checks),
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
        ) -> Iterator[dg.Output | dg.AssetCheckResult]:
            yield from run(context, config, upstream, right)

        return _join

    @decorate
    def _op(
        context: dg.AssetExecutionContext, config: OperatorConfig, upstream: pa.Table
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        yield from run(context, config, upstream)

    return _op


def _chain(
    query: str,
    lineage: list[plan.PlanNode],
    parts: dg.DynamicPartitionsDefinition | None,
    pool: str | None,
    manifest: str | None,
    joined: dict[str, SourceBatches],
    checks: CheckSettings,
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetsDefinition]]:
    """Assets of a source and the operators after it: (per-batch ones, unpartitioned ones).

    A folder source (``parts`` given) is per batch until the first operator over all batches;
    a table source is unpartitioned throughout. ``joined`` gives the folders joins read."""
    source = lineage[0]
    if isinstance(source, plan.BatchedSource):
        assert parts is not None
        batch, whole = [source_asset(query, source, parts, manifest, checks)], []
    else:
        assert isinstance(source, plan.TableSource)
        batch, whole = [], [table_asset(query, source, checks)]
    partitioned = parts is not None
    for n in lineage[1:]:
        assert isinstance(n, plan.UnaryNode)
        starts_global = partitioned and isinstance(n, plan.GlobalNode)
        partitioned = partitioned and not starts_global
        right_manifest = None
        if isinstance(n, plan.SemanticJoin):
            assert n.right is not None
            right_source = n.right.lineage()[0]
            if right_source.name in joined:
                right_manifest = joined[right_source.name].manifest
        asset = _operator_asset(
            query,
            n,
            parts if partitioned else None,
            pool,
            reads_all_partitions=starts_global,
            manifest=manifest,
            right_manifest=right_manifest,
            chain=segment_of(lineage, n),
            checks=checks,
        )
        (batch if partitioned else whole).append(asset)
    return batch, whole


def segment_of(lineage: list[plan.PlanNode], node: plan.PlanNode) -> tuple[plan.PlanNode, ...]:
    """The operators that run with ``node`` on the same partitions (per batch, or after the
    first operator over all batches), without the source: the plan the optimizer prices."""
    ops = lineage[1:]
    cut = next((i for i, n in enumerate(ops) if isinstance(n, plan.GlobalNode)), len(ops))
    at = next(i for i, n in enumerate(ops) if n is node)
    return tuple(ops[:cut]) if at < cut else tuple(ops[cut:])


def _batch_job(query: str, name: str, assets: list[dg.AssetsDefinition], what: str) -> Any:
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*[a.key for a in assets]),
        description=f"Run query {query!r} on one batch of {what}.",
    )


def compile_query(
    dataset: Dataset,
    name: str,
    *,
    model_pool: str | None = None,
    checks: CheckSettings | None = None,
) -> CompiledQuery:
    """Turn a Dataset into Dagster assets (one per plan node). Each document folder gets its own
    dynamic partitioning (one partition per batch) and job; tables the query joins with are
    unpartitioned, read by ``<name>_reference_job``; operators over all batches (aggregates,
    top-k) are unpartitioned, run by ``<name>_summary_job``.

    ``model_pool`` puts the assets that call the model into a Dagster pool (for GPU engines);
    ``checks`` sets the thresholds and severities of every asset's checks.

    >>> q = compile_query(Dataset.from_directory("emails").sem_filter("about fraud"), "enron")
    >>> [k.to_user_string() for a in q.assets for k in a.keys]
    ['enron/documents', 'enron/sem_filter_1']
    """
    checks = checks or CheckSettings()
    optimized = rewrites.optimize(dataset.node)
    lineage = optimized.lineage()
    source = lineage[0]
    if not isinstance(source, plan.BatchedSource):
        raise PlanError(
            "a query must start from a folder (Dataset.from_directory) or a watched table "
            f"(Dataset.from_duckdb with id_column and batch_size), got {type(source).__name__}"
        )
    try:
        plan.DirectorySource(name=name, path="-")  # same naming rules as operators
    except PlanError:
        raise PlanError(
            f"invalid query name {name!r}: use letters, digits and underscores"
        ) from None

    # The sides of joins first: the main chain's join assets read them.
    joined: dict[str, SourceBatches] = {}
    reference: list[dg.AssetsDefinition] = []
    joined_assets: list[dg.AssetsDefinition] = []
    for n in lineage:
        if not isinstance(n, plan.SemanticJoin):
            continue
        assert n.right is not None
        right = n.right.lineage()  # already optimized with the plan
        right_source = right[0]
        if isinstance(right_source, plan.DirectorySource):
            rparts = dg.DynamicPartitionsDefinition(name=f"{name}_{right_source.name}_batches")
            per_batch, whole = _chain(
                name, right, rparts, model_pool, right_source.name, {}, checks
            )
            assert not whole, "SemanticJoin rejects operators over all batches on its right"
            joined[right_source.name] = SourceBatches(
                right_source,
                rparts,
                _batch_job(name, f"{name}_{right_source.name}_job", per_batch, right_source.path),
                per_batch[-1].key,
                manifest=right_source.name,
            )
            joined_assets += per_batch
        else:
            _, whole = _chain(name, right, None, model_pool, None, {}, checks)
            reference += whole

    parts = dg.DynamicPartitionsDefinition(name=f"{name}_batches")
    assets, global_assets = _chain(name, lineage, parts, model_pool, None, joined, checks)
    job = _batch_job(name, f"{name}_job", assets, source.location)
    main = SourceBatches(source, parts, job, assets[-1].key)
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
        reference + joined_assets + assets + global_assets,
        job,
        summary_job,
        reference_job,
        sources=(main, *joined.values()),
    )
