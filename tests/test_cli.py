"""The `pz-dagster` console script, invoked as a user would: help, run, explain, history,
export and the errors that say what to fix. The query calls the loopback simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

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
    commands = ("explain", "register", "run", "history", "export")
    assert all(c in top.stdout for c in commands)
    for c in commands:
        sub = subprocess.run([str(SCRIPT), c, "--help"], capture_output=True, text=True, check=True)
        assert "--module" in sub.stdout and "--home" in sub.stdout


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
