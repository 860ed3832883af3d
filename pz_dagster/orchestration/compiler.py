"""Compile a Dataset into Dagster definitions: one asset per plan node, partitioned by batch."""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from pz_dagster.errors import PlanError
from pz_dagster.orchestration.asset_docs import OPTIMIZER_NOTE
from pz_dagster.orchestration.attributes import AssetAttributes
from pz_dagster.orchestration.checks import CheckSettings
from pz_dagster.orchestration.filter_chain import filter_chain_asset, filter_runs
from pz_dagster.orchestration.operator_assets import operator_asset
from pz_dagster.orchestration.source_assets import describe_tables, source_asset, table_asset
from pz_dagster.query import plan, rewrites
from pz_dagster.query.dataset import Dataset
from pz_dagster.query.nodes import all_nodes
from pz_dagster.tuning.planning import OPTIMIZED


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
    key_prefix: tuple[str, ...] = ()  # before the query's name in every asset key

    @property
    def joined_sources(self) -> tuple[SourceBatches, ...]:
        """Folders the query joins with: run their batches before the main folder's."""
        return self.sources[1:]

    def asset_key(self, node_name: str) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, self.name, node_name])

    def op_name(self, node_name: str) -> str:
        """The op that materializes a node's asset: where its run config goes
        (``ops.<op>.config``). Adjacent semantic filters share one op."""
        key = self.asset_key(node_name)
        for asset in self.assets:
            if key in asset.keys:
                return asset.node_def.name
        raise KeyError(f"no asset materializes {node_name!r} in query {self.name!r}")

    @property
    def batch_asset_keys(self) -> list[dg.AssetKey]:
        """The keys of every per-batch asset (partitioned by a folder's batches), in order."""
        return [k for a in self.assets if a.partitions_def is not None for k in asset_keys(a)]

    @property
    def batch_output_key(self) -> dg.AssetKey:
        """The last per-batch asset: a batch is done when it is materialized."""
        return self.sources[0].output_key

    @property
    def output_key(self) -> dg.AssetKey:
        """The asset holding the query's result (the last operator of the optimized plan)."""
        return self.asset_key(self.plan.name)


@dataclass(frozen=True)
class _Build:
    """What every asset of one query is compiled with."""

    query: str
    key_prefix: tuple[str, ...]
    pool: str | None  # the pool of the assets that call a model
    checks: CheckSettings

    def key(self, node_name: str) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, self.query, node_name])


def _chain(
    build: _Build,
    lineage: list[plan.PlanNode],
    parts: dg.DynamicPartitionsDefinition | None,
    manifest: str | None,
    joined: dict[str, SourceBatches],
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetsDefinition]]:
    """Assets of a source and the operators after it: (per-batch ones, unpartitioned ones).

    A folder source (``parts`` given) is per batch until the first operator over all batches;
    a table source is unpartitioned throughout. ``joined`` gives the folders joins read."""
    query, pool, checks, prefix = build.query, build.pool, build.checks, build.key_prefix
    source = lineage[0]
    if isinstance(source, plan.BatchedSource):
        assert parts is not None
        batch, whole = [source_asset(query, source, parts, manifest, checks, key_prefix=prefix)], []
    else:
        assert isinstance(source, plan.TableSource)
        batch, whole = [], [table_asset(query, source, checks, key_prefix=prefix)]
    partitioned = parts is not None
    runs = {run[0].name: run for run in filter_runs(lineage[1:])}
    in_run: set[str] = set()  # filters compiled with the first of their run
    for n in lineage[1:]:
        assert isinstance(n, plan.UnaryNode)
        starts_global = partitioned and isinstance(n, plan.GlobalNode)
        partitioned = partitioned and not starts_global
        if n.name in in_run:
            continue
        if partitioned and n.name in runs:
            # adjacent filters of a batch: one multi-asset that orders them per batch
            run = runs[n.name]
            in_run |= {f.name for f in run}
            chain = segment_of(lineage, n)
            batch.append(
                filter_chain_asset(
                    query, run, parts, pool, chain=chain, checks=checks, key_prefix=prefix
                )
            )
            continue
        right_manifest = None
        if isinstance(n, plan.SemanticJoin):
            assert n.right is not None
            right_source = n.right.lineage()[0]
            if right_source.name in joined:
                right_manifest = joined[right_source.name].manifest
        asset = operator_asset(
            query,
            n,
            parts if partitioned else None,
            pool,
            reads_all_partitions=starts_global,
            manifest=manifest,
            right_manifest=right_manifest,
            chain=segment_of(lineage, n),
            checks=checks,
            key_prefix=prefix,
        )
        (batch if partitioned else whole).append(asset)
    return batch, whole


def asset_keys(asset: dg.AssetsDefinition) -> list[dg.AssetKey]:
    """The keys of one of a query's assets in plan order (a filter chain has several)."""
    return list(asset.keys_by_output_name.values())


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
        selection=dg.AssetSelection.assets(*[k for a in assets for k in a.keys]),
        description=f"Run query {query!r} on one batch of {what}.",
    )


def compile_query(
    dataset: Dataset,
    name: str,
    *,
    model_pool: str | None = None,
    checks: CheckSettings | None = None,
    attributes: AssetAttributes | None = None,
    model_note: str | None = None,
) -> CompiledQuery:
    """Turn a Dataset into Dagster assets (one per plan node). Each document folder gets its own
    dynamic partitioning (one partition per batch) and job; tables the query joins with are
    unpartitioned, read by ``<name>_reference_job``; operators over all batches (aggregates,
    top-k) are unpartitioned, run by ``<name>_summary_job``.

    ``model_pool`` puts the assets that call the model into a Dagster pool (for GPU engines);
    ``checks`` sets the thresholds and severities of every asset's checks; ``attributes`` the
    owners, tags, group and key prefix of every asset; ``model_note`` (Markdown) is added to
    the description of every asset the optimizer plans. The columns of the query's DuckDB
    tables are read here (their declaration opened nothing).

    >>> q = compile_query(Dataset.from_directory("emails").sem_filter("about fraud"), "enron")
    >>> [k.to_user_string() for a in q.assets for k in a.keys]
    ['enron/documents', 'enron/sem_filter_1']
    """
    checks = checks or CheckSettings()
    attributes = attributes or AssetAttributes()
    optimized = rewrites.optimize(describe_tables(dataset).node)  # DuckDB columns read now
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

    build = _Build(name, tuple(attributes.key_prefix), model_pool, checks)
    # The sides of joins first: the main chain's join assets read them.
    joined, joined_assets, reference = _join_sides(build, lineage)
    parts = dg.DynamicPartitionsDefinition(name=f"{name}_batches")
    assets, global_assets = _chain(build, lineage, parts, None, joined)
    job = _batch_job(name, f"{name}_job", assets, source.location)
    main = SourceBatches(source, parts, job, asset_keys(assets[-1])[-1])
    return CompiledQuery(
        name,
        dataset,
        optimized,
        parts,
        _presented(
            reference + joined_assets + assets + global_assets,
            attributes,
            model_note,
            {build.key(n.name) for n in all_nodes(optimized) if isinstance(n, OPTIMIZED)},
        ),
        job,
        _whole_job(
            f"{name}_summary_job",
            global_assets,
            f"Aggregate query {name!r} over every materialized batch.",
        ),
        _whole_job(
            f"{name}_reference_job",
            reference,
            f"Read the tables query {name!r} joins with (run before the batches).",
        ),
        sources=(main, *joined.values()),
        key_prefix=build.key_prefix,
    )


def _presented(
    assets: list[dg.AssetsDefinition],
    attributes: AssetAttributes,
    model_note: str | None,
    planned: set[dg.AssetKey],
) -> list[dg.AssetsDefinition]:
    """``assets`` with the query's owners, tags and group, and ``model_note`` in the
    description of those the optimizer plans (``planned``)."""

    def present(spec: dg.AssetSpec) -> dg.AssetSpec:
        spec = attributes.apply(spec)
        if model_note and spec.key in planned and spec.description:
            # right after the sentence that says the optimizer chooses
            text = spec.description.replace(OPTIMIZER_NOTE, f"{OPTIMIZER_NOTE} {model_note}")
            spec = spec.replace_attributes(description=text)
        return spec

    return list(dg.map_asset_specs(present, assets))


def _whole_job(name: str, assets: list[dg.AssetsDefinition], description: str) -> Any:
    """The job of unpartitioned ``assets``; None without any."""
    if not assets:
        return None
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*[k for a in assets for k in a.keys]),
        description=description,
    )


def _join_sides(
    build: _Build, lineage: list[plan.PlanNode]
) -> tuple[dict[str, SourceBatches], list[dg.AssetsDefinition], list[dg.AssetsDefinition]]:
    """The right sides of the query's joins: each folder batched on its own (by source name),
    the per-batch assets of those folders, and the unpartitioned assets of the tables."""
    name = build.query
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
            per_batch, whole = _chain(build, right, rparts, right_source.name, {})
            assert not whole, "SemanticJoin rejects operators over all batches on its right"
            joined[right_source.name] = SourceBatches(
                right_source,
                rparts,
                _batch_job(name, f"{name}_{right_source.name}_job", per_batch, right_source.path),
                asset_keys(per_batch[-1])[-1],
                manifest=right_source.name,
            )
            joined_assets += per_batch
        else:
            _, whole = _chain(build, right, None, None, {})
            reference += whole
    return joined, joined_assets, reference
