"""Semantic filters: long documents read in chunks, the batched, prompt (chain of thought,
critique, ensemble, cascade) strategies through Dagster, and the thresholds the cascade and
the proxies learn from history."""

from __future__ import annotations

import logging
import re

import dagster as dg
import pytest

from pz_dagster import Dataset
from pz_dagster.orchestration import (
    OpenAICompatibleModel,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import ChatRequest, OpenAISimulator, SimulatedModel
from tests.conftest import EMAILS, document_of, oracle
from tests.operators_common import sim_model


def test_long_documents_are_read_in_chunks_not_cut(tmp_path, sim):
    from pz_dagster.models import OpenAICompatibleClient
    from pz_dagster.operators import run_operator
    from pz_dagster.operators.prompts import split_to_context

    filler = "\n".join(f"Line {i}: routine trading update for the west desk." for i in range(150))
    long_doc = f"From: x@enron.com\nSubject: update\n\n{filler}\nPS: the Raptor structures need more capital."
    client = OpenAICompatibleClient("sim", base_url=sim.base_url, context_tokens=700)
    chunks = split_to_context(long_doc, client, 16)
    assert len(chunks) > 3 and all(len(c) <= (700 - 16 - 350) * 3 for c in chunks)
    assert chunks[0].startswith("From:") and chunks[-1].endswith("more capital.")
    assert all(
        a[-100:] in long_doc and b[:50] in a + b for a, b in zip(chunks, chunks[1:], strict=False)
    )

    records = [
        {"record_id": "long", "filename": "long", "contents": long_doc, "error": None},
        {"record_id": "short", "filename": "short", "contents": "Lunch?", "error": None},
    ]
    node = Dataset.from_directory("/d").sem_filter("mentions Raptor", depends_on="contents").node
    result = run_operator(node, records, client)
    assert [r["record_id"] for r in result.records] == ["long"]  # found in the last chunk
    assert result.stats.chunked == 1 and result.stats.truncated == 0
    # every chunk of the long one, the confirmation of its YES, the short one
    assert result.stats.usage.calls == len(chunks) + 2


def batched_oracle(req: ChatRequest):
    props = (req.schema or {}).get("properties", {})
    if "answers" in props:
        docs = re.split(r"^\[\d+\]\n", document_of(req), flags=re.M)[1:]
        return {"answers": ["YES" if ("Raptor" in d or "Chewco" in d) else "NO" for d in docs]}
    return oracle(req)


def test_batched_filter_strategy_answers_groups_and_falls_back(tmp_path):
    from pz_dagster.models import OpenAICompatibleClient
    from pz_dagster.operators import run_operator
    from pz_dagster.testing import Fault

    records = [
        {
            "record_id": f"r{i}",
            "filename": "f",
            "contents": f"Email {i} about {'Raptor' if i % 3 == 0 else 'lunch'}",
            "error": None,
        }
        for i in range(20)
    ]
    node = Dataset.from_directory("/d").sem_filter("mentions a scheme", depends_on="contents").node
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=batched_oracle) as s:
        client = OpenAICompatibleClient("sim", base_url=s.base_url, max_concurrency=4)
        batched = run_operator(node, records, client, strategy="batched")
        direct = run_operator(node, records, client, strategy="direct")
        assert s.calls["sim"] == 3 + 20  # 20 records in groups of 8: 3 requests; direct: 20
    assert [r["record_id"] for r in batched.records] == [r["record_id"] for r in direct.records]
    assert [r["record_id"] for r in batched.records] == [
        "r0",
        "r3",
        "r6",
        "r9",
        "r12",
        "r15",
        "r18",
    ]
    assert batched.stats.usage.calls == 3 and batched.strategy.startswith("batched")

    wrong_length = Fault(text='{"answers": ["YES"]}')

    def faults(req, call):
        return wrong_length if "answers" in (req.schema or {}).get("properties", {}) else None

    with OpenAISimulator({"sim": SimulatedModel()}, oracle=batched_oracle, faults=faults) as s:
        client = OpenAICompatibleClient("sim", base_url=s.base_url, max_concurrency=2)
        fallback = run_operator(node, records[:8], client, strategy="batched")
    assert [r["record_id"] for r in fallback.records] == [
        "r0",
        "r3",
        "r6",
    ] and fallback.stats.failures == 0
    assert (
        fallback.stats.usage.calls == 2 + 8
    )  # group answer and its corrective retry, then per record


@pytest.mark.parametrize(
    "strategy, calls_per_record",
    [("chain_of_thought", 1), ("critique", 2), ("ensemble", 3), ("direct", 1), ("cascade", 2)],
)
def test_filter_prompt_strategies_materialize(folder, tmp_path, strategy, calls_per_record):
    """Each strategy pinned by run config keeps the right records; the ensemble outvotes a
    model that is always wrong."""
    models = {
        "sim": SimulatedModel(),
        "sim-b": SimulatedModel(),
        "sim-wrong": SimulatedModel(accuracy=0.0),
    }
    with OpenAISimulator(models, oracle=oracle) as s:
        model = OpenAICompatibleModel(
            model="sim", models=["sim-b", "sim-wrong"], base_url=s.base_url, max_concurrency=4
        )
        ds = Dataset.from_directory(folder).sem_filter(
            "The email discusses a fraudulent scheme", depends_on="contents", name="fraud"
        )
        store = tmp_path / f"store-{strategy}"
        defs, q = build_definitions(ds, "strat", model=model, store_root=str(store))
        with dg.instance_for_test() as instance:
            (b,) = register_partitions(RecordStore(store), q, instance)
            res = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=b.key,
                instance=instance,
                run_config={
                    "ops": {
                        "strat__fraud": {
                            "config": {
                                "strategy": strategy,
                                "use_cache": False,
                                # a cascade's strong model; the cheap one is the cheapest other
                                "model": "sim" if strategy == "cascade" else "",
                            }
                        }
                    }
                },
            )
            assert res.success
            kept = RecordStore(store).read(q.output_key.path, b.key).to_pylist()
            md = (
                instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=q.asset_key("fraud")), limit=1
                )
                .records[0]
                .asset_materialization.metadata
            )
    assert sorted(r["record_id"] for r in kept) == ["a.txt", "c.txt"]
    assert md["physical_config"].value["strategy"] == strategy
    # the chosen run's calls (quality sampling runs are counted apart, under sample_runs)
    assert md["usage/model_calls"].value == calls_per_record * len(EMAILS)
    if strategy == "ensemble":
        assert md["physical_config"].value["params"]["models"] == ["sim", "sim-b", "sim-wrong"]
    if strategy == "cascade":
        # the simulator's cheap model is never sure (confidence 1): every record escalates,
        # and the strong model's answers are recorded to learn thresholds from
        assert md["physical_config"].value["params"]["models"] == ["sim-b", "sim"]
        assert md["records/escalated"].value == len(EMAILS)
        assert len(md["history/record"].value["cascade_pairs"]["sim-b"]) == len(EMAILS)


FILTER_CONFIG = {"operator": "f", "model": "m", "strategy": "direct", "params": {}}


def test_cascade_thresholds_are_learned_from_scored_history():
    from optimizer import Candidate
    from pz_dagster.tuning.history import NodeHistory
    from pz_dagster.tuning.planning import strategy_params

    cand = Candidate("f", "cascade", "big", ("small", "big"))
    assert strategy_params(cand, NodeHistory()) == {}  # defaults until there is history
    # the cheap model is right when it is sure (|score| 5), unreliable below
    pairs = [(5.0, True)] * 10 + [(-5.0, False)] * 30
    pairs += [(2.0, True)] + [(2.0, False)] * 4 + [(-2.0, True)] * 3
    learned = strategy_params(cand, NodeHistory(proxy_pairs={"cascade:small": pairs}))
    assert -5.0 < learned["low"] <= -2.0 and 2.0 < learned["high"] <= 5.0


def test_proxy_thresholds_learn_from_labels_not_from_a_weak_champion():
    from pz_dagster.tuning.history import HistoryRecord, NodeHistory

    config = {"physical_config": dg.MetadataValue.json(FILTER_CONFIG)}
    labelled = {"proxy_pairs": dg.MetadataValue.json({"lexical_proxy": [[5, True], [0, False]]})}
    judged = {
        "proxy_pairs": dg.MetadataValue.json({"lexical_proxy": [[0, True], [5, False]]}),
        "proxy_pairs_source": dg.MetadataValue.text("champion"),
    }
    records = [HistoryRecord.from_metadata(config | md) for md in (labelled, judged)]
    merged = NodeHistory.of((r, 0.0) for r in records if r is not None)
    assert merged.pairs("lexical_proxy") == [(5.0, True), (0.0, False)]
    only_champion = NodeHistory(proxy_pairs={"lexical_proxy@champion": [(1.0, True), (0.0, False)]})
    assert only_champion.can_learn("lexical_proxy")


def test_old_and_malformed_materializations_are_read_as_no_history(folder, sim, tmp_path, caplog):
    """A materialization written without a history record, or with a broken one, is skipped
    with a warning: the run plans as if it were not there."""
    ds = Dataset.from_directory(folder).sem_filter(
        "The email discusses a fraudulent scheme", depends_on="contents", name="fraud"
    )
    store = tmp_path / "store-old"
    defs, q = build_definitions(ds, "old", model=sim_model(sim), store_root=str(store))
    key = q.asset_key("fraud")
    with dg.instance_for_test() as instance:
        (b,) = register_partitions(RecordStore(store), q, instance)
        for md in ({"dollars": 1.0}, {"physical_config": {"strategy": 3}, "evaluated": 4}):
            instance.report_runless_asset_event(dg.AssetMaterialization(key, metadata=md))
        with caplog.at_level(logging.WARNING, logger="pz_dagster.tuning.history"):
            res = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=b.key, instance=instance
            )
        assert res.success
        md = instance.fetch_materializations(key, limit=1).records[0].asset_materialization
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "no history record" in warned and "malformed history record" in warned
    assert md.metadata["cold_start_sample"].value is True  # nothing was read as history
