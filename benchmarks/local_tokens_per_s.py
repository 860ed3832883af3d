"""The in-process backend against llama.cpp itself, side by side in one run.

For the same prompts (real emails with the filter and extraction instructions), measures
generated and prompt tokens per second of (a) llama-cpp-python's ``create_chat_completion``
called directly and (b) pz-dagster's ``LocalLlamaClient`` (grammar from the same schema), in
alternating order so that machine load hits both alike. The target: within 10%.

    .venv/bin/python -m benchmarks.local_tokens_per_s --prompts 12     # from the repo root
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from benchmarks.common import RESULTS, SHARED_ENRON_DIR, table, write_json
from definitions.enron import FRAUD_PREDICATE
from pz_dagster.models import LocalLlamaClient
from pz_dagster.models.local_llama import bound_strings
from pz_dagster.operators.filter import FILTER_SCHEMA, filter_instruction
from pz_dagster.operators.prompts import document_prompt


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=RESULTS / "local_tokens_per_s.json")
    args = ap.parse_args()
    files = sorted(SHARED_ENRON_DIR.iterdir())[: args.prompts]
    prompts = [
        document_prompt(f.read_text()[:3000], filter_instruction(FRAUD_PREDICATE)) for f in files
    ]
    # No prompt cache: both paths must read every prompt in full to be compared.
    ours = LocalLlamaClient(n_ctx=4096, seed=0, prompt_cache_mb=0)
    raw = ours._llm  # the same loaded model: only the call path differs
    fmt = {"type": "json_object", "schema": bound_strings(FILTER_SCHEMA)}
    totals = {"llama.cpp": [0, 0, 0.0], "pz-dagster": [0, 0, 0.0]}  # prompt tok, gen tok, seconds
    for i, messages in enumerate(prompts):
        order = ("llama.cpp", "pz-dagster") if i % 2 == 0 else ("pz-dagster", "llama.cpp")
        for who in order:
            raw.reset()  # no prefix reuse between the two: both pay the full prompt
            t = time.perf_counter()
            if who == "llama.cpp":
                resp = raw.create_chat_completion(
                    messages=messages,
                    max_tokens=args.max_tokens,
                    temperature=0.0,
                    response_format=fmt,
                )
                usage = resp["usage"]
                p, g = usage["prompt_tokens"], usage["completion_tokens"]
            else:
                done = ours.complete(
                    messages, json_schema=FILTER_SCHEMA, max_tokens=args.max_tokens
                )
                p, g = done.usage.input_tokens, done.usage.output_tokens
            dt = time.perf_counter() - t
            totals[who][0] += p
            totals[who][1] += g
            totals[who][2] += dt
    rows = {
        who: {
            "prompt_tokens": p,
            "generated_tokens": g,
            "seconds": round(s, 3),
            "total_tokens_per_s": round((p + g) / s, 2),
        }
        for who, (p, g, s) in totals.items()
    }
    ratio = rows["pz-dagster"]["total_tokens_per_s"] / rows["llama.cpp"]["total_tokens_per_s"]
    out = {
        "benchmark": "local_tokens_per_s",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": ours.model_name,
        "prompts": len(prompts),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rows": rows,
        "ratio_pz_over_llama_cpp": round(ratio, 3),
    }
    write_json(args.out, out, indent=2)
    shown = table(
        f"in-process throughput, {len(prompts)} email prompts, alternating order",
        ("path", "prompt tokens", "generated", "seconds", "tokens/s"),
    )
    for who, r in rows.items():
        shown.add_row(
            who,
            str(r["prompt_tokens"]),
            str(r["generated_tokens"]),
            f"{r['seconds']:.2f}",
            f"{r['total_tokens_per_s']:.1f}",
        )
    Console(width=100).print(shown)
    print(f"pz-dagster / llama.cpp = {ratio:.3f}   JSON: {args.out}")


if __name__ == "__main__":
    main()
