"""Filters with a stated guarantee, on the simulator, over many seeds: how often the target is
met, and what the champion (the oracle) is asked, against the cascade without a guarantee.

    .venv/bin/python -m benchmarks.guarantees_sim                 # 50 seeds, 2 batches of 1000
    .venv/bin/python -m benchmarks.guarantees_sim --seeds 5       # a quick look

Data: a generated collection of short reports from several departments (``--records``, in
two batches), a quarter of them about a safety incident; the predicate asks for those. The
simulator's answers come from that truth, degraded by each profile's accuracy (the champion,
mini and nano of ``benchmarks.legal_discovery``, at their prices). Mini and nano are
*calibrated*: their stated confidence is higher on average when they are right, as a real
small model's log-probabilities are, without being sure.

Per seed (the simulator's and the certification's draws), each way runs on batch 1, then on
batch 2 with what batch 1 taught it:

- ``certified recall`` / ``certified precision`` / ``certified both``: ``sem_filter(...,
  target=Recall(0.9, delta=0.1) | Precision(...) | both, label_budget=...)``; nano scores, the
  champion is the oracle. Batch 2 audits batch 1's certificates.
- ``cascade (no guarantee)``: today's cascade, nano then the champion; batch 1 with its
  cautious default thresholds, batch 2 with thresholds learned on batch 1's scored records
  (precision and recall >= 0.9 on them).
- ``champion``: the champion on every record.

Achieved recall and precision are against the champion's answers on every record (what the
guarantee is about; the champion is asked for them apart, and that is not counted), per
batch. "met" is the share of (seed, batch) pairs meeting the target. Champion calls and
dollars are per batch, summed over both, averaged over seeds.

Results: a table, and ``benchmarks/results/guarantees_sim.json``.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import RESULTS, machine, table, write_json
from benchmarks.legal_discovery import PROFILES
from optimizer.guarantees import Precision, Recall, Target
from optimizer.thresholds import learn_cascade
from pz_dagster import Dataset
from pz_dagster.models import OpenAICompatibleClient
from pz_dagster.models.base import Pricing
from pz_dagster.models.cache import CachedChatModel, ResponseCache
from pz_dagster.operators import run_operator
from pz_dagster.operators.base import Record
from pz_dagster.operators.filter import cascade_filter
from pz_dagster.operators.guaranteed import model_scores
from pz_dagster.testing import ChatRequest, OpenAISimulator, SimulatedModel

PREDICATE = "The report describes a safety incident (someone hurt or at risk)"
CHAMPION, CHEAP = "champion-4", "nano"
DEPARTMENTS = ("finance", "logistics", "maintenance", "sales", "legal", "research")
ROUTINE = (
    "The {d} team closed the month with figures in line with the plan.",
    "A vendor meeting about {d} contracts is moved to Thursday.",
    "The {d} budget review found two invoices to re-check.",
    "New badges for the {d} floor arrive next week.",
)
INCIDENT = (
    "A technician in {d} slipped on a wet stair and was taken to the clinic.",
    "A forklift near the {d} dock tipped over; the driver was unhurt but shaken.",
    "Smoke came from a panel in the {d} room and the floor was evacuated.",
    "A contractor in {d} cut his hand on an unguarded blade.",
)


def corpus(n: int, seed: int = 0) -> list[tuple[str, bool]]:
    """``n`` reports and whether each describes a safety incident (a quarter do)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d = rng.choice(DEPARTMENTS)
        incident = rng.random() < 0.25
        lines = [rng.choice(ROUTINE).format(d=d) for _ in range(rng.randint(1, 3))]
        if incident:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(INCIDENT).format(d=d))
        out.append((f"Report {i:04d} ({d})\n" + "\n".join(lines), incident))
    return out


def oracle_for(docs: Sequence[tuple[str, bool]]) -> Callable[[ChatRequest], Any]:
    truth = {text.strip(): y for text, y in docs}
    shown = re.compile(r'Document:\n"""\n(.*?)\n"""', re.S)

    def answer(req: ChatRequest) -> Any:
        m = shown.search(req.prompt)
        yes = bool(m and truth.get(m.group(1).strip()))
        props = (req.schema or {}).get("properties", {})
        out: dict[str, Any] = {"answer": "YES" if yes else "NO"}
        if "confidence" in props:
            out["confidence"] = 5
        for k in props:
            out.setdefault(k, "the report")
        return out

    return answer


def profiles() -> dict[str, SimulatedModel]:
    out = {}
    for name, (model, _, _) in PROFILES.items():
        out[name] = SimulatedModel(
            accuracy=model.accuracy,
            calibrated=name != CHAMPION,  # latency 0: counted, not timed
        )
    return out


class Clients:
    """The profiles' clients behind one simulator, answering a repeated prompt from a response
    cache (the simulator answers it the same way), so that the ways share what they ask alike;
    each way's calls are counted from its own reports, and priced per call."""

    def __init__(self, sim: OpenAISimulator, folder: Path):
        self.sim = sim
        self.cache = ResponseCache(folder)

    def raw(self, name: str) -> OpenAICompatibleClient:
        prices = {m: Pricing(p[0], p[1]) for m, (_, p, _) in PROFILES.items()}
        return OpenAICompatibleClient(
            name, base_url=self.sim.base_url, prices=prices, max_concurrency=16
        )

    def __call__(self, name: str) -> Any:
        return CachedChatModel(self.raw(name), self.cache)


def achieved(kept: set[str], reference: set[str], ids: Sequence[str]) -> tuple[float, float]:
    pos = reference & set(ids)
    kept = kept & set(ids)
    recall = len(kept & pos) / len(pos) if pos else 1.0
    precision = len(kept & pos) / len(kept) if kept else 1.0
    return recall, precision


def reference_answers(clients: Clients, records: list[Record]) -> tuple[set[str], float]:
    """The champion's answer on every record (what the guarantee is measured against), and
    its dollars per call."""
    node = Dataset.from_directory("/d").sem_filter(PREDICATE, depends_on="contents").node
    res = run_operator(node, records, clients(CHAMPION), strategy="direct")
    kept = {r["record_id"] for r in res.records if not r.get("error")}
    return kept, res.stats.usage.dollars / max(res.stats.usage.calls, 1)


def scorer_dollars(clients: Clients, records: list[Record]) -> float:
    """The cheap model's dollars per record, scoring (asked once, which fills the cache)."""
    scores, usage, _ = model_scores([r["contents"] for r in records], PREDICATE, clients(CHEAP))
    return usage.dollars / max(len(scores), 1)


def run_certified(
    clients: Clients,
    batches: list[list[Record]],
    targets: tuple[Target, ...],
    budget: int,
    seed: int,
) -> list[dict[str, Any]]:
    node = (
        Dataset.from_directory("/d")
        .sem_filter(PREDICATE, depends_on="contents", target=list(targets), label_budget=budget)
        .node
    )
    certificates: list[dict[str, Any]] = []
    out = []
    for batch in batches:
        res = run_operator(
            node,
            batch,
            clients(CHAMPION),
            strategy="certified_cascade",
            models=[clients(CHEAP), clients(CHAMPION)],
            params={"certificates": certificates, "seed": seed},
        )
        g = res.extras["guarantee"]
        certificates = g["certificates"] if g["certified"] else certificates
        out.append(
            {
                "kept": {r["record_id"] for r in res.records if not r.get("error")},
                "champion_calls": g["oracle_calls"],
                "mode": g["mode"],
                "labels": g["labels"],
                "decided_by_score": g["decided_by_score"],
            }
        )
    return out


def run_cascade(clients: Clients, batches: list[list[Record]]) -> list[dict[str, Any]]:
    node = Dataset.from_directory("/d").sem_filter(PREDICATE, depends_on="contents").node
    params: dict[str, float] = {}
    out = []
    for batch in batches:
        res = cascade_filter(node, batch, [clients(CHEAP), clients(CHAMPION)], **params)
        pairs = [(s, y) for s, y in res.extras["cascade"].values() if y is not None]
        if {y for _, y in pairs} == {True, False}:
            learned = learn_cascade([s for s, _ in pairs], [y for _, y in pairs])
            params = {"low": learned.low, "high": learned.high}
        out.append(
            {
                "kept": {r["record_id"] for r in res.records if not r.get("error")},
                "champion_calls": res.extras["escalated"],
                "mode": "learned" if params else "default",
            }
        )
    return out


WAYS: dict[str, tuple[Target, ...] | None] = {
    "certified recall": (Recall(0.9, 0.1),),
    "certified precision": (Precision(0.9, 0.1),),
    "certified both": (Recall(0.9, 0.1), Precision(0.9, 0.1)),
    "cascade (no guarantee)": None,
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--records", type=int, default=2000, help="records, in two batches")
    ap.add_argument("--label-budget", type=int, default=200)
    ap.add_argument("--out", type=Path, default=RESULTS / "guarantees_sim.json")
    args = ap.parse_args()
    docs = corpus(args.records)
    records = [
        {"record_id": f"r{i:04d}", "filename": f"r{i:04d}.txt", "contents": t, "error": None}
        for i, (t, _) in enumerate(docs)
    ]
    half = len(records) // 2
    batches = [records[:half], records[half:]]
    console = Console(width=170)
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in [*WAYS, "champion"]}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        with (
            OpenAISimulator(profiles(), oracle=oracle_for(docs), seed=seed) as sim,
            tempfile.TemporaryDirectory(prefix="pz-guarantees-") as tmp,
        ):
            clients = Clients(sim, Path(tmp))
            reference, champion_call = reference_answers(clients, records)
            nano_record = scorer_dollars(clients, records)
            for way, targets in WAYS.items():
                if targets is None:
                    got = run_cascade(clients, batches)
                else:
                    got = run_certified(clients, batches, targets, args.label_budget, seed)
                for batch, g in zip(batches, got, strict=True):
                    r, p = achieved(g["kept"], reference, [x["record_id"] for x in batch])
                    dollars = g["champion_calls"] * champion_call + len(batch) * nano_record
                    runs[way].append(
                        {
                            "seed": seed,
                            "recall": r,
                            "precision": p,
                            "dollars": dollars,
                            **{k: v for k, v in g.items() if k != "kept"},
                        }
                    )
            for batch in batches:
                runs["champion"].append(
                    {
                        "seed": seed,
                        "recall": 1.0,
                        "precision": 1.0,
                        "champion_calls": len(batch),
                        "dollars": len(batch) * champion_call,
                    }
                )
        console.print(f"seed {seed}: done ({time.perf_counter() - t0:.0f} s)")
    shown = table(
        f"guaranteed filters vs the cascade, simulator, {args.seeds} seeds x 2 batches of "
        f"{half}, label budget {args.label_budget}",
        ("way", "target", "recall p10/med", "precision p10/med", "recall met",
         "precision met", "champion calls", "$ / 1k records", "modes"),
        left=("way", "target", "modes"),
    )  # fmt: skip
    summary = []
    for way, rows in runs.items():
        targets = WAYS.get(way) or ()
        rec = sorted(x["recall"] for x in rows)
        prec = sorted(x["precision"] for x in rows)
        calls = statistics.mean(x["champion_calls"] for x in rows) * 2
        dollars = [x["dollars"] for x in rows if x["dollars"] is not None]
        per_k = statistics.mean(dollars) * 1000 / half if dollars else None
        modes: dict[str, int] = {}
        for x in rows:
            if "mode" in x:
                modes[x["mode"]] = modes.get(x["mode"], 0) + 1
        row = {
            "way": way,
            "target": ", ".join(t.describe() for t in targets) or "-",
            "recall_p10": rec[len(rec) // 10],
            "recall_median": statistics.median(rec),
            "precision_p10": prec[len(prec) // 10],
            "precision_median": statistics.median(prec),
            "recall_met": sum(r >= 0.9 for r in rec) / len(rec),
            "precision_met": sum(p >= 0.9 for p in prec) / len(prec),
            "champion_calls_per_run": calls,
            "dollars_per_1k_records": per_k,
            "modes": modes,
            "runs": rows,
        }
        summary.append(row)
        shown.add_row(
            way,
            row["target"],
            f"{row['recall_p10']:.3f} / {row['recall_median']:.3f}",
            f"{row['precision_p10']:.3f} / {row['precision_median']:.3f}",
            f"{row['recall_met']:.0%}",
            f"{row['precision_met']:.0%}",
            f"{calls:.0f}",
            "-" if per_k is None else f"{per_k:.4f}",
            ", ".join(f"{k} {v}" for k, v in sorted(modes.items())),
        )
    console.print(shown)
    write_json(
        args.out,
        {
            "benchmark": "guarantees_sim",
            "seeds": args.seeds,
            "records": args.records,
            "label_budget": args.label_budget,
            "predicate": PREDICATE,
            "profiles": {m: {"accuracy": s.accuracy, "calibrated": s.calibrated}
                         for m, s in profiles().items()},
            "machine": machine(),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "ways": summary,
        },
    )  # fmt: skip
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
