"""The optimizer in the loop without Dagster: history records, planning from them, assessment
and the whole step on hand-built records with fake models."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from optimizer import Candidate, ModelProfile, PhysicalConfig, QualityCounts
from pz_dagster import Dataset
from pz_dagster.models.base import Completion, Usage
from pz_dagster.models.embeddings import Embeddings
from pz_dagster.operators import run_operator
from pz_dagster.operators.base import OperatorResult, OperatorStats
from pz_dagster.orchestration.metadata import render
from pz_dagster.tuning import (
    HistoryRecord,
    NodeHistory,
    OneTimeCost,
    RunRecord,
    StepServices,
    TuningSettings,
    run_operator_step,
)
from pz_dagster.tuning.assessment import assess
from pz_dagster.tuning.planning import pinned_candidate, plan_operator
from pz_dagster.tuning.report import Markdown, preview, run_metadata

FRAUD = "Raptor hides the losses"
PREDICATE = "The email is about fraud"


def fraud_filter():
    return Dataset.from_directory("emails").sem_filter(PREDICATE, depends_on="contents", name="f")


def records(n: int = 8) -> list[dict[str, Any]]:
    """Every other record mentions the fraud."""
    return [
        {
            "record_id": f"r{i}",
            "filename": f"r{i}",
            "contents": FRAUD if i % 2 else "Lunch at noon",
            "error": None,
        }
        for i in range(n)
    ]


@dataclass
class FakeModel:
    """A chat model answering a filter prompt: YES where the text names Raptor (``right``), or
    YES to everything; each call costs ``price`` dollars."""

    model_name: str
    right: bool = True
    price: float = 0.001
    calls: list[str] = field(default_factory=list)
    context_tokens: int = 4096
    max_concurrency: int = 1

    @property
    def cache_namespace(self) -> str:
        return self.model_name

    def complete(self, messages: list[Any], **_: Any) -> Completion:
        prompt = "\n".join(str(m["content"]) for m in messages)
        self.calls.append(prompt)
        yes = "Raptor" in prompt if self.right else True
        usage = Usage(input_tokens=100, output_tokens=5, seconds=0.01, dollars=self.price, calls=1)
        return Completion(json.dumps({"answer": "YES" if yes else "NO"}), self.model_name, usage)


@dataclass
class FakeEmbedder:
    """Embeds a text as [mentions Raptor, does not]: the filter's proxy separates them."""

    model_name: str = "emb"
    batches: list[list[str]] = field(default_factory=list)

    def embed(self, texts: list[str]) -> Embeddings:
        self.batches.append(list(texts))
        vectors = [[1.0, 0.0] if ("Raptor" in t or "fraud" in t) else [0.0, 1.0] for t in texts]
        return Embeddings(vectors, Usage(calls=1, dollars=0.0))


def profiles() -> list[ModelProfile]:
    return [
        ModelProfile("big", input_price=10e-6, output_price=30e-6, quality=0.99),
        ModelProfile("small", input_price=0.1e-6, output_price=0.2e-6, quality=0.8),
    ]


def labels_file(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({r["record_id"]: FRAUD in r["contents"] for r in rows}))
    return str(path)


def a_record() -> HistoryRecord:
    return HistoryRecord(
        run=RunRecord(
            config=PhysicalConfig("f", "small", "cascade", {"models": ["small", "big"], "low": -1}),
            records=10,
            model_calls=4,
            cache_hits=6,
            dollars=0.4,
            seconds=2.0,
            records_out=3,
            one_time=OneTimeCost(sample=2, synthesis_tokens=10, fallback_tokens=10),
            quality=QualityCounts(tp=2, fp=1, fn=0, tn=7),
            quality_source="labels",
        ),
        input_tokens=1000,
        sample_runs=[
            RunRecord(config=PhysicalConfig("f", "big", "direct"), records=5, records_out=2),
            RunRecord(config=PhysicalConfig("f", None, "lexical_proxy"), records=5),
        ],
        proxy_pairs={"lexical_proxy": [(1.0, True), (0.0, False)]},
        proxy_pairs_source="champion",
        cascade_pairs={"small": [(2.5, True)]},
        examples=[("Raptor", True), ("Lunch", False)],
        functions={"sender": [{"source": "def f(t): return None"}]},
    )


def test_the_history_record_round_trips_through_plain_and_dagster_metadata():
    record = a_record()
    md = record.to_metadata()
    json.dumps(md)  # plain JSON-able values
    assert list(md) == ["history/record"]  # one entry: the UI's numbers are the report's
    run = md["history/record"]["run"]
    assert run["dollars"] == 0.4 and run["records_out"] == 3 and run["one_time"]["sample"] == 2
    assert run["quality"]["tp"] == 2
    assert md["history/record"]["sample_runs"][1]["config"]["model"] is None
    assert HistoryRecord.from_metadata(md) == record
    assert HistoryRecord.from_metadata(render(md)) == record  # as Dagster's UI holds it


# What a_record() was written as before the history record had its own entry (one entry per
# field, as materializations of older stores hold it).
LEGACY_METADATA: dict[str, Any] = {
    "physical_config": {
        "operator": "f",
        "model": "small",
        "strategy": "cascade",
        "params": {"models": ["small", "big"], "low": -1},
    },
    "evaluated": 10,
    "model_calls": 4,
    "cache_hits": 6,
    "dollars": 0.4,
    "model_seconds": 2.0,
    "input_tokens": 1000,
    "selectivity": 0.3,
    "synthesis_sample": 2,
    "synthesis_tokens": 10,
    "fallback_tokens": 10,
    "quality": 0.8,
    "quality_source": "labels",
    "quality_evidence": 3.0,
    "quality_counts": {"tp": 2.0, "fp": 1.0, "fn": 0.0, "tn": 7.0, "agree": 0.0, "total": 0.0},
    "sample_runs": [
        {
            "config": {"operator": "f", "model": "big", "strategy": "direct", "params": {}},
            "records": 5,
            "model_calls": 0,
            "cache_hits": 0,
            "dollars": 0.0,
            "seconds": 0.0,
            "records_out": 2,
            "quality": None,
            "quality_source": "",
        },
        {
            "config": {"operator": "f", "model": None, "strategy": "lexical_proxy", "params": {}},
            "records": 5,
            "model_calls": 0,
            "cache_hits": 0,
            "dollars": 0.0,
            "seconds": 0.0,
            "records_out": None,
            "quality": None,
            "quality_source": "",
        },
    ],
    "proxy_pairs": {"lexical_proxy": [[1.0, True], [0.0, False]]},
    "proxy_pairs_source": "champion",
    "examples": [["Raptor", True], ["Lunch", False]],
    "cascade_pairs": {"small": [[2.5, True]]},
    "code_functions": {"sender": [{"source": "def f(t): return None"}]},
    "records_in": 10,
    "records_out": 3,
    "seconds": 2.5,
}


def test_a_materialization_written_before_the_history_entry_is_still_history():
    assert HistoryRecord.from_metadata(LEGACY_METADATA) == a_record()
    assert HistoryRecord.from_metadata(render(LEGACY_METADATA)) == a_record()


def test_the_report_rounds_for_reading_and_the_history_keeps_exact_numbers():
    node = fraud_filter().node
    run = RunRecord(
        config=PhysicalConfig("f", "m", "direct"),
        records=3,
        records_out=1,
        model_calls=3,
        dollars=0.000123456789,
        seconds=64.46048364099977,
        quality=QualityCounts(tp=1, fp=1, fn=0, tn=1),
        quality_source="labels",
    )
    record = HistoryRecord(run=run, input_tokens=300)
    stats = OperatorStats(records_in=3, records_out=1, evaluated=3)
    out = OperatorResult([{"record_id": "a"}], stats, strategy="direct", model="m")
    md = run_metadata(out, record, 1.23456789, preview(node, out))
    assert md["time/model_seconds"] == 64.46 and md["time/seconds"] == 1.235
    assert md["cost/dollars"] == 0.0001235 and md["cost/dollars_per_record"] == 4.115e-05
    assert md["records/selectivity"] == 0.3333 and md["quality/score"] == 0.6667
    numbers = {k: v for k, v in md.items() if isinstance(v, int | float)}
    assert all("/" in k for k in numbers), "every number is in a group (records/, usage/, ...)"
    assert not [k for k, v in md.items() if isinstance(v, str) and v[:1].isdigit()]
    exact = HistoryRecord.from_metadata(render(md))
    assert exact is not None and exact.run.seconds == 64.46048364099977
    assert exact.run.dollars == 0.000123456789


def test_the_history_of_one_record_counts_cache_hits_once_at_the_calls_rate():
    hist = NodeHistory.of([(a_record(), 1.0)])
    run, champion, proxy = hist.observations
    # 4 calls paid 0.4 and 6 cache hits would have paid 0.6; of the 8 records outside code
    # synthesis's sample, half the tokens recur
    assert run.dollars == pytest.approx(1.0 * 0.5) and run.records == 8 and run.costed
    assert run.records_out == round(3 * 8 / 10)
    assert champion.records == 5 and champion.records_out == 2 and proxy.records_out is None
    assert hist.cost == [pytest.approx(0.5 / 8)] and hist.prompt_tokens == [250.0]
    assert hist.selectivity == [0.3]
    assert hist.pairs("lexical_proxy") == [(1.0, True), (0.0, False)]  # judged by the champion
    assert "lexical_proxy" not in hist.proxy_pairs
    assert hist.proxy_pairs["cascade:small"] == [(2.5, True)]
    assert hist.examples == [("Raptor", True), ("Lunch", False)] and hist.functions


def test_a_sample_run_answered_from_the_cache_is_corrected_as_the_main_run_is():
    config = PhysicalConfig("f", "big", "direct")
    half = RunRecord(config=config, records=4, model_calls=2, cache_hits=2, dollars=1.0)
    cached = RunRecord(config=config, records=4, cache_hits=4)
    record = HistoryRecord(run=half, sample_runs=[half, cached])
    main, sample, all_cached = NodeHistory.of([(record, 0.0)]).observations
    assert main.dollars == sample.dollars == 2.0
    assert not all_cached.costed  # free now, its cost unknown: not a free candidate
    # the metadata keeps what was paid
    assert record.to_metadata()["history/record"]["run"]["dollars"] == 1.0
    assert record.to_metadata()["history/record"]["sample_runs"][0]["dollars"] == 1.0


def test_metadata_without_a_record_or_with_a_malformed_one_is_no_history(caplog):
    config = {"operator": "f", "model": "m", "strategy": "direct", "params": {}}
    with caplog.at_level(logging.WARNING, logger="pz_dagster.tuning.history"):
        assert HistoryRecord.from_metadata({"dollars": 1.0}, "old one") is None
        bad_runs = {"physical_config": config, "sample_runs": [{"records": "many"}]}
        assert HistoryRecord.from_metadata(bad_runs, "bad one") is None
        assert HistoryRecord.from_metadata({"physical_config": "direct"}, "bad config") is None
        assert HistoryRecord.from_metadata({"history/record": {"run": 3}}, "bad entry") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("old one" in m and "no history record" in m for m in messages)
    assert any("bad one" in m and "malformed" in m for m in messages)
    assert any("bad config" in m and "malformed" in m for m in messages)
    assert any("bad entry" in m and "malformed" in m for m in messages)
    # the same keys, well-formed, are history
    assert HistoryRecord.from_metadata({"physical_config": config, "evaluated": 3}) is not None


def observed(model: str, materializations: int) -> NodeHistory:
    """``materializations`` runs of ``model`` on 10 records each, right on every one."""
    runs = [
        HistoryRecord(
            run=RunRecord(
                config=PhysicalConfig("f", model, "direct"),
                records=10,
                model_calls=10,
                dollars=10 * 1e-5,
                seconds=1.0,
                records_out=5,
                quality=QualityCounts(tp=5, tn=5),
                quality_source="labels",
            ),
            input_tokens=1000,
        )
        for _ in range(materializations)
    ]
    return NodeHistory.of((r, float(i)) for i, r in enumerate(runs))


def test_planning_from_history_picks_the_measured_cheaper_candidate():
    node = fraud_filter().node
    settings = TuningSettings(policy="MinCostAtQuality(0.9)")

    def chosen(history: dict[str, NodeHistory]) -> str:
        decision = plan_operator(node, (node,), history, profiles(), settings, records(), None)
        return decision.candidate("f").key

    assert chosen({}) == "direct:big"  # the small model's prior is below the target
    assert chosen({"f": observed("small", 1)}) == "direct:big"  # one batch is not enough yet
    assert chosen({"f": observed("small", 5)}) == "direct:small"  # measured good enough


def test_assessment_judges_the_chosen_candidate_against_the_champion_on_the_sample():
    node = fraud_filter().node
    rows = records(8)
    big, small = FakeModel("big", price=0.01), FakeModel("small", right=False)
    clients = {"big": big, "small": small}
    settings = TuningSettings(sample_size=4, exploration_slots=0)
    pinned = pinned_candidate(node, "direct", "small", profiles())
    decision = plan_operator(node, (node,), {}, profiles(), settings, rows, pinned)
    assert decision.champions["f"].key == "direct:big"
    result = run_operator(node, rows, small, strategy="direct")
    out = assess(node, rows, result, decision, clients.__getitem__, settings, print)
    assert len(big.calls) == 4  # the champion answered the sample only
    assert out.source == "champion"
    assert out.quality == QualityCounts(tp=2, fp=2, fn=0, tn=0)  # small says YES to all
    (champion,) = out.sample_runs
    assert champion.config == Candidate("f", "direct", "big", ("big",)).config()
    assert champion.records == 4 and champion.records_out == 2 and champion.quality is None
    assert champion.dollars == pytest.approx(0.04) and out.sample_usage_dollars == champion.dollars


def test_a_filter_step_runs_without_dagster_and_scores_its_proxies_once(tmp_path: Path):
    node = fraud_filter().node
    rows = records(8)
    big, embedder = FakeModel("big"), FakeEmbedder()
    settings = TuningSettings(
        strategies=["direct", "embedding_proxy"], labels_path=labels_file(tmp_path, rows)
    )
    services = StepServices(
        client_for=lambda name: big, embedder_for=lambda: embedder, profiles=profiles()[:1]
    )
    step = run_operator_step(node, rows, services, settings=settings, strategy="direct")

    assert sorted(r["record_id"] for r in step.records) == ["r1", "r3", "r5", "r7"]
    # the cold start learned the proxy on the batch's labels before the plan; the assessment
    # recorded the same scores without asking the embedder again
    assert len(embedder.batches) == 1 and len(embedder.batches[0]) == 1 + len(rows)
    (proxy,) = [s for s in step.record.sample_runs or [] if s.config.strategy == "embedding_proxy"]
    assert proxy.quality_source == "labels" and proxy.records == len(rows)
    assert step.record.proxy_pairs["embedding_proxy"][:2] == [(0.0, False), (1.0, True)]
    assert step.record.run.quality == QualityCounts(tp=4, tn=4)
    assert step.record.run.quality_source == "labels"
    md = step.metadata
    assert md["physical_config"]["strategy"] == "direct" and md["usage/model_calls"] == len(rows)
    assert isinstance(md["decision"], Markdown) and "pinned by run config: f" in md["decision"]
    assert HistoryRecord.from_metadata(md) == step.record
    # the next batch reads the proxy back as learnable
    assert NodeHistory.of([(step.record, 0.0)]).can_learn("embedding_proxy")


def test_an_operator_the_optimizer_does_not_plan_runs_as_given():
    node = Dataset.from_directory("emails").filter(lambda r: "Raptor" in r["contents"]).node
    step = run_operator_step(node, records(4), StepServices(client_for=lambda name: None))
    assert [r["record_id"] for r in step.records] == ["r1", "r3"]
    assert step.decision is None and step.record.sample_runs is None
    assert step.metadata["physical_config"] == {
        "operator": "filter",
        "model": None,
        "strategy": "python",
        "params": {},
    }
    assert step.metadata["records/selectivity"] == 0.5
    assert step.metadata["history/record"]["sample_runs"] is None
