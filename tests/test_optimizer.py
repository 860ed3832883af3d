"""The optimizer on synthetic observations: no Dagster, no model, milliseconds."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from optimizer import (
    Candidate,
    Estimate,
    MaxQuality,
    MaxQualityAtCost,
    MinCost,
    MinCostAtQuality,
    MinTime,
    MinTimeAtQuality,
    ModelProfile,
    Observation,
    OperatorSpec,
    QualityCounts,
    candidates_for,
    decide,
    estimate,
    parse_policy,
    search,
)
from optimizer.observations import prior_estimate
from optimizer.search import pareto
from optimizer.thresholds import learn_cascade, learn_threshold

# Three models like the simulator's profiles: a large champion and two smaller ones.
BIG = ModelProfile("big", input_price=10e-6, output_price=30e-6, prompt_tokens_per_s=800,
                   output_tokens_per_s=20, latency_s=1.0, quality=0.95)  # fmt: skip
MID = ModelProfile("mid", input_price=1e-6, output_price=2e-6, prompt_tokens_per_s=3000,
                   output_tokens_per_s=60, latency_s=0.4, quality=0.9)  # fmt: skip
SMALL = ModelProfile("small", input_price=0.1e-6, output_price=0.2e-6, prompt_tokens_per_s=9000,
                     output_tokens_per_s=150, latency_s=0.1, quality=0.7)  # fmt: skip
MODELS = [BIG, MID, SMALL]
FILTER = OperatorSpec("mentions_scheme", "sem_filter", prompt_tokens=800, selectivity=0.5)
MAP = OperatorSpec("extract", "sem_map", prompt_tokens=800, output_tokens=30)


def cand(op: str, model: str, strategy: str = "direct") -> Candidate:
    return Candidate(op, strategy, model, (model,))


def one_op(estimates: dict[str, Estimate]):
    return {"f": [(cand("f", m), e) for m, e in estimates.items()]}


F = OperatorSpec("f", "sem_filter")
# cost, seconds, selectivity, quality
PLANS = {
    "cheap": Estimate(1.0, 4.0, 1.0, 0.70),
    "mid": Estimate(3.0, 2.0, 1.0, 0.88),
    "good": Estimate(9.0, 3.0, 1.0, 0.97),
    "slow_good": Estimate(8.0, 30.0, 1.0, 0.96),
    "dominated": Estimate(9.5, 5.0, 1.0, 0.85),
}


@pytest.mark.parametrize(
    "policy, expected",
    [
        (MaxQuality(), "good"),
        (MinCost(), "cheap"),
        (MinTime(), "mid"),
        (MinCostAtQuality(0.85), "mid"),
        (MinCostAtQuality(0.95), "slow_good"),
        (MinTimeAtQuality(0.95), "good"),
        (MaxQualityAtCost(5.0), "mid"),
        (MaxQualityAtCost(8.5), "slow_good"),
    ],
)
def test_each_policy_picks_the_right_plan(policy, expected):
    result = search([F], one_op(PLANS), policy)
    assert result.chosen.choices[0].model == expected
    assert "meeting it" in result.reason


def test_an_unmeetable_constraint_falls_back_to_the_best_quality_and_says_so():
    result = search([F], one_op(PLANS), MinCostAtQuality(0.99))
    assert result.chosen.choices[0].model == "good"
    assert "no plan meets the constraint" in result.reason
    result = search([F], one_op(PLANS), MaxQualityAtCost(0.5))
    assert result.chosen.choices[0].model == "good"


def test_the_frontier_leaves_out_dominated_plans_only():
    result = search([F], one_op(PLANS), MinCost())
    assert {p.choices[0].model for p in result.frontier} == {"cheap", "mid", "good", "slow_good"}


def brute_force(ops, options):
    plans = []
    for combo in itertools.product(*(options[o.name] for o in ops)):
        n, cost, secs, q = 1.0, 0.0, 0.0, 1.0
        for _, e in combo:
            cost += n * e.cost
            secs += n * e.seconds
            q *= e.quality
            n *= e.selectivity
        plans.append((tuple(c.key for c, _ in combo), (cost, secs, -q)))
    keys = [k for _, k in plans]
    return {
        names
        for names, k in plans
        if not any(all(a <= b for a, b in zip(o, k, strict=True)) and o != k for o in keys)
    }


@pytest.mark.parametrize("seed", range(8))
def test_frontier_equals_brute_force_on_random_plans(seed):
    rng = random.Random(seed)
    ops = [OperatorSpec(f"op{i}", "sem_filter") for i in range(3)]
    options = {
        o.name: [
            (
                Candidate(o.name, "direct", f"m{j}", (f"m{j}",)),
                Estimate(
                    rng.uniform(0.1, 10),
                    rng.uniform(0.1, 10),
                    rng.uniform(0.05, 1.0),
                    rng.uniform(0.5, 1.0),
                ),
            )
            for j in range(4)
        ]
        for o in ops
    }
    result = search(ops, options, MinCost())
    got = {tuple(c.key for c in p.choices) for p in result.frontier}
    assert got == brute_force(ops, options)
    assert result.plans_considered == 4**3


def test_plan_cost_accounts_for_the_filters_selectivity():
    """A filter that costs a bit more but passes on 10% instead of 90% of the records makes the
    whole plan cheaper when the map after it is expensive."""
    f, m = OperatorSpec("f", "sem_filter"), OperatorSpec("m", "sem_map")
    loose, tight = cand("f", "loose"), cand("f", "tight")
    options = {
        "f": [(loose, Estimate(1.0, 1.0, 0.9, 0.9)), (tight, Estimate(2.0, 1.0, 0.1, 0.9))],
        "m": [(cand("m", "x"), Estimate(10.0, 1.0, 1.0, 0.9))],
    }
    result = search([f, m], options, MinCost())
    assert result.chosen.candidate("f").model == "tight"
    assert result.chosen.cost == pytest.approx(2.0 + 0.1 * 10.0)
    assert result.chosen.seconds == pytest.approx(1.0 + 0.1 * 1.0)
    assert result.chosen.records_out == pytest.approx(0.1)
    by_filter = {p.candidate("f").model: p for p in result.frontier}
    assert by_filter["tight"].cost < 1.0 + 0.9 * 10.0  # what the loose filter's plan costs
    assert "loose" not in by_filter  # same quality, more cost and time: dominated


def test_concurrency_divides_a_models_time():
    options = {
        "f": [
            (cand("f", "a"), Estimate(1, 8.0, 1, 0.9)),
            (cand("f", "b"), Estimate(1, 2.0, 1, 0.9)),
        ]
    }
    assert search([F], options, MinTime(), {"a": 8}).chosen.choices[0].model == "a"
    assert search([F], options, MinTime(), {"a": 1}).chosen.choices[0].model == "b"


def test_priors_order_models_by_price_speed_and_quality():
    ests = {m.name: estimate(FILTER, cand(FILTER.name, m.name), {m.name: m}, []) for m in MODELS}
    assert ests["small"].cost < ests["mid"].cost < ests["big"].cost
    assert ests["small"].seconds < ests["mid"].seconds < ests["big"].seconds
    assert ests["big"].quality == 0.95 and not ests["big"].observed
    d = decide([FILTER, MAP], MODELS, [], MinCostAtQuality(0.8))
    # priors: mid*mid = 0.81 meets 0.8 and is the cheapest that does
    assert (d.config("mentions_scheme").model, d.config("extract").model) == ("mid", "mid")
    assert d.champions["extract"].model == "big"


def observe(c: Candidate, f1_hits: tuple[int, int, int], n=50, seq=0.0, dollars=0.01, out=10):
    tp, fp, fn = f1_hits
    return Observation(c, n, dollars=dollars, seconds=n * 0.5, records_out=out,
                       quality=QualityCounts(tp, fp, fn, n - tp - fp - fn),
                       quality_source="labels", sequence=seq)  # fmt: skip


def test_observations_override_priors_and_a_quality_drop_is_noticed():
    small, mid = cand(FILTER.name, "small"), cand(FILTER.name, "mid")
    policy = MinCostAtQuality(0.85)
    # history: the small model turns out as good as the mid one on this data
    history = [observe(small, (10, 0, 0), seq=i) for i in range(4)]
    history += [observe(mid, (10, 1, 0), seq=i) for i in range(4)]
    d = decide([FILTER], MODELS, history, policy)
    assert d.config(FILTER.name).model == "small"
    e = d.estimate(FILTER.name, small)
    assert e.quality > 0.9 and e.quality_evidence > 20 and e.sources == ("labels",)
    # then its quality drops: a few bad partitions outweigh the older good ones
    history += [observe(small, (4, 6, 6), seq=10 + i) for i in range(3)]
    d = decide([FILTER], MODELS, history, policy)
    assert d.estimate(FILTER.name, small).quality < 0.85
    assert d.config(FILTER.name).model == "mid"


def test_exploration_tries_a_newly_added_model_once_then_settles():
    small, mid = cand(FILTER.name, "small"), cand(FILTER.name, "mid")
    history = [observe(c, (10, 0, 0), n=200, seq=i) for i in range(3) for c in (small, mid)]
    history += [observe(cand(FILTER.name, "big"), (10, 0, 0), n=200, seq=i) for i in range(3)]
    d = decide([FILTER], MODELS, history, MinCost())
    assert d.exploration[FILTER.name] == []  # everything observed enough
    new = ModelProfile("new", input_price=0.5e-6, quality=0.8)
    d = decide([FILTER], [*MODELS, new], history, MinCost())
    assert [c.model for c in d.exploration[FILTER.name]] == ["new"]
    assert d.config(FILTER.name).model == "small"  # exploration does not change the choice
    # explored on samples until its quality rests on enough evidence (20 positive decisions)
    history.append(observe(cand(FILTER.name, "new"), (10, 0, 0), n=200, seq=9))
    d = decide([FILTER], [*MODELS, new], history, MinCost())
    assert [c.model for c in d.exploration[FILTER.name]] == ["new"]
    history.append(observe(cand(FILTER.name, "new"), (20, 0, 0), n=200, seq=10))
    d = decide([FILTER], [*MODELS, new], history, MinCost())
    assert "new" not in [c.model for c in d.exploration[FILTER.name]]


def test_pinned_config_is_the_only_option_and_is_reported():
    pin = cand(FILTER.name, "big")
    d = decide([FILTER], MODELS, [], MinCost(), pinned={FILTER.name: pin})
    assert d.config(FILTER.name).model == "big" and FILTER.name in d.pinned
    assert d.exploration == {}
    assert "pinned by run config" in d.explain()


def test_candidates_need_what_they_use():
    keys = lambda avail: {  # noqa: E731
        c.key
        for c in candidates_for(
            FILTER,
            MODELS,
            ["direct", "cascade", "ensemble", "embedding_proxy", "lexical_proxy"],
            avail,
        )
    }
    without = keys(frozenset())
    assert "ensemble:big+mid+small" in without and "cascade:small+big" in without
    assert not any("proxy" in k for k in without)
    with_labels = keys(frozenset({"lexical_proxy", "embedding_proxy"}))
    assert {"embedding_proxy:-", "lexical_proxy:-"} <= with_labels
    assert [c.key for c in candidates_for(MAP, MODELS, ["cascade"])] == []  # filters only


def test_python_operators_enter_the_plan_with_a_fixed_estimate():
    py = OperatorSpec("only_long", "filter")
    d = decide(
        [py, FILTER],
        MODELS,
        [],
        MinCost(),
        fixed={"only_long": Estimate(0.0, 0.0001, 0.2, 1.0)},
    )
    assert d.candidate("only_long").strategy == "python"
    assert d.result.chosen.cost == pytest.approx(
        0.2 * d.estimate(FILTER.name, d.candidate(FILTER.name)).cost
    )


def test_explain_names_the_frontier_the_choice_and_the_reason():
    d = decide([FILTER, MAP], MODELS, [], MinCostAtQuality(0.8))
    text = d.explain()
    assert "MinCostAtQuality(0.8)" in text and "(chosen)" in text
    assert "champion" in text and "direct:big" in text


def test_parse_policy():
    assert parse_policy("MinCostAtQuality(0.9)") == MinCostAtQuality(0.9)
    assert parse_policy(" MaxQualityAtCost(0.002) ") == MaxQualityAtCost(0.002)
    for bad, msg in [("Fastest", "unknown policy"), ("MinCostAtQuality", "needs a quality"),
                     ("MinCost(3)", "takes no argument")]:  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            parse_policy(bad)


def test_thresholds_meet_their_targets():
    rng = random.Random(1)
    labels = [rng.random() < 0.2 for _ in range(300)]
    scores = [(0.65 if y else 0.35) + rng.gauss(0, 0.15) for y in labels]
    t = learn_threshold(scores, labels, min_recall=0.95)
    assert t.recall >= 0.95
    best = learn_threshold(scores, labels)
    assert best.counts.f1 >= t.counts.f1
    c = learn_cascade(scores, labels, min_precision=0.95, min_recall=0.95)
    assert c.precision >= 0.95 and c.recall >= 0.95 and 0 < c.escalated < 1
    loose = learn_cascade(scores, labels, min_precision=0.7, min_recall=0.7)
    assert loose.escalated < c.escalated


def test_pareto_helper_keeps_first_of_equal_items():
    assert pareto([(1, 1), (1, 1), (0, 2)], key=lambda t: t) == [(1, 1), (0, 2)]


def test_code_synthesis_pays_off_on_a_large_batch_and_not_once_its_functions_fail():
    # One model: the choice is between asking it per record and having it write functions.
    policy = MinCostAtQuality(0.7)
    strategies = ["direct", "code_synthesis"]
    small = replace(MAP, batch_records=10)
    large = replace(MAP, batch_records=2000)
    assert (
        decide([small], [MID], [], policy, strategies=strategies).config("extract").strategy
        == "direct"
    )
    chosen = decide([large], [MID], [], policy, strategies=strategies)
    assert chosen.config("extract").strategy == "code_synthesis"

    # The functions failed on the sample: every record went to the model, on top of writing
    # them, and the quality is the model's own. Observed, this costs more than direct.
    synth = Candidate("extract", "code_synthesis", MID.name, (MID.name,))
    direct_cost = MID.call_dollars(MAP.prompt_tokens, MAP.output_tokens)
    failed = Observation(
        synth,
        2000,
        dollars=2000 * direct_cost * 1.05,
        seconds=2000.0,
        quality=QualityCounts(agree=18, total=20),
    )
    after = decide([large], [MID], [failed], policy, strategies=strategies)
    assert after.config("extract").strategy == "direct"
    # Functions that work: cheap per record and as good: it stays.
    worked = replace(failed, dollars=2000 * direct_cost * 0.1, seconds=100.0)
    assert (
        decide([large], [MID], [worked], policy, strategies=strategies).config("extract").strategy
        == "code_synthesis"
    )


def test_code_synthesis_s_one_time_cost_is_spread_over_the_batches_that_reuse_its_functions():
    # A small batch alone does not pay for writing functions; ten batches to come do, and a
    # batch that reuses functions already written pays nothing for them.
    policy = MinCostAtQuality(0.7)
    strategies = ["direct", "code_synthesis"]
    small = replace(MAP, batch_records=10)

    def pick(op: OperatorSpec) -> str:
        return decide([op], [MID], [], policy, strategies=strategies).config("extract").strategy

    assert pick(small) == "direct"
    assert pick(replace(small, runs_ahead=10)) == "code_synthesis"
    assert pick(replace(small, paid_once=frozenset({"code_synthesis"}))) == "code_synthesis"
    # observations hold the recurring cost only: the one-time share is added on the estimate's
    # own terms, so a cheap observed run stays cheap when functions are at hand
    synth = Candidate("extract", "code_synthesis", MID.name, (MID.name,))
    cheap = Observation(
        synth, 10, dollars=0.0, seconds=0.0, quality=QualityCounts(9, 0, 0, 0, 9, 10)
    )
    direct_cost = MID.call_dollars(MAP.prompt_tokens, MAP.output_tokens)
    paid = replace(small, paid_once=frozenset({"code_synthesis"}))
    assert estimate(paid, synth, {MID.name: MID}, [cheap]).cost < 0.5 * direct_cost
    assert estimate(small, synth, {MID.name: MID}, [cheap]).cost > direct_cost


def test_an_operator_learns_only_from_its_own_observations():
    """Two filters on one model: what the first measured (it kept 10 of 100, F1 0.5 against
    labels) must not move the second's selectivity or quality; the second, never run, keeps
    its prior. Before, observations were matched by strategy:model alone and both filters
    showed the first one's selectivity."""
    first, second = OperatorSpec("first", "sem_filter"), OperatorSpec("second", "sem_filter")
    c1, c2 = (Candidate(op.name, "direct", "mid", ("mid",)) for op in (first, second))
    models = {m.name: m for m in MODELS}
    seen = [
        Observation(c1, 100, dollars=0.5, seconds=40, records_out=10,
                    quality=QualityCounts(tp=5, fp=5, fn=5, tn=85), quality_source="labels")
    ]  # fmt: skip
    assert estimate(second, c2, models, seen) == prior_estimate(second, c2, models)
    learned = estimate(first, c1, models, seen)
    assert learned.selectivity < prior_estimate(first, c1, models).selectivity
    assert learned.observed and learned.quality < prior_estimate(first, c1, models).quality

    decision = decide([first, second], MODELS, seen, MaxQuality())
    assert decision.estimate("second", c2) == prior_estimate(second, c2, models)
    assert decision.estimate("first", c1) == learned


def test_local_models_priced_by_compute_make_min_cost_differ_from_max_quality():
    """Two local models and no API price: at $0 every plan ties on cost, so MinCost fell back
    to the quality order and meant MaxQuality. Priced by model time on the same machine, the
    small fast model is the cheaper one, and the explanation says the dollars are estimates."""

    def models(per_second: float) -> list[ModelProfile]:
        return [
            ModelProfile("tiny", prompt_tokens_per_s=4000, output_tokens_per_s=200,
                         latency_s=0.05, quality=0.6, max_concurrency=1, second_price=per_second),
            ModelProfile("large", prompt_tokens_per_s=200, output_tokens_per_s=10,
                         latency_s=0.05, quality=0.9, max_concurrency=1, second_price=per_second),
        ]  # fmt: skip

    def chosen(policy, per_second: float) -> str | None:
        return decide([FILTER], models(per_second), [], policy).candidate(FILTER.name).model

    assert chosen(MinCost(), 0.0) == chosen(MaxQuality(), 0.0) == "large"  # the old behaviour
    per_second = 0.20 / 3600  # a $0.20/hour machine
    assert chosen(MinCost(), per_second) == "tiny"
    assert chosen(MaxQuality(), per_second) == "large"
    decision = decide([FILTER], models(per_second), [], MinCost())
    tiny = decision.estimate(FILTER.name, cand(FILTER.name, "tiny"))
    assert tiny.cost == pytest.approx(per_second * tiny.seconds)
    assert "large, tiny are a compute estimate" in decision.explain()
    assert decide([FILTER], MODELS, [], MinCost()).dollars_note() == ""  # API prices: a bill
