"""The `pz-dagster` console script, invoked as a user would: help, run, explain, history,
export and the errors that say what to fix. The query calls the loopback simulator."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pz_dagster import metadata_keys as K
from pz_dagster.orchestration import RecordStore
from pz_dagster.testing import OpenAISimulator, SimulatedModel

SCRIPT = Path(sys.executable).parent / "pz-dagster"

QUERY_MODULE = """
import os
from pz_dagster import Dataset
from pz_dagster.orchestration import OpenAICompatibleModel, build_definitions

defs, query = build_definitions(
    Dataset.from_directory(os.environ["PZQ_FOLDER"], batch_size=2)
    .sem_filter("The email mentions Raptor", depends_on="contents", name="raptor")
    .sem_add_columns(
        [{"name": "sender", "type": "str", "desc": "The sender's email address"},
         {"name": "tags", "type": "list[str]", "desc": "Topics of the email"}],
        depends_on="contents",
        name="sender",
    ),
    "cliq",
    model=OpenAICompatibleModel(model="sim", base_url=os.environ["PZQ_SIM"]),
    store_root=os.environ["PZQ_STORE"],
)
"""


@pytest.fixture
def project(tmp_path: Path, mini_emails: Path):
    (tmp_path / "pzq.py").write_text(QUERY_MODULE)
    with OpenAISimulator({"sim": SimulatedModel()}) as sim:
        env = {
            **os.environ,
            "PZQ_FOLDER": str(mini_emails),
            "PZQ_SIM": sim.base_url,
            "PZQ_STORE": str(tmp_path / "store"),
            "DAGSTER_HOME": str(tmp_path / "home"),
            "DAGSTER_DISABLE_TELEMETRY": "1",
        }

        def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
            done = subprocess.run(
                [str(SCRIPT), *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if ok:
                assert done.returncode == 0, done.stdout + done.stderr
            return done

        yield cli, tmp_path


def test_every_command_has_help():
    assert SCRIPT.exists(), "the console script is installed with the package"
    top = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    commands = ("explain", "register", "run", "history", "partitions", "export")
    assert all(c in top.stdout for c in commands)
    for c in commands:
        sub = subprocess.run([str(SCRIPT), c, "--help"], capture_output=True, text=True, check=True)
        assert "--module" in sub.stdout and "--home" in sub.stdout


HELP_IMPORTS = """
import sys
from click.testing import CliRunner
from pz_dagster.cli import main
for args in (["--help"], ["--version"], ["run", "--help"], ["partitions", "--help"]):
    assert CliRunner().invoke(main, args).exit_code == 0, args
heavy = ("dagster", "pyarrow", "sklearn", "openai", "duckdb", "pz_dagster.orchestration",
         "pz_dagster.operators", "pz_dagster.models", "rich.table")
print(sorted(m for m in heavy if m in sys.modules))
"""


def test_help_and_version_import_nothing_heavy():
    """What makes `pz-dagster --help` take seconds is left to the commands that use it
    (benchmarks/cli_startup.py times it)."""
    out = subprocess.run(
        [sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
    version = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True)
    expected = f"pz-dagster, version {importlib.metadata.version('pz-dagster')}"
    assert version.returncode == 0 and version.stdout.strip() == expected


def test_run_then_history_and_export(project):
    cli, root = project
    run = cli("run", "--module", "pzq", "--partitions", "0")
    assert "2 batch(es) registered, running 2" in run.stdout

    hist = cli("history", "--module", "pzq", "--json")
    rows = [json.loads(line) for line in hist.stdout.splitlines()]
    by_asset: dict[str, list] = {}
    for r in rows:
        by_asset.setdefault(r["asset"], []).append(r)
    assert sorted(by_asset) == ["documents", "raptor", "sender"]
    assert all(len(v) == 2 for v in by_asset.values())  # one per batch
    assert {r["model"] for r in by_asset["sender"]} == {"sim"}
    assert all(r["config"]["strategy"] == "direct" for r in by_asset["raptor"])
    table = cli("history", "--module", "pzq", "--asset", "raptor")
    assert "cliq/raptor: 2 materialization(s)" in table.stdout and "sim" in table.stdout

    store = RecordStore(root / "store")
    expected = sorted(
        r["record_id"]
        for b in store.batches("cliq")
        for r in store.read(["cliq", "sender"], b.key).to_pylist()
    )
    assert len(expected) == 4
    done = cli("export", "--module", "pzq", str(root / "out" / "senders.parquet"))
    assert "4 record(s) of cliq/sender written" in done.stdout
    parquet = pq.read_table(root / "out" / "senders.parquet").to_pylist()
    assert sorted(r["record_id"] for r in parquet) == expected
    cli("export", "--module", "pzq", "--asset", "raptor", str(root / "raptor.csv"))
    csv = pacsv.read_csv(root / "raptor.csv").to_pylist()
    assert sorted(r["record_id"] for r in csv) == expected  # the filter kept all 4
    cli("export", "--module", "pzq", str(root / "senders.csv"))
    tags = pacsv.read_csv(root / "senders.csv").column("tags").to_pylist()
    assert "[]" in tags  # a list column is written as JSON text (empty: the failed records)
    assert all(t in (None, "") or isinstance(json.loads(t), list) for t in tags)

    explain = cli("explain", "--module", "pzq")
    assert "optimizer's decision now" in explain.stdout and "observation(s)" in explain.stdout
    assert_piped_output_keeps_whole_rows(cli, run.stdout, root)


def assert_piped_output_keeps_whole_rows(cli, run_out: str, root: Path) -> None:
    """Piped, tables keep every row on one line and every value whole (rich would assume 80
    columns and wrap or cut them), and the commands to copy stay on one line each."""
    lines = run_out.splitlines()
    duckdb = [line for line in lines if 'python -c "import duckdb' in line]
    assert len(duckdb) == 1 and duckdb[0].endswith("from cliq__sender'))\"")
    ui = [line for line in lines if line.lstrip().startswith("DAGSTER_HOME=")]
    assert len(ui) == 1 and f" dev -m pzq -d {root}" in ui[0], run_out
    assert "dagster dev -w" not in run_out
    keys = sorted({b.key for b in RecordStore(root / "store").batches("cliq")})
    hist = cli("history", "--module", "pzq", "--asset", "raptor").stdout.splitlines()
    for key in keys:  # each materialization's row whole on one line: key, model, strategy
        assert any(key in line and " sim " in line and " direct " in line for line in hist), hist
    assert any(K.QUALITY_SOURCE in line and K.INPUT_TOKENS in line for line in hist), hist
    explain = cli("explain", "--module", "pzq").stdout.splitlines()
    assert any("direct:sim" in line and "chosen, champion" in line for line in explain), explain
    assert not any(line.lstrip().startswith("|---") for line in explain)  # no raw markdown
    decision = json.loads(cli("explain", "--module", "pzq", "--json").stdout)
    assert decision["query"] == "cliq" and "raptor=direct:sim" in decision["chosen"]
    (raptor,) = decision["candidates"]["raptor"]
    assert raptor["candidate"] == "direct:sim" and raptor["roles"] == ["chosen", "champion"]
    assert raptor["records_seen"] > 0 and decision["observations"] > 0


def test_partitions_lists_the_batches_and_run_takes_the_ones_named(project):
    cli, root = project
    store = RecordStore(root / "store")
    empty = cli("partitions", "--module", "pzq")
    assert "no batches of query 'cliq' yet" in empty.stdout
    assert store.batches("cliq") == []  # listing registers nothing
    rows = [
        json.loads(x)
        for x in cli("partitions", "--module", "pzq", "--register", "--json").stdout.splitlines()
    ]
    assert [r["files"] for r in rows] == [
        ["a_raptor.txt", "b_lunch.txt"],
        ["c_latin1.txt", "d_empty.txt"],
    ]
    assert all(r["materialized"] == [] and r["latest_run"] is None for r in rows)
    first, second = (r["key"] for r in rows)

    run = cli("run", "--module", "pzq", "--partition", second)
    assert "2 batch(es) registered, running 1" in run.stdout
    assert f"partition {second}: ok" in run.stdout and f"partition {first}" not in run.stdout
    after = {
        r["key"]: r
        for r in map(json.loads, cli("partitions", "--module", "pzq", "--json").stdout.splitlines())
    }
    assert after[first]["materialized"] == [] and after[first]["latest_run"] is None
    assert after[second]["materialized"] == ["documents", "raptor", "sender"]
    assert after[second]["latest_run"]["status"] == "SUCCESS"
    assert after[second]["read_errors"] == 2  # the undecodable file and the empty one
    assert after[second]["record_failures"] == 0
    table = cli("partitions", "--module", "pzq").stdout
    row_of = {k: next(line for line in table.splitlines() if k in line) for k in (first, second)}
    assert "a_raptor.txt" in row_of[first] and "b_lunch.txt" in row_of[first]
    assert " none " in row_of[first] and " all 3 " in row_of[second] and "SUCCESS" in row_of[second]
    listed = cli("partitions", "--module", "pzq", "--files").stdout
    assert all(f in listed for f in ("a_raptor.txt", "b_lunch.txt", "c_latin1.txt", "d_empty.txt"))

    for command in (("run",), ("export", str(root / "x.csv"))):
        bad = cli(*command, "--module", "pzq", "--partition", "nope", ok=False)
        assert bad.returncode == 1 and "Traceback" not in bad.stdout + bad.stderr
        (line,) = bad.stderr.strip().splitlines()
        assert line.startswith("Error: unknown partition 'nope' of query 'cliq'; known: ")
        assert first in line and second in line and "pz-dagster partitions" in line


REPO = Path(__file__).resolve().parents[1]


def test_a_missing_demo_folder_and_an_unknown_partition_are_one_line(tmp_path, mini_emails):
    """The demo's query (definitions/) as a user runs it, on a folder that is not there and
    with a partition key that is not one of its batches."""

    def cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PZ_ENRON_DIR": str(folder), "PZ_DAGSTER_STORE": str(tmp_path / "s")}
        return subprocess.run(
            [str(SCRIPT), *args, "--home", str(tmp_path / "home")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    missing = tmp_path / "no_such_folder"
    run = cli(missing, "run")
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line == f"Error: source folder '{missing}' does not exist or is not a directory"
    explain = cli(missing, "explain")  # the plan needs no documents: said, not refused
    assert explain.returncode == 0 and "Traceback" not in explain.stdout + explain.stderr
    (warning,) = explain.stderr.strip().splitlines()
    assert warning.startswith(f"Warning: source folder '{missing}' does not exist")
    assert "optimizer's decision now" in explain.stdout

    unknown = cli(mini_emails, "run", "--partition", "nope")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stdout + unknown.stderr
    (line,) = unknown.stderr.strip().splitlines()
    assert line.startswith("Error: unknown partition 'nope' of query 'enron'; known: 0001-")
    assert "(`pz-dagster partitions` lists them)" in line


def test_errors_say_what_to_fix(project):
    cli, root = project
    before = cli("export", "--module", "pzq", str(root / "x.csv"), ok=False)
    assert before.returncode == 1 and "run `pz-dagster run` first" in before.stderr
    unknown = cli("history", "--module", "pzq", "--asset", "nope", ok=False)
    assert unknown.returncode == 2
    assert "no asset 'nope'" in unknown.stderr and "raptor" in unknown.stderr
    suffix = cli("export", "--module", "pzq", str(root / "x.xlsx"), ok=False)
    assert suffix.returncode == 2 and "name it .csv or .parquet" in suffix.stderr
    missing = cli("run", "--module", "no_such_module", ok=False)
    assert missing.returncode == 1 and "cannot import module 'no_such_module'" in missing.stderr
    empty = cli("history", "--module", "pzq")
    assert "run `pz-dagster run`" in empty.stdout


QUERY_YAML = """
type: pz_dagster.orchestration.component.PzQueryComponent
attributes:
  name: yamlq
  source: {{path: {folder}, batch_size: 10}}
  operators:
    - {{type: sem_filter, name: raptor, predicate: The email mentions Raptor, depends_on: contents}}
    - type: sem_add_columns
      name: sender
      depends_on: contents
      fields: [{{name: sender, type: str, desc: The sender's email address}}]
  model: {{kind: openai_compatible, model: sim, base_url: "{url}"}}
  store_root: store
"""


def test_run_and_export_a_query_declared_in_yaml(tmp_path: Path, mini_emails: Path):
    with OpenAISimulator({"sim": SimulatedModel()}) as sim:
        spec = tmp_path / "query.yaml"
        spec.write_text(QUERY_YAML.format(folder=mini_emails, url=sim.base_url))
        env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
            )

        run = cli("run", "--query", str(spec))
        assert run.returncode == 0, run.stdout + run.stderr
        assert "query yamlq: 1 batch(es) registered, running 1" in run.stdout
        out = tmp_path / "senders.parquet"
        done = cli("export", "--query", str(spec), str(out))
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "store" / "yamlq").is_dir()  # store_root is relative to the YAML file
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4 and set(rows[0]) == {
        "record_id",
        "filename",
        "contents",
        "provenance",
        "sender",
        "error",
    }
    spec.write_text("attributes:\n  name: bad\n  operators: []\n")
    bad = subprocess.run(
        [str(SCRIPT), "explain", "--query", str(spec)], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 1 and "is not a valid query" in bad.stderr and "source" in bad.stderr


def test_explain_shows_the_order_adjacent_filters_take_on_the_next_batch(project) -> None:
    cli, root = project
    two = QUERY_MODULE.replace(
        '.sem_add_columns(\n        [{"name": "sender"',
        '.sem_filter("The email is not a newsletter", depends_on="contents", name="personal")\n'
        '    .sem_add_columns(\n        [{"name": "sender"',
    )
    assert two != QUERY_MODULE
    (root / "pzq2.py").write_text(two)
    out = cli("explain", "--module", "pzq2").stdout
    # no history yet: equal priors keep the declared order
    assert "filter order of the next batch: raptor (rank" in out, out
    assert out.index("raptor (rank") < out.index("personal (rank")


def test_explain_shows_a_filters_target_and_how_it_is_met(project) -> None:
    cli, root = project
    declared = QUERY_MODULE.replace(
        'name="raptor")',
        'name="raptor", target={"recall": 0.9, "delta": 0.05}, label_budget=120)',
    )
    assert declared != QUERY_MODULE
    (root / "pzq3.py").write_text(declared)
    out = cli("explain", "--module", "pzq3").stdout
    assert "guarantee of raptor: recall >= 0.9 with probability >= 0.95" in out, out
    assert "certified cascade" in out and "at most 120 oracle labels per batch" in out
    assert "the next batch certifies its thresholds" in out
    data = json.loads(cli("explain", "--module", "pzq3", "--json").stdout)
    (g,) = data["guarantees"]
    assert g["operator"] == "raptor" and g["strategy"].startswith("certified_cascade")
