"""The strategy registry: every strategy the optimizer declares runs, on exactly the kinds its
profile names; run_operator dispatches through it and says what a strategy is missing; an
unknown strategy name is refused where an OptimizerResource is built, with the valid names."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from optimizer.candidates import STRATEGIES
from optimizer.observations import QualityCounts
from optimizer.thresholds import SignedThreshold
from pz_dagster import Dataset, PlanError
from pz_dagster.operators import needs_model, run_operator
from pz_dagster.operators.registry import (
    RUNNERS,
    Runner,
    is_multi_model,
    registry_problems,
    runner_for,
    strategies_for,
    strategy_names,
)
from pz_dagster.orchestration.optimization import OptimizerResource
from pz_dagster.query import plan

WHO = [{"name": "who", "type": "str", "desc": "the sender"}]
RECORDS = [
    {"record_id": "a", "contents": "The Raptor deal closes", "error": None},
    {"record_id": "b", "contents": "Lunch on Friday", "error": None},
]


@pytest.fixture
def emails(tmp_path) -> Dataset:
    (tmp_path / "a.txt").write_text("The Raptor deal")
    return Dataset.from_directory(tmp_path)


def test_the_registry_agrees_with_the_optimizer():
    assert registry_problems(RUNNERS, STRATEGIES) == []
    assert strategy_names() == tuple(STRATEGIES) and strategy_names()[0] == "direct"


def test_registry_problems_names_each_disagreement():
    direct_filter = RUNNERS["direct"][0]
    runners = {
        **{k: v for k, v in RUNNERS.items() if k != "batched"},  # a strategy without a runner
        "telepathy": (direct_filter,),  # a runner without a cost profile
        "critique": (direct_filter, direct_filter),  # two runners for one node class
        "cascade": (Runner(plan.SemanticMap, direct_filter.run),),  # not the profile's kind
    }
    problems = registry_problems(runners, STRATEGIES)
    assert "batched: no runner" in problems
    assert "telepathy: no cost profile in the optimizer" in problems
    assert "critique: more than one runner for ['sem_filter']" in problems
    assert "cascade: no runner for ['sem_filter']" in problems
    assert "cascade: runs on ['sem_map'], which its cost profile does not name" in problems
    narrower = {**STRATEGIES, "direct": replace(STRATEGIES["direct"], kinds=frozenset())}
    assert "direct: runs on" in " ".join(registry_problems(RUNNERS, narrower))


def test_which_strategies_run_on_which_node(emails):
    f = emails.sem_filter("About Raptor", name="f")
    m = emails.sem_map(WHO, name="m")
    c = emails.sem_classify("Topic?", ["fraud", "other"], name="c")
    assert strategies_for(f.node) == tuple(n for n in strategy_names() if n != "chunk_select")
    assert strategies_for(m.node) == ("direct", "code_synthesis", "chunk_select")
    assert strategies_for(c.node) == ("direct",)
    assert strategies_for(emails.filter(lambda r: True, depends_on="contents").node) == ()
    assert needs_model(f.node) and not needs_model(emails.node)
    assert [n for n in strategy_names() if is_multi_model(n)] == [
        "ensemble",
        "cascade",
        "certified_cascade",
    ]


def test_run_operator_says_what_a_strategy_is_missing(emails):
    f = emails.sem_filter("mentions Raptor", name="f").node
    with pytest.raises(PlanError, match=r"needs a learned threshold"):
        run_operator(f, RECORDS, strategy="lexical_proxy")
    with pytest.raises(PlanError, match=r"cascade of 'f' needs its models"):
        run_operator(f, RECORDS, strategy="cascade")
    with pytest.raises(PlanError, match=r"sem_filter 'f' needs a model"):
        run_operator(f, RECORDS, strategy="direct")
    m = emails.sem_map(WHO, name="m").node
    with pytest.raises(PlanError, match=r"unknown strategy 'cascade' for sem_map; known: "
                       r"\['direct', 'code_synthesis', 'chunk_select'\]"):  # fmt: skip
        run_operator(m, RECORDS, strategy="cascade")
    with pytest.raises(PlanError, match="no physical operator for DirectorySource"):
        runner_for(emails.node, "direct")


def test_a_proxy_runs_through_the_registry_without_a_model(emails):
    f = emails.sem_filter('mentions "Raptor"', name="f").node
    result = run_operator(
        f, RECORDS, strategy="lexical_proxy", threshold=SignedThreshold(1.0, 1, QualityCounts())
    )
    assert [r["record_id"] for r in result.records] == ["a"]
    assert result.strategy.startswith("lexical_proxy") and result.model is None


def test_a_relational_node_runs_without_a_strategy(emails):
    node = emails.filter(lambda r: "Raptor" in r["contents"], depends_on="contents").node
    result = run_operator(node, RECORDS, strategy="cascade")  # a relational node has none
    assert [r["record_id"] for r in result.records] == ["a"]


def test_an_unknown_strategy_of_the_optimizer_resource_lists_the_valid_ones():
    with pytest.raises(ValidationError) as err:
        OptimizerResource(strategies=["direct", "cascde"])
    message = str(err.value)
    assert "unknown strategies ['cascde']" in message
    assert all(name in message for name in strategy_names())
