"""Declaration-time validation of the Dataset DSL and the logical plan."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from pz_dagster import Dataset, PlanError, SchemaError
from pz_dagster.query import plan

SENDER = [{"name": "sender", "type": "str", "desc": "sender address"}]


def emails() -> Dataset:
    return Dataset.from_directory("/data/emails")


def test_chaining_is_immutable_and_names_are_generated():
    base = emails()
    filtered = base.sem_filter("about fraud")
    mapped = filtered.sem_map(SENDER)
    assert [n.name for n in base.node.lineage()] == ["documents"]
    assert [n.name for n in mapped.node.lineage()] == ["documents", "sem_filter_1", "sem_map_1"]
    assert mapped.columns == ("record_id", "filename", "contents", "provenance", "sender", "error")
    with pytest.raises(AttributeError):
        mapped.node.name = "x"  # type: ignore[misc]


def test_unknown_column_in_depends_on_fails_at_declaration():
    with pytest.raises(PlanError, match=r"unknown column\(s\) \['body'\].*available columns"):
        emails().sem_filter("about fraud", depends_on="body")
    with pytest.raises(PlanError, match="unknown column"):
        emails().sem_map(SENDER, depends_on=["contents", "nope"])


def test_depends_on_may_use_columns_added_upstream():
    ds = emails().sem_map(SENDER).sem_filter("sender is an executive", depends_on="sender")
    assert ds.node.depends_on == ("sender",)


@pytest.mark.parametrize("predicate", ["", "   ", None])
def test_empty_predicate(predicate):
    with pytest.raises(PlanError, match="non-empty predicate"):
        emails().sem_filter(predicate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields, message",
    [
        ([{"name": "x", "type": "datetime64", "desc": "d"}], "unknown type"),
        ([{"name": "x", "type": "str"}], "bad field declaration"),
        ([{"name": "1x", "type": "str", "desc": "d"}], "invalid column name"),
        ([{"name": "error", "type": "str", "desc": "d"}], "reserved"),
        ([], "at least one output field"),
        ("sender", "pydantic model class or a list"),
        (
            [{"name": "a", "type": "str", "desc": "d"}, {"name": "a", "type": "int", "desc": "d"}],
            "declared twice",
        ),
    ],
)
def test_bad_output_fields(fields, message):
    with pytest.raises(SchemaError, match=message):
        emails().sem_map(fields)


def test_output_field_clash_with_existing_column():
    with pytest.raises(PlanError, match="already exist upstream"):
        emails().sem_map([{"name": "filename", "type": "str", "desc": "d"}])


def test_pydantic_output_model_is_accepted():
    class Parties(BaseModel):
        sender: str = Field(description="sender address")
        recipients: list[str] = Field(description="recipient addresses")

    ds = emails().sem_add_columns(Parties)
    assert plan.column_types(ds.node)[-3:] == [
        ("sender", str),
        ("recipients", list[str]),
        ("error", str),
    ]


def test_relational_operators_validate():
    with pytest.raises(PlanError, match="callable"):
        emails().filter("contents != ''")  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="unknown column"):
        emails().project(["subject"])
    with pytest.raises(PlanError, match="non-negative integer"):
        emails().limit(-1)
    with pytest.raises(PlanError, match="already exists"):
        emails().limit(3, name="first").limit(2, name="first")
    ds = emails().filter(lambda r: "Raptor" in r["contents"]).project("contents").limit(5)
    assert ds.columns == ("record_id", "contents", "error")


def test_bad_source_and_operator_names():
    with pytest.raises(PlanError, match="batch_size"):
        Dataset.from_directory("/x", batch_size=0)
    with pytest.raises(PlanError, match="asset name"):
        emails().sem_filter("fraud", name="has space")


def test_explain_lists_every_operator_with_columns():
    text = emails().sem_filter("about fraud", name="fraud").sem_map(SENDER).limit(3).explain()
    for needle in [
        "documents: DirectorySource",
        "fraud: SemanticFilter('about fraud'",
        "SemanticMap(fields=[sender: str]",
        "Limit(3",
        "columns: record_id",
    ]:
        assert needle in text
