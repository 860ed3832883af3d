"""Certified thresholds (optimizer.guarantees): the bounds, the coverage of the certification on
synthetic batches whose truth is known, the audit's detection of a drift, and the label
budget."""

from __future__ import annotations

import random

import pytest

from optimizer.guarantees import (
    Certificate,
    Labels,
    Precision,
    Recall,
    audit,
    certify,
    guarantee_for,
    lower_bound,
    parse_targets,
    upper_bound,
)


def batch(rng: random.Random, n: int, positives: float, separation: float):
    """Scores and truths: a positive's score is drawn higher by ``separation`` on average."""
    truth = [rng.random() < positives for _ in range(n)]
    scores = [rng.gauss(separation if y else 0.0, 1.0) for y in truth]
    return scores, truth


def oracle_of(truth):
    return lambda idx: [truth[i] for i in idx]


def achieved(kind: str, threshold, scores, truth) -> float:
    if kind == "recall":
        pos = [s for s, y in zip(scores, truth, strict=True) if y]
        return 1.0 if threshold is None else sum(s >= threshold for s in pos) / len(pos)
    kept = [
        y for s, y in zip(scores, truth, strict=True) if threshold is not None and s >= threshold
    ]
    return 1.0 if not kept else sum(kept) / len(kept)


def test_clopper_pearson_bounds_match_their_definition():
    from scipy.stats import binom

    for k, n in [(5, 20), (18, 20), (0, 10), (10, 10)]:
        lo, hi = lower_bound(k, n, 0.1), upper_bound(k, n, 0.1)
        assert lo <= k / n <= hi
        if k > 0:  # at the lower bound, k or more successes happen with probability delta
            assert binom.sf(k - 1, n, lo) == pytest.approx(0.1, abs=1e-6)
        if k < n:
            assert binom.cdf(k, n, hi) == pytest.approx(0.1, abs=1e-6)


def output_precision(g, scores, truth) -> float:
    """What a guarantee's decisions give, the oracle (the truth) deciding the rest."""
    kept = [
        y for s, y in zip(scores, truth, strict=True) if g.decide(s) or (g.decide(s) is None and y)
    ]
    return sum(kept) / len(kept) if kept else 1.0


def test_the_output_precision_of_a_precision_target_alone_is_covered():
    """Alone, a precision target is about the output (the kept region and what the oracle
    keeps below it): met in at least 90% of 200 batches."""
    rng = random.Random(11)
    met = 0
    for _ in range(200):
        scores, truth = batch(rng, 2000, 0.3, 2.0)
        g = guarantee_for([Precision(0.9, 0.1)], scores, Labels(oracle_of(truth), 300), rng)
        met += output_precision(g, scores, truth) >= 0.9
    assert met / 200 >= 0.9, met / 200


@pytest.mark.parametrize("kind", ["recall", "precision"])
def test_certification_covers_its_target_on_synthetic_batches(kind):
    """Over 200 batches (positives 30%, a score that separates them imperfectly), the certified
    threshold meets the 0.9 target in at least 1 - delta of them, and it is not the trivial one
    (the score decides some records) in most."""
    rng = random.Random(7)
    met = useful = 0
    runs = 200
    for _ in range(runs):
        scores, truth = batch(rng, 2000, 0.3, 2.0)
        labels = Labels(oracle_of(truth), budget=300)
        target = Recall(0.9, 0.1) if kind == "recall" else Precision(0.9, 0.1)
        cert = certify(scores, labels, target, rng)
        assert labels.spent <= 300
        met += achieved(kind, cert.threshold, scores, truth) >= 0.9
        useful += cert.useful
    assert met / runs >= 0.9, met / runs
    assert useful / runs >= 0.8, useful / runs


def test_a_small_batch_is_labelled_whole_and_its_target_computed():
    rng = random.Random(1)
    scores, truth = batch(rng, 80, 0.4, 3.0)
    labels = Labels(oracle_of(truth), budget=200)
    cert = certify(scores, labels, Recall(0.9, 0.1), rng)
    assert cert.exact and labels.spent == 80
    assert achieved("recall", cert.threshold, scores, truth) >= 0.9


def test_the_budget_caps_the_labels_and_a_spent_budget_certifies_nothing():
    rng = random.Random(2)
    scores, truth = batch(rng, 1000, 0.3, 2.0)
    labels = Labels(oracle_of(truth), budget=0)
    cert = certify(scores, labels, Precision(0.9, 0.1), rng)
    assert not cert.useful and labels.spent == 0 and "stopped" in cert.note


def test_a_useless_score_saves_little_and_keeps_its_targets():
    """A score unrelated to the truth: no region of it is 90% positive, but the output's
    precision (with what the oracle keeps) may still let it keep a few records unasked, as it
    may drop a few for recall (a random tenth loses a tenth); the targets hold."""
    rng = random.Random(3)
    scores, truth = batch(rng, 2000, 0.3, 0.0)
    both = guarantee_for(
        [Precision(0.9, 0.1), Recall(0.9, 0.1)], scores, Labels(oracle_of(truth), 400), rng
    )
    assert both.certified and output_precision(both, scores, truth) >= 0.9
    assert sum(1 for s in scores if both.decide(s)) / len(scores) < 0.1
    p = guarantee_for([Precision(0.9, 0.1)], scores, Labels(oracle_of(truth), 300), rng)
    kept = [s for s in scores if p.decide(s)]
    assert len(kept) / len(scores) < 0.1
    oracle_kept = sum(1 for s, y in zip(scores, truth, strict=True) if p.decide(s) is None and y)
    tp = sum(1 for s, y in zip(scores, truth, strict=True) if p.decide(s) and y)
    assert (tp + oracle_kept) / (len(kept) + oracle_kept) >= 0.9
    r = guarantee_for([Recall(0.9, 0.1)], scores, Labels(oracle_of(truth), 300), rng)
    dropped = sum(r.decide(s) is False for s in scores) / len(scores)
    assert dropped < 0.1 and achieved("recall", r.low, scores, truth) >= 0.9


def test_the_audit_revokes_a_certificate_on_a_drifted_batch_and_keeps_it_on_a_steady_one():
    rng = random.Random(4)
    scores, truth = batch(rng, 2000, 0.3, 2.5)
    first = guarantee_for([Recall(0.9, 0.1)], scores, Labels(oracle_of(truth), 300), rng)
    assert first.mode == "certified" and first.low is not None
    steady_s, steady_t = batch(rng, 2000, 0.3, 2.5)
    steady = guarantee_for(
        [Recall(0.9, 0.1)], steady_s, Labels(oracle_of(steady_t), 300), rng, first.certificates
    )
    assert steady.mode == "carried" and steady.labels <= 40
    drift_s, drift_t = batch(rng, 2000, 0.3, 0.3)  # the score no longer tells positives apart
    drifted = guarantee_for(
        [Recall(0.9, 0.1)], drift_s, Labels(oracle_of(drift_t), 300), rng, first.certificates
    )
    assert drifted.audits and drifted.audits[0].rejected
    assert drifted.mode in ("recertified", "dropped")
    assert achieved("recall", drifted.low, drift_s, drift_t) >= 0.9


def test_the_audit_rarely_rejects_a_certificate_that_holds():
    """False alarms are bounded by delta: a threshold with true recall 0.95 is rejected in at
    most 10% of audits."""
    rng = random.Random(5)
    scores, truth = batch(rng, 5000, 0.3, 2.0)
    pos = sorted(s for s, y in zip(scores, truth, strict=True) if y)
    t = pos[int(0.05 * len(pos))]
    cert = Certificate("recall", 0.9, 0.1, t, 0.9, 0.95, 0, 0)
    rejected = sum(
        audit(cert, scores, Labels(oracle_of(truth), 100), rng, 60).rejected for _ in range(200)
    )
    assert rejected / 200 <= 0.1


def test_both_targets_split_delta_and_the_oracle_decides_between_the_thresholds():
    rng = random.Random(6)
    scores, truth = batch(rng, 3000, 0.3, 3.0)
    g = guarantee_for(
        [Precision(0.9, 0.1), Recall(0.9, 0.1)], scores, Labels(oracle_of(truth), 400), rng
    )
    assert [c.kind for c in g.certificates] == ["recall", "precision"]
    assert all(c.delta == pytest.approx(0.05) for c in g.certificates)
    assert g.low is not None and g.high is not None and g.low <= g.high
    decided = [g.decide(s) for s in scores]
    assert {True, False, None} <= set(decided)


def test_an_oracle_that_does_not_answer_leaves_the_batch_uncertified():
    rng = random.Random(8)
    scores, _ = batch(rng, 1000, 0.3, 2.0)
    g = guarantee_for([Recall(0.9, 0.1)], scores, Labels(lambda idx: [None] * len(idx), 300), rng)
    assert g.mode == "uncertified" and not g.certified and g.low is None


def test_targets_parse_from_yaml_mappings_and_reject_nonsense():
    assert parse_targets({"recall": 0.9, "precision": 0.8, "delta": 0.05}) == (
        Recall(0.9, 0.05),
        Precision(0.8, 0.05),
    )
    assert parse_targets([Recall(0.9)]) == (Recall(0.9),)
    for bad in ({"recal": 0.9}, {"delta": 0.1}, {"recall": 1.5}, [Recall(0.9), Recall(0.8)], "x"):
        with pytest.raises(ValueError):
            parse_targets(bad)
