"""The label model (optimizer.label_model) recovers the quality of sources it never saw labels
for: synthetic sources with known sensitivity and specificity, some abstaining."""

from __future__ import annotations

import random

import pytest

from optimizer.label_model import fit


def sources(rng: random.Random, truth, params):
    """Votes of sources with (sensitivity, specificity, abstain share)."""
    out = {}
    for name, (sens, spec, abstain) in params.items():
        votes = []
        for y in truth:
            if rng.random() < abstain:
                votes.append(None)
            elif y:
                votes.append(rng.random() < sens)
            else:
                votes.append(rng.random() >= spec)
        out[name] = votes
    return out


PARAMS = {
    "good": (0.92, 0.95, 0.0),
    "recall_heavy": (0.97, 0.70, 0.0),
    "precise": (0.60, 0.98, 0.1),
    "coin": (0.5, 0.5, 0.0),
    "sparse": (0.85, 0.85, 0.6),
}


@pytest.mark.parametrize("seed, positives", [(0, 0.3), (1, 0.1), (2, 0.5)])
def test_the_label_model_recovers_known_source_accuracies_within_0_05(seed, positives):
    """Within 0.05 of what the votes and the truth give, counted: each source's sensitivity,
    specificity and F1, and the share of positives, on 3000 records, for rare and common
    positives; the F1's bootstrap interval holds the counted one (give or take 0.03)."""
    rng = random.Random(seed)
    truth = [rng.random() < positives for _ in range(3000)]
    votes = sources(rng, truth, PARAMS)
    f = fit(votes, bootstrap=20, seed=seed)
    assert f.prior == pytest.approx(sum(truth) / len(truth), abs=0.05)
    for name in PARAMS:
        got = f.sources[name]
        pairs = [(v, y) for v, y in zip(votes[name], truth, strict=True) if v is not None]
        tp = sum(1 for v, y in pairs if v and y)
        fp = sum(1 for v, y in pairs if v and not y)
        fn = sum(1 for v, y in pairs if not v and y)
        tn = len(pairs) - tp - fp - fn
        assert got.sensitivity == pytest.approx(tp / (tp + fn), abs=0.05), name
        assert got.specificity == pytest.approx(tn / (tn + fp), abs=0.05), name
        true_f1 = 2 * tp / (2 * tp + fp + fn)
        assert got.f1 == pytest.approx(true_f1, abs=0.05), name
        lo, hi = got.f1_interval
        assert lo - 0.03 <= true_f1 <= hi + 0.03, (name, lo, true_f1, hi)
    assert f.best("f1").name == "good"
    # the posterior's decisions beat the best source
    decided = [p >= 0.5 for p in f.posterior]
    acc = sum(d == y for d, y in zip(decided, truth, strict=True)) / len(truth)
    assert acc >= f.sources["good"].accuracy - 0.01


def test_the_label_model_says_what_it_needs():
    with pytest.raises(ValueError, match="three sources"):
        fit({"a": [True], "b": [False]})
    with pytest.raises(ValueError, match="same records"):
        fit({"a": [True], "b": [False, True], "c": [True]})


def test_a_filter_batch_without_labels_records_its_judges_quality_estimated_by_the_label_model(
    tmp_path,
):
    """Through Dagster, no labels: the history record and the metadata hold each judge's
    quality on the sample, estimated from the judges' agreements alone; the accurate model is
    found better than the one that is wrong half the time."""
    from pz_dagster import Dataset
    from pz_dagster.orchestration import ModelPrior, OpenAICompatibleModel, OptimizerResource
    from pz_dagster.testing import OpenAISimulator, SimulatedModel
    from tests.operators_common import materialize
    from tests.test_certified_filter import memo, memo_oracle

    folder = tmp_path / "memos"
    folder.mkdir()
    for i in range(60):
        (folder / f"m{i:03d}.txt").write_text(memo(i))
    sims = {
        "good": SimulatedModel(accuracy=0.97),
        "mid": SimulatedModel(accuracy=0.85),
        "bad": SimulatedModel(accuracy=0.5),
    }
    with OpenAISimulator(sims, oracle=memo_oracle) as s:
        model = OpenAICompatibleModel(
            model="good",
            models=["mid", "bad"],
            base_url=s.base_url,
            priors={
                m: ModelPrior(quality=q) for m, q in (("good", 0.95), ("mid", 0.9), ("bad", 0.85))
            },
        )
        ds = Dataset.from_directory(str(folder), batch_size=60).sem_filter(
            "The memo reports a valve that burst or a worker hurt",
            depends_on="contents",
            name="incidents",
        )
        optimizer = OptimizerResource(sample_size=60, cold_start_candidates=3)
        all_md, _ = materialize(ds, "memos", model, tmp_path, optimizer=optimizer)
    md = all_md["incidents"]
    estimate = md["quality/label_free"]
    assert estimate == md["history/record"]["label_free"]
    assert estimate["method"].startswith("Dawid-Skene") and estimate["records"] == 60
    sources = estimate["sources"]
    assert {"direct:good", "direct:bad", "predicate_terms"} <= set(sources), sources
    assert sources["direct:good"]["f1"] > sources["direct:bad"]["f1"] + 0.2
    assert sources["direct:good"]["f1"] >= 0.85
