"""Code synthesis (Evaporate) against one prompt per document, extracting ``sender`` and
``subject`` from the shared Enron emails: exact match against the labels, and tokens sent to
the model as the collection grows.

    .venv/bin/python -m benchmarks.code_synthesis_enron --endpoint local   # bundled SmolLM2
    .venv/bin/python -m benchmarks.code_synthesis_enron --endpoint sim     # loopback simulator

(from the repository root, as every benchmark).

Quality: exact match of both fields on the labelled emails (13 of the 250 have labels), for
each strategy over the same 250 emails.

Growth: collections of 250, 1k, 5k and 10k emails are built by repeating the 250 shared
emails (copy k of ``x.txt`` is ``k/x.txt``); the output says so. Both strategies run on every
record. A prompt the model has already answered (a copy's) is replayed from a log instead of
recomputed, and its tokens are counted as if sent, so the token counts are what a collection of
that many distinct-but-alike emails would cost, without hours of CPU. The synthesis cost (the
sample's answers and the candidate functions) is paid once per collection.

Endpoints: ``local`` runs the bundled SmolLM2-135M in-process; ``sim`` is the OpenAI-compatible
simulator, whose answers come from the labels and the headers at 90% accuracy and whose
"functions" are drawn from a fixed bank of good, sloppy and broken code (it is not a model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import threading
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import (
    LABELS,
    RESULTS,
    SHARED_ENRON_DIR,
    load_labels,
    read_emails,
    table,
    write_json,
)
from definitions.enron import SENDER_SUBJECT
from optimizer.quality import ValidationSet
from pz_dagster import Dataset
from pz_dagster.models.base import ChatModel, Completion, Usage
from pz_dagster.operators import run_operator

SIZES = (250, 1000, 5000, 10000)

CODE_BANK = {  # what the simulator "writes" when asked for a function (not a model)
    "sender": [
        'import re\ndef extract(text):\n    m = re.search(r"^From:\\s*(\\S+)", text, re.M)\n'
        "    return m.group(1) if m else None\n",
        'def extract(text):\n    return text.split("From:")[1].split()[0]\n',
        "import os\ndef extract(text):\n    return os.environ.get('USER')\n",
    ],
    "subject": [
        'import re\ndef extract(text):\n    m = re.search(r"^Subject:\\s*(.*)$", text, re.M)\n'
        "    return m.group(1).strip() if m else None\n",
        "def extract(text):\n    while True:\n        pass\n",
        "def extract(text):\n    return text.splitlines()[4]\n",
    ],
}


class ReplayCounting:
    """A chat client that answers a prompt already answered (by any strategy: the ``log`` is
    shared) from the log instead of recomputing it, and counts its tokens as if sent. At
    temperature 0 the model would give the same answer; copies of a document cost what the
    original did."""

    def __init__(self, inner: ChatModel, log: dict[str, Completion], keep: Path | None = None):
        self.inner = inner
        self.log = log
        self.keep = keep  # JSON lines the new answers are appended to (a rerun replays them)
        self.sent = Usage()
        self._lock = threading.Lock()  # operators call from a thread pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def context_tokens(self) -> int:
        return self.inner.context_tokens

    @property
    def max_concurrency(self) -> int:
        return self.inner.max_concurrency

    def complete(self, messages, *, json_schema=None, max_tokens=256, temperature=0.0):
        key = json.dumps([messages, json_schema, max_tokens, temperature], sort_keys=True)
        with self._lock:
            done = self.log.get(key)
        fresh = done is None
        if fresh:
            done = self.inner.complete(
                messages, json_schema=json_schema, max_tokens=max_tokens, temperature=temperature
            )
        with self._lock:
            self.log[key] = done
            if fresh and self.keep is not None:
                with self.keep.open("a") as f:
                    f.write(
                        json.dumps(
                            {
                                "key": key,
                                "text": done.text,
                                "model": done.model,
                                "usage": asdict(done.usage),
                                "finish_reason": done.finish_reason,
                            }
                        )
                        + "\n"
                    )
            self.sent += replace(done.usage, seconds=0.0, retries=0)
        return done


def load_log(path: Path | None, model: str) -> dict[str, Completion]:
    """Answers a previous run of the same model kept (``--replay-log``); a torn last line
    (an interrupted run) is skipped."""
    log: dict[str, Completion] = {}
    if path is None or not path.exists():
        return log
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["model"] == model:
            log[row["key"]] = Completion(
                row["text"], row["model"], Usage(**row["usage"]), row["finish_reason"]
            )
    return log


def collection(base: list[dict], size: int) -> list[dict]:
    """``size`` records: the shared emails repeated, copy k of x.txt named k/x.txt."""
    return [
        {**r, "record_id": f"{k}/{r['record_id']}" if k else r["record_id"]}
        for k in range(-(-size // len(base)))
        for r in base
    ][:size]


def exact(records: list[dict], labels: dict[str, list]) -> dict[str, Any]:
    scored = [r for r in records if labels.get(r["record_id"])]
    hits = {
        f: sum(
            1 for r in scored if (r.get(f) or "").strip() == labels[r["record_id"]][0][f].strip()
        )
        for f in ("sender", "subject")
    }
    return {
        "scored": len(scored),
        **{f"{f}_exact": round(h / len(scored), 4) if scored else 0.0 for f, h in hits.items()},
    }


def sim_client():
    from pz_dagster.models.openai_compat import OpenAICompatibleClient
    from pz_dagster.testing import OpenAISimulator, SimulatedModel
    from pz_dagster.testing.oracles import LabelOracle

    labels = LabelOracle(SHARED_ENRON_DIR, ValidationSet.from_json(LABELS))

    def oracle(req):
        if req.schema is None:
            field = "sender" if "'sender'" in req.prompt else "subject"
            bank = CODE_BANK[field]
            return bank[int(hashlib.sha256(req.prompt.encode()).hexdigest(), 16) % len(bank)]
        return labels(req)

    sim = OpenAISimulator({"sim-gpt": SimulatedModel(accuracy=0.9)}, oracle=oracle).start()
    client = OpenAICompatibleClient(
        "sim-gpt", base_url=sim.base_url, api_key="unused", context_tokens=8192
    )
    return sim, client


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--endpoint", choices=["local", "sim"], default="sim")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--replay-log",
        type=Path,
        default=None,
        help="JSON lines of the model's answers: replayed when present, new answers appended "
        "(a rerun after a code change skips what the model already answered)",
    )
    ap.add_argument("--strategies", default="direct,code_synthesis")
    args = ap.parse_args()
    out_path = args.out or RESULTS / f"code_synthesis_{args.endpoint}.json"
    sizes = [int(s) for s in args.sizes.split(",")]

    labels = load_labels()
    base = read_emails(SHARED_ENRON_DIR)
    node = (
        Dataset.from_directory("unused")
        .sem_add_columns(SENDER_SUBJECT, depends_on="contents", name="sender_and_subject")
        .node
    )
    sim = None
    if args.endpoint == "local":
        from pz_dagster.models.local_llama import LocalLlamaClient

        inner = LocalLlamaClient(None, n_ctx=2048)
    else:
        sim, inner = sim_client()

    console = Console(width=140)
    rows, quality = [], {}
    # prompts answered so far, shared by both strategies (and by runs, with --replay-log)
    log = load_log(args.replay_log, inner.model_name)
    console.print(f"{len(log)} answers replayed from {args.replay_log}" if log else "")
    strategies = args.strategies.split(",")
    try:
        for size in sizes:
            records = collection(base, size)
            row: dict[str, Any] = {"documents": size, "copies_of_shared": -(-size // len(base))}
            for strategy in strategies:
                client = ReplayCounting(inner, log, args.replay_log)
                start = time.perf_counter()
                result = run_operator(node, records, client, strategy=strategy)
                took = time.perf_counter() - start
                tokens = client.sent.input_tokens + client.sent.output_tokens
                row[strategy] = {
                    "tokens": tokens,
                    "calls": client.sent.calls,
                    # replayed answers take no time: not a speed comparison
                    "wall_seconds_with_replay": round(took, 1),
                    "failures": result.stats.failures,
                    **(
                        {
                            "fallback": result.extras["fallback"],
                            "synthesis_tokens": result.extras["synthesis_tokens"],
                            "fallback_tokens": result.extras["fallback_tokens"],
                            "functions": {
                                f: [s["source"] for s in fs]
                                for f, fs in result.extras["functions"].items()
                            },
                        }
                        if strategy == "code_synthesis"
                        else {}
                    ),
                }
                if size == sizes[0]:
                    quality[strategy] = exact(result.records, labels)
                console.print(f"{size} documents, {strategy}: {tokens} tokens in {took:.0f}s")
            if len(strategies) == 2:
                row["token_ratio"] = round(
                    row["direct"]["tokens"] / max(row["code_synthesis"]["tokens"], 1), 1
                )
            rows.append(row)
    finally:
        if sim is not None:
            sim.stop()
    if len(strategies) != 2:  # one strategy: warming the replay log, nothing to compare
        console.print_json(data={"quality": quality, "growth": rows})
        return

    growth = table(
        f"code synthesis vs one prompt per email ({args.endpoint})",
        (
            "documents",
            "direct tokens",
            "code synthesis tokens",
            "of which one-time",
            "of which fallback",
            "ratio",
            "fallback records",
            "calls direct/synthesis",
        ),
    )
    for r in rows:
        growth.add_row(
            str(r["documents"]),
            str(r["direct"]["tokens"]),
            str(r["code_synthesis"]["tokens"]),
            str(r["code_synthesis"]["synthesis_tokens"]),
            str(r["code_synthesis"]["fallback_tokens"]),
            f"{r['token_ratio']}x",
            str(r["code_synthesis"]["fallback"]),
            f"{r['direct']['calls']}/{r['code_synthesis']['calls']}",
        )
    console.print(growth)
    q = table(
        f"exact match on the {quality['direct']['scored']} labelled emails",
        ("strategy", "sender", "subject"),
        left=("strategy", "sender", "subject"),
    )
    for s, v in quality.items():
        q.add_row(s, str(v["sender_exact"]), str(v["subject_exact"]))
    console.print(q)
    result = {
        "benchmark": "code_synthesis_enron",
        "endpoint": args.endpoint,
        "model": inner.model_name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or '?'}, Python {platform.python_version()}",
        "note": "collections above 250 repeat the 250 shared emails (copy k of x.txt is "
        "k/x.txt); prompts already answered are replayed and their tokens counted as sent",
        "quality": quality,
        "growth": rows,
    }
    write_json(out_path, result)
    console.print(f"results: {out_path}")


if __name__ == "__main__":
    main()
