"""The operator set through Dagster materialization (simulator answers where a test needs a
controlled answer, the bundled model otherwise), declaration errors and plan rewrites."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset, PlanError, SchemaError
from pz_dagster.orchestration import (
    LocalLlamaModel,
    OpenAICompatibleModel,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.query import plan, rewrites
from pz_dagster.testing import ChatRequest, OpenAISimulator, SimulatedModel

EMAILS = {
    "a.txt": "From: ken@enron.com\nSubject: Raptor\n\nPeople: Andrew Fastow, Ben Glisan\nThe Raptor hedge is underwater.",
    "b.txt": "From: sue@enron.com\nSubject: Picnic\n\nPeople: Sue Smith\nThe company picnic is on Saturday.",
    "c.txt": "From: tim@enron.com\nSubject: Chewco\n\nPeople: Michael Kopper, Andrew Fastow\nChewco needs a new investor.",
    "d.txt": "From: amy@enron.com\nSubject: Lunch\n\nPeople: nobody\nShort note.",
}


def document_of(req: ChatRequest) -> str:
    m = re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S)
    return m.group(1) if m else ""


def oracle(req: ChatRequest):
    """Correct answers for the tests' emails, read off the document in the prompt."""
    doc = document_of(req)
    props = (req.schema or {}).get("properties", {})
    scheme = any(w in doc for w in ("Raptor", "Chewco"))
    if "answer" in props and "Record B:" in req.prompt:
        scheme_name = re.search(r"Record B:\n(?:.*\n)*?name: (\w+)", req.prompt)
        return {"answer": "YES" if scheme_name and scheme_name.group(1) in doc else "NO"}
    if "answer" in props:
        return {"answer": "YES" if scheme else "NO"}
    if "label" in props:
        return {"label": "fraud" if scheme else "other"}
    if "items" in props:
        line = re.search(r"People: (.*)", doc)
        names = [] if not line or line.group(1) == "nobody" else line.group(1).split(", ")
        return {"items": [{"person": n} for n in names]}
    if "sender" in props:
        return {"sender": re.search(r"From: (\S+)", doc).group(1)}
    if "relevance" in props:
        return {"relevance": 10 if "Raptor" in doc else 2}
    if "summary" in props:
        entries = re.findall(r"^\[\d+\] (.*)$", doc, re.M)
        total = sum(
            int(m.group(1)) if (m := re.search(r'"summary": ?"(\d+) subjects', e)) else 1
            for e in entries
        )
        return {"summary": f"{total} subjects"}
    return None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "emails"
    d.mkdir()
    for name, text in EMAILS.items():
        (d / name).write_text(text)
    return d


@pytest.fixture
def sim():
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as s:
        yield s


def materialize(ds: Dataset, name: str, model, tmp_path: Path) -> tuple[dict, list[dict]]:
    """Run the query's one partition; return {asset: metadata} and the output records."""
    store = tmp_path / f"store-{name}"
    defs, q = build_definitions(ds, name, model=model, store_root=str(store))
    with dg.instance_for_test() as instance:
        key = register_partitions(RecordStore(store), q, instance)[0].key
        assert (
            defs.resolve_job_def(q.job.name)
            .execute_in_process(partition_key=key, instance=instance)
            .success
        )
        md = {}
        for a in q.assets:
            rec = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=a.key), limit=1
            ).records[0]
            md[a.key.path[-1]] = {k: v.value for k, v in rec.asset_materialization.metadata.items()}
        rows = RecordStore(store).read(q.output_key.path, key).to_pylist()
    return md, rows


def sim_model(sim: OpenAISimulator) -> OpenAICompatibleModel:
    return OpenAICompatibleModel(model="sim", base_url=sim.base_url, max_concurrency=4)


def test_classify_flat_map_and_relational_operators_materialize(folder, sim, tmp_path):
    ds = (
        Dataset.from_directory(folder)
        .sem_classify(
            "Does the email discuss a fraudulent scheme?", ["fraud", "other"], output="topic"
        )
        .filter(lambda r: r["topic"] == "fraud", depends_on="topic", name="only_fraud")
        .sem_flat_map(
            [{"name": "person", "type": "str", "desc": "a person the email names"}], name="people"
        )
        .map(
            lambda r: {"surname": r["person"].split()[-1]},
            {"surname": str},
            depends_on="person",
            name="surname",
        )
        .distinct("person", name="unique_people")
        .sort("surname", name="by_surname")
        .project(["person", "surname", "parent_record_id"], name="result")
    )
    md, rows = materialize(ds, "ops", sim_model(sim), tmp_path)
    assert [(r["person"], r["surname"], r["parent_record_id"]) for r in rows] == [
        ("Andrew Fastow", "Fastow", "a.txt"),
        ("Ben Glisan", "Glisan", "a.txt"),
        ("Michael Kopper", "Kopper", "c.txt"),
    ]
    assert rows[0]["record_id"] == "a.txt#1" and all(r["error"] is None for r in rows)
    assert md["sem_classify_1"]["model_calls"] == 4 and md["only_fraud"]["records_out"] == 2
    assert md["people"]["model_calls"] == 2 and md["people"]["records_out"] == 4
    assert md["unique_people"]["records_out"] == 3


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
    assert md["not_from_ken"]["records_in"] == 4 and md["not_from_ken"]["records_out"] == 3
    assert md["fraud"]["model_calls"] == 3  # the model never saw the email the filter drops
    assert [(r["record_id"], r["sender"]) for r in rows] == [("c.txt", "tim@enron.com")]


@pytest.mark.slow
def test_classify_and_flat_map_on_the_bundled_model(folder, tmp_path):
    ds = (
        Dataset.from_directory(folder)
        .sem_classify(
            "What is the email about?", ["fraud", "social"], output="topic", depends_on="contents"
        )
        .sem_flat_map(
            [{"name": "person", "type": "str", "desc": "a person named"}],
            depends_on="contents",
            max_items=3,
            name="people",
        )
    )
    md, rows = materialize(ds, "tiny", LocalLlamaModel(n_ctx=2048), tmp_path)
    assert md["sem_classify_1"]["model_calls"] == 4 and md["sem_classify_1"]["failures"] == 0
    assert {r["topic"] for r in rows if not r["error"]} <= {"fraud", "social"}
    assert md["people"]["evaluated"] == 4 and isinstance(md["people"]["output_tokens"], int)
    assert all(r["parent_record_id"] in EMAILS for r in rows)


def emails() -> Dataset:
    return Dataset.from_directory("/d")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: emails().sem_classify("", ["a", "b"]), "non-empty instruction"),
        (lambda: emails().sem_classify("topic?", ["a"]), "at least two classes"),
        (lambda: emails().sem_classify("topic?", ["a", "a"]), "distinct"),
        (lambda: emails().sem_classify("topic?", "ab"), "list of labels"),
        (lambda: emails().sem_classify("topic?", ["a", "b"], output="contents"), "already exist"),
        (lambda: emails().sem_classify("topic?", ["a", "b"], depends_on="body"), "unknown column"),
        (
            lambda: emails().sem_flat_map([{"name": "p", "type": "dict", "desc": "x"}]),
            "unknown type",
        ),
        (
            lambda: emails().sem_flat_map([{"name": "p", "type": "str", "desc": "x"}], max_items=0),
            "max_items",
        ),
        (
            lambda: emails().sem_flat_map([{"name": "filename", "type": "str", "desc": "x"}]),
            "already exist",
        ),
        (lambda: emails().map(lambda r: {}, {}), "needs output columns"),
        (lambda: emails().map("len", {"n": int}), "callable"),
        (lambda: emails().map(lambda r: {}, {"n": int}, depends_on="nope"), "unknown column"),
        (lambda: emails().sort([]), "at least one column"),
        (lambda: emails().sort("nope"), "unknown column"),
        (lambda: emails().distinct("nope"), "unknown column"),
    ],
)
def test_declaration_errors(build, message):
    with pytest.raises((PlanError, SchemaError), match=message):
        build()


SENDER = [{"name": "sender", "type": "str", "desc": "sender"}]


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


def test_limit_pushdown_and_filter_ordering():
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
    estimates = {"slow": (10.0, 0.5), "quick": (1.0, 0.1)}
    reordered = rewrites.optimize(two.node, lambda n: estimates.get(n.name, (1.0, 0.5)))
    assert [n.name for n in reordered.lineage()][1:] == ["quick", "slow"]
    assert names(two) == ["slow", "quick"]  # equal priors keep the declared order
    assert isinstance(rewrites.optimize(two.node), plan.SemanticFilter)


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
    assert result.stats.usage.calls == len(chunks) + 1


def run_all(ds: Dataset, name: str, model, tmp_path: Path) -> tuple[dict, list[dict]]:
    """Materialize every batch partition, then the summary job; return its output and metadata."""
    store = tmp_path / f"store-{name}"
    defs, q = build_definitions(ds, name, model=model, store_root=str(store))
    with dg.instance_for_test() as instance:
        batches = register_partitions(RecordStore(store), q, instance)
        assert len(batches) == 2
        for b in batches:
            assert (
                defs.resolve_job_def(q.job.name)
                .execute_in_process(partition_key=b.key, instance=instance)
                .success
            )
        assert (
            defs.resolve_job_def(q.summary_job.name).execute_in_process(instance=instance).success
        )
        rec = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=q.output_key), limit=1
        ).records[0]
        md = {k: v.value for k, v in rec.asset_materialization.metadata.items()}
        rows = RecordStore(store).read(q.output_key.path, None).to_pylist()
    return md, rows


def test_an_edited_document_counts_once_in_an_aggregate(folder, tmp_path):
    """An edited file is batched again; an operator over all batches sees its newest version
    only, while the older batch keeps its records (and says the file changed)."""
    ds = (
        Dataset.from_directory(folder, batch_size=2)
        .map(
            lambda r: {"long": len(r["contents"]) > 70},
            {"long": bool},
            depends_on="contents",
            name="size",
        )
        .groupby("long")
        .agg(n=("count", None), name="by_size")
    )
    store = tmp_path / "store-edit"
    defs, q = build_definitions(ds, "edit", store_root=str(store))
    job, summary = defs.resolve_job_def(q.job.name), defs.resolve_job_def(q.summary_job.name)

    def counts(instance) -> dict:
        for b in register_partitions(RecordStore(store), q, instance):
            assert job.execute_in_process(partition_key=b.key, instance=instance).success
        assert summary.execute_in_process(instance=instance).success
        rows = RecordStore(store).read(q.output_key.path, None).to_pylist()
        return {r["long"]: r["n"] for r in rows}

    with dg.instance_for_test() as instance:
        assert counts(instance) == {True: 3, False: 1}
        (folder / "a.txt").write_text("From: ken@enron.com\n\nshort now")
        assert counts(instance) == {True: 2, False: 2}
        assert len(instance.get_dynamic_partitions(q.partitions_def.name)) == 3


def test_grouped_aggregate_over_all_partitions(folder, sim, tmp_path):
    ds = (
        Dataset.from_directory(folder, batch_size=2)
        .sem_classify(
            "Does the email discuss a fraudulent scheme?", ["fraud", "other"], output="topic"
        )
        .groupby("topic")
        .agg(n=("count", None), name="per_topic")
    )
    defs, q = build_definitions(ds, "agg", store_root=str(tmp_path / "unused"))
    by_key = {a.key.path[-1]: a for a in q.assets}
    assert (
        by_key["per_topic"].partitions_def is None
        and by_key["sem_classify_1"].partitions_def is not None
    )
    assert q.summary_job is not None and q.output_key.path[-1] == "per_topic"
    md, rows = run_all(ds, "agg", sim_model(sim), tmp_path)
    assert sorted((r["topic"], r["n"]) for r in rows) == [("fraud", 2), ("other", 2)]
    assert md["records_in"] == 4 and md["records_out"] == 2


def test_semantic_aggregate_is_hierarchical_past_the_context(folder, sim, tmp_path):
    ds = Dataset.from_directory(folder, batch_size=2).sem_agg(
        "How many subjects are there?",
        [{"name": "summary", "type": "str", "desc": "N subjects"}],
        depends_on="contents",
        name="summary",
    )
    small = OpenAICompatibleModel(model="sim", base_url=sim.base_url, context_tokens=560)
    md, rows = run_all(ds, "semagg", small, tmp_path)
    assert rows == [{"record_id": "all", "summary": "4 subjects", "error": None}]
    assert md["strategy"].startswith("hierarchical") and md["model_calls"] > 1
    md_big, rows_big = run_all(ds, "semagg_big", sim_model(sim), tmp_path)
    assert (
        rows_big[0]["summary"] == "4 subjects"
        and md_big["strategy"] == "direct"
        and md_big["model_calls"] == 1
    )


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
        calls = sum(r.asset_materialization.metadata["model_calls"].value for r in rec)
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
    with pytest.raises(PlanError, match="cannot read"):
        Dataset.from_duckdb("/nonexistent/x.duckdb", "t")
    joined = emails().sem_join(table, "x", name="j")
    assert joined.columns == (
        "record_id",
        "filename",
        "contents",
        "right_record_id",
        "name",
        "risk",
        "error",
    )


def test_topk_over_all_partitions_with_embeddings_and_rerank(folder, sim, tmp_path):
    from pz_dagster.orchestration import OpenAIEmbeddingResource

    ds = Dataset.from_directory(folder, batch_size=2).sem_topk(
        "the Raptor hedge is underwater", k=2, candidates=3, depends_on="contents", name="best"
    )
    store = tmp_path / "store-topk"
    defs, q = build_definitions(
        ds,
        "topk",
        model=sim_model(sim),
        store_root=str(store),
        embeddings=OpenAIEmbeddingResource(model="emb", base_url=sim.base_url),
    )
    assert {a.key.path[-1]: a.partitions_def is None for a in q.assets} == {
        "documents": False,
        "best": True,
    }
    with dg.instance_for_test() as instance:
        for b in register_partitions(RecordStore(store), q, instance):
            assert (
                defs.resolve_job_def(q.job.name)
                .execute_in_process(partition_key=b.key, instance=instance)
                .success
            )
        assert (
            defs.resolve_job_def(q.summary_job.name).execute_in_process(instance=instance).success
        )
        rec = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=q.output_key), limit=1
        ).records[0]
        md = {k: v.value for k, v in rec.asset_materialization.metadata.items()}
    rows = RecordStore(store).read(q.output_key.path, None).to_pylist()
    assert [(r["record_id"], r["rank"]) for r in rows][0] == ("a.txt", 1)
    assert rows[0]["relevance"] == 10 and len(rows) == 2 and rows[1]["relevance"] == 2
    assert md["model_calls"] == 1 + 3  # one embedding call, then only the 3 candidates are rated
    assert -1.0 <= rows[0]["similarity"] <= 1.0


def test_topk_declaration_errors():
    with pytest.raises(PlanError, match="non-empty criterion"):
        emails().sem_topk("", 3)
    with pytest.raises(PlanError, match="positive integer"):
        emails().sem_topk("fraud", 0)
    with pytest.raises(PlanError, match="must be >= k"):
        emails().sem_topk("fraud", 5, candidates=2)
    assert emails().retrieve("fraud", 3).columns[-4:] == (
        "similarity",
        "relevance",
        "rank",
        "error",
    )


def test_projection_pushdown_drops_unread_columns_before_the_model():
    ds = emails().sem_map(SENDER, depends_on="contents", name="m").project(["sender"], name="out")
    assert names(ds) == ["out_early", "m", "out"]
    early = rewrites.optimize(ds.node).lineage()[1]
    assert early.columns == ("record_id", "contents", "error")
    # nothing to drop when the operator reads every column it keeps
    assert names(
        emails().sem_map(SENDER, name="m").project(["sender", "filename"], name="out")
    ) == ["m", "out"]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: emails().agg(), "at least one aggregate"),
        (lambda: emails().agg(n=("median", "contents")), "unknown function"),
        (lambda: emails().agg(total=("sum", None)), "needs a column"),
        (lambda: emails().agg(total=("sum", "amount")), "unknown column"),
        (lambda: emails().agg(n="count"), r"must be \(function, column\)"),
        (lambda: emails().groupby("nope").agg(n=("count", None)), "unknown column"),
        (lambda: emails().groupby("filename").agg(filename=("count", None)), "also a group_by"),
        (lambda: emails().groupby("record_id").agg(n=("count", None)), "cannot group by"),
        (lambda: emails().sem_agg("", SENDER), "non-empty instruction"),
        (
            lambda: emails().sem_agg("who?", [{"name": "x", "type": "set", "desc": "d"}]),
            "unknown type",
        ),
        (lambda: emails().sem_agg("who?", SENDER, depends_on="nope"), "unknown column"),
        (
            lambda: (
                emails()
                .groupby("filename")
                .sem_agg("who?", [{"name": "filename", "type": "str", "desc": "d"}])
            ),
            "group_by columns",
        ),
    ],
)
def test_aggregate_declaration_errors(build, message):
    with pytest.raises((PlanError, SchemaError), match=message):
        build()


def test_dataframe_source():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"name": ["Raptor", "Chewco"], "risk": [9, 7]})
    table = Dataset.from_pandas(df, name="schemes")
    assert table.columns == ("record_id", "name", "risk", "error")
    assert dict(table.node.schema)["risk"] is int
    assert [(r["record_id"], r["risk"]) for r in table.node.read()] == [
        ("schemes#1", 9),
        ("schemes#2", 7),
    ]


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
        r["amount"] for r in mixed.node.read()
    ] == [1.0, 2.5]
    db = tmp_path / "d.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select DATE '2001-10-16' as day, 1.5::DECIMAL(4,1) as x")
    rows = Dataset.from_duckdb(db, "t").node.read()
    assert rows[0]["day"] == str(datetime.date(2001, 10, 16)) and rows[0]["x"] == "1.5"
    node = emails().map(lambda r: {"n": r["contents"]}, {"n": int}).node
    recs = [{"record_id": "a", "filename": "a", "contents": "12", "error": None}]
    out = run_operator(node, recs, None)
    assert out.records[0]["n"] is None and "wrong type" in out.records[0]["error"]


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
    assert md["model_calls"].value == calls_per_record * len(EMAILS)
    if strategy == "ensemble":
        assert md["physical_config"].value["params"]["models"] == ["sim", "sim-b", "sim-wrong"]
    if strategy == "cascade":
        # the simulator's cheap model is never sure (confidence 1): every record escalates,
        # and the strong model's answers are recorded to learn thresholds from
        assert md["physical_config"].value["params"]["models"] == ["sim-b", "sim"]
        assert md["escalated"].value == len(EMAILS)
        assert len(md["cascade_pairs"].value["sim-b"]) == len(EMAILS)


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


def test_the_history_keeps_code_synthesis_s_recurring_cost_without_its_one_time_part():
    from pz_dagster.tuning.history import HistoryRecord, NodeHistory

    config = {"operator": "extract", "model": "m", "strategy": "code_synthesis", "params": {}}
    numbers = {
        "evaluated": 20,
        "model_calls": 12,
        "dollars": 0.9,
        "model_seconds": 9.0,
        "input_tokens": 9000,
        "synthesis_sample": 8,
        "synthesis_tokens": 8000,
        "fallback_tokens": 1000,
    }
    # an explored run on a sample the synthesis sample covers: no recurring record
    explored_run = {
        "config": config,
        "records": 5,
        "dollars": 0.5,
        "seconds": 5.0,
        "records_out": 5,
        "one_time": {"sample": 5, "synthesis_tokens": 5000, "fallback_tokens": 0},
    }
    md = {k: dg.MetadataValue.float(float(v)) for k, v in numbers.items()} | {
        "physical_config": dg.MetadataValue.json(config),
        "sample_runs": dg.MetadataValue.json([explored_run]),
    }
    record = HistoryRecord.from_metadata(md)
    assert record is not None
    run, explored = NodeHistory.of([(record, 0.0)]).observations
    # 12 records answered by the functions or a fallback, at the fallbacks' 1/9 of the cost
    assert run.records == 12 and run.dollars == pytest.approx(0.1) and run.seconds == 1.0
    assert explored.records == 0 and explored.dollars == 0.0


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
