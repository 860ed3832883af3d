"""Adjacent semantic filters: one multi-asset that keeps an asset per filter and runs them, per
batch, in the order their own history favours (cheapest per record dropped first)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset
from pz_dagster.orchestration import (
    ModelPrice,
    OpenAICompatibleModel,
    OptimizerResource,
    RecordStore,
    build_definitions,
    compile_query,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.checks import FAILURE_CHECK, QUALITY_CHECK, SCHEMA_CHECK
from pz_dagster.orchestration.compiler import asset_keys
from pz_dagster.orchestration.optimization import history_records
from pz_dagster.testing import ChatRequest, OpenAISimulator, SimulatedModel
from pz_dagster.tuning.ordering import FilterEstimate, order_filters
from tests.conftest import document_of

BROAD = "The email was written by a person"  # keeps all but the newsletters
NARROW = "The email names the Raptor vehicles"  # keeps a few
N_DOCS, BATCH = 40, 20


def broad(doc: str) -> bool:
    return "newsletter" not in doc


def narrow(doc: str) -> bool:
    return "Raptor" in doc


def oracle(req: ChatRequest):
    doc = document_of(req)
    if BROAD in req.prompt:
        return {"answer": "YES" if broad(doc) else "NO"}
    if NARROW in req.prompt:
        return {"answer": "YES" if narrow(doc) else "NO"}
    return None


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    """40 emails in two batches: in each, 1 newsletter and 3 that name the Raptors."""
    d = tmp_path / "emails"
    d.mkdir()
    for i in range(N_DOCS):
        body = "The Raptor vehicles need capital." if i % BATCH in (2, 9, 15) else "Lunch?"
        if i % BATCH == 7:
            body = "This weekly newsletter lists the desk's trades."
        (d / f"e{i:02d}.txt").write_text(f"From: p{i}@enron.com\nSubject: note {i}\n\n{body}\n")
    return d


def two_filters(folder: Path) -> Dataset:
    return (
        Dataset.from_directory(folder, batch_size=BATCH)
        .sem_filter(BROAD, depends_on="contents", name="broad")
        .sem_filter(NARROW, depends_on="contents", name="narrow")
    )


def model(sim: OpenAISimulator) -> OpenAICompatibleModel:
    return OpenAICompatibleModel(
        model="sim",
        base_url=sim.base_url,
        prices={"sim": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)},
        max_concurrency=4,
    )


def metadata(instance, key: dg.AssetKey, partition: str) -> dict:
    rec = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records[0]
    return {k: v.value for k, v in rec.asset_materialization.metadata.items()}


def calls_by_filter(sim: OpenAISimulator, since: int) -> dict[str, int]:
    asked = [r.prompt for r in sim.requests[since:]]
    return {"broad": sum(BROAD in p for p in asked), "narrow": sum(NARROW in p for p in asked)}


def test_the_selective_filter_runs_first_once_its_history_says_so(emails: Path, tmp_path: Path):
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        defs, q = build_definitions(
            two_filters(emails),
            "order",
            model=model(sim),
            optimizer=OptimizerResource(),
            store_root=str(store),
        )
        job = defs.resolve_job_def(q.job.name)
        with dg.instance_for_test() as instance:
            b1, b2 = (b.key for b in register_partitions(RecordStore(store), q, instance))
            assert job.execute_in_process(partition_key=b1, instance=instance).success
            first = {n: metadata(instance, q.asset_key(n), b1) for n in ("broad", "narrow")}
            seen = len(sim.requests)
            result = job.execute_in_process(partition_key=b2, instance=instance)
            assert result.success
            calls = calls_by_filter(sim, seen)
            second = {n: metadata(instance, q.asset_key(n), b2) for n in ("broad", "narrow")}
            docs = RecordStore(store).read(q.asset_key("documents").path, b2).to_pylist()
            final = RecordStore(store).read(q.output_key.path, b2).to_pylist()
            kept_by_broad = RecordStore(store).read(q.asset_key("broad").path, b2).to_pylist()

    # Batch 1: no history, equal priors: the declared order.
    assert [first[n]["filter/order"] for n in ("broad", "narrow")] == [1, 2]
    assert first["narrow"]["records/in"] == first["broad"]["records/out"] == BATCH - 1
    # Batch 2: each filter's own history says narrow drops most records: it runs first.
    assert second["narrow"]["filter/order"] == 1 and second["broad"]["filter/order"] == 2
    assert second["broad"]["filter/chain"] == ["narrow", "broad"]
    assert second["narrow"]["records/in"] == BATCH
    assert second["broad"]["records/in"] == second["narrow"]["records/out"] == 3
    # Model calls: 20 + 3 instead of the declared order's 20 + 19.
    declared = BATCH + sum(broad(d["contents"]) for d in docs)
    assert calls == {"narrow": BATCH, "broad": 3}
    assert sum(calls.values()) < declared
    # The output is what the declared order yields; broad stored what it kept of what it saw.
    expected = {d["record_id"] for d in docs if broad(d["contents"]) and narrow(d["contents"])}
    assert {r["record_id"] for r in final} == expected and len(expected) == 3
    assert {r["record_id"] for r in kept_by_broad} == expected
    assert second["narrow"]["dagster/row_count"] == 3


def test_each_filter_records_its_own_selectivity_and_both_run_their_checks(
    emails: Path, tmp_path: Path
):
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        defs, q = build_definitions(
            two_filters(emails), "own", model=model(sim), store_root=str(store)
        )
        with dg.instance_for_test() as instance:
            b1 = register_partitions(RecordStore(store), q, instance)[0].key
            result = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=b1, instance=instance
            )
            assert result.success
            md = {n: metadata(instance, q.asset_key(n), b1) for n in ("broad", "narrow")}
            runs = {
                n: [r.run for r, _ in history_records(instance, q.asset_key(n), 10)]
                for n in ("broad", "narrow")
            }
    # shown to 4 significant digits
    assert md["broad"]["records/selectivity"] == pytest.approx((BATCH - 1) / BATCH, rel=1e-3)
    assert md["narrow"]["records/selectivity"] == pytest.approx(3 / (BATCH - 1), rel=1e-3)
    # what each filter's next plan reads back: its own records seen and kept
    assert [(r.records, r.records_out) for r in runs["broad"]] == [(BATCH, BATCH - 1)]
    assert [(r.records, r.records_out) for r in runs["narrow"]] == [(BATCH - 1, 3)]
    evals = {(e.asset_key.path[-1], e.check_name) for e in result.get_asset_check_evaluations()}
    for name in ("broad", "narrow"):
        assert {(name, c) for c in (SCHEMA_CHECK, FAILURE_CHECK, QUALITY_CHECK)} <= evals


def specs(ds: Dataset) -> list[tuple[str, list[str]]]:
    """(op name, asset keys) of each compiled asset."""
    return [
        (a.node_def.name, [k.to_user_string() for k in asset_keys(a)])
        for a in compile_query(ds, "q").assets
    ]


def test_only_adjacent_filters_share_a_multi_asset():
    base = Dataset.from_directory("/d")
    one = base.sem_filter("a", name="a")
    assert specs(one) == [("q__documents", ["q/documents"]), ("q__a", ["q/a"])]
    split = one.sem_map([{"name": "x", "type": "str", "desc": "x"}], name="m").sem_filter(
        "b", name="b"
    )
    assert [keys for _, keys in specs(split)] == [["q/documents"], ["q/a"], ["q/m"], ["q/b"]]
    assert all(len(a.keys) == 1 for a in compile_query(split, "q").assets)
    three = base.sem_filter("a", name="a").sem_filter("b", name="b").sem_filter("c", name="c")
    assert specs(three)[1] == ("q__a__to__c", ["q/a", "q/b", "q/c"])
    compiled = compile_query(three, "q")
    assert compiled.batch_output_key == dg.AssetKey(["q", "c"])
    chain = compiled.assets[1]
    deps = {k.path[-1]: {d.path[-1] for d in v} for k, v in chain.asset_deps.items()}
    assert deps == {"a": {"documents"}, "b": {"a"}, "c": {"b"}}


def test_rank_is_cost_per_record_dropped_and_ties_keep_the_declared_order():
    ranked = order_filters(
        [
            FilterEstimate("x", 1.0, 0.5),
            FilterEstimate("y", 1.0, 0.5),
            FilterEstimate("z", 4.0, 0.0),
        ]
    )
    assert [f.name for f in ranked] == ["x", "y", "z"]
    assert [
        f.name
        for f in order_filters(
            [FilterEstimate("dear", 10.0, 0.5), FilterEstimate("cheap", 1.0, 0.9)]
        )
    ] == ["cheap", "dear"]


def test_one_filter_of_a_chain_is_pinned_by_name_and_a_wrong_name_is_refused(
    emails: Path, tmp_path: Path
):
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        defs, q = build_definitions(
            two_filters(emails),
            "pin",
            model=model(sim),
            optimizer=OptimizerResource(strategies=["direct"]),
            store_root=str(store),
        )
        job = defs.resolve_job_def(q.job.name)
        op = q.op_name("narrow")
        assert op == q.op_name("broad") == "pin__broad__to__narrow"
        with dg.instance_for_test() as instance:
            b1, _ = (b.key for b in register_partitions(RecordStore(store), q, instance))
            pinned = {
                "ops": {op: {"config": {"filters": {"narrow": {"strategy": "chain_of_thought"}}}}}
            }
            assert job.execute_in_process(
                partition_key=b1, instance=instance, run_config=pinned
            ).success
            got = {n: metadata(instance, q.asset_key(n), b1) for n in ("broad", "narrow")}
            wrong = {"ops": {op: {"config": {"filters": {"narorw": {"strategy": "direct"}}}}}}
            failed = job.execute_in_process(
                partition_key=b1, instance=instance, run_config=wrong, raise_on_error=False
            )
    assert got["narrow"]["physical_config"]["strategy"] == "chain_of_thought"  # its own pin
    assert got["broad"]["physical_config"]["strategy"] == "direct"  # the optimizer's choice
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "narorw" in message and "broad" in message and "narrow" in message


def test_labels_of_the_conjunction_judge_a_filter_only_on_what_the_others_kept(
    emails: Path, tmp_path: Path
):
    """The labels say which emails pass both filters. An email broad kept that narrow then
    dropped is irrelevant for the answer, but says nothing of broad: it is not held against it."""
    import json

    from pz_dagster.tuning.history import HistoryRecord

    docs = sorted(emails.iterdir())[:BATCH]
    labels = tmp_path / "labels.json"
    labels.write_text(
        json.dumps(
            {d.name: {} if broad(d.read_text()) and narrow(d.read_text()) else None for d in docs}
        )
    )
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        defs, q = build_definitions(
            two_filters(emails),
            "judged",
            model=model(sim),
            optimizer=OptimizerResource(labels_path=str(labels)),
            store_root=str(store),
        )
        with dg.instance_for_test() as instance:
            b1, _ = (b.key for b in register_partitions(RecordStore(store), q, instance))
            assert (
                defs.resolve_job_def(q.job.name)
                .execute_in_process(partition_key=b1, instance=instance)
                .success
            )
            md = {n: metadata(instance, q.asset_key(n), b1) for n in ("broad", "narrow")}
    assert md["broad"]["filter/order"] == 1  # no history yet: the declared order
    quality = {n: HistoryRecord.from_metadata(md[n]).run.quality for n in ("broad", "narrow")}
    # broad kept the 3 relevant emails and 16 that narrow dropped: those do not count
    assert (quality["broad"].tp, quality["broad"].fp, quality["broad"].fn) == (3, 0, 0)
    assert quality["broad"].f1 == 1.0
    # narrow, the last filter, is judged on everything it saw: 3 kept, 16 rightly dropped
    assert (quality["narrow"].tp, quality["narrow"].fp, quality["narrow"].tn) == (3, 0, 16)
