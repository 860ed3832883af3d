"""Proxy filters: a cheap score per record instead of a model call, kept above a threshold the
optimizer learned on labelled (or champion-judged) records of earlier partitions.

- ``lexical``: how many of the predicate's terms a record contains. A quoted phrase in the
  predicate ("Raptor") counts three times: the user spelled out what to look for. Words are
  matched as word prefixes, case-insensitively; stop words and words that describe the record
  itself ("email", "document") are left out.
- ``embedding``: cosine similarity of the record and the predicate under the embedding model
  (the best of the record's chunks, so a long document is not diluted).

A proxy's threshold has a direction: for "is not quoting a news article" the score of the
predicate's terms falls as the predicate holds, and the learned polarity says so.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence

from optimizer.candidates import STRATEGIES
from optimizer.thresholds import SignedThreshold
from pz_dagster.models.base import Usage
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators.base import (
    OperatorResult,
    OperatorStats,
    Progress,
    Record,
    split_failed,
)
from pz_dagster.operators.prompts import render_fields
from pz_dagster.query.plan import SemanticFilter

SELF_WORDS = frozenset({"email", "emails", "document", "documents", "record", "records", "text"})
QUOTED_WEIGHT = 3.0
CHUNK_CHARS = 1500
# The strategies that answer without a chat model, as the optimizer declares them.
PROXIES = tuple(name for name, s in STRATEGIES.items() if not s.uses_model)


@functools.cache
def stop_words() -> frozenset[str]:
    """scikit-learn's English stop words. Imported on first use: scikit-learn takes seconds
    to import (scipy.stats), and everything that imports the operators would pay for it."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def predicate_terms(predicate: str) -> tuple[list[str], list[str]]:
    """(quoted phrases, content words) of a predicate, lower-cased.

    >>> predicate_terms('The email refers to a scheme (i.e., "Raptor", "Fat Boy")')
    (['raptor', 'fat boy'], ['refers', 'scheme', 'raptor', 'fat', 'boy'])
    """
    quoted = [q.strip().lower() for q in re.findall(r'"([^"]+)"', predicate) if q.strip()]
    ignored = stop_words() | SELF_WORDS
    words = [
        w
        for w in re.findall(r"[a-z][a-z0-9'-]+", predicate.lower())
        if w not in ignored and len(w) > 2
    ]
    return quoted, list(dict.fromkeys(words))


def lexical_scores(node: SemanticFilter, records: Sequence[Record]) -> list[float]:
    """The lexical proxy's score of each record.

    >>> from pz_dagster.query import plan
    >>> f = plan.SemanticFilter(name="f", input=plan.DirectorySource(name="d", path="x"),
    ...                         predicate='mentions "Raptor" deals')
    >>> lexical_scores(f, [{"contents": "the RAPTOR deal"}, {"contents": "lunch"}])
    [4.0, 0.0]
    """
    quoted, words = predicate_terms(node.predicate)
    patterns = [re.compile(r"\b" + re.escape(w)) for w in words]
    out = []
    for r in records:
        text = render_fields(r, node.depends_on).lower()
        score = QUOTED_WEIGHT * sum(q in text for q in quoted)
        score += sum(1 for p in patterns if p.search(text))
        out.append(float(score))
    return out


def embedding_scores(
    node: SemanticFilter, records: Sequence[Record], embedder: EmbeddingModel
) -> tuple[list[float], Usage]:
    """The embedding proxy's score of each record, and what the embeddings cost."""
    chunks, owner = [], []
    for i, r in enumerate(records):
        text = render_fields(r, node.depends_on) or " "
        for start in range(0, len(text), CHUNK_CHARS):
            chunks.append(text[start : start + CHUNK_CHARS])
            owner.append(i)
    emb = embedder.embed([node.predicate, *chunks])
    query, vectors = emb.vectors[0], emb.vectors[1:]
    best = [-1.0] * len(records)
    for i, v in zip(owner, vectors, strict=True):
        best[i] = max(best[i], sum(a * b for a, b in zip(query, v, strict=True)))
    return best, emb.usage


def scores_for(
    strategy: str,
    node: SemanticFilter,
    records: Sequence[Record],
    embedder: EmbeddingModel | None,
) -> tuple[list[float], Usage]:
    if strategy == "lexical_proxy":
        return lexical_scores(node, records), Usage()
    if strategy == "embedding_proxy":
        if embedder is None:
            raise ValueError("the embedding proxy needs an embedding model")
        return embedding_scores(node, records, embedder)
    raise ValueError(f"unknown proxy {strategy!r}; known: {list(PROXIES)}")


def proxy_filter(
    node: SemanticFilter,
    records: list[Record],
    strategy: str,
    threshold: SignedThreshold,
    embedder: EmbeddingModel | None = None,
    progress: Progress | None = None,
) -> OperatorResult:
    """Keep the records whose proxy score passes ``threshold``; records that arrived with an
    error pass through unchanged, as with every operator. ``progress`` hears of all of them
    at once (scoring them is one step)."""
    start = time.perf_counter()
    ok, failed = split_failed(records)
    scores, usage = scores_for(strategy, node, [r for _, r in ok], embedder)
    kept = {i for (i, _), s in zip(ok, scores, strict=True) if threshold.keeps(s)}
    out = [r for i, r in enumerate(records) if i in kept or r.get("error")]
    stats = OperatorStats(
        records_in=len(records),
        records_out=len(out),
        evaluated=len(ok),
        passed_through_errors=len(failed),
    )
    stats.usage = Usage(
        input_tokens=usage.input_tokens,
        dollars=usage.dollars,
        seconds=time.perf_counter() - start,
    )
    if progress:
        progress(len(ok), len(ok), stats.usage)
    direction = ">=" if threshold.polarity > 0 else "<="
    return OperatorResult(
        out,
        stats,
        strategy=f"{strategy} (score {direction} {threshold.polarity * threshold.value:g})",
        model=None,
    )
