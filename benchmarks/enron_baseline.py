"""Baseline: the demo's legal-discovery query over the shared Enron emails, through Dagster.

Runs every batch of the query as a Dagster job in a temporary instance with the bundled model
(in-process llama.cpp, or any OpenAI-compatible endpoint with --base-url), then scores the
filter (precision/recall/F1) and the extraction (exact match of sender and subject) against the
labels. The split is documented: files sorted by name, the first 50 are the "tune" part
(reserved for the optimizer) and the other 200 the held-out part; both are reported.

    .venv/bin/python -m benchmarks.enron_baseline               # all 250 emails (~1 hour on 2 cores)
    .venv/bin/python -m benchmarks.enron_baseline --limit 20    # a quick look

(from the repository root, as every benchmark).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from rich.console import Console

from benchmarks.common import (
    RESULTS,
    SHARED_ENRON_DIR,
    copy_emails,
    email_names,
    exact_match,
    load_labels,
    machine,
    prf,
    stored_output,
    table,
    write_json,
)
from definitions.enron import legal_discovery_query
from pz_dagster import metadata_keys as K
from pz_dagster.metadata_keys import metadata_value
from pz_dagster.orchestration import (
    LocalLlamaModel,
    OpenAICompatibleModel,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions

TUNE_SIZE = 50
# the totals' names in the JSON, and the metadata keys they sum
METRIC_KEYS = {
    "input_tokens": K.INPUT_TOKENS,
    "output_tokens": K.OUTPUT_TOKENS,
    "model_calls": K.MODEL_CALLS,
    "failures": K.FAILURES,
    "truncated": K.TRUNCATED,
    "model_seconds": K.MODEL_SECONDS,
    "seconds": K.SECONDS,
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=SHARED_ENRON_DIR)
    ap.add_argument("--limit", type=int, default=0, help="first N emails by name (0: all)")
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument(
        "--base-url", default=None, help="OpenAI-compatible endpoint instead of in-process"
    )
    ap.add_argument("--model", default="smollm2", help="model name at --base-url")
    ap.add_argument("--out", type=Path, default=RESULTS / "enron_baseline.json")
    args = ap.parse_args()

    labels = load_labels()
    names = email_names(args.data)
    if args.limit:
        names = names[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="pz-bench-"))
    folder = work / "emails"
    copy_emails(names, args.data, folder)

    model = (
        OpenAICompatibleModel(model=args.model, base_url=args.base_url, context_tokens=4096)
        if args.base_url
        else LocalLlamaModel()
    )
    defs, query = build_definitions(
        legal_discovery_query(folder, batch_size=args.batch_size),
        "enron",
        model=model,
        store_root=str(work / "store"),
    )
    job = defs.resolve_job_def(query.job.name)
    console = Console(width=140)
    start = time.perf_counter()
    totals: dict[str, dict[str, float]] = {
        a.key.path[-1]: dict.fromkeys(METRIC_KEYS, 0) for a in query.assets
    }
    failed_runs = 0
    # An in-memory instance: the benchmark keeps nothing but its JSON, and no file of the
    # instance can vanish under a long run.
    with dg.DagsterInstance.ephemeral() as instance:
        batches = register_partitions(RecordStore(work / "store"), query, instance)
        for i, batch in enumerate(batches, start=1):
            t = time.perf_counter()
            res = job.execute_in_process(
                partition_key=batch.key,
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
            )
            failed_runs += not res.success
            console.print(
                f"batch {i}/{len(batches)} {batch.key}: {'ok' if res.success else 'FAILED'} "
                f"in {time.perf_counter() - t:.0f}s"
            )
            for asset in query.assets:
                recs = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[batch.key]),
                    limit=1,
                ).records
                if recs:
                    md = recs[0].asset_materialization.metadata  # type: ignore[union-attr]
                    for name, k in METRIC_KEYS.items():
                        totals[asset.key.path[-1]][name] += metadata_value(md, k, 0)
    wall = time.perf_counter() - start

    store = RecordStore(work / "store")
    with store.connect() as con:
        errors = con.execute(
            'select count(*) from "enron__sender_and_subject" where error is not null'
        ).fetchone()[0]
    rows, kept = stored_output(store, "enron__sender_and_subject", "sender_and_subject")
    relevant = {n for n in names if labels.get(n)}
    everything, tune = set(names), set(names[:TUNE_SIZE])
    heldout = everything - tune
    result = {
        "benchmark": "enron_baseline",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "model": model.model
        if isinstance(model, OpenAICompatibleModel)
        else "smollm2-135m-instruct-q4_1 (in-process)",
        "strategy": "direct (one prompt per record per operator)",
        "emails": len(names),
        "batches": len(batches),
        "batch_size": args.batch_size,
        "failed_runs": failed_runs,
        "records_with_error_in_output": errors,
        "wall_seconds": round(wall, 1),
        "per_operator": totals,
        "filter": {"all": prf(kept, relevant, everything), "heldout": prf(kept, relevant, heldout)},
        "extraction": {
            "all": exact_match(rows, labels, everything),
            "heldout": exact_match(rows, labels, heldout),
        },
        "split": f"sorted file names; first {TUNE_SIZE} = tune, rest = heldout",
    }
    write_json(args.out, result, indent=2)

    scores = table(
        f"enron baseline: {len(names)} emails, {wall:.0f}s wall, bundled model",
        ("part", "kept", "relevant", "TP", "precision", "recall", "F1", "sender EM", "subject EM"),
    )
    for part in ("all", "heldout"):
        f, e = result["filter"][part], result["extraction"][part]
        scores.add_row(
            part,
            str(f["kept"]),
            str(f["relevant"]),
            str(f["true_positives"]),
            f"{f['precision']:.3f}",
            f"{f['recall']:.3f}",
            f"{f['f1']:.3f}",
            f"{e['sender_exact']:.2f}",
            f"{e['subject_exact']:.2f}",
        )
    console.print(scores)
    ops = table("per operator (summed over batches)", ("asset", *METRIC_KEYS), left=("asset",))
    for name, vals in totals.items():
        ops.add_row(
            name,
            *[
                f"{vals[k]:.1f}" if isinstance(vals[k], float) else str(vals[k])
                for k in METRIC_KEYS
            ],
        )
    console.print(ops)
    console.print(f"JSON: {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
