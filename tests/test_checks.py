"""Asset checks of operator assets: schema validity, failure rate, quality; WARN vs blocking ERROR."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset
from pz_dagster.orchestration import (
    CheckSettings,
    ModelPrice,
    OpenAICompatibleModel,
    OptimizerResource,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.checks import (
    FAILURE_CHECK,
    QUALITY_CHECK,
    SCHEMA_CHECK,
    schema_problems,
)
from pz_dagster.testing import Fault, OpenAISimulator, SimulatedModel
from tests.conftest import LUNCH_EMAIL, RAPTOR_EMAIL

SENDER = [{"name": "sender", "type": "str", "desc": "The email address of the sender"}]


@pytest.fixture
def clean_emails(tmp_path: Path) -> Path:
    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(3):
        (folder / f"raptor_{i}.txt").write_text(RAPTOR_EMAIL.replace("quarter", f"quarter {i}"))
        (folder / f"lunch_{i}.txt").write_text(LUNCH_EMAIL.replace("noon", f"noon {i}"))
    return folder


def query(folder: Path) -> Dataset:
    return (
        Dataset.from_directory(folder, batch_size=10)
        .sem_filter("The email mentions Raptor", depends_on="contents", name="raptor")
        .sem_add_columns(SENDER, depends_on="contents", name="sender")
        .project(["record_id", "sender"], name="senders")
    )


def run_batch(defs, q, store: Path, instance) -> dg.ExecuteInProcessResult:
    (batch,) = register_partitions(RecordStore(store), q, instance)
    return defs.resolve_job_def(q.job.name).execute_in_process(
        partition_key=batch.key, instance=instance, raise_on_error=False
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def test_schema_problems_name_what_is_wrong():
    columns = [("record_id", str), ("n", int), ("sender", str), ("error", str)]
    good = [
        {"record_id": "a", "n": 1, "sender": "x@y", "error": None},
        {"record_id": "b", "n": 2, "sender": None, "error": "sender: model timed out"},
    ]
    assert schema_problems(good, columns, ["sender"]) == []
    bad = [
        {"record_id": "a", "n": "one", "sender": "x@y", "error": None},
        {"record_id": "a", "n": 1, "sender": None, "error": None},
        {"record_id": "c", "sender": "z", "error": None},
    ]
    problems = schema_problems(bad, columns, ["sender"])
    assert any("column 'n'" in p for p in problems)
    assert any("record_id missing or repeated" in p for p in problems)
    assert any("output fields left empty ['sender']" in p for p in problems)
    assert any("missing columns ['n']" in p for p in problems)


def test_checks_pass_on_a_healthy_batch(clean_emails: Path, tmp_path: Path):
    with OpenAISimulator({"sim": SimulatedModel()}) as sim:
        model = OpenAICompatibleModel(model="sim", base_url=sim.base_url)
        defs, q = build_definitions(
            query(clean_emails), "checked", model=model, store_root=str(tmp_path / "s")
        )
        with dg.instance_for_test() as instance:
            result = run_batch(defs, q, tmp_path / "s", instance)
    assert result.success
    evals = evaluations(result)
    # Every asset has the schema and failure checks; the optimized operators a quality check.
    names = [n.name for n in q.plan.lineage()]  # the rewrites add early projections
    assert "senders" in names and len(names) > 4
    assert set(evals) == {
        *((a, c) for a in names for c in (SCHEMA_CHECK, FAILURE_CHECK)),
        ("raptor", QUALITY_CHECK),
        ("sender", QUALITY_CHECK),
    }
    assert all(e.passed for e in evals.values()), {k: e.passed for k, e in evals.items()}
    # A single model is its own champion: nothing to measure quality against, said so.
    assert evals[("raptor", QUALITY_CHECK)].metadata["measured"].value is False
    assert evals[("sender", FAILURE_CHECK)].metadata["failure_rate"].value == 0.0


def test_failure_rate_warns_by_default_and_blocks_downstream_as_a_blocking_error(
    clean_emails: Path, tmp_path: Path
):
    def broken_extraction(req, n):  # the filter works; every extraction answer is invalid JSON
        return Fault(text="sender is jeff") if "sender" in req.prompt.lower() else None

    for settings, blocked in (
        (None, False),
        (CheckSettings(failure_severity="ERROR", blocking=True), True),
    ):
        store = tmp_path / f"s{blocked}"
        with OpenAISimulator({"sim": SimulatedModel()}, faults=broken_extraction) as sim:
            model = OpenAICompatibleModel(model="sim", base_url=sim.base_url)
            defs, q = build_definitions(
                query(clean_emails), "checked", model=model, store_root=str(store), checks=settings
            )
            with dg.instance_for_test() as instance:
                result = run_batch(defs, q, store, instance)
                senders = instance.get_latest_materialization_event(q.asset_key("senders"))
        evals = evaluations(result)
        failure = evals[("sender", FAILURE_CHECK)]
        assert not failure.passed
        assert failure.metadata["failure_rate"].value == 1.0
        assert failure.metadata["failures"].value == 6
        assert evals[("raptor", FAILURE_CHECK)].passed
        # Failed records keep their error and empty fields: that is schema-valid.
        assert evals[("sender", SCHEMA_CHECK)].passed
        if blocked:
            assert failure.severity == dg.AssetCheckSeverity.ERROR
            assert not result.success and senders is None  # the projection never ran
        else:
            assert failure.severity == dg.AssetCheckSeverity.WARN
            assert result.success and senders is not None


def test_quality_check_fails_when_the_chosen_model_disagrees_with_the_champion(
    clean_emails: Path, tmp_path: Path
):
    profiles = {"champion": SimulatedModel(accuracy=1.0), "cheap": SimulatedModel(accuracy=0.0)}
    with OpenAISimulator(profiles) as sim:
        model = OpenAICompatibleModel(
            model="champion",
            models=["cheap"],
            base_url=sim.base_url,
            prices={
                "champion": ModelPrice(input_per_mtok=10.0, output_per_mtok=30.0),
                "cheap": ModelPrice(input_per_mtok=0.1, output_per_mtok=0.2),
            },
        )
        defs, q = build_definitions(
            query(clean_emails),
            "checked",
            model=model,
            store_root=str(tmp_path / "s"),
            optimizer=OptimizerResource(policy="MinCost", sample_size=6),
            checks=CheckSettings(min_quality=0.8),
        )
        with dg.instance_for_test() as instance:
            result = run_batch(defs, q, tmp_path / "s", instance)
    assert result.success  # WARN by default: the batch lands, the check flags it
    quality = evaluations(result)[("raptor", QUALITY_CHECK)]
    assert quality.metadata["measured"].value is True
    assert quality.metadata["quality_source"].value == "champion"
    assert quality.metadata["quality"].value < 0.8 and not quality.passed
    assert quality.severity == dg.AssetCheckSeverity.WARN
