"""The query Component: a YAML-declared query loads through Dagster's component machinery and
materializes, compiles to the plan of the Python DSL, fails clearly on bad YAML, and works with
`dg scaffold defs`, `dg check yaml` and `dg check defs` in a fresh Dagster project."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.testing import create_defs_folder_sandbox
from pydantic import BaseModel, ValidationError

from definitions.enron import legal_discovery_query
from pz_dagster import Dataset
from pz_dagster.operators.registry import strategy_names
from pz_dagster.orchestration import RecordStore, build_definitions
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.component import PzQueryComponent, dataset_from_spec
from pz_dagster.query.nodes import PlanNode, all_nodes
from pz_dagster.testing import ChatRequest, OpenAISimulator, SimulatedModel

COMPONENT_TYPE = "pz_dagster.orchestration.component.PzQueryComponent"
DG = Path(sys.executable).parent / "dg"

EMAILS = {
    "a.txt": "From: ken@enron.com\nSubject: Raptor\n\nThe Raptor hedge is underwater.",
    "b.txt": "From: sue@enron.com\nSubject: Picnic\n\nThe company picnic is on Saturday.",
    "c.txt": "From: tim@enron.com\nSubject: Raptor II\n\nRaptor needs a new investor.",
}


def oracle(req: ChatRequest):
    """Correct answers for EMAILS, read off the document in the prompt."""
    m = re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S)
    doc = m.group(1) if m else ""
    props = (req.schema or {}).get("properties", {})
    if "answer" in props:
        return {"answer": "YES" if "Raptor" in doc else "NO"}
    if "sender" in props:
        return {"sender": re.search(r"From: (\S+)", doc).group(1)}  # type: ignore[union-attr]
    return None


def short_email(record: dict) -> bool:
    """A Python predicate the YAML's `filter` operator names by import path."""
    return len(record["contents"]) < 20_000


def raptor_yaml(store_root: Path) -> str:
    return textwrap.dedent(f"""\
        type: {COMPONENT_TYPE}
        attributes:
          name: raptor
          source:
            path: emails               # relative to this defs.yaml
            name: emails
            batch_size: 10
          operators:
            - type: sem_filter
              name: mentions_raptor
              predicate: The email mentions Raptor
              depends_on: contents
            - type: sem_add_columns
              name: extract_sender
              depends_on: contents
              fields:
                - {{name: sender, type: str, desc: The email address of the sender}}
            - type: project
              name: result
              cols: [sender]
          optimizer:
            policy: MinCostAtQuality(0.8)
          model:
            kind: openai_compatible
            model: sim
            base_url: "{{{{ env.PZ_TEST_SIM_URL }}}}"
            api_key_env: PZ_TEST_SIM_KEY
            max_concurrency: 4
          store_root: {store_root}
        """)


# --- (a) load through the component machinery and materialize -------------------------------


def test_yaml_query_loads_through_the_component_and_materializes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store_root = tmp_path / "store"
    with (
        OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim,
        create_defs_folder_sandbox() as sandbox,
    ):
        monkeypatch.setenv("PZ_TEST_SIM_URL", sim.base_url)
        monkeypatch.setenv("PZ_TEST_SIM_KEY", "sim-secret")
        defs_path = sandbox.scaffold_component(component_cls=PzQueryComponent, defs_path="raptor")
        template = (defs_path / "defs.yaml").read_text()
        assert template.startswith(f"type: {COMPONENT_TYPE}") and "# " in template
        (defs_path / "defs.yaml").write_text(raptor_yaml(store_root))
        (defs_path / "emails").mkdir()
        for name, text in EMAILS.items():
            (defs_path / "emails" / name).write_text(text)

        with sandbox.load_component_and_build_defs(defs_path=defs_path) as (component, defs):
            assert isinstance(component, PzQueryComponent)
            assert component.source.path == "emails"
            assert component.chat_model.base_url == sim.base_url  # {{ env.X }} rendered
            _, query = component.build_query(defs_path)
            source = query.sources[0].node
            assert Path(source.path) == (defs_path / "emails").resolve()
            assert {k.to_user_string() for a in query.assets for k in a.keys} <= {
                k.to_user_string() for k in defs.resolve_all_asset_keys()
            }
            with dg.instance_for_test() as instance:
                batches = register_partitions(RecordStore(store_root), query, instance)
                assert len(batches) == 1 and len(batches[0].files) == 3
                result = defs.resolve_job_def(query.job.name).execute_in_process(
                    partition_key=batches[0].key, instance=instance
                )
                assert result.success
                rows = RecordStore(store_root).read(query.output_key.path, batches[0].key)

    assert query.output_key == dg.AssetKey(["raptor", "result"])
    assert rows.column_names == ["record_id", "sender", "error"]
    assert sorted((r["record_id"], r["sender"], r["error"]) for r in rows.to_pylist()) == [
        ("a.txt", "ken@enron.com", None),
        ("c.txt", "tim@enron.com", None),
    ]
    # The key came from the environment variable the YAML names, never from the YAML.
    assert {r.authorization for r in sim.requests} == {"Bearer sim-secret"}


def test_yaml_asset_attributes_and_code_references_reach_the_assets(tmp_path: Path):
    """The YAML's asset_attributes give every asset its owners, tags, group and key prefix, and
    each asset's code reference points at the line of the YAML that declares its operator."""
    with create_defs_folder_sandbox() as sandbox:
        defs_path = sandbox.scaffold_component(component_cls=PzQueryComponent, defs_path="raptor")
        text = raptor_yaml(tmp_path / "store") + textwrap.indent(
            textwrap.dedent("""\
                asset_attributes:
                  owners: [team:legal]
                  tags: {tier: gold}
                  group_name: discovery
                  key_prefix: [legal]
                """),
            "  ",
        )
        (defs_path / "defs.yaml").write_text(text)
        (defs_path / "emails").mkdir()
        with sandbox.load_component_and_build_defs(defs_path=defs_path) as (_, defs):
            specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    yaml_file = str(defs_path / "defs.yaml")

    def line_of(text_in_line: str) -> int:
        (line,) = [i for i, t in enumerate(text.splitlines(), 1) if t.strip() == text_in_line]
        return line

    declared = {
        "emails": line_of("source:"),
        "mentions_raptor": line_of("- type: sem_filter"),
        "extract_sender": line_of("- type: sem_add_columns"),
        "result": line_of("- type: project"),
        # projections the rewrites add early keep the line of the one they come from
        "result_early": line_of("- type: project"),
        "result_early_early": line_of("- type: project"),
    }
    assert set(specs) == {f"legal/raptor/{name}" for name in declared}
    for key, spec in specs.items():
        assert spec.owners == ["team:legal"] and spec.tags["tier"] == "gold", key
        assert spec.group_name == "discovery", key
        refs = spec.metadata["dagster/code_references"].code_references
        # Dagster's own reference to the component's first line, and ours to the operator's
        assert {r.file_path for r in refs} == {yaml_file}, key
        assert {r.line_number for r in refs} == {1, declared[key.split("/")[-1]]}, key


# --- (b) YAML and the Python DSL compile to the same plan ------------------------------------


def plan_signature(node: PlanNode) -> list[tuple[str, dict]]:
    """Every node's fields that plan equality compares (not where a node was declared); an
    output model by its JSON schema (each declaration of a semantic map creates its own
    pydantic class, so two equal declarations never compare equal)."""
    out = []
    for n in all_nodes(node):
        fields = {}
        for f in dataclasses.fields(n):
            if not f.compare:
                continue
            value = getattr(n, f.name)
            if isinstance(value, PlanNode):
                value = value.name
            elif isinstance(value, type) and issubclass(value, BaseModel):
                value = value.model_json_schema()
            fields[f.name] = value
        out.append((type(n).__name__, fields))
    return out


ENRON_YAML = """\
name: enron
source: {path: emails, name: emails, batch_size: 10}
operators:
  - type: sem_filter
    name: mentions_fraud_scheme
    depends_on: contents
    predicate: >-
      The email refers to a fraudulent scheme (i.e., "Raptor", "Deathstar", "Chewco",
      and/or "Fat Boy")
  - type: sem_filter
    name: not_news_quote
    depends_on: contents
    predicate: >-
      The email is not quoting from a news article or an article written by someone
      outside of Enron
  - type: sem_add_columns
    name: sender_and_subject
    depends_on: contents
    fields:
      - {name: sender, type: str, desc: The email address of the sender}
      - {name: subject, type: str, desc: The subject of the email}
"""


def test_yaml_and_python_declare_the_same_enron_plan(tmp_path: Path):
    folder = tmp_path / "emails"
    from_yaml = dataset_from_spec(PzQueryComponent.resolve_from_yaml(ENRON_YAML), tmp_path)
    from_python = legal_discovery_query(folder, batch_size=10)

    assert from_yaml.explain() == from_python.explain()
    assert plan_signature(from_yaml.node) == plan_signature(from_python.node)
    assert plan_signature(from_yaml.optimized().node) == plan_signature(
        from_python.optimized().node
    )
    graphs = []
    for ds in (from_yaml, from_python):
        _, q = build_definitions(ds, "enron", store_root=str(tmp_path / "store"))
        graphs.append(sorted((k, sorted(a.asset_deps[k])) for a in q.assets for k in a.keys))
    assert graphs[0] == graphs[1] and len(graphs[0]) == 4


def test_yaml_plan_nodes_equal_the_python_ones():
    yaml_text = f"""\
    name: q
    source: {{path: /data/emails, batch_size: 5}}
    operators:
      - {{type: sem_filter, predicate: The email discusses fraud, depends_on: contents}}
      - type: filter
        name: short
        predicate: "{__name__}:short_email"
        depends_on: contents
      - type: sem_classify
        name: origin
        instruction: Who wrote it?
        classes: [internal, external]
        output: origin
        depends_on: contents
      - {{type: sort, by: origin, descending: true}}
      - {{type: distinct, cols: [origin]}}
      - {{type: project, cols: [origin]}}
      - {{type: limit, n: 3}}
    """
    from_yaml = dataset_from_spec(PzQueryComponent.resolve_from_yaml(textwrap.dedent(yaml_text)))
    from_python = (
        Dataset.from_directory("/data/emails", batch_size=5)
        .sem_filter("The email discusses fraud", depends_on="contents")
        .filter(short_email, depends_on="contents", name="short")
        .sem_classify(
            "Who wrote it?",
            ["internal", "external"],
            output="origin",
            depends_on="contents",
            name="origin",
        )
        .sort("origin", descending=True)
        .distinct(["origin"])
        .project(["origin"])
        .limit(3)
    )
    assert from_yaml.node == from_python.node
    assert hash(from_yaml.node) == hash(from_python.node)
    assert from_yaml.optimized().node == from_python.optimized().node


def test_grouped_operators_from_yaml():
    yaml_text = """\
    name: q
    source: {path: /data/emails}
    operators:
      - {type: sem_classify, instruction: "Topic?", classes: [fraud, other], output: topic}
      - type: agg
        name: per_topic
        group_by: [topic]
        aggregates: {n: {function: count}}
    """
    from_yaml = dataset_from_spec(PzQueryComponent.resolve_from_yaml(textwrap.dedent(yaml_text)))
    from_python = (
        Dataset.from_directory("/data/emails")
        .sem_classify("Topic?", ["fraud", "other"], output="topic")
        .groupby("topic")
        .agg(n=("count", None), name="per_topic")
    )
    assert from_yaml.node == from_python.node


# --- (c) bad YAML fails with a message that says what to fix ---------------------------------

BASE = "name: q\nsource: {path: emails}\n"


@pytest.mark.parametrize(
    "attributes, message",
    [
        (
            "operators: [{type: sem_fliter, predicate: fraud}]",
            r"Input tag 'sem_fliter' found using 'type' does not match any of the expected "
            r"tags: 'sem_filter'",
        ),
        (
            "operators: [{type: sem_filter, depends_on: contents}]",
            r"predicate\b.*\n\s*Field required",
        ),
        ("optimizer: {policy: Cheapest}", r"unknown policy 'Cheapest'; known: \['MaxQuality'"),
        ("optimizer: {policy: MinCostAtQuality}", r"MinCostAtQuality needs a quality"),
        ("optimizer: {strategies: [telepathy]}", r"strategies.*\n.*Input should be 'direct'"),
        (
            "operators: [{type: sem_filter, predicate: fraud, depends_on: body}]",
            r"unknown column\(s\) \['body'\] in depends_on; available columns are",
        ),
        (
            "operators: [{type: sem_map, fields: [{name: when, type: date, desc: d}]}]",
            r"fields\.0\.type.*\n\s*Input should be 'str'",
        ),
        (
            "operators: [{type: sem_classify, instruction: 'Topic?', classes: [fraud]}]",
            r"needs at least two classes",
        ),
        (
            "operators: [{type: filter, predicate: 'no_such_module:fn'}]",
            r"filter: cannot import 'no_such_module:fn'",
        ),
        (
            "model: {kind: openai_compatible, model: gpt-4o-mini, api_key: literal-key}",
            r"api_key\b.*\n\s*Extra inputs are not permitted",
        ),
        (
            "model: {kind: openai_compatible, model: gpt-4o-mini, api_key_env: 'not a name'}",
            r"api_key_env is the name of an environment variable, not a key",
        ),
        ("model: {kind: openai_compatible}", r"kind openai_compatible needs `model`"),
        ("model: {kind: local, base_url: 'http://x'}", r"\['base_url'\] apply to kind"),
    ],
)
def test_bad_yaml_fails_clearly(attributes: str, message: str):
    with pytest.raises(ValidationError, match=message):
        PzQueryComponent.resolve_from_yaml(BASE + attributes)


def test_an_unknown_strategy_in_yaml_lists_every_valid_one():
    with pytest.raises(ValidationError) as err:
        PzQueryComponent.resolve_from_yaml(BASE + "optimizer: {strategies: [direct, cascde]}")
    message = str(err.value)
    assert "'cascde'" in message and all(f"'{name}'" in message for name in strategy_names())


def test_missing_source_fails_clearly():
    with pytest.raises(ValidationError, match=r"source\b.*\n\s*Field required"):
        PzQueryComponent.resolve_from_yaml("name: q\noperators: []\n")


# --- (d) dg scaffold / dg check in a fresh Dagster project ----------------------------------


def dg_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dg_config = tmp_path / "dg_cli.toml"
    dg_config.write_text("[cli.telemetry]\nenabled = false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "DG_CLI_CONFIG": str(dg_config),  # dg's own telemetry switch
        "HF_HUB_OFFLINE": "1",
        "VIRTUAL_ENV": sys.prefix,  # `--use-active-venv`: this venv, never uv
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }


def make_project(root: Path) -> Path:
    """A minimal dg project: pyproject with [tool.dg], a package with definitions.py and defs/."""
    (root / "pzproj" / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent("""\
            [project]
            name = "pzproj"
            version = "0.1.0"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "pzproj"
            """)
    )
    (root / "pzproj" / "__init__.py").write_text("")
    (root / "pzproj" / "defs" / "__init__.py").write_text("")
    (root / "pzproj" / "definitions.py").write_text(
        textwrap.dedent("""\
            from pathlib import Path

            import dagster as dg


            @dg.definitions
            def defs() -> dg.Definitions:
                return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
            """)
    )
    return root


@pytest.mark.slow
@pytest.mark.skipif(not DG.exists(), reason="dagster-dg-cli is not installed in this venv")
def test_dg_scaffold_and_check_in_a_fresh_project(tmp_path: Path):
    project = make_project(tmp_path / "pzproj")
    env = dg_env(tmp_path)

    def dg_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DG), *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
        )

    listed = dg_run("list", "components", "--json")
    assert listed.returncode == 0, listed.stderr
    assert COMPONENT_TYPE in listed.stdout

    scaffolded = dg_run("scaffold", "defs", COMPONENT_TYPE, "enron_query")
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    defs_yaml = project / "pzproj" / "defs" / "enron_query" / "defs.yaml"
    template = defs_yaml.read_text()
    assert template.startswith(f"type: {COMPONENT_TYPE}") and "name: enron_query" in template

    checked = dg_run("check", "yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    loaded = dg_run("check", "defs", "--use-active-venv")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert "All definitions loaded successfully" in loaded.stdout + loaded.stderr

    # An unknown operator type and a policy that does not parse fail the schema check.
    for good, bad, where in [
        ("type: sem_filter", "type: sem_fliter", "attributes.operators"),
        ("policy: MaxQuality", "policy: Cheapest", "attributes.optimizer"),
    ]:
        defs_yaml.write_text(template.replace(good, bad))
        failed = dg_run("check", "yaml")
        assert failed.returncode != 0, failed.stdout
        assert where in failed.stdout and "defs.yaml:" in failed.stdout, failed.stdout

    # A column the source does not have passes the schema but fails when the plan is built.
    defs_yaml.write_text(template.replace("depends_on: contents", "depends_on: body", 1))
    assert dg_run("check", "yaml").returncode == 0
    failed = dg_run("check", "defs", "--use-active-venv")
    assert failed.returncode != 0
    assert "unknown column(s) ['body'] in depends_on" in failed.stdout + failed.stderr


def test_model_spec_prices_and_compute_price_reach_the_resource():
    from pz_dagster.orchestration.component import ModelSpec

    spec = ModelSpec.model_validate(
        {
            "kind": "openai_compatible",
            "model": "m",
            "models": ["served"],
            "prices": {"m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
            "compute_price_per_hour": 0.4,
        }
    )
    by_name = {p.name: p for p in spec.resource().profiles()}
    assert by_name["m"].input_price == pytest.approx(1e-6) and not by_name["m"].compute_priced
    assert by_name["served"].second_price == pytest.approx(0.4 / 3600 / spec.max_concurrency)
    assert ModelSpec(compute_price_per_hour=0.5).resource().compute_price_per_hour == 0.5
    assert ModelSpec().resource().compute_price_per_hour == 0.20  # the documented default
    assert "ModelPrice" in str(ModelSpec.model_json_schema())  # one price schema, not two
