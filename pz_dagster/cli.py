"""`pz-dagster` command: run a declared query's job outside a long-lived Dagster deployment."""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import click
import dagster as dg
from rich.console import Console
from rich.table import Table

from pz_dagster.errors import PzError
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.compiler import (
    MODEL_KEY,
    OPTIMIZER_KEY,
    STORE_KEY,
    CompiledQuery,
    segment_of,
)
from pz_dagster.orchestration.planning import (
    OPTIMIZED,
    OptimizerResource,
    plan_operator,
    read_history,
)
from pz_dagster.orchestration.store import RecordStore, view_name

# Tables stay readable when output is piped (rich assumes 80 columns without a terminal).
console = Console(width=None if Console().is_terminal else 140)
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SUMMARY_KEYS = (
    "records_in",
    "records_out",
    "failures",
    "input_tokens",
    "output_tokens",
    "dollars",
    "seconds",
)


def _prepare_home(home: str | None) -> Path:
    path = Path(home or os.environ.get("DAGSTER_HOME") or ".pz_home").resolve()
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def instance_dir() -> str:
    return os.environ.get("DAGSTER_HOME", "")


def _load(module: str) -> tuple[dg.Definitions, CompiledQuery]:
    sys.path.insert(0, os.getcwd())
    mod = importlib.import_module(module)
    defs = getattr(mod, "defs", None)
    queries = [v for v in vars(mod).values() if isinstance(v, CompiledQuery)]
    if not isinstance(defs, dg.Definitions) or len(queries) != 1:
        raise click.ClickException(
            f"module {module!r} must define `defs` (dagster Definitions) and exactly one compiled query"
        )
    return defs, queries[0]


def _store(defs: dg.Definitions) -> RecordStore:
    return defs.resources[STORE_KEY].get_store()  # type: ignore[union-attr]


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@click.option("--module", default="definitions", show_default=True, help="Module defining `defs`.")
@click.option(
    "--home",
    default=None,
    help="DAGSTER_HOME to read history from (default: $DAGSTER_HOME or ./.pz_home).",
)
def explain(module: str, home: str | None) -> None:
    """Print the logical plan, then the optimizer's current decision: candidates with their
    estimates (priors blended with the instance's history), the Pareto frontier of plans, the
    choice and the reason."""
    _prepare_home(home)
    defs, query = _load(module)
    console.print(f"[bold]query {query.name!r}[/bold]")
    console.print(query.dataset.explain(), markup=False)  # plan text has [brackets]
    chain = (
        segment_of(query.plan.lineage(), query.plan.lineage()[1])
        if len(query.plan.lineage()) > 1
        else ()
    )
    targets = [n for n in chain if isinstance(n, OPTIMIZED)]
    if not targets:
        return
    model = defs.resources[MODEL_KEY]
    optimizer = defs.resources.get(OPTIMIZER_KEY) or OptimizerResource()
    with dg.DagsterInstance.get() as instance:
        history = read_history(
            instance,
            {n.name: query.asset_key(n.name) for n in chain},
            optimizer.history_limit,  # type: ignore[union-attr]
        )
    # Every operator asset decides over the whole plan at its own start; the first one's
    # decision shows the candidates of all of them.
    node = targets[0]
    decision = plan_operator(node, chain, history, model.profiles(), optimizer, [], None)  # type: ignore[union-attr,arg-type]
    seen = sum(len(h.observations) for h in history.values())
    console.print(
        f"\n[bold]optimizer's decision now[/bold] ({seen} observation(s) in the history of "
        f"{instance_dir()})"
    )
    console.print(decision.explain(), markup=False)


@main.command()
@click.option("--module", default="definitions", show_default=True, help="Module defining `defs`.")
@click.option(
    "--home", default=None, help="DAGSTER_HOME to use (default: $DAGSTER_HOME or ./.pz_home)."
)
def register(module: str, home: str | None) -> None:
    """Group new source files into batches and add them as partitions of the instance."""
    _prepare_home(home)
    defs, query = _load(module)
    with dg.DagsterInstance.get() as instance:
        batches = register_partitions(_store(defs), query, instance)
    console.print(f"{len(batches)} batch partition(s) of {query.partitions_def.name}:")
    for b in batches:
        console.print(
            f"  {b.key}  {len(b.files)} files, first {b.files[0].path if b.files else '-'}"
        )


@main.command()
@click.option("--module", default="definitions", show_default=True, help="Module defining `defs`.")
@click.option(
    "--home", default=None, help="DAGSTER_HOME to use (default: $DAGSTER_HOME or ./.pz_home)."
)
@click.option(
    "--partitions",
    "n_parts",
    default=1,
    show_default=True,
    help="How many batches to run (0: all).",
)
@click.option("--verbose", is_flag=True, help="Show Dagster's INFO logs.")
def run(module: str, home: str | None, n_parts: int, verbose: bool) -> None:
    """Register new batches, then materialize the query's job on the first N of them."""
    home_path = _prepare_home(home)
    defs, query = _load(module)
    job = defs.resolve_job_def(query.job.name)
    failed = False
    with dg.DagsterInstance.get() as instance:
        batches = register_partitions(_store(defs), query, instance)
        chosen = batches if n_parts == 0 else batches[:n_parts]
        if query.reference_job is not None:
            console.print("reading the tables the query joins with...")
            ref = defs.resolve_job_def(query.reference_job.name).execute_in_process(
                instance=instance, run_config={} if verbose else QUIET_LOGS, raise_on_error=False
            )
            if not ref.success:
                raise click.ClickException("reading the joined tables failed; rerun with --verbose")
        for src in query.joined_sources:  # a join reads every batch of the folder it joins with
            side = register_partitions(_store(defs), query, instance, src)
            console.print(f"{src.node.path}: {len(side)} batch(es) to join with...")
            side_job = defs.resolve_job_def(src.job.name)
            for batch in side:
                result = side_job.execute_in_process(
                    partition_key=batch.key,
                    instance=instance,
                    run_config={} if verbose else QUIET_LOGS,
                    raise_on_error=False,
                )
                if not result.success:
                    raise click.ClickException(
                        f"batch {batch.key} of {src.node.path} failed (run {result.run_id}); "
                        "rerun with --verbose"
                    )
        console.print(
            f"query [bold]{query.name}[/bold]: {len(batches)} batch(es) registered, running {len(chosen)}"
        )
        for batch in chosen:
            start = time.perf_counter()
            console.print(f"partition {batch.key}: {len(batch.files)} documents...")
            result = job.execute_in_process(
                partition_key=batch.key,
                instance=instance,
                run_config={} if verbose else QUIET_LOGS,
                raise_on_error=False,
            )
            took = time.perf_counter() - start
            status = "[green]ok[/green]" if result.success else "[red]FAILED[/red]"
            console.print(f"partition {batch.key}: {status} in {took:.1f}s (run {result.run_id})")
            failed |= not result.success
            _print_summary(query, instance, batch.key)
        if query.summary_job is not None:
            console.print("aggregating over every materialized batch...")
            summary = defs.resolve_job_def(query.summary_job.name).execute_in_process(
                instance=instance, run_config={} if verbose else QUIET_LOGS, raise_on_error=False
            )
            failed |= not summary.success
    store = _store(defs)
    _print_results(
        query, store, [None] if query.summary_job is not None else [b.key for b in chosen]
    )
    console.print(
        f"\nDagster home: {home_path}  (see the runs: DAGSTER_HOME={home_path} dagster dev -w workspace.yaml)"
    )
    if failed:
        raise SystemExit(1)


def _print_summary(query: CompiledQuery, instance: dg.DagsterInstance, partition: str) -> None:
    table = Table(title=f"operators on partition {partition}", show_lines=False)
    table.add_column("asset")
    table.add_column("model / strategy")
    for k in SUMMARY_KEYS:
        table.add_column(k, justify="right")
    for asset in (a for a in query.assets if a.partitions_def is not None):
        key = asset.key
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        if not recs:
            table.add_row(key.path[-1], "not materialized", *[""] * len(SUMMARY_KEYS))
            continue
        md = recs[0].asset_materialization.metadata  # type: ignore[union-attr]
        vals = []
        for k in SUMMARY_KEYS:
            v = md[k].value if k in md else ""
            vals.append(
                f"{v:.4f}"
                if k == "dollars" and v != ""
                else f"{v:.1f}"
                if isinstance(v, float)
                else str(v)
            )
        model = md["model"].value if "model" in md else ""
        strategy = md["strategy"].value if "strategy" in md else ""
        table.add_row(key.path[-1], f"{model} / {strategy}", *vals)
    console.print(table)


def _print_results(query: CompiledQuery, store: RecordStore, partitions: list[str | None]) -> None:
    out_path = query.output_key.path
    rows = []
    for p in partitions:
        try:
            rows += store.read(out_path, p).to_pylist()
        except PzError as exc:
            console.print(f"[yellow]partition {p}: no output records ({exc})[/yellow]")
    cols = [c for c in query.plan.columns if c not in ("contents", "filename")]
    table = Table(title=f"{query.output_key.to_user_string()}: {len(rows)} record(s)")
    for c in cols:
        table.add_column(c, overflow="fold", max_width=40)
    for r in rows[:20]:
        table.add_row(*["" if r.get(c) is None else str(r.get(c))[:120] for c in cols])
    console.print(table)
    console.print(f"Records (Parquet, one file per partition): {store.root / query.name}")
    console.print(
        f'Queryable in DuckDB: {store.catalog_path}, view "{view_name(out_path)}" '
        f"(and one view per operator)\n"
        f"  python -c \"import duckdb; print(duckdb.connect('{store.catalog_path}', read_only=True)"
        f".sql('select record_id, {', '.join(c for c in cols if c not in ('record_id', 'filename'))} "
        f"from {view_name(out_path)}'))\""
    )


if __name__ == "__main__":
    main()
