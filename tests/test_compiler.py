"""Plan -> asset graph: keys, deps, partitions, job, resources; the code location validates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from definitions.enron import DEMO_BATCH_SIZE, legal_discovery_query
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


# --- what an asset shows before any run ------------------------------------------------------


NODE_REPR = re.compile(r"\b(Semantic\w+|Table\w*Source|Filter|Map|Sort|Distinct|Limit|Aggregate)\(")


def specs_by_name(q) -> dict[str, dg.AssetSpec]:
    return {s.key.path[-1]: s for a in q.assets for s in a.specs}


def declaring_line(path, text: str) -> int:
    """The line of ``path`` that holds ``text`` (1-based), exactly once."""
    (line,) = [i for i, t in enumerate(path.read_text().splitlines(), start=1) if text in t]
    return line


def test_demo_assets_describe_themselves_in_prose_with_columns_lineage_and_code():
    q = compile_query(legal_discovery_query("/data/enron"), "enron")
    specs = specs_by_name(q)
    source = specs["emails"]
    assert source.description.startswith("The documents of the folder `/data/enron`")
    assert f"batches of {DEMO_BATCH_SIZE}" in source.description
    fraud = specs["mentions_fraud_scheme"].description
    assert fraud.startswith("Keeps the records for which a model judges that this holds:")
    assert '> The email refers to a fraudulent scheme (i.e., "Raptor"' in fraud
    assert "Reads `contents`." in fraud and "`not_news_quote`" in fraud  # its chain partner
    extract = specs["sender_and_subject"]
    text = extract.description
    assert text.startswith("Adds `sender`, `subject`, extracted by a model")
    assert "| `sender` | str | The email address of the sender |" in text
    assert "| `subject` | str | The subject of the email |" in text
    assert "resource `pz_model`" in text and "strategy for each batch" in text
    assert "SemanticMap(" not in text and "SemanticFilter(" not in fraud

    md = extract.metadata
    columns = {c.name: (c.type, c.description) for c in md["dagster/column_schema"].columns}
    assert columns["sender"] == ("str", "The email address of the sender")
    assert columns["subject"] == ("str", "The subject of the email")
    assert all(desc for _, desc in columns.values()), columns  # pass-through ones too
    assert columns["filename"][1] == "The document's path, relative to the folder."
    assert md["dagster/table_name"] == "enron__sender_and_subject"
    lineage = md["dagster/column_lineage"].deps_by_column
    upstream = q.asset_key("not_news_quote")
    assert lineage["sender"] == [dg.TableColumnDep(asset_key=upstream, column_name="contents")]
    assert lineage["filename"] == [dg.TableColumnDep(asset_key=upstream, column_name="filename")]
    assert set(lineage) == set(columns)
    assert "dagster/column_lineage" not in source.metadata  # a source reads no asset

    (ref,) = md["dagster/code_references"].code_references
    enron_py = REPO / "definitions" / "enron.py"
    assert Path(ref.file_path) == enron_py
    assert ref.line_number == declaring_line(enron_py, ".sem_add_columns(SENDER_SUBJECT")
    assert ref.label == "sem_map sender_and_subject"


def test_every_operator_kind_has_a_prose_description_and_column_lineage():
    people = [{"name": "person", "type": "str", "desc": "A person the email names"}]
    topics = Dataset.from_records([{"topic": "fraud"}, {"topic": "other"}], name="topics")
    ds = (
        Dataset.from_directory("/d", batch_size=5)
        .filter(lambda r: True, depends_on="contents", name="nonempty")
        .sem_classify("Who wrote it?", ["inside", "outside"], output="origin", name="origin")
        .sem_join(topics, "The email is about the topic", name="about")
        .sem_flat_map(people, depends_on="contents", max_items=3, name="people")
        .sort("person", name="by_person")
        .distinct("person", name="unique")
        .limit(4, name="few")
        .sem_topk("Mentions Raptor", k=2, name="best")
        .groupby("origin")
        .agg(n=("count", None), name="per_origin")
    )
    q = compile_query(ds, "kinds")
    specs = specs_by_name(q)
    expected = {
        "topics": "A table of 2 records given in Python",
        "nonempty": "Keeps the records for which the Python function `<lambda>` returns true",
        "origin": "Puts each record in one of `inside`, `outside` (column `origin`)",
        "about": "Pairs each record with each record of `topics`",
        "people": "Zero or more records per record (at most 3)",
        "by_person": "The records of each batch ordered by `person`, ascending",
        "unique": "The first record of each distinct `person` in each batch.",
        "few": "The first 4 records of each batch.",
        "best": "The 2 records over every batch that best match:\n\n> Mentions Raptor",
        "per_origin": "`n=count(*)` over the records of every batch per `origin`",
    }
    for name, lead in expected.items():
        assert specs[name].description.startswith(lead), (name, specs[name].description)
        assert not NODE_REPR.search(specs[name].description), name
    lineage = {n: s.metadata.get("dagster/column_lineage") for n, s in specs.items()}
    dep = dg.TableColumnDep
    about = lineage["about"].deps_by_column
    assert about["topic"] == [dep(asset_key=q.asset_key("topics"), column_name="topic")]
    people_deps = lineage["people"].deps_by_column
    assert people_deps["parent_record_id"] == [
        dep(asset_key=q.asset_key("about"), column_name="record_id")
    ]
    assert people_deps["person"] == [dep(asset_key=q.asset_key("about"), column_name="contents")]
    assert lineage["per_origin"].deps_by_column["n"] == [
        dep(asset_key=q.asset_key("best"), column_name="record_id")
    ]
    columns = {
        c.name: c.description for c in specs["best"].metadata["dagster/column_schema"].columns
    }
    assert columns["rank"].startswith("The record's place among the best matches")
    assert columns["topic"] == "From topics: Column topic of table topics."
    assert columns["origin"] == "One of inside, outside: the model's answer to 'Who wrote it?'"


def test_declaration_sites_name_the_line_but_leave_the_plan_equal():
    first = Dataset.from_directory("/d").sem_filter("About Raptor", depends_on="contents")
    second = Dataset.from_directory("/d").sem_filter("About Raptor", depends_on="contents")
    assert first.node == second.node and hash(first.node) == hash(second.node)
    here = Path(__file__).resolve()
    assert first.node.declared_at.file == str(here)
    assert second.node.declared_at.line == first.node.declared_at.line + 1
    q = compile_query(first, "same")
    assert specs_by_name(q)["sem_filter_1"].metadata["dagster/code_references"]
