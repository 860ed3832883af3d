"""Per-record operators that add columns (sem_classify, sem_flat_map, sem_map, map) and the
relational ones after them, through Dagster materialization (simulator answers, and once the
bundled model); their declaration errors; what the history keeps of a map's code synthesis."""

from __future__ import annotations

import dagster as dg
import pytest

from pz_dagster import Dataset, PlanError, SchemaError
from pz_dagster.orchestration import (
    LocalLlamaModel,
)
from tests.conftest import EMAILS
from tests.operators_common import emails, materialize, sim_model


def test_classify_flat_map_and_relational_operators_materialize(folder, sim, tmp_path):
    ds = (
        Dataset.from_directory(folder)
        .sem_classify(
            "Does the email discuss a fraudulent scheme?", ["fraud", "other"], output="topic"
        )
        .filter(lambda r: r["topic"] == "fraud", depends_on="topic", name="only_fraud")
        .sem_flat_map(
            [{"name": "person", "type": "str", "desc": "a person the email names"}], name="people"
        )
        .map(
            lambda r: {"surname": r["person"].split()[-1]},
            {"surname": str},
            depends_on="person",
            name="surname",
        )
        .distinct("person", name="unique_people")
        .sort("surname", name="by_surname")
        .project(["person", "surname", "parent_record_id"], name="result")
    )
    md, rows = materialize(ds, "ops", sim_model(sim), tmp_path)
    assert [(r["person"], r["surname"], r["parent_record_id"]) for r in rows] == [
        ("Andrew Fastow", "Fastow", "a.txt"),
        ("Ben Glisan", "Glisan", "a.txt"),
        ("Michael Kopper", "Kopper", "c.txt"),
    ]
    assert rows[0]["record_id"] == "a.txt#1" and all(r["error"] is None for r in rows)
    assert md["sem_classify_1"]["usage/model_calls"] == 4
    assert md["only_fraud"]["records/out"] == 2
    assert md["people"]["usage/model_calls"] == 2 and md["people"]["records/out"] == 4
    assert md["unique_people"]["records/out"] == 3


@pytest.mark.slow
def test_classify_and_flat_map_on_the_bundled_model(folder, tmp_path):
    ds = (
        Dataset.from_directory(folder)
        .sem_classify(
            "What is the email about?", ["fraud", "social"], output="topic", depends_on="contents"
        )
        .sem_flat_map(
            [{"name": "person", "type": "str", "desc": "a person named"}],
            depends_on="contents",
            max_items=3,
            name="people",
        )
    )
    md, rows = materialize(ds, "tiny", LocalLlamaModel(n_ctx=2048), tmp_path)
    assert md["sem_classify_1"]["usage/model_calls"] == 4
    assert md["sem_classify_1"]["records/failures"] == 0
    assert {r["topic"] for r in rows if not r["error"]} <= {"fraud", "social"}
    assert md["people"]["records/evaluated"] == 4
    assert isinstance(md["people"]["usage/output_tokens"], int)
    assert all(r["parent_record_id"] in EMAILS for r in rows)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: emails().sem_classify("", ["a", "b"]), "non-empty instruction"),
        (lambda: emails().sem_classify("topic?", ["a"]), "at least two classes"),
        (lambda: emails().sem_classify("topic?", ["a", "a"]), "distinct"),
        (lambda: emails().sem_classify("topic?", "ab"), "list of labels"),
        (lambda: emails().sem_classify("topic?", ["a", "b"], output="contents"), "already exist"),
        (lambda: emails().sem_classify("topic?", ["a", "b"], depends_on="body"), "unknown column"),
        (
            lambda: emails().sem_flat_map([{"name": "p", "type": "dict", "desc": "x"}]),
            "unknown type",
        ),
        (
            lambda: emails().sem_flat_map([{"name": "p", "type": "str", "desc": "x"}], max_items=0),
            "max_items",
        ),
        (
            lambda: emails().sem_flat_map([{"name": "filename", "type": "str", "desc": "x"}]),
            "already exist",
        ),
        (lambda: emails().map(lambda r: {}, {}), "needs output columns"),
        (lambda: emails().map("len", {"n": int}), "callable"),
        (lambda: emails().map(lambda r: {}, {"n": int}, depends_on="nope"), "unknown column"),
        (lambda: emails().sort([]), "at least one column"),
        (lambda: emails().sort("nope"), "unknown column"),
        (lambda: emails().distinct("nope"), "unknown column"),
    ],
)
def test_declaration_errors(build, message):
    with pytest.raises((PlanError, SchemaError), match=message):
        build()


def test_the_history_keeps_code_synthesis_s_recurring_cost_without_its_one_time_part():
    from pz_dagster.tuning.history import HistoryRecord, NodeHistory

    config = {"operator": "extract", "model": "m", "strategy": "code_synthesis", "params": {}}
    numbers = {
        "evaluated": 20,
        "model_calls": 12,
        "dollars": 0.9,
        "model_seconds": 9.0,
        "input_tokens": 9000,
        "synthesis_sample": 8,
        "synthesis_tokens": 8000,
        "fallback_tokens": 1000,
    }
    # an explored run on a sample the synthesis sample covers: no recurring record
    explored_run = {
        "config": config,
        "records": 5,
        "dollars": 0.5,
        "seconds": 5.0,
        "records_out": 5,
        "one_time": {"sample": 5, "synthesis_tokens": 5000, "fallback_tokens": 0},
    }
    md = {k: dg.MetadataValue.float(float(v)) for k, v in numbers.items()} | {
        "physical_config": dg.MetadataValue.json(config),
        "sample_runs": dg.MetadataValue.json([explored_run]),
    }
    record = HistoryRecord.from_metadata(md)
    assert record is not None
    run, explored = NodeHistory.of([(record, 0.0)]).observations
    # 12 records answered by the functions or a fallback, at the fallbacks' 1/9 of the cost
    assert run.records == 12 and run.dollars == pytest.approx(0.1) and run.seconds == 1.0
    assert explored.records == 0 and explored.dollars == 0.0
