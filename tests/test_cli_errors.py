"""User mistakes reach the `pz-dagster` user as one line that says what to fix; `--verbose`
(before or after the command) adds the traceback. Also: an optimizer offered strategies without
`direct` still runs (the champion it judges against is the direct strategy on the best model),
and `--partitions` takes no negative count."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner, Result

from optimizer import ModelProfile, OperatorSpec, decide
from optimizer.policies import MinCost
from pz_dagster.cli import main
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from tests.test_code_synthesis import FIELDS, GOOD, emails, oracle

MODULE = """
import os
from pz_dagster import Dataset
from pz_dagster.orchestration import OpenAICompatibleModel, OptimizerResource, build_definitions

{before}
defs, query = build_definitions(
    Dataset.from_directory(os.environ["PZE_FOLDER"], batch_size={batch})
    {operators},
    "{name}",
    model=OpenAICompatibleModel(model="sim", base_url=os.environ.get("PZE_SIM", "http://127.0.0.1:9/v1"),
                                api_key={api_key}),
    optimizer=OptimizerResource({optimizer}),
    store_root=os.environ["PZE_STORE"],
)
"""
FILTER = '.sem_filter("The email mentions Raptor", depends_on="contents", name="raptor")'
EXTRACT = f'.sem_add_columns({FIELDS!r}, depends_on="contents", name="extract")'

YAML = """
type: pz_dagster.orchestration.component.PzQueryComponent
attributes:
  name: yq
  source: {{path: {folder}}}
  operators:
    - {{type: sem_filter, name: raptor, predicate: The email mentions Raptor}}
  model: {{kind: openai_compatible, model: sim, base_url: "http://127.0.0.1:9/v1"{extra}}}
  store_root: store
"""


@pytest.fixture
def cli(tmp_path: Path, mini_emails: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs the CLI in this process, from ``tmp_path``, with a fresh Dagster home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))  # a path, not a secret: never redacted
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PZE_FOLDER", str(mini_emails))
    monkeypatch.setenv("PZE_STORE", str(tmp_path / "store"))
    monkeypatch.syspath_prepend(str(tmp_path))
    counter = iter(range(1000))

    def write_module(**kw: str) -> str:
        """A query module with a fresh name (modules are cached by name in this process)."""
        name = f"pze_{os.getpid()}_{next(counter)}_{tmp_path.name[-8:]}".replace("-", "_")
        fields = {"before": "", "batch": "10", "operators": FILTER, "api_key": "None",
                  "optimizer": "", "name": name, **kw}  # fmt: skip
        (tmp_path / f"{name}.py").write_text(MODULE.format(**fields))
        return name

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args))

    yield invoke, write_module, tmp_path
    for name in [m for m in sys.modules if m.startswith("pze_")]:
        del sys.modules[name]


def one_line_error(done: Result, code: int = 1) -> str:
    assert done.exit_code == code, done.output
    assert "Traceback" not in done.output, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.output
    return lines[0]


def with_traceback(done: Result, code: int = 1) -> str:
    assert done.exit_code == code, done.output
    assert "Traceback (most recent call last)" in done.output, done.output
    return done.output.strip().splitlines()[-1]


def test_a_missing_source_folder(cli):
    invoke, _, root = cli
    spec = root / "q.yaml"
    spec.write_text(YAML.format(folder=root / "no_such_folder", extra=""))
    line = one_line_error(invoke("run", "--query", str(spec)))
    assert str(root / "no_such_folder") in line and "does not exist" in line
    assert "does not exist" in with_traceback(invoke("run", "--query", str(spec), "--verbose"))
    assert "does not exist" in with_traceback(invoke("--verbose", "register", "--query", str(spec)))


@pytest.mark.parametrize(
    "text",
    ["attributes:\n  name: [x\n  source: {path: y}\n", "attributes: {name: q\n", "\tname: q"],
)
def test_a_yaml_syntax_error_in_the_query_file(cli, text):
    invoke, _, root = cli
    spec = root / "q.yaml"
    spec.write_text(text)
    line = one_line_error(invoke("explain", "--query", str(spec)))
    assert str(spec) in line and "YAML" in line and "line " in line
    assert "YAML" in with_traceback(invoke("explain", "--query", str(spec), "--verbose"))


def test_a_yaml_syntax_error_in_a_file_the_query_module_reads(cli):
    invoke, write_module, root = cli
    (root / "labels.yaml").write_text("a: [1, 2\n")
    mod = write_module(before='import yaml\nyaml.safe_load(open("labels.yaml"))')
    line = one_line_error(invoke("explain", "--module", mod))
    assert mod in line and "labels.yaml" in line and "line 2" in line


def test_an_invalid_query_file_names_each_problem_on_one_line(cli):
    invoke, _, root = cli
    spec = root / "q.yaml"
    spec.write_text("attributes:\n  name: bad\n  operators: []\n  model: {kind: remote}\n")
    line = one_line_error(invoke("explain", "--query", str(spec)))
    assert "is not a valid query" in line and "source" in line and "model.kind" in line


def test_an_unset_api_key_variable(cli, monkeypatch):
    invoke, write_module, root = cli
    monkeypatch.delenv("PZE_UNSET_KEY", raising=False)
    spec = root / "q.yaml"
    spec.write_text(YAML.format(folder=root, extra=", api_key_env: PZE_UNSET_KEY"))
    line = one_line_error(invoke("run", "--query", str(spec)))
    assert "PZE_UNSET_KEY" in line and "not set" in line
    mod = write_module(api_key='dg.EnvVar("PZE_UNSET_KEY")', before="import dagster as dg")
    line = one_line_error(invoke("run", "--module", mod))
    assert "PZE_UNSET_KEY" in line and "not set" in line
    assert "PZE_UNSET_KEY" in with_traceback(invoke("--verbose", "run", "--module", mod))


@pytest.mark.parametrize(
    ("optimizer", "says"),
    [
        ('policy="MaxQualty"', ["policy", "MaxQualty", "MinCost"]),
        ('policy="MinCostAtQuality(1.5)"', ["policy", "quality"]),
        ('strategies=["direkt"]', ["strategies", "direkt", "chain_of_thought"]),
    ],
)
def test_a_bad_policy_or_strategy_in_python(cli, optimizer, says):
    invoke, write_module, _ = cli
    mod = write_module(optimizer=optimizer)
    line = one_line_error(invoke("explain", "--module", mod))
    assert mod in line and all(s in line for s in says), line
    assert "OptimizerResource" in with_traceback(invoke("explain", "--module", mod, "--verbose"))


def test_secret_values_of_the_environment_are_not_repeated(cli, monkeypatch):
    invoke, write_module, _ = cli
    monkeypatch.setenv("PZE_API_KEY", "pze-0123456789-secret")
    mod = write_module(before='raise ValueError("bad key " + os.environ["PZE_API_KEY"])')
    line = one_line_error(invoke("explain", "--module", mod))
    assert "bad key ***" in line and "0123456789" not in line
    assert "0123456789" not in invoke("--verbose", "explain", "--module", mod).output


def test_a_query_module_that_raises_on_import(cli):
    invoke, write_module, root = cli
    mod = write_module(before='raise RuntimeError("the labels are not ready\\nsecond line")')
    line = one_line_error(invoke("run", "--module", mod))
    assert mod in line and "RuntimeError: the labels are not ready" in line
    out = with_traceback(invoke("--verbose", "run", "--module", mod))
    assert "RuntimeError" in out
    broken = root / "pze_syntax.py"
    broken.write_text("def oops(:\n")
    line = one_line_error(invoke("explain", "--module", "pze_syntax"))
    assert "SyntaxError" in line and "line 1" in line
    missing = write_module(before="import no_such_package_pz")
    line = one_line_error(invoke("explain", "--module", missing))
    assert "no_such_package_pz" in line and "install" in line


@pytest.mark.parametrize("value", ["-1", "-5", "two"])
def test_partitions_must_be_a_count(cli, value):
    invoke, write_module, _ = cli
    mod = write_module()
    line = one_line_error(invoke("run", "--module", mod, "--partitions", value), code=2)
    assert "--partitions" in line


def test_usage_errors_are_one_line_too(cli):
    invoke, _, _ = cli
    line = one_line_error(invoke("runn"), code=2)
    assert "runn" in line
    line = one_line_error(invoke("run", "--query", "missing.yaml"), code=2)
    assert "missing.yaml" in line


def test_verbose_is_documented_on_the_group_and_every_command():
    runner = CliRunner()
    assert "--verbose" in runner.invoke(main, ["--help"]).output
    for command in ("explain", "register", "run", "history", "export"):
        assert "--verbose" in runner.invoke(main, [command, "--help"]).output


def test_strategies_without_direct_choose_among_them_and_judge_against_direct():
    ops = [OperatorSpec("extract", "sem_map", batch_records=200)]
    models = [ModelProfile("a", input_price=1e-7, quality=0.7),
              ModelProfile("b", input_price=1e-6, quality=0.9)]  # fmt: skip
    d = decide(ops, models, [], MinCost(), strategies=["code_synthesis"])
    assert d.candidate("extract").strategy == "code_synthesis"
    champion = d.champions["extract"]
    assert (champion.strategy, champion.model) == ("direct", "b")
    assert "champion (the reference on a sample where there are no labels): direct:b" in d.explain()
    # a proxy alone cannot run before its threshold is learned: the champion runs meanwhile
    ops = [OperatorSpec("f", "sem_filter")]
    d = decide(ops, models, [], MinCost(), strategies=["lexical_proxy"])
    assert d.candidate("f").strategy == "direct"


def test_code_synthesis_alone_runs_through_the_cli(cli, monkeypatch):
    invoke, write_module, root = cli
    folder = root / "many"
    folder.mkdir()
    for r in emails(60):
        (folder / f"{r['record_id']}.txt").write_text(r["contents"])
    monkeypatch.setenv("PZE_FOLDER", str(folder))
    mod = write_module(
        batch="60", operators=EXTRACT, optimizer='strategies=["code_synthesis"], sample_size=10'
    )
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        monkeypatch.setenv("PZE_SIM", sim.base_url)
        done = invoke("run", "--module", mod)
        assert done.exit_code == 0, done.output
    assert "ok" in done.output and "FAILED" not in done.output
    with dg.DagsterInstance.get() as instance:
        (rec,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([mod, "extract"])), limit=5
        ).records
    md = rec.asset_materialization.metadata
    assert md["strategy"].value == "code_synthesis"
    assert md["quality/source"].value == "champion"  # judged against direct on the sample
