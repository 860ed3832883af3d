"""Throughput of the OpenAI-compatible backend against the loopback simulator (500 ms per call).

Runs a semantic filter over synthetic records at several concurrency levels and reports records
per second and the speedup over concurrency 1. With a fixed latency the ideal speedup equals
the concurrency; the target is >= 0.8x of it up to 64, i.e. the engine, not the client, limits.

    .venv/bin/python -m benchmarks.throughput     # from the repo root
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from benchmarks.common import RESULTS, table, write_json
from pz_dagster import Dataset
from pz_dagster.models import OpenAICompatibleClient
from pz_dagster.operators import run_operator
from pz_dagster.testing import OpenAISimulator, SimulatedModel


@contextmanager
def simulator(latency: float, in_process: bool):
    """(base_url, simulator or None): by default the simulator runs in its own process, so that
    what is measured is the client's overhead, not the simulator's share of this GIL."""
    if in_process:
        with OpenAISimulator({"sim": SimulatedModel(latency_s=latency)}) as sim:
            yield sim.base_url, sim
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "pz_dagster.testing", "--model", "sim", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip(), None
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--latency", type=float, default=0.5, help="simulated seconds per call")
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--calls-per-worker", type=int, default=8)
    ap.add_argument(
        "--in-process-simulator",
        action="store_true",
        help="run the simulator in this process (it then shares the GIL with the client)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    node = Dataset.from_directory("/synthetic").sem_filter("The email discusses fraud").node
    rows = []
    with simulator(args.latency, args.in_process_simulator) as (base_url, sim):
        for c in levels:
            n = max(8, args.calls_per_worker * c)
            records = [
                {
                    "record_id": f"r{i}",
                    "filename": f"r{i}.txt",
                    "contents": f"Email {i} about Raptor.",
                    "error": None,
                }
                for i in range(n)
            ]
            client = OpenAICompatibleClient("sim", base_url=base_url, max_concurrency=c)
            if sim is not None:
                sim.max_in_flight = 0
            start = time.perf_counter()
            result = run_operator(node, records, client)
            took = time.perf_counter() - start
            assert result.stats.failures == 0 and result.stats.usage.calls == n
            rows.append(
                {
                    "concurrency": c,
                    "records": n,
                    "seconds": round(took, 3),
                    "records_per_s": round(n / took, 3),
                    "max_in_flight": sim.max_in_flight if sim is not None else None,
                }
            )
    base = rows[0]["records_per_s"] / rows[0]["concurrency"]
    for r in rows:
        r["speedup"] = round(r["records_per_s"] / rows[0]["records_per_s"], 2)
        r["efficiency"] = round(r["records_per_s"] / (base * r["concurrency"]), 3)
    out = {
        "benchmark": "throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "latency_s": args.latency,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "backend": "OpenAICompatibleClient -> OpenAISimulator on 127.0.0.1 "
        f"({'same process' if args.in_process_simulator else 'own process'})",
        "rows": rows,
    }
    write_json(args.out, out, indent=2)
    shown = table(
        f"semantic filter throughput, simulator latency {args.latency * 1000:.0f} ms/call",
        (
            "concurrency",
            "records",
            "seconds",
            "records/s",
            "speedup",
            "efficiency",
            "max in flight",
        ),
    )
    for r in rows:
        shown.add_row(
            str(r["concurrency"]),
            str(r["records"]),
            f"{r['seconds']:.2f}",
            f"{r['records_per_s']:.2f}",
            f"{r['speedup']:.1f}x",
            f"{r['efficiency']:.2f}",
            str(r["max_in_flight"] or "-"),
        )
    Console(width=120).print(shown)
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
