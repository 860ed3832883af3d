"""How long `pz-dagster` takes to answer `--help`, `--version` and `run --help`: each run as a
user runs it (a new process of the console script), N times; the median and the slowest. For
scale, the same for a process that only imports Dagster, which these commands do not do.

    .venv/bin/python -m benchmarks.cli_startup --repeat 5      # from the repo root
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from benchmarks.common import REPO, RESULTS, machine, table, write_json

SCRIPT = Path(sys.executable).parent / "pz-dagster"
COMMANDS = {
    "pz-dagster --help": [str(SCRIPT), "--help"],
    "pz-dagster --version": [str(SCRIPT), "--version"],
    "pz-dagster run --help": [str(SCRIPT), "run", "--help"],
    "pz-dagster partitions --help": [str(SCRIPT), "partitions", "--help"],
    "python -c 'import dagster' (for scale)": [sys.executable, "-c", "import dagster"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO, timeout=120)
    return time.perf_counter() - start


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=5, help="runs of each command")
    ap.add_argument("--out", type=Path, default=RESULTS / "cli_startup.json")
    args = ap.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared: say how busy
    seconds(COMMANDS["pz-dagster --help"])  # warm the file cache: a user's second call
    rows = []
    for name, command in COMMANDS.items():
        times = [seconds(command) for _ in range(args.repeat)]
        rows.append(
            {
                "command": name,
                "runs": args.repeat,
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
            }
        )
    out = table(
        f"pz-dagster start-up, {args.repeat} runs each",
        ["command", "median s", "max s"],
        ["command"],
    )
    for r in rows:
        out.add_row(r["command"], f"{r['median_s']:.2f}", f"{r['max_s']:.2f}")
    Console().print(out)
    write_json(
        args.out,
        {
            "benchmark": "cli_startup",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "command": f"python -m benchmarks.cli_startup --repeat {args.repeat}",
            "machine": {**machine(), "load_average_1_5_15_min": load},
            "results": rows,
        },
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
