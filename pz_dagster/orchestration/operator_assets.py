"""The asset of one operator of a compiled query: its run config, and the glue between Dagster
(resources, instance, log, outputs, checks) and tuning's step, which plans, runs and assesses
the operator on the partition's records."""

import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
from pydantic import Field
from tqdm import tqdm

from pz_dagster.models.base import ChatModel, Usage
from pz_dagster.models.cache import CachedChatModel, ResponseCache
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators import needs_model
from pz_dagster.operators.base import Progress
from pz_dagster.operators.progress import current_reporter
from pz_dagster.orchestration.asset_docs import (
    asset_description,
    definition_metadata,
    lineage_metadata,
)
from pz_dagster.orchestration.checks import CheckSettings, check_specs, evaluate
from pz_dagster.orchestration.keys import EMBEDDINGS_KEY, IO_MANAGER_KEY, MODEL_KEY, OPTIMIZER_KEY
from pz_dagster.orchestration.metadata import materialization_metadata, unanswered_failure
from pz_dagster.orchestration.optimization import read_history
from pz_dagster.orchestration.resources import BATCHES_METADATA
from pz_dagster.orchestration.store import to_table
from pz_dagster.query import plan
from pz_dagster.tuning.history import NodeHistory
from pz_dagster.tuning.planning import AUTO, OPTIMIZED, RUNNABLE_STRATEGIES
from pz_dagster.tuning.step import (
    EndpointUnanswered,
    StepResult,
    StepServices,
    run_operator_step,
)

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


@contextmanager
def operator_progress(context: dg.AssetExecutionContext, name: str) -> Iterator[Progress]:
    """Progress of one operator: a log line every 10% (the UI's run log), and to the reporter
    that the caller installed (``pz-dagster run``'s live display), else, when the run is in a
    terminal, a tqdm bar on stderr."""
    step = {"next": 0.0}
    bar: tqdm | None = None
    reporter = current_reporter()

    def progress(done: int, total: int, usage: Usage | None = None, /) -> None:
        nonlocal bar
        if reporter is not None:
            reporter.update(name, done, total, usage)
        elif bar is None and sys.stderr.isatty():
            bar = tqdm(total=total, desc=name, unit="rec", leave=False)
        if bar is not None:
            bar.update(done - bar.n)
        if done and (done / total >= step["next"] or done == total):
            context.log.info(f"{name}: {done}/{total} records")
            step["next"] = done / total + 0.1

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()
        if reporter is not None:
            reporter.close(name)


def response_cache(instance: dg.DagsterInstance) -> ResponseCache:
    """The response cache that lives with the instance's storage (shared by its runs)."""
    return ResponseCache(Path(instance.storage_directory()) / "pz_response_cache")


class ModelClients:
    """The model clients of one run of an asset, made on first use; chat answers come from the
    response cache when ``use_cache`` (closed with ``cleanup``)."""

    def __init__(self, context: dg.AssetExecutionContext, use_cache: bool, cleanup: ExitStack):
        self._context, self._use_cache, self._cleanup = context, use_cache, cleanup
        self._chat: dict[str | None, ChatModel] = {}
        self._cache: ResponseCache | None = None

    def chat(self, model_name: str | None) -> ChatModel:
        if model_name not in self._chat:
            client = getattr(self._context.resources, MODEL_KEY).get_client(model_name)
            if self._use_cache:
                if self._cache is None:
                    self._cache = response_cache(self._context.instance)
                    self._cleanup.callback(self._cache.close)
                client = CachedChatModel(client, self._cache)
            self._chat[model_name] = client
        return self._chat[model_name]

    def embedder(self) -> EmbeddingModel:
        return getattr(self._context.resources, EMBEDDINGS_KEY).get_client()


@dataclass(frozen=True)
class OperatorBody:
    """An operator asset's body: Dagster's context and inputs in, tuning's step, its output
    and checks out."""

    query: str
    node: plan.UnaryNode
    key: dg.AssetKey
    parts: dg.DynamicPartitionsDefinition | None
    chain: tuple[plan.PlanNode, ...]
    checks: CheckSettings

    def materialize(
        self,
        context: dg.AssetExecutionContext,
        config: OperatorConfig,
        upstream: pa.Table,
        right: pa.Table | None = None,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        step = self.step(context, config, upstream, right)
        columns = plan.column_types(self.node)
        md = materialization_metadata(step.metadata, step.result.stats.records_out, columns)
        md |= lineage_metadata(self.node, self.key)
        yield dg.Output(to_table(step.records, columns), metadata=md)
        partition = context.partition_key if context.has_partition_key else None
        run = step.record.run
        yield from evaluate(
            self.node,
            self.key,
            step.result,
            self.checks,
            partition,
            run.quality,
            run.quality_source,
        )

    def step(
        self,
        context: dg.AssetExecutionContext,
        config: OperatorConfig,
        upstream: pa.Table,
        right: pa.Table | None,
    ) -> StepResult:
        with ExitStack() as cleanup:
            progress = cleanup.enter_context(operator_progress(context, self.node.name))
            clients = ModelClients(context, config.use_cache, cleanup)
            try:
                return run_operator_step(
                    self.node,
                    upstream.to_pylist(),
                    self.services(context, clients, progress),
                    strategy=config.strategy,
                    model=config.model,
                    max_failed_fraction=config.max_failed_fraction,
                    right=right.to_pylist() if right is not None else None,
                    **(self.tuning(context) if isinstance(self.node, OPTIMIZED) else {}),
                )
            except EndpointUnanswered as exc:
                raise unanswered_failure(exc) from None

    def services(
        self, context: dg.AssetExecutionContext, clients: ModelClients, progress: Progress
    ) -> StepServices:
        model = getattr(context.resources, MODEL_KEY) if needs_model(self.node) else None
        return StepServices(
            client_for=clients.chat,
            embedder_for=clients.embedder,
            profiles=model.profiles() if model and isinstance(self.node, OPTIMIZED) else (),
            dollars_basis=model.dollars_basis if model else None,
            log=context.log,
            progress=progress,
        )

    def history(self, context: dg.AssetExecutionContext) -> dict[str, NodeHistory]:
        """The history of the chain's operators, from the instance's event log."""
        optimizer = getattr(context.resources, OPTIMIZER_KEY)
        keys = {n.name: sibling_key(self.key, n.name) for n in self.chain}
        return read_history(context.instance, keys, optimizer.history_limit)

    def tuning(
        self,
        context: dg.AssetExecutionContext,
        history: Mapping[str, NodeHistory] | None = None,
    ) -> dict[str, Any]:
        """What the optimizer plans with: its settings, the history of the chain's operators
        (read now unless given), the plan it prices, and the batches still to come."""
        return {
            "settings": getattr(context.resources, OPTIMIZER_KEY),
            "history": self.history(context) if history is None else history,
            "chain": self.chain,
            "runs_ahead": self.runs_ahead(context),
        }

    def runs_ahead(self, context: dg.AssetExecutionContext) -> int:
        """This batch and the query's batches this asset has not materialized yet."""
        parts = self.parts
        if parts is None or parts.name is None or not context.has_partition_key:
            return 1
        known = set(context.instance.get_dynamic_partitions(parts.name))
        done = context.instance.get_materialized_partitions(self.key)
        return len((known - done) | {context.partition_key})


def sibling_key(key: dg.AssetKey, node_name: str) -> dg.AssetKey:
    """The key of another node of the same query: every asset of a query shares one prefix.

    >>> sibling_key(dg.AssetKey(["team", "enron", "sender"]), "emails").to_user_string()
    'team/enron/emails'
    """
    return dg.AssetKey([*key.path[:-1], node_name])


def _ins(
    query: str,
    key: dg.AssetKey,
    node: plan.UnaryNode,
    reads_all_partitions: bool,
    manifest: str | None,
    right_manifest: str | None,
) -> dict[str, dg.AssetIn]:
    """The asset's inputs: its parent (all of its partitions when ``reads_all_partitions``)
    and a join's right side (all of its partitions when that is a folder)."""

    def all_of(manifest: str | None) -> dict[str, Any]:
        return {
            "partition_mapping": dg.AllPartitionMapping(),
            "metadata": {BATCHES_METADATA: {"query": query, "source": manifest}},
        }

    ins = {
        "upstream": dg.AssetIn(
            key=sibling_key(key, node.parent.name),
            **(all_of(manifest) if reads_all_partitions else {}),
        )
    }
    if isinstance(node, plan.SemanticJoin):
        assert node.right is not None
        right_partitioned = isinstance(node.right.lineage()[0], plan.DirectorySource)
        ins["right"] = dg.AssetIn(
            key=sibling_key(key, node.right.name),
            **(all_of(right_manifest) if right_partitioned else {}),
        )
    return ins


def _decorator(
    query: str,
    node: plan.UnaryNode,
    key: dg.AssetKey,
    ins: dict[str, dg.AssetIn],
    parts: dg.DynamicPartitionsDefinition | None,
    pool: str | None,
    checks: CheckSettings,
) -> Any:
    """``dg.asset`` as an operator's asset takes it: its checks, inputs, partitions, resources
    and, for an asset calling a model, ``pool``."""
    semantic = needs_model(node)
    # top-k searches by embeddings; a semantic filter may run (or judge) an embedding proxy
    needs_embeddings = isinstance(node, plan.SemanticTopK | plan.SemanticFilter)
    resource_keys = (
        ({MODEL_KEY} if semantic else set())
        | ({EMBEDDINGS_KEY} if needs_embeddings else set())
        | ({OPTIMIZER_KEY} if isinstance(node, OPTIMIZED) else set())
    )
    return dg.asset(
        key=key,
        check_specs=check_specs(node, key, checks),
        ins=ins,
        partitions_def=parts,
        io_manager_key=IO_MANAGER_KEY,
        required_resource_keys=resource_keys,
        group_name=query,
        kinds={"pz", "llm"} if semantic else {"pz", "python"},
        description=asset_description(node, key),
        metadata=definition_metadata(node, key),
        pool=pool if semantic else None,
    )


def operator_asset(
    query: str,
    node: plan.UnaryNode,
    parts: dg.DynamicPartitionsDefinition | None,
    pool: str | None,
    *,
    reads_all_partitions: bool = False,
    manifest: str | None = None,
    right_manifest: str | None = None,
    chain: tuple[plan.PlanNode, ...] = (),
    checks: CheckSettings | None = None,
    key_prefix: tuple[str, ...] = (),
) -> dg.AssetsDefinition:
    """One operator's asset, keyed ``[*key_prefix, query, node.name]``. ``parts`` None makes
    it unpartitioned; ``reads_all_partitions`` makes it read every partition of its
    (partitioned) input, whose batches are named by ``manifest``. A join whose right side is a
    folder reads all of that folder's partitions (``right_manifest``). ``chain``: the
    operators the optimizer prices with this one."""
    checks = checks or CheckSettings()
    key = dg.AssetKey([*key_prefix, query, node.name])
    body = OperatorBody(query, node, key, parts, chain, checks)
    ins = _ins(query, key, node, reads_all_partitions, manifest, right_manifest)
    decorate = _decorator(query, node, key, ins, parts, pool, checks)
    if "right" in ins:

        @decorate
        def _join(
            context: dg.AssetExecutionContext,
            config: OperatorConfig,
            upstream: pa.Table,
            right: pa.Table,
        ) -> Iterator[dg.Output | dg.AssetCheckResult]:
            yield from body.materialize(context, config, upstream, right)

        return _join

    @decorate
    def _op(
        context: dg.AssetExecutionContext, config: OperatorConfig, upstream: pa.Table
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        yield from body.materialize(context, config, upstream)

    return _op
