"""Plan rewrites: filter, limit and projection pushdown, filter ordering, and a pushed-down
filter sparing the model through Dagster."""

from __future__ import annotations

from pz_dagster import Dataset
from pz_dagster.query import plan, rewrites
from tests.operators_common import SENDER, emails, materialize, sim_model


def test_relational_filter_declared_after_a_semantic_filter_runs_before_it(folder, sim, tmp_path):
    ds = (
        Dataset.from_directory(folder)
        .sem_filter("The email refers to a fraudulent scheme", depends_on="contents", name="fraud")
        .filter(lambda r: "ken@" not in r["contents"], depends_on="contents", name="not_from_ken")
        .sem_map([{"name": "sender", "type": "str", "desc": "sender address"}], name="sender")
    )
    assert [n.name for n in ds.optimized().node.lineage()] == [
        "documents",
        "not_from_ken",
        "fraud",
        "sender",
    ]
    assert "optimized plan (what runs)" in ds.explain()
    md, rows = materialize(ds, "pushdown", sim_model(sim), tmp_path)
    assert md["not_from_ken"]["records/in"] == 4 and md["not_from_ken"]["records/out"] == 3
    assert md["fraud"]["usage/model_calls"] == 3  # the model never saw the email the filter drops
    assert [(r["record_id"], r["sender"]) for r in rows] == [("c.txt", "tim@enron.com")]


def names(ds: Dataset) -> list[str]:
    return [n.name for n in rewrites.optimize(ds.node).lineage()][1:]


def test_filter_pushdown_respects_what_operators_add():
    base = emails().sem_map(SENDER, name="m")
    # reads only source columns: moves below the map
    assert names(base.filter(lambda r: True, depends_on="contents", name="f")) == ["f", "m"]
    # reads the map's output: stays
    assert names(base.filter(lambda r: True, depends_on="sender", name="f")) == ["m", "f"]
    # cannot say what it reads: stays above a map, but passes a semantic filter (which adds nothing)
    assert names(base.filter(lambda r: True, name="f")) == ["m", "f"]
    assert names(emails().sem_filter("x", name="s").filter(lambda r: True, name="f")) == ["f", "s"]
    # never past a limit
    assert names(emails().limit(2, name="l").filter(lambda r: True, name="f")) == ["l", "f"]


def test_limit_pushdown_and_filters_kept_in_declared_order():
    ds = (
        emails()
        .sem_map(SENDER, name="m")
        .sem_classify("t?", ["a", "b"], name="c")
        .limit(3, name="l")
    )
    assert names(ds) == ["l", "m", "c"]
    assert names(emails().sem_filter("x", name="s").limit(3, name="l")) == ["s", "l"]
    two = (
        emails()
        .sem_filter("expensive", name="slow")
        .sem_filter("cheap and selective", name="quick")
    )
    # the plan keeps the declared order: the filter chain orders them per batch (test_filter_order)
    assert names(two) == ["slow", "quick"]
    assert isinstance(rewrites.optimize(two.node), plan.SemanticFilter)


def test_projection_pushdown_drops_unread_columns_before_the_model():
    ds = emails().sem_map(SENDER, depends_on="contents", name="m").project(["sender"], name="out")
    assert names(ds) == ["out_early", "m", "out"]
    early = rewrites.optimize(ds.node).lineage()[1]
    assert early.columns == ("record_id", "contents", "error")
    # nothing to drop when every column is read or kept
    kept = ["sender", "filename", "provenance"]
    assert names(emails().sem_map(SENDER, name="m").project(kept, name="out")) == ["m", "out"]
    # the provenance is not read by default: a projection that drops it drops it early
    shown = emails().sem_map(SENDER, name="m").project(["sender", "filename"], name="out")
    assert names(shown) == ["out_early", "m", "out"]
