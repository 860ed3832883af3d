"""`pz-dagster`: explain, run, inspect and export a declared query outside a long-lived Dagster
deployment (a local instance under DAGSTER_HOME, default ./.pz_home)."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import dagster as dg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml
from filelock import FileLock, Timeout
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pz_dagster import metadata_keys as K
from pz_dagster.cli_errors import (
    PzGroup,
    clean,
    is_verbose,
    one_line,
    require_env_vars,
    validation_problems,
    verbose_option,
    yaml_problem,
)
from pz_dagster.errors import PzError
from pz_dagster.metadata_keys import metadata_value
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.compiler import (
    CompiledQuery,
    asset_keys,
    segment_of,
)
from pz_dagster.orchestration.component import PzQueryComponent
from pz_dagster.orchestration.filter_chain import filter_runs
from pz_dagster.orchestration.keys import (
    MODEL_KEY,
    OPTIMIZER_KEY,
    STORE_KEY,
)
from pz_dagster.orchestration.optimization import (
    OptimizerResource,
    materializations,
    read_history,
)
from pz_dagster.orchestration.runs import (
    fail_dead_runs,
    materialized_since,
    partition_lock,
    process_tags,
)
from pz_dagster.orchestration.store import RecordStore, view_name
from pz_dagster.tuning.history import HistoryRecord, holds_history
from pz_dagster.tuning.ordering import estimates_of, order_filters
from pz_dagster.tuning.planning import OPTIMIZED, plan_operator

# Tables stay readable when output is piped (rich assumes 80 columns without a terminal).
console = Console(width=None if Console().is_terminal else 140)
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SUMMARY_KEYS = (
    K.RECORDS_IN,
    K.RECORDS_OUT,
    K.FAILURES,
    K.INPUT_TOKENS,
    K.OUTPUT_TOKENS,
    K.DOLLARS,
    K.SECONDS,
)


# A new home's dagster.yaml. The run queue of the daemon (sensors, backfills, the UI) starts one
# run per batch at a time, so two runs of one batch never both pay for it; `pz-dagster run`
# takes turns per batch with a file lock (orchestration/runs.py).
NEW_HOME_CONFIG = """telemetry:
  enabled: false
concurrency:
  runs:
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
"""


def _prepare_home(home: str | None) -> Path:
    """The Dagster home, made on first use. Two commands started at once on a new home take
    turns (a lock file in the home): each would otherwise write dagster.yaml and create
    Dagster's SQLite storage at the same time, and two stamps of its schema version leave a
    home no later command can open."""
    path = Path(home or os.environ.get("DAGSTER_HOME") or ".pz_home").resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(path)
    with FileLock(path / ".pz-home.lock"):
        cfg = path / "dagster.yaml"
        if not cfg.exists():
            tmp = path / f".dagster.yaml.{os.getpid()}"
            tmp.write_text(NEW_HOME_CONFIG)
            os.replace(tmp, cfg)
        with dg.DagsterInstance.get():  # creates the storage while this process holds the lock
            pass
    return path


def instance_dir() -> str:
    return os.environ.get("DAGSTER_HOME", "")


def target(command: Any) -> Any:
    """The options every command shares: which query (a module or a YAML file) and which
    Dagster home; and --verbose."""
    command = verbose_option(command)  # applied first: listed after them
    for option in reversed(
        (
            click.option(
                "--module",
                default="definitions",
                show_default=True,
                help="Module defining `defs` and one compiled query.",
            ),
            click.option(
                "--query",
                "query_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=None,
                help="A query declared in YAML (a PzQueryComponent defs.yaml, or its "
                "attributes) instead of --module; relative paths are from the file's folder.",
            ),
            click.option(
                "--home",
                default=None,
                help="DAGSTER_HOME to use (default: $DAGSTER_HOME or ./.pz_home).",
            ),
        )
    ):
        command = option(command)
    return command


def _load_yaml(path: Path) -> tuple[dg.Definitions, CompiledQuery]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:  # its own message spans lines and quotes the file
        raise click.ClickException(f"{path}: {yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: expected a mapping with the query's attributes")
    # a component's defs.yaml (type + attributes), its attributes block alone, or the bare
    # attributes
    attributes = data.get("attributes", data) if {"type", "attributes"} & set(data) else data
    try:
        component = PzQueryComponent.resolve_from_yaml(yaml.safe_dump(attributes))
    except Exception as exc:  # pydantic and Dagster's resolution errors both say what is wrong
        # from None: a pydantic traceback would print input values, and one may be a key
        problems = validation_problems(exc) if isinstance(exc, ValidationError) else one_line(exc)
        raise click.ClickException(f"{path} is not a valid query: {problems}") from None
    return component.build_query(path.parent.resolve())


def _load(module: str, query_file: Path | None = None) -> tuple[dg.Definitions, CompiledQuery]:
    if query_file is not None:
        return _load_yaml(query_file)
    sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:  # the module exists; something it imports is not
            raise click.ClickException(
                f"module {module!r} imports {exc.name!r}, which is not installed: install it "
                "or fix the import"
            ) from exc
        raise click.ClickException(
            f"cannot import module {module!r} from {os.getcwd()}: run from the folder that "
            "holds it, or pass --module"
        ) from None
    except Exception as exc:  # the query's own code failed: where and why, in one line
        raise click.ClickException(
            f"importing module {module!r} failed: {one_line(exc)} (--verbose shows where)"
        ) from exc
    defs = getattr(mod, "defs", None)
    queries = [v for v in vars(mod).values() if isinstance(v, CompiledQuery)]
    if not isinstance(defs, dg.Definitions) or len(queries) != 1:
        raise click.ClickException(
            f"module {module!r} must define `defs` (dagster Definitions) and exactly one compiled query"
        )
    return defs, queries[0]


def _store(defs: dg.Definitions) -> RecordStore:
    return defs.resources[STORE_KEY].get_store()  # type: ignore[union-attr]


def _asset_key(query: CompiledQuery, name: str | None) -> dg.AssetKey:
    """The asset of operator ``name`` (default: the query's result), or an error listing them."""
    if name is None:
        return query.output_key
    keys = [k for a in query.assets for k in a.keys]
    for k in keys:
        if name in (k.path[-1], k.to_user_string()):
            return k
    raise click.BadParameter(
        f"no asset {name!r} in query {query.name!r}; choose one of: "
        + ", ".join(k.path[-1] for k in keys),
        param_hint="--asset",
    )


@click.group(cls=PzGroup, help=__doc__)
@verbose_option
def main() -> None:
    pass


@main.command()
@target
def explain(module: str, query_file: Path | None, home: str | None) -> None:
    """Print the logical plan, then the optimizer's current decision: candidates with their
    estimates (priors blended with the instance's history), the Pareto frontier of plans, the
    choice and the reason."""
    _prepare_home(home)
    defs, query = _load(module, query_file)
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
    _print_filter_orders(chain, history, model.profiles(), optimizer)  # type: ignore[arg-type]


def _print_filter_orders(
    chain: tuple[Any, ...],
    history: dict[str, Any],
    profiles: list[Any],
    optimizer: OptimizerResource,
) -> None:
    """The order each run of adjacent semantic filters would take on the next batch."""
    for run in filter_runs(chain):
        decisions = {
            f.name: plan_operator(f, chain, history, profiles, optimizer, [], None) for f in run
        }
        names = [f.name for f in run]
        ranked = order_filters(estimates_of(names, decisions, optimizer.get_policy()))
        console.print(
            "\n[bold]filter order of the next batch[/bold]: "
            + ", ".join(f"{f.name} (rank {f.rank:.3g} {f.basis})" for f in ranked)
        )


@main.command()
@target
def register(module: str, query_file: Path | None, home: str | None) -> None:
    """Group new source files into batches and add them as partitions of the instance."""
    _prepare_home(home)
    defs, query = _load(module, query_file)
    with dg.DagsterInstance.get() as instance:
        batches = register_partitions(_store(defs), query, instance)
    console.print(f"{len(batches)} batch partition(s) of {query.partitions_def.name}:")
    for b in batches:
        console.print(
            f"  {b.key}  {len(b.files)} files, first {b.files[0].path if b.files else '-'}"
        )


@main.command()
@target
@click.option(
    "--partitions",
    "n_parts",
    default=1,
    show_default=True,
    type=click.IntRange(min=0),  # a negative count would slice off the last batches
    help="How many batches to run, the first N (0: all).",
)
def run(module: str, query_file: Path | None, home: str | None, n_parts: int) -> None:
    """Register new batches, then materialize the query's job on the first N of them."""
    # A batch materialized by another process after this moment is not run again. Taken
    # first: preparing the home waits on a command that started at the same moment.
    started = time.time()
    verbose = is_verbose()
    home_path = _prepare_home(home)
    defs, query = _load(module, query_file)
    require_env_vars(defs.resources)  # else Dagster fails the run with a config traceback
    job = defs.resolve_job_def(query.job.name)
    failed: list[str] = []  # "<partition> (<assets>)" of each failed run, for the last line
    not_run = ""  # the partitions left when the model endpoint is down
    with dg.DagsterInstance.get() as instance:
        _fail_dead_runs(instance)
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
            with _partition_turn(_store(defs), query, batch.key):
                other = materialized_since(
                    instance, sorted(job.asset_layer.selected_asset_keys), batch.key, started
                )
                if other is not None:  # another pz-dagster run did it while this one ran
                    console.print(f"partition {batch.key}: materialized meanwhile by run {other}")
                    continue
                result = job.execute_in_process(
                    partition_key=batch.key,
                    instance=instance,
                    run_config={} if verbose else QUIET_LOGS,
                    raise_on_error=False,
                    tags=process_tags(),
                )
            took = time.perf_counter() - start
            status = "[green]ok[/green]" if result.success else "[red]FAILED[/red]"
            console.print(f"partition {batch.key}: {status} in {took:.1f}s (run {result.run_id})")
            if not result.success:
                failed.append(f"{batch.key} ({_report_failed_steps(query, result)})")
            _print_summary(query, instance, batch.key)
            if not result.success and _endpoint_down(result):
                left = chosen[chosen.index(batch) + 1 :]
                if left:  # every one of them would wait on the same dead endpoint
                    not_run = f"{len(left)} not run: the model endpoint gave no answer"
                    console.print(f"[red]{not_run}[/red]; fix it and run again")
                    break
        if query.summary_job is not None:
            console.print("aggregating over every materialized batch...")
            summary = defs.resolve_job_def(query.summary_job.name).execute_in_process(
                instance=instance, run_config={} if verbose else QUIET_LOGS, raise_on_error=False
            )
            if not summary.success:
                failed.append(f"summary ({_report_failed_steps(query, summary)})")
    store = _store(defs)
    _print_results(
        query, store, [None] if query.summary_job is not None else [b.key for b in chosen]
    )
    console.print(
        f"\nDagster home: {home_path}  (see the runs: DAGSTER_HOME={home_path} dagster dev -w workspace.yaml)"
    )
    if failed:  # exit status 1, and which partitions failed where, as the last line
        parts = [f for f in failed if not f.startswith("summary (")]
        raise click.ClickException(
            f"{len(parts)} of {len(chosen)} partition(s) failed: {', '.join(failed)}; "
            + (f"{not_run}; " if not_run else "")
            + "the reasons are above (--verbose for Dagster's logs)"
        )


@contextlib.contextmanager
def _partition_turn(store: RecordStore, query: CompiledQuery, partition: str) -> Iterator[None]:
    """Hold the batch's lock while materializing it; say so when another process holds it."""
    lock = partition_lock(store, query.name, partition)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        console.print(f"partition {partition}: another process is materializing it; waiting...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _fail_dead_runs(instance: dg.DagsterInstance) -> None:
    for run_id in fail_dead_runs(instance):
        console.print(f"run {run_id}: the process that ran it is gone; marked failed")


def _step_failures(result: dg.ExecuteInProcessResult) -> Iterator[tuple[str, Any]]:
    """(step key, failure data) of each failed step of a run."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            yield event.step_key or "?", event.step_failure_data


def _endpoint_down(result: dg.ExecuteInProcessResult) -> bool:
    """Whether a step failed because the model endpoint gave no answer (dead, hanging, its
    circuit open), rather than because of the batch's documents."""
    for _, data in _step_failures(result):
        user = data.user_failure_data
        if user is not None and "transport_failures" in (user.metadata or {}):
            return True
        if data.error is not None and data.error.cls_name == "ModelError":
            return True
    return False


def _report_failed_steps(query: CompiledQuery, result: dg.ExecuteInProcessResult) -> str:
    """Print why each asset of a failed run failed (a dagster.Failure's description, else the
    error's message, on one line); returns the assets' names."""
    names = []
    for step, data in _step_failures(result):
        user = data.user_failure_data
        why = user.description if user and user.description else ""
        why = why or (data.error.message if data.error else "")
        name = step.removeprefix(f"{query.name}__")
        names.append(name)
        why = clean(why).removeprefix(f"{name}: ")  # pz's Failure descriptions start with it
        console.print(f"  [red]{escape(name)}[/red]: {escape(why[:400])}")
    return ", ".join(names) or f"run {result.run_id}"


def _print_summary(query: CompiledQuery, instance: dg.DagsterInstance, partition: str) -> None:
    table = Table(title=f"operators on partition {partition}", show_lines=False)
    table.add_column("asset")
    table.add_column("model / strategy")
    for k in SUMMARY_KEYS:
        table.add_column(k, justify="right")
    per_batch = [a for a in query.assets if a.partitions_def is not None]
    for key in (k for a in per_batch for k in asset_keys(a)):
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        if not recs:
            table.add_row(key.path[-1], "not materialized", *[""] * len(SUMMARY_KEYS))
            continue
        md = recs[0].asset_materialization.metadata  # type: ignore[union-attr]
        vals = []
        for k in SUMMARY_KEYS:
            v = metadata_value(md, k, "")
            vals.append(
                f"{v:.4f}"
                if k == K.DOLLARS and v != ""
                else f"{v:.1f}"
                if isinstance(v, float)
                else str(v)
            )
        model = metadata_value(md, K.MODEL, "")
        strategy = metadata_value(md, K.STRATEGY, "")
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


HISTORY_COLUMNS = (
    K.MODEL,
    K.STRATEGY,
    K.RECORDS_IN,
    K.RECORDS_OUT,
    K.SELECTIVITY,
    K.FAILURES,
    K.INPUT_TOKENS,
    K.OUTPUT_TOKENS,
    K.DOLLARS,
    K.SECONDS,
    K.QUALITY,
    K.QUALITY_SOURCE,
)


@main.command()
@target
@click.option(
    "--asset",
    "asset_name",
    default=None,
    help="Operator (asset) name; default: every operator of the query.",
)
@click.option("--limit", default=20, show_default=True, help="Latest materializations per asset.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of tables.")
def history(
    module: str,
    query_file: Path | None,
    home: str | None,
    asset_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The configs each operator ran with and what was observed: per materialization (newest
    first) the partition, model and strategy, records, tokens, dollars, seconds and the quality
    measured; the optimizer learns from exactly these."""
    _prepare_home(home)
    defs, query = _load(module, query_file)
    keys = (
        [_asset_key(query, asset_name)] if asset_name else [k for a in query.assets for k in a.keys]
    )
    with dg.DagsterInstance.get() as instance:
        _fail_dead_runs(instance)
        rows: list[dict[str, Any]] = []
        for key in keys:
            for rec, mat in materializations(instance, key, limit):
                md = dict(mat.metadata)
                where = f"{key.to_user_string()}, run {rec.run_id}"
                record = HistoryRecord.from_metadata(md, where) if holds_history(md) else None
                rows.append(
                    {
                        "asset": key.path[-1],
                        "time": dt.datetime.fromtimestamp(rec.timestamp, dt.UTC).isoformat(
                            timespec="seconds"
                        ),
                        "partition": mat.partition,
                        "run_id": rec.run_id,
                        **{c: metadata_value(md, c) for c in HISTORY_COLUMNS},
                        "config": record.config_dict() if record else {},
                    }
                )
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    if not rows:
        console.print(
            f"no materializations of query {query.name!r} in {instance_dir()}: "
            "run `pz-dagster run` (or materialize from the UI) first"
        )
        return
    for key in keys:
        mine = [r for r in rows if r["asset"] == key.path[-1]]
        if not mine:
            continue
        table = Table(title=f"{key.to_user_string()}: {len(mine)} materialization(s)")
        for c in ("time", "partition", *HISTORY_COLUMNS):
            table.add_column(c, justify="right" if c not in ("model", "strategy") else "left")
        for r in mine:
            table.add_row(
                *[
                    ""
                    if r[c] is None
                    else f"{r[c]:.4f}"
                    if c == K.DOLLARS
                    else f"{r[c]:.2f}"
                    if isinstance(r[c], float)
                    else str(r[c])
                    for c in ("time", "partition", *HISTORY_COLUMNS)
                ]
            )
        console.print(table)


@main.command()
@target
@click.option(
    "--asset",
    "asset_name",
    default=None,
    help="Operator (asset) to export; default: the query's result.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet"]),
    default=None,
    help="Output format; default: from the file's suffix.",
)
@click.option("--partition", default=None, help="One batch only; default: every batch.")
@click.argument("out", type=click.Path(dir_okay=False, writable=True, path_type=Path))
def export(
    module: str,
    query_file: Path | None,
    home: str | None,
    asset_name: str | None,
    fmt: str | None,
    partition: str | None,
    out: Path,
) -> None:
    """Write an asset's records to OUT as CSV or Parquet: every materialized batch (each
    document in its newest version), or one batch with --partition."""
    _prepare_home(home)
    defs, query = _load(module, query_file)
    key = _asset_key(query, asset_name)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in ("csv", "parquet"):
        raise click.BadParameter(
            f"cannot tell the format of {out.name!r}; name it .csv or .parquet or pass --format",
            param_hint="--format",
        )
    store = _store(defs)
    partitioned = next(a for a in query.assets if key in a.keys).partitions_def
    source = next((s for s in query.sources if s.partitions_def == partitioned), None)
    try:
        if partitioned is None:
            table = store.read(key.path, None)
        elif partition is not None:
            table = store.read(key.path, partition)
        else:
            assert source is not None
            table, missing = store.read_batches(key.path, query.name, source.manifest)
            if missing:
                console.print(
                    f"[yellow]{len(missing)} batch(es) not materialized yet are not included; "
                    "run them with `pz-dagster run --partitions 0`[/yellow]"
                )
    except PzError as exc:
        raise click.ClickException(f"{exc}; run `pz-dagster run` first") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, out)
    else:
        # CSV has no lists: list columns are written as JSON text.
        for i, field in enumerate(table.schema):
            if str(field.type).startswith("list"):
                texts = [None if v is None else json.dumps(v) for v in table.column(i).to_pylist()]
                table = table.set_column(i, field.name, pa.array(texts, type=pa.string()))
        pacsv.write_csv(table, out)
    console.print(f"{table.num_rows} record(s) of {key.to_user_string()} written to {out}")


if __name__ == "__main__":
    main()
