"""Long documents: field accuracy, tokens and grounding of the ways a semantic map can read a
document longer than its model's context, side by side in one run.

    .venv/bin/python -m benchmarks.long_documents --endpoint sim     # seconds
    .venv/bin/python -m benchmarks.long_documents --endpoint local   # bundled SmolLM2, minutes

The documents are the generated long-document set (``pz_dagster.testing.long_documents``:
leases, reports, manuals, ... of 8-40 pages, each field's answer in one sentence, most past the
first pages, one per document only on the last page, with distractors), written as PDF (or
``--format docx|html|md``) and read back by the project's readers. One ``sem_map`` per domain
asks for that domain's three fields with evidence. The ways compared:

- ``first_chunk``: the first context-sized chunk only (the old behaviour);
- ``split_gather``: every chunk, answers gathered per field (the default);
- ``split_gather_small``: the same with chunks of 1,500 characters (more, smaller prompts);
- ``chunk_select``: the chunks that matter per field (BM25 of the field's name and description);
- ``whole_document``: the whole document in one prompt, on a model whose context holds it
  (the simulator's big-context profile; the bundled model's context holds none of them).

On the simulator the model is ``ChunkOracle``: it answers a field from the part of the document
it is shown (null when the part does not state it), makes up a value with a quote the document
lacks for ``--hallucination`` of the fields it cannot see, and takes a distractor for
``--confusion`` of the distractors it sees, in every prompt alike (a whole document shows the
model every distractor at once). Then the simulator changes ``1 - --accuracy`` of all answers
(the choices among tied values too) into wrong ones. Accuracy is exact match after normalisation (case,
spacing, punctuation) against the labels; grounded is the share of answers whose quote the
document holds.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import RESULTS, machine, table, write_json
from pz_dagster import Dataset
from pz_dagster.models.base import ChatModel
from pz_dagster.operators import gather
from pz_dagster.operators.evidence import value_key
from pz_dagster.operators.map import chunk_select_map, direct_map
from pz_dagster.query import plan
from pz_dagster.sources import read_file
from pz_dagster.testing import long_documents as corpus

WAYS = ("first_chunk", "split_gather", "split_gather_small", "chunk_select", "whole_document")
SMALL_CHUNK_CHARS = 1500


def read_back(folder: Path, docs: list[corpus.LongDocument], fmt: str) -> dict[str, dict]:
    """Each document as the project's reader gives it, by doc id."""
    out = {}
    for doc in docs:
        (rec,) = read_file(folder, f"{doc.doc_id}.{fmt}")
        if rec["error"]:
            raise SystemExit(f"{doc.doc_id}.{fmt}: {rec['error']}")
        out[doc.doc_id] = rec
    return out


def domain_map(domain: str) -> plan.SemanticMap:
    ds = Dataset.from_directory("unused").sem_map(
        corpus.FIELDS[domain], evidence=True, depends_on="contents", name=f"{domain}_fields"
    )
    assert isinstance(ds.node, plan.SemanticMap)
    return ds.node


Run = Callable[[plan.SemanticMap, list[dict], ChatModel], Any]


def runner(way: str) -> Run:
    if way == "first_chunk":
        return lambda n, rs, m: direct_map(n, rs, m, reading=gather.Reading("first"))
    if way == "chunk_select":
        return lambda n, rs, m: chunk_select_map(n, rs, m)
    if way == "split_gather_small":
        small = gather.Reading("all", chunk_chars=SMALL_CHUNK_CHARS)
        return lambda n, rs, m: direct_map(n, rs, m, reading=small)
    return lambda n, rs, m: direct_map(n, rs, m)


def score_way(
    way: str,
    docs: list[corpus.LongDocument],
    records: dict[str, dict],
    model: ChatModel,
) -> dict[str, Any]:
    """One way over every domain: accuracy per field answer, tokens, calls, grounding."""
    right = total = grounded = answered = calls = tin = tout = chunked = cut = 0
    start = time.perf_counter()
    for domain in sorted({d.domain for d in docs}):
        mine = [d for d in docs if d.domain == domain]
        node = domain_map(domain)
        result = runner(way)(node, [records[d.doc_id] for d in mine], model)
        by_id = {r["record_id"]: r for r in result.records}
        for d in mine:
            row = by_id[records[d.doc_id]["record_id"]]
            for f, want in d.labels.items():
                total += 1
                right += row.get(f) is not None and value_key(row[f]) == value_key(want)
        s = result.stats
        grounded += sum(s.grounded.values())
        answered += sum(s.grounded.values()) + sum(s.ungrounded.values())
        calls, tin, tout = (
            calls + s.usage.calls,
            tin + s.usage.input_tokens,
            tout + s.usage.output_tokens,
        )
        chunked += s.chunked
        cut += s.truncated
    return {
        "way": way,
        "accuracy": right / total if total else 0.0,
        "answers": total,
        "grounded_share": grounded / answered if answered else None,
        "answers_with_value": answered,
        "model_calls": calls,
        "input_tokens": tin,
        "output_tokens": tout,
        "chunked_records": chunked,
        "cut_records": cut,
        "seconds": time.perf_counter() - start,
    }


def sim_models(docs: list[corpus.LongDocument], args: argparse.Namespace):
    from pz_dagster.models.openai_compat import OpenAICompatibleClient
    from pz_dagster.testing import OpenAISimulator, SimulatedModel
    from pz_dagster.testing.oracles import ChunkOracle

    oracle = ChunkOracle(docs, hallucination=args.hallucination, confusion=args.confusion)
    profile = SimulatedModel(accuracy=args.accuracy)
    sim = OpenAISimulator({"small": profile, "big": profile}, oracle=oracle)
    sim.start()
    small = OpenAICompatibleClient(
        "small", base_url=sim.base_url, context_tokens=args.context, max_concurrency=8
    )
    big = OpenAICompatibleClient("big", base_url=sim.base_url, context_tokens=128_000)
    return sim, small, big


def local_models(args: argparse.Namespace):
    from pz_dagster.models.local_llama import LocalLlamaClient

    small = LocalLlamaClient(n_ctx=args.context, prompt_cache_mb=0)
    return None, small, None


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--endpoint", choices=["sim", "local"], default="sim")
    ap.add_argument("--docs", type=int, default=None, help="default: 30 (sim), 5 (local)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", default="pdf", choices=["pdf", "docx", "html", "md"])
    ap.add_argument("--context", type=int, default=None, help="small model's context tokens")
    ap.add_argument("--hallucination", type=float, default=0.3)
    ap.add_argument("--confusion", type=float, default=0.2)
    ap.add_argument(
        "--accuracy", type=float, default=0.95, help="sim: share of answers left as the oracle's"
    )
    ap.add_argument(
        "--ways", default=",".join(WAYS), help=f"comma-separated, among {', '.join(WAYS)}"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    local = args.endpoint == "local"
    args.docs = args.docs or (5 if local else 30)
    args.context = args.context or (4096 if local else 2048)
    docs = corpus.generate(args.docs, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus.write_corpus(folder, docs, formats=(args.format,))
        files = folder / corpus.DOCUMENTS
        records = read_back(files if files.is_dir() else folder, docs, args.format)
    sim, small, big = local_models(args) if local else sim_models(docs, args)
    rows = []
    try:
        for way in [w for w in WAYS if w in args.ways.split(",")]:
            model = big if way == "whole_document" else small
            if model is None:
                rows.append({"way": way, "skipped": "no model here has a context that holds them"})
                continue
            rows.append(score_way(way, docs, records, model))
            Console().print(f"{way}: accuracy {rows[-1]['accuracy']:.2f}", highlight=False)
    finally:
        if sim is not None:
            sim.stop()
    show(rows, args, docs)
    out = args.out or RESULTS / f"long_documents_{args.endpoint}.json"
    write_json(
        out,
        {
            "benchmark": "long_documents",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "corpus": corpus.corpus_stats(docs),
            "machine": machine(),
            "python": platform.python_version(),
            "results": rows,
        },
    )
    Console().print(f"wrote {out}")


def show(rows: list[dict], args: argparse.Namespace, docs: list[corpus.LongDocument]) -> None:
    t = table(
        f"{len(docs)} long documents ({args.format}), {args.endpoint}, small context "
        f"{args.context} tokens",
        ["way", "accuracy", "grounded", "calls", "input tokens", "output tokens", "cut", "seconds"],
        left=["way"],
    )
    for r in rows:
        if "skipped" in r:
            t.add_row(r["way"], "-", "-", "-", "-", "-", "-", r["skipped"])
            continue
        g = r["grounded_share"]
        t.add_row(
            r["way"],
            f"{r['accuracy']:.2f}",
            "-" if g is None else f"{g:.2f}",
            str(r["model_calls"]),
            f"{r['input_tokens']:,}",
            f"{r['output_tokens']:,}",
            str(r["cut_records"]),
            f"{r['seconds']:.1f}",
        )
    Console(width=120).print(t)


if __name__ == "__main__":
    main()
