"""`pz-dagster run`: register new batches, materialize the query's job on some of them in this
process (one batch at a time, with the operators' progress live), then print what each
operator did and the records it produced."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import dagster as dg
from filelock import Timeout
from rich.markup import escape
from rich.table import Table

from pz_dagster import metadata_keys as K
from pz_dagster.cli.common import (
    QUIET_LOGS,
    check_partitions,
    console,
    load,
    prepare_home,
    print_command,
    record_store,
    ui_command,
)
from pz_dagster.cli.progress import showing_progress
from pz_dagster.cli_errors import clean, is_verbose, require_env_vars
from pz_dagster.errors import PzError
from pz_dagster.metadata_keys import metadata_value
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.compiler import CompiledQuery
from pz_dagster.orchestration.optimization import latest_materialization
from pz_dagster.orchestration.runs import (
    fail_dead_runs,
    materialized_since,
    partition_lock,
    process_tags,
)
from pz_dagster.orchestration.store import RecordStore, view_name
from pz_dagster.sources import Batch

SUMMARY_KEYS = (
    K.RECORDS_IN,
    K.RECORDS_OUT,
    K.FAILURES,
    K.INPUT_TOKENS,
    K.OUTPUT_TOKENS,
    K.DOLLARS,
    K.SECONDS,
)


@dataclass
class Session:
    """One `pz-dagster run`: the query, its definitions, the instance and what failed so far."""

    defs: dg.Definitions
    query: CompiledQuery
    instance: dg.DagsterInstance
    started: float  # a batch materialized by another process after this is not run again
    verbose: bool
    failed: list[str] = field(default_factory=list)  # "<partition> (<assets>)" per failed run
    not_run: str = ""  # the partitions left when the model endpoint is down

    @property
    def store(self) -> RecordStore:
        return record_store(self.defs)

    def execute(self, job_name: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(job_name).execute_in_process(
            instance=self.instance,
            run_config={} if self.verbose else QUIET_LOGS,
            raise_on_error=False,
            **kwargs,
        )


def run_query(
    module: str, query_file: Path | None, home: str | None, n_parts: int, keys: list[str]
) -> None:
    # Taken first: preparing the home waits on a command that started at the same moment.
    started = time.time()
    home_path = prepare_home(home)
    defs, query = load(module, query_file)
    require_env_vars(defs.resources)  # else Dagster fails the run with a config traceback
    with dg.DagsterInstance.get() as instance:
        session = Session(defs, query, instance, started, is_verbose())
        _fail_dead_runs(instance)
        batches = register_partitions(session.store, query, instance)
        chosen = choose_batches(query, batches, n_parts, keys)
        _run_inputs(session)
        console.print(
            f"query [bold]{query.name}[/bold]: {len(batches)} batch(es) registered, "
            f"running {len(chosen)}"
        )
        for i, batch in enumerate(chosen):
            if _run_batch(session, batch) and (left := chosen[i + 1 :]):
                # every batch left would wait on the same dead endpoint
                session.not_run = f"{len(left)} not run: the model endpoint gave no answer"
                console.print(f"[red]{session.not_run}[/red]; fix it and run again")
                break
        if query.summary_job is not None:
            console.print("aggregating over every materialized batch...")
            summary = session.execute(query.summary_job.name)
            if not summary.success:
                session.failed.append(f"summary ({_report_failed_steps(query, summary)})")
    _print_results(
        query, session.store, [None] if query.summary_job is not None else [b.key for b in chosen]
    )
    _print_where(home_path, None if query_file else module)
    if session.failed:  # exit status 1, and which partitions failed where, as the last line
        parts = [f for f in session.failed if not f.startswith("summary (")]
        raise click.ClickException(
            f"{len(parts)} of {len(chosen)} partition(s) failed: {', '.join(session.failed)}; "
            + (f"{session.not_run}; " if session.not_run else "")
            + "the reasons are above (--verbose for Dagster's logs)"
        )


def choose_batches(
    query: CompiledQuery, batches: list[Batch], n_parts: int, keys: list[str]
) -> list[Batch]:
    """The batches named by ``keys`` (in that order), else the first ``n_parts`` (0: all)."""
    if not keys:
        return batches if n_parts == 0 else batches[:n_parts]
    check_partitions(query, keys, [b.key for b in batches])
    by_key = {b.key: b for b in batches}
    return [by_key[k] for k in dict.fromkeys(keys)]


def _run_inputs(session: Session) -> None:
    """Read what the query joins with: its tables, then every batch of the folders."""
    query = session.query
    if query.reference_job is not None:
        console.print("reading the tables the query joins with...")
        if not session.execute(query.reference_job.name).success:
            raise click.ClickException("reading the joined tables failed; rerun with --verbose")
    for src in query.joined_sources:  # a join reads every batch of the folder it joins with
        side = register_partitions(session.store, query, session.instance, src)
        console.print(f"{src.node.path}: {len(side)} batch(es) to join with...")
        for batch in side:
            result = session.execute(src.job.name, partition_key=batch.key)
            if not result.success:
                raise click.ClickException(
                    f"batch {batch.key} of {src.node.path} failed (run {result.run_id}); "
                    "rerun with --verbose"
                )


def _run_batch(session: Session, batch: Batch) -> bool:
    """Materialize one batch (unless another process did meanwhile) and print what its
    operators did; whether it failed because the model endpoint gave no answer."""
    query, instance = session.query, session.instance
    start = time.perf_counter()
    console.print(f"partition {batch.key}: {len(batch.files)} documents...")
    with _partition_turn(session.store, query, batch.key):
        job = session.defs.resolve_job_def(query.job.name)
        other = materialized_since(
            instance, sorted(job.asset_layer.selected_asset_keys), batch.key, session.started
        )
        if other is not None:  # another pz-dagster run did it while this one ran
            console.print(f"partition {batch.key}: materialized meanwhile by run {other}")
            return False
        with showing_progress(console):
            result = session.execute(query.job.name, partition_key=batch.key, tags=process_tags())
    took = time.perf_counter() - start
    status = "[green]ok[/green]" if result.success else "[red]FAILED[/red]"
    console.print(f"partition {batch.key}: {status} in {took:.1f}s (run {result.run_id})")
    if not result.success:
        session.failed.append(f"{batch.key} ({_report_failed_steps(query, result)})")
    _print_summary(query, instance, batch.key)
    return not result.success and _endpoint_down(result)


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


def _cell(key: str, value: Any) -> str:
    if value == "" or value is None:
        return ""
    if key == K.DOLLARS:
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _print_summary(query: CompiledQuery, instance: dg.DagsterInstance, partition: str) -> None:
    table = Table(title=f"operators on partition {partition}", show_lines=False)
    table.add_column("asset", overflow="fold")
    table.add_column("model / strategy", overflow="fold")
    for k in SUMMARY_KEYS:
        table.add_column(k, justify="right", overflow="fold")
    for key in query.batch_asset_keys:
        latest = latest_materialization(instance, key, partition)
        if latest is None:
            table.add_row(key.path[-1], "not materialized", *[""] * len(SUMMARY_KEYS))
            continue
        md = latest[1].metadata
        model = metadata_value(md, K.MODEL, "")
        strategy = metadata_value(md, K.STRATEGY, "")
        table.add_row(
            key.path[-1],
            f"{model} / {strategy}",
            *[_cell(k, metadata_value(md, k, "")) for k in SUMMARY_KEYS],
        )
    console.print(table)


def _print_results(query: CompiledQuery, store: RecordStore, partitions: list[str | None]) -> None:
    out_path = query.output_key.path
    rows = []
    for p in partitions:
        try:
            rows += store.read(out_path, p).to_pylist()
        except PzError as exc:
            console.print(f"[yellow]partition {p}: no output records ({escape(str(exc))})[/yellow]")
    cols = [c for c in query.plan.columns if c not in ("contents", "filename", "provenance")]
    table = Table(title=f"{query.output_key.to_user_string()}: {len(rows)} record(s)")
    for c in cols:
        table.add_column(c, overflow="fold", max_width=40)
    for r in rows[:20]:
        table.add_row(*["" if r.get(c) is None else str(r.get(c))[:120] for c in cols])
    console.print(table)
    console.print(f"Records (Parquet, one file per partition): {store.root / query.name}")
    console.print(
        f'Queryable in DuckDB: {store.catalog_path}, view "{view_name(out_path)}" '
        "(and one view per operator):",
        soft_wrap=True,
    )
    shown = ", ".join(c for c in cols if c not in ("record_id", "filename"))
    sql = f"select record_id, {shown} from {view_name(out_path)}"
    print_command(
        f"python -c \"import duckdb; print(duckdb.connect('{store.catalog_path}', "
        f"read_only=True).sql('{sql}'))\""
    )


def _print_where(home: Path, module: str | None) -> None:
    console.print(f"\nDagster home: {home}")
    command = ui_command(home, module)
    if command:
        console.print("See the runs, assets and partitions in the Dagster UI:")
        print_command(command)
