"""Plan -> asset graph: keys, deps, partitions, job, resources; the code location validates."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from definitions.enron import legal_discovery_query
from pz_dagster import Dataset, PlanError
from pz_dagster.orchestration import build_definitions, compile_query
from pz_dagster.orchestration.compiler import asset_keys
from tests.conftest import REPO


def test_asset_graph_shape_of_the_demo_query():
    q = compile_query(legal_discovery_query("/data/enron"), "enron")
    # the two adjacent filters are one multi-asset with an asset key each
    keys = [k.to_user_string() for a in q.assets for k in asset_keys(a)]
    assert keys == [
        "enron/emails",
        "enron/mentions_fraud_scheme",
        "enron/not_news_quote",
        "enron/sender_and_subject",
    ]
    deps = {
        k.to_user_string(): sorted(d.to_user_string() for d in a.asset_deps[k])
        for a in q.assets
        for k in a.keys
    }
    assert deps == {
        "enron/emails": [],
        "enron/mentions_fraud_scheme": ["enron/emails"],
        "enron/not_news_quote": ["enron/mentions_fraud_scheme"],
        "enron/sender_and_subject": ["enron/not_news_quote"],
    }
    assert {a.partitions_def for a in q.assets} == {q.partitions_def}
    assert isinstance(q.partitions_def, dg.DynamicPartitionsDefinition)
    assert q.partitions_def.name == "enron_batches"
    semantic = {k.path[-1]: a.required_resource_keys for a in q.assets for k in a.keys}
    assert "pz_model" in semantic["mentions_fraud_scheme"] and "pz_model" not in semantic["emails"]
    assert all(a.group_names_by_key[k] == "enron" for a in q.assets for k in a.keys)


def test_relational_operators_become_assets_too():
    ds = (
        Dataset.from_directory("/d")
        .filter(lambda r: True, name="nonempty")
        .project("contents")
        .limit(2)
    )
    q = compile_query(ds, "q")
    # The limit runs before the (one-to-one) projection: same result, less work.
    assert [a.key.path[-1] for a in q.assets] == ["documents", "nonempty", "limit_1", "project_1"]
    assert q.output_key.path[-1] == "project_1"
    assert all("pz_model" not in a.required_resource_keys for a in q.assets)


def test_bad_query_name():
    with pytest.raises(PlanError, match="invalid query name"):
        compile_query(Dataset.from_directory("/d"), "my query")


def test_definitions_load_and_resolve_the_job(tmp_path):
    defs, q = build_definitions(
        legal_discovery_query("/data/enron"), "enron", store_root=str(tmp_path)
    )
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("enron_job")
    assert job.partitions_def == q.partitions_def
    assert defs.resolve_sensor_def("enron_new_documents").job_name == "enron_job"


def test_dagster_cli_validates_the_code_location(dagster_home):
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_pz_dagster_explain_shows_plan_and_optimizer_decision(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pz_dagster.cli", "explain", "--home", str(tmp_path / "home")],
        cwd=REPO,
        env={**os.environ, "PZ_DAGSTER_STORE": str(tmp_path / "store")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "SemanticMap(fields=[sender: str, subject: str]" in out  # brackets survive rich
    assert "optimizer's decision now (0 observation(s)" in out
    assert "policy: MaxQuality" in out and "(chosen)" in out and "champion" in out


def test_an_unknown_strategy_in_the_run_config_is_refused_before_the_run(tmp_path, mini_emails):
    """A misspelt strategy pinned in the run config is refused when Dagster checks the config,
    with the valid names, before any step runs (it used to fail the step, or run as direct)."""
    from pz_dagster.tuning.planning import RUNNABLE_STRATEGIES

    ds = Dataset.from_directory(mini_emails).sem_filter("About Raptor", name="raptor")
    defs, q = build_definitions(ds, "pin", store_root=str(tmp_path / "store"))
    job = defs.resolve_job_def(q.job.name)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(q.partitions_def.name, ["any"])
        with pytest.raises(dg.DagsterInvalidConfigError) as err:
            job.execute_in_process(
                run_config={"ops": {"pin__raptor": {"config": {"strategy": "cascde"}}}},
                instance=instance,
                partition_key="any",
            )
        assert not instance.get_runs(), "a run started"
    message = str(err.value)
    assert "cascde" in message and all(name in message for name in RUNNABLE_STRATEGIES)
