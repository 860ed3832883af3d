"""What the commands share: the console, the Dagster home, loading the query (a module or a
YAML file), its record store, and naming its assets and batches."""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import dagster as dg
import yaml
from filelock import FileLock
from pydantic import ValidationError
from rich.console import Console

from pz_dagster.cli_errors import one_line, validation_problems, yaml_problem
from pz_dagster.orchestration.compiler import CompiledQuery, SourceBatches
from pz_dagster.orchestration.component import PzQueryComponent
from pz_dagster.orchestration.keys import STORE_KEY
from pz_dagster.orchestration.store import RecordStore
from pz_dagster.sources import Batch

# Rich assumes 80 columns without a terminal and would cut or wrap tables there: piped output
# gets lines as long as their content instead (and no colour, no cursor movement).
console = Console() if Console().is_terminal else Console(width=10_000)
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SHOWN_KEYS = 12  # known partition keys an error lists before "... and N more"


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


def prepare_home(home: str | None) -> Path:
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


def load(module: str, query_file: Path | None = None) -> tuple[dg.Definitions, CompiledQuery]:
    """The Definitions and the compiled query of ``query_file`` (YAML) or else ``module``."""
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


def record_store(defs: dg.Definitions) -> RecordStore:
    return defs.resources[STORE_KEY].get_store()  # type: ignore[union-attr]


def asset_key(query: CompiledQuery, name: str | None) -> dg.AssetKey:
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


def ordered_batches(
    store: RecordStore, query: CompiledQuery, source: SourceBatches | None = None
) -> list[Batch]:
    """The batches registered for ``source`` (default: the query's main folder), in the order
    `run` takes them (by their first file)."""
    src = source or (query.sources[0] if query.sources else None)
    return sorted(
        store.batches(query.name, src.manifest if src else None),
        key=lambda b: b.files[0].path if b.files else "",
    )


def check_partitions(query: CompiledQuery, wanted: Sequence[str], known: Sequence[str]) -> None:
    """Every key of ``wanted`` names a batch of the query, else one line naming the unknown
    ones and the known keys."""
    unknown = [k for k in wanted if k not in set(known)]
    if not unknown:
        return
    listed = ", ".join(known[:SHOWN_KEYS]) or "none yet"
    if len(known) > SHOWN_KEYS:
        listed += f", ... and {len(known) - SHOWN_KEYS} more"
    names = ", ".join(repr(k) for k in unknown)
    raise click.ClickException(
        f"unknown partition{'s' if len(unknown) > 1 else ''} {names} of query {query.name!r}; "
        f"known: {listed} (`pz-dagster partitions` lists them)"
    )


def print_command(text: str, indent: str = "  ") -> None:
    """A command for the user to copy: on a line of its own, never wrapped nor styled."""
    console.print(indent + text, soft_wrap=True, markup=False, highlight=False)


def ui_command(home: Path, module: str | None) -> str | None:
    """The command that opens the Dagster UI on ``home`` with the query's module as its code
    location (None for a query declared in YAML: it has no code location of its own)."""
    if module is None:
        return None
    bindir = Path(sys.executable).parent
    dg_cli = bindir / "dg" if (bindir / "dg").exists() else shutil.which("dg")
    # `dg dev -m` loads the module as `dagster dev -m` does; plain `dg dev` needs a
    # defs/ folder in the project (`--no-check-yaml` without one).
    tool = f"{dg_cli} dev" if dg_cli else f"{bindir / 'dagster'} dev"
    cwd = shlex.quote(os.getcwd())
    return f"DAGSTER_HOME={shlex.quote(str(home))} {tool} -m {shlex.quote(module)} -d {cwd}"
