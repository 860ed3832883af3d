"""The shared Enron legal-discovery query run through Dagster under an optimizer policy, one
run per batch, with what it cost, kept and extracted (``run_once``); and the simulator's three
model profiles the policies choose among (a GPT-4-class champion, a mini and a nano). Shared by
``optimizer_policies_sim`` and ``peer_enron``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import dagster as dg
from rich.console import Console

from benchmarks.common import copy_emails, stored_output
from definitions.enron import legal_discovery_query
from pz_dagster import metadata_keys as K
from pz_dagster.metadata_keys import metadata_value
from pz_dagster.orchestration import (
    ModelPrice,
    ModelPrior,
    OpenAICompatibleModel,
    OptimizerResource,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import SimulatedModel
from pz_dagster.tuning.history import HistoryRecord

OUTPUT = "sender_and_subject"
SEMANTIC = ("mentions_fraud_scheme", "not_news_quote", OUTPUT)

# name: (simulated behaviour, $ per 1M input/output tokens, quality prior)
PROFILES = {
    "champion-4": (
        SimulatedModel(accuracy=0.995, latency_s=0.25, seconds_per_output_token=0.005),
        (10.0, 30.0),
        0.99,
    ),
    "mini": (
        SimulatedModel(accuracy=0.985, latency_s=0.1, seconds_per_output_token=0.0015),
        (0.6, 2.4),
        0.95,
    ),
    "nano": (
        SimulatedModel(accuracy=0.9, latency_s=0.05, seconds_per_output_token=0.0005),
        (0.1, 0.4),
        0.9,
    ),
}
CHAMPION = "champion-4"


def sim_model(base_url: str, concurrency: int) -> OpenAICompatibleModel:
    """The three profiles behind the simulator at ``base_url`` (or a proxy in front of it),
    with their prices and quality priors."""
    return OpenAICompatibleModel(
        model=CHAMPION,
        models=[m for m in PROFILES if m != CHAMPION],
        base_url=base_url,
        prices={
            m: ModelPrice(input_per_mtok=p[0], output_per_mtok=p[1])
            for m, (_, p, _) in PROFILES.items()
        },
        priors={m: ModelPrior(quality=q) for m, (_, _, q) in PROFILES.items()},
        max_concurrency=concurrency,
    )


def run_once(
    label: str,
    model: OpenAICompatibleModel,
    names: list[str],
    data: Path,
    tune_labels: Path,
    *,
    policy: str | None,
    strategies: list[str],
    console: Console,
    batch_size: int = 25,
) -> dict:
    """The query through Dagster, one run per batch, with ``policy`` (None: every operator
    pinned to the resource's default model, direct): what it cost, what it kept and extracted."""
    work = Path(tempfile.mkdtemp(prefix="pz-sim-bench-"))
    folder = work / "emails"
    copy_emails(names, data, folder)
    optimizer = OptimizerResource(
        policy=policy or "MaxQuality", strategies=strategies, labels_path=str(tune_labels)
    )
    defs, query = build_definitions(
        legal_discovery_query(folder, batch_size=batch_size),
        "enron",
        model=model,
        optimizer=optimizer,
        store_root=str(work / "store"),
    )
    job = defs.resolve_job_def(query.job.name)
    op_config: dict = {"use_cache": False}
    if policy is None:  # the baseline: the champion, direct, pinned by run config
        op_config |= {"model": model.model, "strategy": "direct"}
    run_config = {
        "ops": {query.op_name(n): {"config": op_config} for n in SEMANTIC},
        "loggers": {"console": {"config": {"log_level": "ERROR"}}},
    }
    dollars = calls = model_seconds = tokens = 0.0
    failures = 0  # records the model failed on (invalid JSON after retries, timeouts...)
    partition_seconds: list[float] = []
    chosen: dict[str, list[str]] = {n: [] for n in SEMANTIC}
    calls_by: dict[str, list[int]] = {n: [] for n in SEMANTIC}  # the chosen run's model calls
    sampled: dict[str, list[list[str]]] = {n: [] for n in SEMANTIC}
    start = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        batches = register_partitions(RecordStore(work / "store"), query, instance)
        for b in batches:
            began = time.perf_counter()
            res = job.execute_in_process(
                partition_key=b.key, instance=instance, run_config=run_config, raise_on_error=False
            )
            partition_seconds.append(time.perf_counter() - began)
            if not res.success:
                console.print(f"[red]{label}: batch {b.key} failed[/red]")
            for n in SEMANTIC:
                recs = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=query.asset_key(n), asset_partitions=[b.key]),
                    limit=1,
                ).records
                if not recs:
                    continue
                md = recs[0].asset_materialization.metadata
                record = HistoryRecord.from_metadata(md)
                assert record is not None, f"{n}: no history record"
                run = record.run
                # everything spent: the chosen run and the sample runs (quality, exploration)
                dollars += run.dollars + metadata_value(md, K.SAMPLE_DOLLARS, 0.0)
                calls += run.model_calls
                failures += metadata_value(md, K.FAILURES, 0)
                tokens += record.input_tokens + metadata_value(md, K.OUTPUT_TOKENS, 0)
                model_seconds += run.seconds
                cfg = run.config
                chosen[n].append(f"{cfg.strategy}:{cfg.model or '-'}")
                calls_by[n].append(int(run.model_calls))
                # the sample runs beside the chosen one: the champion's reference, exploration
                sampled[n].append(
                    [
                        f"{r.config.strategy}:{r.config.model or '-'} x{r.records}"
                        for r in record.sample_runs or []
                        if r.config.model
                    ]
                )
    wall = time.perf_counter() - start
    store = RecordStore(work / "store")
    rows, kept = stored_output(store, f"enron__{OUTPUT}", OUTPUT)
    return {
        "label": label,
        "policy": policy or f"baseline: all {model.model}, direct",
        "concurrency": model.max_concurrency,
        "wall_seconds": round(wall, 2),
        "partition_seconds": [round(x, 3) for x in partition_seconds],
        "model_seconds": round(model_seconds, 3),
        "dollars": round(dollars, 5),
        "model_calls": int(calls),
        "tokens": int(tokens),
        "failures": int(failures),
        "kept_rows": rows,
        "kept": kept,
        "final_plan": {n: (c[-1] if c else None) for n, c in chosen.items()},
        "plans_by_partition": chosen,
        "calls_by_partition": calls_by,
        "sample_runs_by_partition": sampled,
    }
