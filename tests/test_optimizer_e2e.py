"""The optimizer learning from Dagster's history, partition after partition, against the
simulator: three models with different accuracy, price and latency on the shared Enron emails,
quality judged against the shared labels."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from optimizer.quality import ValidationSet
from pz_dagster import Dataset
from pz_dagster.orchestration import (
    ModelPrice,
    ModelPrior,
    OpenAICompatibleModel,
    OptimizerResource,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from pz_dagster.testing.oracles import LabelOracle

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EMAILS = SHARED / "enron-eval-medium"
LABELS = SHARED / "enron-eval-medium-labels.json"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not EMAILS.is_dir(), reason=f"shared Enron data not found at {EMAILS}"),
]

# A large champion, a medium model nearly as good, a small one that is not good enough.
PROFILES = {
    "large": (SimulatedModel(accuracy=1.0, latency_s=0.002), (10.0, 30.0), 0.99),
    "medium": (SimulatedModel(accuracy=0.995, latency_s=0.001), (1.0, 2.0), 0.96),
    "small": (SimulatedModel(accuracy=0.8), (0.1, 0.2), 0.96),
}


def query() -> Dataset:
    return (
        Dataset.from_directory(EMAILS, batch_size=10)
        .sem_filter(
            'The email refers to a fraudulent scheme (i.e., "Raptor", "Deathstar", "Chewco", '
            'and/or "Fat Boy")',
            depends_on="contents",
            name="mentions_scheme",
        )
        .sem_add_columns(
            [
                {"name": "sender", "type": "str", "desc": "The email address of the sender"},
                {"name": "subject", "type": "str", "desc": "The subject of the email"},
            ],
            depends_on="contents",
            name="extract",
        )
    )


def scheme_filter() -> Dataset:
    """The query's first filter alone, in batches of 25."""
    return Dataset.from_directory(EMAILS, batch_size=25).sem_filter(
        'The email refers to a fraudulent scheme (i.e., "Raptor", "Deathstar", "Chewco", '
        'and/or "Fat Boy")',
        depends_on="contents",
        name="mentions_scheme",
    )


def own_agreement(instance, key: dg.AssetKey, model: str) -> tuple[float, float]:
    """Agreement with the reference summed over the asset's runs on ``model``."""
    agree = total = 0.0
    for r in instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key), limit=1000
    ).records:
        md = r.asset_materialization.metadata
        counts = md["history/record"].value["run"]["quality"]
        if md["physical_config"].value["model"] == model and counts is not None:
            agree, total = agree + counts["agree"], total + counts["total"]
    return agree, total


def chosen_models(instance, key: dg.AssetKey) -> list[str]:
    recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1000).records
    recs = sorted(recs, key=lambda r: r.timestamp)
    return [r.asset_materialization.metadata["physical_config"].value["model"] for r in recs]


def test_choice_converges_to_the_cheapest_plan_meeting_the_quality_and_drops_a_degraded_model(
    tmp_path: Path,
):
    labels = ValidationSet.from_json(LABELS)
    with OpenAISimulator(
        {name: sim for name, (sim, _, _) in PROFILES.items()}, oracle=LabelOracle(EMAILS, labels)
    ) as sim:
        model = OpenAICompatibleModel(
            model="large",
            models=["medium", "small"],
            base_url=sim.base_url,
            prices={
                n: ModelPrice(input_per_mtok=p[0], output_per_mtok=p[1])
                for n, (_, p, _) in PROFILES.items()
            },
            priors={n: ModelPrior(quality=q) for n, (_, _, q) in PROFILES.items()},
            max_concurrency=4,
        )
        optimizer = OptimizerResource(
            policy="MinCostAtQuality(0.9)", labels_path=str(LABELS), sample_size=10
        )
        store = tmp_path / "store"
        defs, q = build_definitions(
            query(), "opt", model=model, optimizer=optimizer, store_root=str(store)
        )
        job = defs.resolve_job_def(q.job.name)
        with dg.instance_for_test() as instance:
            batches = register_partitions(RecordStore(store), q, instance)
            assert len(batches) == 25

            def run(bs):
                for b in bs:
                    res = job.execute_in_process(partition_key=b.key, instance=instance)
                    assert res.success

            run(batches[:15])
            filt = chosen_models(instance, q.asset_key("mentions_scheme"))
            extract = chosen_models(instance, q.asset_key("extract"))
            print("filter:", filt, "\nextract:", extract)
            # Truth: the small model's filter F1 is far below 0.9 (20% wrong answers on 5%
            # positives), medium x medium is ~0.95, anything with the large model costs more.
            # Priors make small x small look good enough (0.96^2); its observed filter F1 is not.
            assert filt[0] == "small"
            assert filt[-5:] == ["medium"] * 5, filt
            # The extract learns from its own records only (a few per batch pass the filter):
            # the filter's poor F1 for small says nothing about small's extractions. While the
            # labels agree with every extraction small made, the cheapest model stays.
            agree, total = own_agreement(instance, q.asset_key("extract"), "small")
            if agree == total:
                assert extract[-5:] == ["small"] * 5, (extract, agree, total)
            first, latest = (
                instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=q.asset_key("mentions_scheme")),
                    limit=1,
                    ascending=asc,
                )
                .records[0]
                .asset_materialization.metadata
                for asc in (True, False)
            )
            # The first partition is a cold start: an unseen model ran on a sample, judged
            # against the labels (so the champion need not run), and its observation is in the
            # metadata (read back as history).
            assert first["cold_start_sample"].value is True
            runs = {r["config"]["model"]: r for r in first["history/record"].value["sample_runs"]}
            assert set(runs) == {"medium"}
            assert runs["medium"]["quality_source"] == "labels" and runs["medium"]["records"] == 10
            assert latest["quality/source"].value == "labels"
            assert "MinCostAtQuality(0.9)" in latest["decision"].value

            # The medium model degrades: within a few partitions the filter leaves it.
            sim.models["medium"] = SimulatedModel(accuracy=0.7)
            run(batches[15:])
            filt = chosen_models(instance, q.asset_key("mentions_scheme"))
            print("after the drop:", filt[15:])
            assert filt[-3:] == ["large"] * 3, filt


def test_a_learned_lexical_proxy_replaces_a_weak_model(tmp_path: Path):
    """With one weak model and labels, the lexical proxy's threshold is learned on earlier
    partitions, judged on the next one (held out from its learning), and chosen once it is
    observed to beat the model."""
    labels = ValidationSet.from_json(LABELS)
    with OpenAISimulator(
        {"weak": SimulatedModel(accuracy=0.6)}, oracle=LabelOracle(EMAILS, labels)
    ) as sim:
        model = OpenAICompatibleModel(model="weak", base_url=sim.base_url, max_concurrency=4)
        optimizer = OptimizerResource(
            policy="MaxQuality",
            strategies=["direct", "lexical_proxy"],
            labels_path=str(LABELS),
        )
        store = tmp_path / "store"
        ds = scheme_filter()
        defs, q = build_definitions(
            ds, "proxy", model=model, optimizer=optimizer, store_root=str(store)
        )
        job = defs.resolve_job_def(q.job.name)
        key = q.asset_key("mentions_scheme")
        with dg.instance_for_test() as instance:
            batches = register_partitions(RecordStore(store), q, instance)
            for b in batches:
                assert job.execute_in_process(partition_key=b.key, instance=instance).success
            recs = sorted(
                instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key), limit=100
                ).records,
                key=lambda r: r.timestamp,
            )
            strategies = [
                r.asset_materialization.metadata["physical_config"].value["strategy"] for r in recs
            ]
            print(strategies)
            assert strategies[0] == "direct"  # nothing to learn a threshold from yet
            assert strategies[-3:] == ["lexical_proxy"] * 3
            last = recs[-1].asset_materialization.metadata
            cfg = last["physical_config"].value
            assert cfg["model"] is None and cfg["params"]["polarity"] in (1, -1)
            assert last["usage/model_calls"].value == 0
            # the proxy's own held-out judgement is recorded every partition
            judged = [
                s
                for s in last["history/record"].value["sample_runs"]
                if s["config"]["strategy"] == "lexical_proxy"
            ]
            assert judged and judged[0]["quality_source"] == "labels"
            # a run config pins the model strategy back for one run
            res = job.execute_in_process(
                partition_key=batches[0].key,
                instance=instance,
                run_config={"ops": {"proxy__mentions_scheme": {"config": {"strategy": "direct"}}}},
            )
            assert res.success
            md = (
                instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1)
                .records[0]
                .asset_materialization.metadata
            )
            assert md["physical_config"].value["strategy"] == "direct"
            assert "pinned by run config: mentions_scheme" in md["decision"].value
            calls, hits = md["usage/model_calls"].value, md["usage/cache_hits"].value
            assert calls + hits == md["records/evaluated"].value


def test_a_proxy_is_chosen_in_the_first_batch_whose_labels_hold_both_answers(tmp_path: Path):
    """Cold start: the batch's own labelled records teach the proxy its threshold before the
    plan is made, and its quality on them is judged leave-one-out. Under MinCost it replaces
    the model from that batch on, not from the next one."""
    labels = ValidationSet.from_json(LABELS)
    names = sorted(p.name for p in EMAILS.iterdir() if p.is_file())
    first = min(i // 25 for i, n in enumerate(names) if labels.relevant(n))
    with OpenAISimulator(
        {"weak": SimulatedModel(accuracy=0.6)}, oracle=LabelOracle(EMAILS, labels)
    ) as sim:
        model = OpenAICompatibleModel(
            model="weak",
            base_url=sim.base_url,
            max_concurrency=4,
            prices={"weak": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)},
        )
        optimizer = OptimizerResource(
            policy="MinCost", strategies=["direct", "lexical_proxy"], labels_path=str(LABELS)
        )
        store = tmp_path / "store"
        ds = scheme_filter()
        defs, q = build_definitions(
            ds, "cold", model=model, optimizer=optimizer, store_root=str(store)
        )
        job = defs.resolve_job_def(q.job.name)
        with dg.instance_for_test() as instance:
            batches = register_partitions(RecordStore(store), q, instance)
            for b in batches[: first + 2]:
                assert job.execute_in_process(partition_key=b.key, instance=instance).success
            recs = sorted(
                instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=q.asset_key("mentions_scheme")), limit=100
                ).records,
                key=lambda r: r.timestamp,
            )
            mds = [r.asset_materialization.metadata for r in recs]
            strategies = [md["physical_config"].value["strategy"] for md in mds]
            assert strategies == ["direct"] * first + ["lexical_proxy"] * 2, strategies
            md = mds[first]
            assert md["usage/model_calls"].value == 0
            # the same leave-one-out judgement is recorded, so the next batch reads it back
            judged = [
                s
                for s in md["history/record"].value["sample_runs"]
                if s["config"]["strategy"] == "lexical_proxy"
            ]
            assert len(judged) == 1 and judged[0]["quality_source"] == "labels"
            assert judged[0]["records"] == 25 * (first + 1)


def test_few_shot_examples_come_from_labelled_history(tmp_path: Path):
    labels = ValidationSet.from_json(LABELS)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=LabelOracle(EMAILS, labels)) as sim:
        model = OpenAICompatibleModel(model="sim", base_url=sim.base_url, max_concurrency=4)
        optimizer = OptimizerResource(strategies=["direct", "few_shot"], labels_path=str(LABELS))
        ds = scheme_filter()
        store = tmp_path / "store"
        defs, q = build_definitions(
            ds, "fs", model=model, optimizer=optimizer, store_root=str(store)
        )
        job = defs.resolve_job_def(q.job.name)
        pin = {"ops": {"fs__mentions_scheme": {"config": {"strategy": "few_shot"}}}}
        with dg.instance_for_test() as instance:
            batches = register_partitions(RecordStore(store), q, instance)
            # before any labelled example is in the history, a pinned few-shot run fails clearly
            early = job.execute_in_process(
                partition_key=batches[0].key,
                instance=instance,
                run_config=pin,
                raise_on_error=False,
            )
            assert not early.success
            # partitions with labelled positives and negatives record examples
            ok = [b for b in batches if any(labels.relevant(f.path) for f in b.files)][:1] + [
                batches[1]
            ]
            for b in ok:
                assert job.execute_in_process(partition_key=b.key, instance=instance).success
            sim.requests.clear()
            res = job.execute_in_process(
                partition_key=batches[2].key, instance=instance, run_config=pin
            )
            assert res.success
            md = (
                instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=q.asset_key("mentions_scheme")), limit=1
                )
                .records[0]
                .asset_materialization.metadata
            )
    assert md["physical_config"].value["strategy"] == "few_shot"
    assert md["physical_config"].value["params"]["examples"] == 4
    shown = [r for r in sim.requests if "How other documents were judged" in r.prompt]
    assert len(shown) >= 25 and "Answer: YES" in shown[0].prompt and "Answer: NO" in shown[0].prompt


def test_without_labels_quality_is_agreement_with_the_champion(tmp_path: Path):
    labels = ValidationSet.from_json(LABELS)
    profiles = {"big": SimulatedModel(), "cheap": SimulatedModel(accuracy=0.5)}
    with OpenAISimulator(profiles, oracle=LabelOracle(EMAILS, labels)) as sim:
        model = OpenAICompatibleModel(
            model="big",
            models=["cheap"],
            base_url=sim.base_url,
            prices={"big": ModelPrice(input_per_mtok=10, output_per_mtok=30)},
            priors={"big": ModelPrior(quality=0.99), "cheap": ModelPrior(quality=0.9)},
        )
        ds = Dataset.from_directory(EMAILS, batch_size=25).sem_filter(
            "The email discusses a fraudulent scheme", depends_on="contents", name="f"
        )
        store = tmp_path / "store"
        defs, q = build_definitions(
            ds,
            "champ",
            model=model,
            optimizer=OptimizerResource(policy="MinCost", sample_size=10),
            store_root=str(store),
        )
        with dg.instance_for_test() as instance:
            batches = register_partitions(RecordStore(store), q, instance)
            assert (
                defs.resolve_job_def(q.job.name)
                .execute_in_process(partition_key=batches[0].key, instance=instance)
                .success
            )
            md = (
                instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=q.asset_key("f")), limit=1
                )
                .records[0]
                .asset_materialization.metadata
            )
    assert md["physical_config"].value["model"] == "cheap"
    assert md["quality/source"].value == "champion"
    history = md["history/record"].value
    counts = history["run"]["quality"]
    assert counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"] == 10  # the sample
    assert any(r["config"]["model"] == "big" for r in history["sample_runs"])
    assert md["cost/sample_dollars"].value > 0  # the champion's sample run is paid for and shown
