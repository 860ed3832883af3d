"""`pz-dagster`: explain, run, inspect and export a declared query outside a long-lived Dagster
deployment (a local instance under DAGSTER_HOME, default ./.pz_home)."""

# The commands' options and help live here, their bodies in the modules next to this one,
# imported when a command runs: `pz-dagster --help` (and `<command> --help`, `--version`)
# imports neither Dagster nor the models nor pyarrow, which take seconds
# (benchmarks/cli_startup.py measures it).

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pz_dagster.cli_errors import PzGroup, verbose_option


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


def json_option(what: str) -> Any:
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


@click.group(cls=PzGroup, help=__doc__)
@click.version_option(package_name="pz-dagster", prog_name="pz-dagster")
@verbose_option
def main() -> None:
    pass


@main.command()
@target
@json_option("the plan and the decision (one object)")
def explain(module: str, query_file: Path | None, home: str | None, as_json: bool) -> None:
    """Print the logical plan, then the optimizer's current decision: candidates with their
    estimates (priors blended with the instance's history), the Pareto frontier of plans, the
    choice and the reason."""
    from pz_dagster.cli.explain import explain_query

    explain_query(module, query_file, home, as_json)


@main.command()
@target
def register(module: str, query_file: Path | None, home: str | None) -> None:
    """Group new source files into batches and add them as partitions of the instance."""
    from pz_dagster.cli.listing import register_batches

    register_batches(module, query_file, home)


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
@click.option(
    "--partition",
    "keys",
    multiple=True,
    metavar="KEY",
    help="Run this batch (repeat for several) instead of the first N; `pz-dagster partitions` "
    "lists the keys.",
)
def run(
    module: str, query_file: Path | None, home: str | None, n_parts: int, keys: tuple[str, ...]
) -> None:
    """Register new batches, then materialize the query's job on the first N of them (or on
    the ones --partition names), with a live display of each operator's progress."""
    ctx = click.get_current_context()
    if keys and ctx.get_parameter_source("n_parts") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--partition and --partitions exclude each other; pass one")
    from pz_dagster.cli.running import run_query

    run_query(module, query_file, home, n_parts, list(keys))


@main.command()
@target
@click.option(
    "--asset",
    "asset_name",
    default=None,
    help="Operator (asset) name; default: every operator of the query.",
)
@click.option("--limit", default=20, show_default=True, help="Latest materializations per asset.")
@json_option("one materialization per line")
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
    from pz_dagster.cli.listing import print_history

    print_history(module, query_file, home, asset_name, limit, as_json)


@main.command()
@target
@click.option("--files", "all_files", is_flag=True, help="List every file of each batch.")
@click.option(
    "--register",
    "register_new",
    is_flag=True,
    help="First group new source files into batches (as `pz-dagster register` does); "
    "without it nothing is registered.",
)
@json_option("one batch per line, with its files")
def partitions(
    module: str,
    query_file: Path | None,
    home: str | None,
    all_files: bool,
    register_new: bool,
    as_json: bool,
) -> None:
    """The query's batches (its partitions): per batch its key, its files, which of the
    query's assets are materialized for it, how many of its documents could not be read and
    how many records an operator failed on, and its latest run."""
    from pz_dagster.cli.listing import print_partitions

    print_partitions(module, query_file, home, all_files, register_new, as_json)


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
    from pz_dagster.cli.export import export_records

    export_records(module, query_file, home, asset_name, fmt, partition, out)


@main.command()
@target
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON labels {record_id: fields | [] | null}, as OptimizerResource's labels_path.",
)
@json_option("the scores and the operators' plans (one object)")
def score(
    module: str, query_file: Path | None, home: str | None, labels_path: Path, as_json: bool
) -> None:
    """Score the query's stored answer against labels it was not given: the filters' precision,
    recall and F1 over the labelled records it read, each labelled field's exact match on the
    relevant records it kept; then the plan each operator ended on, its quality and the direct
    model's as the labelled batches measured them, and the model calls it made and saved."""
    from pz_dagster.cli.scoring import score_query

    score_query(module, query_file, home, labels_path, as_json)
