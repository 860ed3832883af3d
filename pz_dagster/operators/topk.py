"""Semantic top-k: embedding search narrows the records, a model reranks the candidates."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pz_dagster.errors import PlanError
from pz_dagster.models.base import ChatModel, Usage
from pz_dagster.models.embeddings import EmbeddingModel, cosine
from pz_dagster.operators.base import OperatorResult, Outcome, Progress, Record, run_per_record
from pz_dagster.operators.prompts import Question, render_fields
from pz_dagster.query.plan import SemanticTopK

RATING_MAX_TOKENS = 16
EMBED_CHARS = 2000  # what the embedding model reads of each record (MiniLM reads 256 tokens)


class Rating(BaseModel):
    relevance: int = Field(ge=0, le=10)


def embedding_rerank_topk(
    node: SemanticTopK,
    records: list[Record],
    model: ChatModel,
    embedder: EmbeddingModel | None,
    progress: Progress | None = None,
) -> OperatorResult:
    """Cosine similarity of each record to the criterion picks ``candidates``; the model rates
    each candidate 0-10; the top k by (relevance, similarity) are ranked 1..k. A candidate the
    model fails to rate keeps relevance null and ranks after the rated ones."""
    if embedder is None:
        raise PlanError(f"sem_topk {node.name!r} needs an embedding resource (pz_embeddings)")
    healthy = [r for r in records if not r.get("error")]
    texts = [render_fields(r, node.depends_on)[:EMBED_CHARS] for r in healthy]
    embedded = embedder.embed([node.criterion, *texts]) if healthy else None
    usage = embedded.usage if embedded else Usage()
    sims = [cosine(embedded.vectors[0], v) for v in embedded.vectors[1:]] if embedded else []
    order = sorted(range(len(healthy)), key=lambda i: -sims[i])[: node.candidates]
    candidates = [{**healthy[i], "similarity": float(sims[i])} for i in order]
    question = Question(
        f"Criterion: {node.criterion.strip()}\nHow well does the document above match the criterion, "
        'from 0 (not at all) to 10 (perfectly)? Reply {"relevance": <0-10>}.',
        Rating,
        RATING_MAX_TOKENS,
    )

    def rate(record: Record) -> Outcome:
        answer, spent, cut = question.on_document(render_fields(record, node.depends_on), model)
        return Outcome({**record, "relevance": answer.relevance}, spent, cut)  # type: ignore[attr-defined]

    rated, stats = run_per_record(
        candidates,
        rate,
        op_name=node.name,
        concurrency=model.max_concurrency,
        progress=progress,
        on_failure=lambda r: {**r, "relevance": None},
    )
    ranked = sorted(
        rated,
        key=lambda r: (r.get("error") is not None, -(r.get("relevance") or -1), -r["similarity"]),
    )[: node.k]
    for i, r in enumerate(ranked, start=1):
        r["rank"] = i
    stats.records_in = len(records)
    stats.passed_through_errors = len(records) - len(healthy)
    stats.records_out = len(ranked)
    stats.usage = usage + stats.usage
    return OperatorResult(
        ranked,
        stats,
        strategy=f"embedding top-{node.candidates} + model rerank",
        model=model.model_name,
    )
