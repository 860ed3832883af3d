"""Owners, tags, group and key prefix on every asset of a query; a key-prefixed query works end
to end on the loopback simulator: sensor, job, checks, record store views and lineage, the
optimizer's history, the refresh schedule's run config and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pz_dagster import Dataset
from pz_dagster.orchestration import (
    AssetAttributes,
    OpenAICompatibleModel,
    RecordStore,
    build_definitions,
    build_refresh_schedule,
)
from tests.test_schedules import evaluate

PREFIX = ("legal", "review")
ATTRIBUTES = AssetAttributes(
    owners=["team:legal", "ada@example.com"],
    tags={"tier": "gold"},
    group_name="discovery",
    key_prefix=list(PREFIX),
)
SENDER = [{"name": "sender", "type": "str", "desc": "The email address of the sender"}]


def raptor(folder: Path) -> Dataset:
    return (
        Dataset.from_directory(folder, name="emails", batch_size=10)
        .sem_filter("The email mentions Raptor", depends_on="contents", name="raptor")
        .sem_add_columns(SENDER, depends_on="contents", name="sender")
    )


def test_attributes_reach_every_asset_and_keys_carry_the_prefix(folder: Path, tmp_path: Path):
    defs, q = build_definitions(
        raptor(folder), "q", store_root=str(tmp_path / "s"), asset_attributes=ATTRIBUTES
    )
    specs = {s.key.to_user_string(): s for a in q.assets for s in a.specs}
    assert list(specs) == [
        "legal/review/q/emails",
        "legal/review/q/raptor",
        "legal/review/q/sender",
    ]
    for spec in specs.values():
        assert spec.owners == ["team:legal", "ada@example.com"]
        assert spec.group_name == "discovery"
        assert spec.tags["tier"] == "gold" and "dagster/kind/pz" in spec.tags  # kinds kept
    assert [d.asset_key for d in specs["legal/review/q/sender"].deps] == [q.asset_key("raptor")]
    assert q.asset_key("emails") == dg.AssetKey([*PREFIX, "q", "emails"])
    assert q.output_key == q.batch_output_key == dg.AssetKey([*PREFIX, "q", "sender"])
    dg.Definitions.validate_loadable(defs)
    # what the optimizer chooses among, beside the sentence that says it chooses
    note = "Here it chooses among the model(s) `smollm2-135m-instruct-q4_1` (`LocalLlamaModel`)"
    assert note in specs["legal/review/q/sender"].description
    assert "chooses among" not in specs["legal/review/q/emails"].description
    md = specs["legal/review/q/sender"].metadata
    assert md["dagster/table_name"] == "legal__review__q__sender"
    (dep,) = md["dagster/column_lineage"].deps_by_column["sender"]
    assert dep == dg.TableColumnDep(asset_key=q.asset_key("raptor"), column_name="contents")


@pytest.mark.parametrize(
    "attributes, message",
    [
        (
            {"key_prefix": ["ok", "my team"]},
            r"key_prefix\n.*\['my team'\] must be letters, digits and underscores",
        ),
        ({"group_name": "a-b"}, r"group name 'a-b' must be letters, digits and underscores"),
        ({"owner": ["x"]}, r"owner\n\s*Extra inputs are not permitted"),
    ],
)
def test_bad_attributes_say_what_is_wrong(attributes: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        AssetAttributes.model_validate(attributes)


def test_an_invalid_owner_fails_when_the_query_compiles(folder: Path, tmp_path: Path):
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="Invalid owner 'legal'"):
        build_definitions(
            raptor(folder),
            "q",
            store_root=str(tmp_path),
            asset_attributes=AssetAttributes(owners=["legal"]),
        )


def tick_sensor(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    """One tick of the new-documents sensor, its partitions added as the daemon would."""
    sensor = defs.resolve_sensor_def("q_new_documents")
    with dg.build_sensor_context(
        instance=instance, resources={"pz_store": defs.resources["pz_store"]}
    ) as ctx:
        result = sensor(ctx)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_a_prefixed_query_runs_end_to_end_in_process(folder: Path, tmp_path: Path, sim):
    store_root = tmp_path / "store"
    model = OpenAICompatibleModel(model="sim", base_url=sim.base_url)
    defs, q = build_definitions(
        raptor(folder), "q", model=model, store_root=str(store_root), asset_attributes=ATTRIBUTES
    )
    with dg.instance_for_test() as instance:
        (request,) = tick_sensor(defs, instance).run_requests
        job = defs.resolve_job_def(request.job_name or q.job.name)
        first = job.execute_in_process(partition_key=request.partition_key, instance=instance)
        assert first.success
        checks = first.get_asset_check_evaluations()
        assert checks and {tuple(e.asset_key.path[:2]) for e in checks} == {PREFIX}
        assert all(e.passed for e in checks), [(e.asset_key, e.check_name) for e in checks]

        # The refresh asks the models again: its run config names the prefixed op.
        refresh = build_refresh_schedule(q, "0 3 * * *", use_cache=False)
        (again,) = evaluate(refresh, defs, instance).run_requests
        assert again.run_config == {
            "ops": {
                op: {"config": {"use_cache": False}}
                for op in ("legal__review__q__raptor", "legal__review__q__sender")
            }
        }
        second = job.execute_in_process(
            partition_key=again.partition_key, run_config=again.run_config, instance=instance
        )
        assert second.success
        # The second run planned from the first one's history, found under the prefixed key.
        latest = instance.fetch_materializations(q.asset_key("raptor"), limit=2).records
        assert [r.asset_materialization.metadata["cold_start_sample"].value for r in latest] == [
            False,
            True,
        ]

    store = RecordStore(store_root)
    with store.connect() as con:
        rows = con.execute(
            'SELECT record_id, sender FROM "legal__review__q__sender" ORDER BY record_id'
        ).fetchall()
    assert rows == [("a.txt", "ken@enron.com"), ("c.txt", "tim@enron.com")]
    # The batch's lineage (which file each row came from) was found through the query's name.
    lineage = store_root / "legal" / "review" / "q" / "sender" / "_lineage"
    assert [p.stem for p in lineage.glob("*.parquet")] == [request.partition_key]


CLI_MODULE = """\
import os

from tests.test_asset_attributes import ATTRIBUTES, raptor
from pz_dagster.orchestration import OpenAICompatibleModel, build_definitions

defs, query = build_definitions(
    raptor(os.environ["PZ_TEST_EMAILS"]),
    "q",
    model=OpenAICompatibleModel(model="sim", base_url=os.environ["PZ_TEST_SIM_URL"]),
    store_root=os.environ["PZ_TEST_STORE"],
    asset_attributes=ATTRIBUTES,
)
"""


@pytest.mark.slow
def test_the_cli_runs_reports_and_exports_a_prefixed_query(folder: Path, tmp_path: Path, sim):
    (tmp_path / "prefixed_query.py").write_text(textwrap.dedent(CLI_MODULE))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])]),
        "PZ_TEST_EMAILS": str(folder),
        "PZ_TEST_SIM_URL": sim.base_url,
        "PZ_TEST_STORE": str(tmp_path / "store"),
    }
    home = tmp_path / "home"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "pz_dagster.cli", *args]
        cmd += ["--module", "prefixed_query", "--home", str(home)]
        done = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    assert "1 batch(es) registered, running 1" in cli("run").stdout
    rows = [json.loads(line) for line in cli("history", "--json").stdout.splitlines()]
    assert {r["asset"] for r in rows} == {"emails", "raptor", "sender"}
    out = tmp_path / "senders.parquet"
    assert "legal/review/q/sender" in cli("export", str(out), "--asset", "sender").stdout
    assert sorted(pq.read_table(out).column("sender").to_pylist()) == [
        "ken@enron.com",
        "tim@enron.com",
    ]
