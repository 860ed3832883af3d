"""Adjacent semantic filters over one per-batch input as one Dagster multi-asset: the asset
graph stays as declared (one asset per filter, each with its own key, metadata, checks and
history), while on each batch the filters run in the order their own estimates favour
(``tuning.ordering``), each seeing only the records the filters run before it kept.

Storage: every filter but the last declared one stores the records it kept among those it was
shown; the last declared one stores the chain's output (the records that passed every filter),
which is what it would hold in the declared order, so what reads it downstream is unchanged.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
from pydantic import Field

from pz_dagster import metadata_keys as K
from pz_dagster.orchestration.asset_docs import (
    asset_description,
    definition_metadata,
    lineage_metadata,
)
from pz_dagster.orchestration.checks import CheckSettings, check_specs, evaluate
from pz_dagster.orchestration.keys import EMBEDDINGS_KEY, IO_MANAGER_KEY, MODEL_KEY, OPTIMIZER_KEY
from pz_dagster.orchestration.metadata import materialization_metadata, unanswered_failure
from pz_dagster.orchestration.operator_assets import (
    ModelClients,
    OperatorBody,
    OperatorConfig,
    RunStrategy,
    operator_progress,
)
from pz_dagster.orchestration.store import to_table
from pz_dagster.query import plan
from pz_dagster.tuning.history import NodeHistory
from pz_dagster.tuning.ordering import FilterEstimate, estimates_of, order_filters
from pz_dagster.tuning.planning import AUTO
from pz_dagster.tuning.report import in_reading_order, shown
from pz_dagster.tuning.step import (
    EndpointUnanswered,
    OperatorPlan,
    StepResult,
    StepServices,
    plan_step,
    run_filter_chain,
)


def filter_runs(ops: Sequence[plan.PlanNode]) -> list[tuple[plan.SemanticFilter, ...]]:
    """The maximal runs of at least two consecutive semantic filters in ``ops`` (each filter's
    input is the one before it).

    >>> from pz_dagster import Dataset
    >>> ds = Dataset.from_directory("d").sem_filter("a").sem_filter("b").sem_map(
    ...     [{"name": "x", "type": "str", "desc": "x"}]).sem_filter("c")
    >>> [[f.name for f in run] for run in filter_runs(ds.node.lineage()[1:])]
    [['sem_filter_1', 'sem_filter_2']]
    """
    runs: list[tuple[plan.SemanticFilter, ...]] = []
    current: list[plan.SemanticFilter] = []
    for n in [*ops, None]:
        if isinstance(n, plan.SemanticFilter) and (not current or n.parent is current[-1]):
            current.append(n)
            continue
        if len(current) >= 2:
            runs.append(tuple(current))
        current = [n] if isinstance(n, plan.SemanticFilter) else []
    return runs


class FilterPin(dg.Config):
    """One filter's own pin inside a chain's run config."""

    strategy: RunStrategy = Field(
        default=AUTO, description="This filter's strategy; auto: the chain's (or the optimizer's)."
    )
    model: str = Field(default="", description="This filter's model; empty: the chain's.")


class FilterChainConfig(OperatorConfig):
    """The run config of adjacent filters (launchpad: ops.<query>__<first>__to__<last>.config):
    ``strategy``/``model`` pin every filter of the chain; ``filters`` pins one by name."""

    filters: dict[str, FilterPin] = Field(
        default={},
        description="Per filter of the chain, by name: a strategy and/or model that pins that "
        "filter alone, over the chain-wide strategy and model.",
    )

    def pin_of(self, name: str) -> tuple[str, str]:
        """(strategy, model) that ``name`` runs under: its own pin, else the chain's."""
        own = self.filters.get(name)
        if own is not None and (own.strategy != AUTO or own.model):
            return own.strategy, own.model
        return self.strategy, self.model


@dataclass(frozen=True)
class FilterChainBody:
    """The multi-asset's body: plan every filter on the chain's input, order them by rank,
    run them in that order, and yield each filter's output and checks."""

    query: str
    nodes: tuple[plan.SemanticFilter, ...]
    parts: dg.DynamicPartitionsDefinition | None
    chain: tuple[plan.PlanNode, ...]
    checks: CheckSettings
    key_prefix: tuple[str, ...] = ()

    def key(self, node: plan.SemanticFilter) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, self.query, node.name])

    def body(self, node: plan.SemanticFilter) -> OperatorBody:
        return OperatorBody(self.query, node, self.key(node), self.parts, self.chain, self.checks)

    def materialize(
        self, context: dg.AssetExecutionContext, config: FilterChainConfig, upstream: pa.Table
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        steps, order = self.run(context, config, upstream.to_pylist())
        executed = [f.name for f in order]
        final = steps[executed[-1]].records
        partition = context.partition_key if context.has_partition_key else None
        for node in self.nodes:
            step, at = steps[node.name], executed.index(node.name)
            stored = final if node is self.nodes[-1] else step.records
            md = in_reading_order(
                step.metadata
                | {
                    K.FILTER_ORDER: at + 1,
                    K.FILTER_CHAIN: executed,
                    K.FILTER_RANK: shown(order[at].rank),
                    K.FILTER_RANK_BASIS: order[at].basis,
                    K.STORED: len(stored),
                }
            )
            columns = plan.column_types(node)
            key = self.key(node)
            yield dg.Output(
                to_table(stored, columns),
                output_name=node.name,
                metadata=materialization_metadata(md, len(stored), columns)
                | lineage_metadata(node, key),
            )
            run = step.record.run
            yield from evaluate(
                node, key, step.result, self.checks, partition, run.quality, run.quality_source
            )

    def run(
        self, context: dg.AssetExecutionContext, config: FilterChainConfig, records: list[dict]
    ) -> tuple[dict[str, StepResult], list[FilterEstimate]]:
        """Each filter's step, by name, and the order they ran in."""
        settings = getattr(context.resources, OPTIMIZER_KEY)
        by_name = {n.name: n for n in self.nodes}
        if unknown := sorted(set(config.filters) - set(by_name)):
            raise dg.Failure(
                f"the run config pins {unknown}, which are not filters of this chain; "
                f"its filters: {list(by_name)}"
            )
        steps: dict[str, StepResult] = {}
        with ExitStack() as cleanup:
            clients = ModelClients(context, config.use_cache, cleanup)
            # one read of the event log: every filter of the chain prices the same segment
            history = self.body(self.nodes[0]).history(context)
            plans = {
                n.name: self.plan(context, config, clients, n, records, history) for n in self.nodes
            }
            decisions = {name: p.decision for name, p in plans.items()}
            order = order_filters(estimates_of(list(by_name), decisions, settings.get_policy()))
            context.log.info(
                "filter order: "
                + ", ".join(f"{f.name} (rank {f.rank:.3g} {f.basis})" for f in order)
            )
            services: dict[str, StepServices] = {}

            def services_for(node: plan.SemanticFilter) -> StepServices:
                if node.name not in services:
                    progress = cleanup.enter_context(operator_progress(context, node.name))
                    services[node.name] = self.body(node).services(context, clients, progress)
                return services[node.name]

            try:
                steps = run_filter_chain(
                    [by_name[f.name] for f in order],
                    records,
                    services_for,
                    plans,
                    settings,
                    max_failed_fraction=config.max_failed_fraction,
                )
            except EndpointUnanswered as exc:
                raise unanswered_failure(exc) from None
        return steps, order

    def plan(
        self,
        context: dg.AssetExecutionContext,
        config: FilterChainConfig,
        clients: ModelClients,
        node: plan.SemanticFilter,
        records: list[dict],
        history: Mapping[str, NodeHistory],
    ) -> OperatorPlan:
        """``node``'s plan from its own history, on the chain's input records."""
        body = self.body(node)
        tuning = body.tuning(context, history)
        strategy, model = config.pin_of(node.name)
        return plan_step(
            node,
            records,
            body.services(context, clients, None),
            tuning["settings"],
            tuning["history"],
            tuning["chain"],
            strategy=strategy,
            model=model,
            runs_ahead=tuning["runs_ahead"],
        )


def filter_chain_asset(
    query: str,
    nodes: tuple[plan.SemanticFilter, ...],
    parts: dg.DynamicPartitionsDefinition | None,
    pool: str | None,
    *,
    chain: tuple[plan.PlanNode, ...],
    checks: CheckSettings | None = None,
    key_prefix: tuple[str, ...] = (),
) -> dg.AssetsDefinition:
    """One multi-asset for adjacent semantic filters ``nodes`` (declared order): an output,
    asset key (``[*key_prefix, query, name]``) and checks per filter, each filter depending on
    the one declared before it. Its run config is a ``FilterChainConfig``."""
    checks = checks or CheckSettings()
    body = FilterChainBody(query, nodes, parts, chain, checks, key_prefix)
    keys = [body.key(n) for n in nodes]
    upstream = dg.AssetKey([*key_prefix, query, nodes[0].parent.name])
    names = tuple(n.name for n in nodes)

    @dg.multi_asset(
        name=f"{query}__{nodes[0].name}__to__{nodes[-1].name}",
        outs={
            n.name: dg.AssetOut(
                key=k,
                io_manager_key=IO_MANAGER_KEY,
                description=asset_description(n, k, filter_chain=names),
                metadata=definition_metadata(n, k),
                kinds={"pz", "llm"},
            )
            for n, k in zip(nodes, keys, strict=True)
        },
        ins={"upstream": dg.AssetIn(key=upstream)},
        internal_asset_deps={
            n.name: {before} for n, before in zip(nodes, [upstream, *keys], strict=False)
        },
        check_specs=[
            s for n, k in zip(nodes, keys, strict=True) for s in check_specs(n, k, checks)
        ],
        partitions_def=parts,
        required_resource_keys={MODEL_KEY, EMBEDDINGS_KEY, OPTIMIZER_KEY},
        group_name=query,
        pool=pool,
    )
    def _filters(
        context: dg.AssetExecutionContext, config: FilterChainConfig, upstream: pa.Table
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        yield from body.materialize(context, config, upstream)

    return _filters
