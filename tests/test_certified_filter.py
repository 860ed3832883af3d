"""A filter with a target (``sem_filter(..., target=Recall(0.9, delta=0.1), label_budget=...)``)
runs as a certified cascade: on the simulator, its thresholds are certified and met, carried to
the next batch and audited there; a drifting scorer is re-certified or dropped, and the check
fails while a batch is not decided under its target."""

from __future__ import annotations

import dagster as dg
import pytest

from pz_dagster import Dataset, PlanError, Precision, Recall
from pz_dagster.orchestration import OpenAICompatibleModel, RecordStore, build_definitions
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import ChatRequest, Fault, OpenAISimulator, SimulatedModel
from tests.conftest import document_of
from tests.test_end_to_end import latest_metadata

PREDICATE = "The memo reports a safety incident at the plant"


def memo(i: int) -> str:
    if i % 3 == 0:
        return f"Memo {i}\nA worker was hurt when valve {i} burst; the line was stopped.\n"
    return f"Memo {i}\nQuarterly output of line {i % 7} rose; the canteen menu changes.\n"


def truth(text: str) -> bool:
    return "burst" in text


def memo_oracle(req: ChatRequest):
    yes = truth(document_of(req))
    props = (req.schema or {}).get("properties", {})
    out = {"answer": "YES" if yes else "NO"}
    if "confidence" in props:
        out["confidence"] = 5
    for k in props:
        out.setdefault(k, "the document")
    return out


def records(n: int, start: int = 0):
    return [
        {"record_id": f"m{i:04d}", "filename": f"m{i:04d}.txt", "contents": memo(i), "error": None}
        for i in range(start, start + n)
    ]


def recall_of(kept, given) -> float:
    pos = {r["record_id"] for r in given if truth(r["contents"])}
    return len(pos & {r["record_id"] for r in kept}) / len(pos)


def precision_of(kept, given) -> float:
    rel = {r["record_id"] for r in given if truth(r["contents"])}
    ids = {r["record_id"] for r in kept}
    return len(ids & rel) / len(ids) if ids else 1.0


MODELS = {
    "nano": SimulatedModel(accuracy=0.93, calibrated=True),
    "champion": SimulatedModel(accuracy=1.0),
}


@pytest.mark.parametrize("target", [Recall(0.9, 0.1), Precision(0.9, 0.1)])
def test_a_certified_cascade_meets_its_target_for_fewer_oracle_calls(target):
    from pz_dagster.models import OpenAICompatibleClient
    from pz_dagster.operators import run_operator

    node = (
        Dataset.from_directory("/d")
        .sem_filter(PREDICATE, depends_on="contents", target=target, label_budget=300)
        .node
    )
    given = records(1500)
    sure = {**MODELS, "nano": SimulatedModel(accuracy=0.97, calibrated=True)}
    with OpenAISimulator(sure, oracle=memo_oracle) as s:
        nano = OpenAICompatibleClient("nano", base_url=s.base_url, max_concurrency=8)
        champion = OpenAICompatibleClient("champion", base_url=s.base_url, max_concurrency=8)
        res = run_operator(
            node, given, champion, strategy="certified_cascade", models=[nano, champion]
        )
        assert s.calls["nano"] == 1500
        oracle_calls = s.calls["champion"]
    g = res.extras["guarantee"]
    assert g["certified"] and g["mode"] == "certified", g["reason"]
    assert g["labels"] <= 300 and g["decided_by_score"] >= 150
    assert oracle_calls == g["oracle_calls"] <= 1500 - g["decided_by_score"]
    achieved = recall_of if target.kind == "recall" else precision_of
    assert achieved(res.records, given) >= 0.9


def test_a_target_is_declared_in_python_and_yaml_and_checked():
    from pz_dagster.orchestration.component import PzQueryComponent
    from pz_dagster.query.spec import dataset_from_spec

    ds = Dataset.from_directory("/d").sem_filter("x", target=[Recall(0.9), Precision(0.8, 0.05)])
    assert [(t.kind, t.target, t.delta) for t in ds.node.target] == [
        ("recall", 0.9, 0.1),
        ("precision", 0.8, 0.05),
    ]
    c = PzQueryComponent.from_attributes_dict(
        attributes={
            "name": "q",
            "source": {"path": "docs"},
            "operators": [
                {
                    "type": "sem_filter",
                    "predicate": "x",
                    "target": {"recall": 0.95, "delta": 0.05},
                    "label_budget": 300,
                }
            ],
        }
    )
    node = dataset_from_spec(c).node
    assert node.target == (Recall(0.95, 0.05),) and node.label_budget == 300
    assert "recall>=0.95 (delta 0.05), label_budget=300" in node.describe()
    with pytest.raises(PlanError, match="target"):
        Dataset.from_directory("/d").sem_filter("x", target={"recall": 1.2})
    with pytest.raises(PlanError, match="label_budget goes with a target"):
        Dataset.from_directory("/d").sem_filter("x", label_budget=10)


def _materialize(defs, q, instance, key):
    res = defs.resolve_job_def(q.job.name).execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False
    )
    assert res.success
    (check,) = [
        e for e in res.get_asset_check_evaluations() if e.check_name == "guarantee_certified"
    ]
    md = latest_metadata(instance, q.asset_key("incidents"), key)
    return check, md["guarantee"].value


@pytest.mark.slow
def test_a_drifting_scorer_is_recertified_and_the_check_fails_while_uncertified(tmp_path):
    """Five batches of 240 memos. 1: certified. 2: the cheap model turns confidently wrong; the
    audit rejects the carried thresholds, and the batch is certified anew or the scorer dropped
    (the oracle decides all): it still meets the target. 3: the model is itself again and is
    certified again. 4: the oracle fails, so the audit cannot run: the batch is not decided
    under its target and the check fails. 5: the oracle is back, the audit passes."""
    folder = tmp_path / "memos"
    folder.mkdir()
    for i in range(5 * 240):
        (folder / f"m{i:04d}.txt").write_text(memo(i))
    failing = {"on": False}

    def faults(req, call):
        return Fault(status=500) if failing["on"] and req.model == "champion" else None

    with OpenAISimulator(dict(MODELS), oracle=memo_oracle, faults=faults) as s:
        model = OpenAICompatibleModel(
            model="champion", models=["nano"], base_url=s.base_url, max_concurrency=8,
            max_retries=0, breaker_failures=0,
        )  # fmt: skip
        ds = Dataset.from_directory(str(folder), batch_size=240).sem_filter(
            PREDICATE, depends_on="contents", name="incidents", target=Recall(0.9, 0.1),
            label_budget=150,
        )  # fmt: skip
        store = tmp_path / "store"
        defs, q = build_definitions(ds, "memos", model=model, store_root=str(store))
        with dg.instance_for_test() as instance:
            batches = register_partitions(RecordStore(store), q, instance)
            assert len(batches) == 5
            seen = []
            for n, b in enumerate(batches):
                # batch 2: confidently wrong most of the time (it now drops what it kept)
                s.models["nano"] = SimulatedModel(accuracy=0.3) if n == 1 else MODELS["nano"]
                failing["on"] = n == 3
                check, g = _materialize(defs, q, instance, b.key)
                kept = RecordStore(store).read(q.output_key.path, b.key).to_pylist()
                given = [
                    {"record_id": p.name, "contents": p.read_text()}
                    for p in sorted(folder.iterdir())[n * 240 : (n + 1) * 240]
                ]
                ok = [r for r in kept if not r.get("error")]
                seen.append((check.passed, g["mode"], recall_of(ok, given)))
    (p1, m1, r1), (p2, m2, r2), (p3, m3, r3), (p4, m4, _), (p5, m5, r5) = seen
    assert (p1, m1) == (True, "certified") and r1 >= 0.9
    assert p2 and m2 in ("recertified", "dropped") and r2 >= 0.9
    assert (p3, m3) == (True, "certified") and r3 >= 0.9
    assert (p4, m4) == (False, "carried")
    assert (p5, m5) == (True, "carried") and r5 >= 0.9


def test_a_filter_with_a_target_is_not_pinned_to_another_strategy_nor_chosen_for():
    from optimizer import ModelProfile
    from pz_dagster.tuning.planning import pinned_candidate
    from pz_dagster.tuning.settings import TuningSettings

    node = Dataset.from_directory("/d").sem_filter("x", target=Recall(0.9)).node
    profiles = [ModelProfile("small", input_price=1e-7), ModelProfile("big", quality=0.95)]
    pinned = pinned_candidate(node, "auto", "", profiles)
    assert pinned is not None and pinned.key == "certified_cascade:small+big"
    assert pinned_candidate(node, "auto", "", profiles[1:]).models == ("big",)  # a proxy scores
    with pytest.raises(PlanError, match="declares a target"):
        pinned_candidate(node, "direct", "", profiles)
    with pytest.raises(ValueError, match="runs as one"):
        TuningSettings(strategies=["direct", "certified_cascade"])
