"""Operators over every partition: agg, sem_agg (hierarchical past the context), sem_topk;
an edited document counted once; their declaration errors."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset, PlanError, SchemaError
from pz_dagster.orchestration import (
    OpenAICompatibleModel,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from tests.operators_common import SENDER, emails, sim_model


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
    assert md["records/in"] == 4 and md["records/out"] == 2


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
    assert md["strategy"].startswith("hierarchical") and md["usage/model_calls"] > 1
    md_big, rows_big = run_all(ds, "semagg_big", sim_model(sim), tmp_path)
    assert (
        rows_big[0]["summary"] == "4 subjects"
        and md_big["strategy"] == "direct"
        and md_big["usage/model_calls"] == 1
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
    # one embedding call, then only the 3 candidates are rated
    assert md["usage/model_calls"] == 1 + 3
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
