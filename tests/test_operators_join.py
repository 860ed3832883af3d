"""Semantic joins and the tables they join with (DuckDB, records, DataFrames, another
folder): the asset graph, partitions and results through Dagster, declaration errors, and
values typed per record."""

from __future__ import annotations

import dagster as dg
import pytest

from pz_dagster import Dataset, PlanError, SourceError
from pz_dagster.orchestration import (
    RecordStore,
    build_definitions,
    describe_tables,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.source_assets import table_records
from tests.operators_common import emails, sim_model


def test_join_documents_with_a_duckdb_table(folder, sim, tmp_path):
    import duckdb

    db = tmp_path / "ref.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table schemes (name varchar, kind varchar, risk integer)")
        con.execute(
            "insert into schemes values ('Raptor', 'hedge', 9), ('Chewco', 'SPE', 7), ('Picnic', 'social', 0)"
        )
    schemes = Dataset.from_duckdb(db, "schemes", name="schemes").filter(
        lambda r: r["risk"] > 0, depends_on="risk", name="risky"
    )
    ds = (
        Dataset.from_directory(folder, batch_size=2)
        .sem_join(
            schemes,
            "The email discusses this scheme",
            depends_on="contents",
            right_depends_on=["name", "kind"],
            name="mentions",
        )
        .project(["name", "risk"], name="result")
    )
    store = tmp_path / "store-join"
    defs, q = build_definitions(ds, "join", model=sim_model(sim), store_root=str(store))
    keys = {a.key.path[-1]: a for a in q.assets}
    assert keys["schemes"].partitions_def is None and keys["risky"].partitions_def is None
    assert keys["mentions"].partitions_def is q.partitions_def
    assert {k.path[-1] for k in keys["mentions"].dependency_keys} == {"documents", "risky"}
    with dg.instance_for_test() as instance:
        assert (
            defs.resolve_job_def(q.reference_job.name).execute_in_process(instance=instance).success
        )
        rows = []
        for b in register_partitions(RecordStore(store), q, instance):
            assert (
                defs.resolve_job_def(q.job.name)
                .execute_in_process(partition_key=b.key, instance=instance)
                .success
            )
            rows += RecordStore(store).read(q.output_key.path, b.key).to_pylist()
        rec = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=q.asset_key("mentions")), limit=2
        ).records
        calls = sum(r.asset_materialization.metadata["usage/model_calls"].value for r in rec)
    assert sorted((r["record_id"], r["name"], r["risk"]) for r in rows) == [
        ("a.txt|schemes#1", "Raptor", 9),
        ("c.txt|schemes#2", "Chewco", 7),
    ]
    assert (
        calls == 4 * 2
    )  # every email against the two risky schemes, none against the filtered one


SCHEMES = {
    "raptor.txt": "Scheme card\nname: Raptor\nkind: hedge",
    "chewco.txt": "Scheme card\nname: Chewco\nkind: SPE",
    "picnic.txt": "Scheme card\nname: Picnic\nkind: social",
}


def test_join_two_document_folders_each_partitioned(folder, sim, tmp_path):
    """The right side is a folder with its own batches; each email batch is joined with every
    materialized batch of it, and an edited right document counts in its newest version only."""
    schemes_dir = tmp_path / "schemes"
    schemes_dir.mkdir()
    for name, text in SCHEMES.items():
        (schemes_dir / name).write_text(text)
    schemes = Dataset.from_directory(schemes_dir, name="schemes", batch_size=2).filter(
        lambda r: "social" not in r["contents"], depends_on="contents", name="not_social"
    )
    ds = Dataset.from_directory(folder, batch_size=2).sem_join(
        schemes, "The email discusses this scheme", depends_on="contents", name="mentions"
    )
    store = tmp_path / "store-join2"
    defs, q = build_definitions(ds, "join2", model=sim_model(sim), store_root=str(store))
    keys = {a.key.path[-1]: a for a in q.assets}
    side = q.joined_sources[0]
    assert keys["schemes"].partitions_def is side.partitions_def
    assert side.partitions_def.name == "join2_schemes_batches" != q.partitions_def.name
    assert keys["mentions"].partitions_def is q.partitions_def
    assert {k.path[-1] for k in keys["mentions"].dependency_keys} == {"documents", "not_social"}
    mapping = keys["mentions"].get_partition_mapping(q.asset_key("not_social"))
    assert isinstance(mapping, dg.AllPartitionMapping)
    assert not isinstance(
        keys["mentions"].get_partition_mapping(q.asset_key("documents")), dg.AllPartitionMapping
    )
    sensor = defs.resolve_sensor_def("join2_new_documents")
    assert sorted(t.job_name for t in sensor.targets) == ["join2_job", "join2_schemes_job"]

    def run_join(instance) -> list[str]:
        rows = []
        for b in register_partitions(RecordStore(store), q, instance):
            res = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=b.key, instance=instance
            )
            assert res.success
            rows += RecordStore(store).read(q.output_key.path, b.key).to_pylist()
        return sorted(r["record_id"] for r in rows)

    def run_side(instance) -> int:
        batches = register_partitions(RecordStore(store), q, instance, side)
        for b in batches:
            res = defs.resolve_job_def(side.job.name).execute_in_process(
                partition_key=b.key, instance=instance
            )
            assert res.success
        return len(batches)

    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(
            instance=instance, resources={"pz_store": defs.resources["pz_store"]}
        ) as ctx:
            tick = sensor(ctx)
        # the folder joined with is requested first, one run per batch of each folder
        assert [r.job_name for r in tick.run_requests] == ["join2_schemes_job"] * 2 + [
            "join2_job"
        ] * 2
        assert run_side(instance) == 2
        assert run_join(instance) == ["a.txt|raptor.txt", "c.txt|chewco.txt"]
        # The Raptor card is edited: a new batch holds its new version, and the old version
        # (still stored in the older batch) is no longer joined with.
        (schemes_dir / "raptor.txt").write_text("Scheme card\nname: Fatboy\nkind: hedge")
        assert run_side(instance) == 3
        (folder / "e.txt").write_text("From: joe@enron.com\n\nFatboy closes on Friday.")
        assert run_join(instance) == ["c.txt|chewco.txt", "e.txt|raptor.txt"]


def test_join_and_table_declaration_errors():
    table = Dataset.from_records(
        [{"name": "Raptor", "risk": 9}, {"name": "Chewco", "risk": None}], name="t"
    )
    assert table.columns == ("record_id", "name", "risk", "error")
    assert dict(table.node.schema)["risk"] is int
    with pytest.raises(PlanError, match="no records"):
        Dataset.from_records([])
    with pytest.raises(PlanError, match="non-empty predicate"):
        emails().sem_join(table, " ")
    with pytest.raises(PlanError, match="unknown right column"):
        emails().sem_join(table, "x", right_depends_on="kind")
    other = Dataset.from_directory("/other", name="docs2")
    with pytest.raises(PlanError, match="cannot aggregate or rank over all of it"):
        emails().sem_join(other.agg(n=("count", None)), "x")
    with pytest.raises(PlanError, match="its right side joins again"):
        emails().sem_join(other.sem_join(table, "y", name="inner"), "x")
    missing = Dataset.from_duckdb("/nonexistent/x.duckdb", "t")  # declaring opens nothing
    with pytest.raises(SourceError, match="table 'table': cannot read 't' from /nonexistent"):
        describe_tables(missing)  # what build_definitions does before compiling
    joined = emails().sem_join(table, "x", name="j")
    assert joined.columns == (
        "record_id",
        "filename",
        "contents",
        "provenance",
        "right_record_id",
        "name",
        "risk",
        "error",
    )


def test_dataframe_source():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"name": ["Raptor", "Chewco"], "risk": [9, 7]})
    table = Dataset.from_pandas(df, name="schemes")
    assert table.columns == ("record_id", "name", "risk", "error")
    assert dict(table.node.schema)["risk"] is int
    assert [(r["record_id"], r["risk"]) for r in table_records(table.node)] == [
        ("schemes#1", 9),
        ("schemes#2", 7),
    ]


def test_join_reads_the_optimized_right_side():
    right = (
        Dataset.from_records([{"name": "Raptor"}, {"name": ""}], name="schemes")
        .sem_map(
            [{"name": "category", "type": "str", "desc": "kind"}],
            depends_on="name",
            name="categorize",
        )
        .filter(lambda r: bool(r["name"]), depends_on="name", name="named")
    )
    q = compile_query_for(emails().sem_join(right, "mentions it", name="j"))
    keys = {a.key.path[-1]: a for a in q.assets}
    # the filter runs before the map on the right side, and the join reads the map's output
    assert {k.path[-1] for k in keys["categorize"].dependency_keys} == {"named"}
    assert {k.path[-1] for k in keys["j"].dependency_keys} == {"documents", "categorize"}


def compile_query_for(ds: Dataset):
    from pz_dagster.orchestration import compile_query

    return compile_query(ds, "q")


def test_operator_names_are_unique_across_join_sides():
    a = Dataset.from_records([{"name": "Raptor"}])
    b = Dataset.from_records([{"name": "Chewco"}])
    with pytest.raises(PlanError, match="appear on both sides"):
        emails().sem_join(a, "x").sem_join(b, "y")
    joined = emails().sem_join(a.filter(lambda r: True), "x")
    assert (
        joined.filter(lambda r: True).node.name == "filter_2"
    )  # the right side's filter_1 is taken


def test_values_are_typed_per_record(tmp_path):
    import datetime

    import duckdb

    from pz_dagster.operators import run_operator

    mixed = Dataset.from_records([{"amount": 1}, {"amount": 2.5}], name="t")
    assert dict(mixed.node.schema)["amount"] is float and [
        r["amount"] for r in table_records(mixed.node)
    ] == [1.0, 2.5]
    db = tmp_path / "d.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select DATE '2001-10-16' as day, 1.5::DECIMAL(4,1) as x")
    rows = table_records(describe_tables(Dataset.from_duckdb(db, "t")).node)
    assert rows[0]["day"] == str(datetime.date(2001, 10, 16)) and rows[0]["x"] == "1.5"
    node = emails().map(lambda r: {"n": r["contents"]}, {"n": int}).node
    recs = [{"record_id": "a", "filename": "a", "contents": "12", "error": None}]
    out = run_operator(node, recs, None)
    assert out.records[0]["n"] is None and "wrong type" in out.records[0]["error"]
