"""The optimizer on the bundled defaults alone (SmolLM2-135M + MiniLM, no API key): the shared
Enron legal-discovery query, learned on a labelled half, scored on the other half.

Split (documented, deterministic): a file is in the *tune* half when the first byte of the
SHA-256 of its name is even, else in the *held-out* half (125 / 125 emails, 8 / 5 relevant).
The optimizer gets the labels of the tune half only.

1. The tune emails land in the watched folder and run batch by batch through Dagster. The
   optimizer starts from priors, measures each choice against the tune labels, records the
   proxies' scores, and learns their thresholds on earlier batches (judging them on the next).
2. The held-out emails then land in the same folder (new batches, as a sensor would see them)
   and run with what the history has taught; no label of theirs is ever read by the system.
3. Filter precision / recall / F1 and extraction exact match are computed on the held-out half.

    .venv/bin/python -m benchmarks.optimizer_enron_local     # ~15-25 min on 2 cores, from the repo root
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import Counter
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
    in_tune_half,
    load_labels,
    machine,
    prf,
    stored_output,
    table,
    write_json,
    write_tune_labels,
)
from definitions.enron import legal_discovery_query
from pz_dagster import metadata_keys as K
from pz_dagster.metadata_keys import metadata_value
from pz_dagster.orchestration import (
    LocalEmbeddingResource,
    LocalLlamaModel,
    OptimizerResource,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions

FILTERS = ("mentions_fraud_scheme", "not_news_quote")
OUTPUT = "sender_and_subject"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=SHARED_ENRON_DIR)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--policy", default="MaxQuality")
    ap.add_argument(
        "--strategies", default="direct,lexical_proxy,embedding_proxy", help="comma-separated"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "optimizer_enron_local.json",
    )
    args = ap.parse_args()

    labels = load_labels()
    names = email_names(args.data)
    tune = [n for n in names if in_tune_half(n)]
    heldout = [n for n in names if not in_tune_half(n)]
    work = Path(tempfile.mkdtemp(prefix="pz-opt-bench-"))
    folder = work / "emails"
    folder.mkdir()
    tune_labels = write_tune_labels(work / "tune-labels.json", labels, names)

    optimizer = OptimizerResource(
        policy=args.policy,
        strategies=args.strategies.split(","),
        labels_path=str(tune_labels),
    )
    defs, query = build_definitions(
        legal_discovery_query(folder, batch_size=args.batch_size),
        "enron",
        model=LocalLlamaModel(),
        embeddings=LocalEmbeddingResource(),
        optimizer=optimizer,
        store_root=str(work / "store"),
    )
    job = defs.resolve_job_def(query.job.name)
    console = Console(width=140)
    timeline: list[dict] = []
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    start = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        done: set[str] = set()
        phase_keys: dict[str, list[str]] = {}
        for phase, files in (("tune", tune), ("heldout", heldout)):
            copy_emails(files, args.data, folder)  # the files arrive in the watched folder
            batches = [
                b
                for b in register_partitions(RecordStore(work / "store"), query, instance)
                if b.key not in done
            ]
            phase_keys[phase] = [b.key for b in batches]
            for batch in batches:
                t = time.perf_counter()
                res = job.execute_in_process(
                    partition_key=batch.key,
                    instance=instance,
                    raise_on_error=False,
                    run_config=quiet,
                )
                done.add(batch.key)
                row = {
                    "phase": phase,
                    "batch": batch.key,
                    "ok": res.success,
                    "seconds": round(time.perf_counter() - t, 1),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                }
                for name in (*FILTERS, OUTPUT):
                    recs = instance.fetch_materializations(
                        dg.AssetRecordsFilter(
                            asset_key=query.asset_key(name), asset_partitions=[batch.key]
                        ),
                        limit=1,
                    ).records
                    if recs:
                        md = recs[0].asset_materialization.metadata
                        config = metadata_value(md, K.PHYSICAL_CONFIG)
                        row[name] = {
                            "strategy": config["strategy"],
                            "model": config["model"],
                            "model_calls": metadata_value(md, K.MODEL_CALLS),
                            "records_in": metadata_value(md, K.RECORDS_IN),
                            "records_out": metadata_value(md, K.RECORDS_OUT),
                            "quality": metadata_value(md, K.QUALITY),
                            "quality_source": metadata_value(md, K.QUALITY_SOURCE),
                        }
                timeline.append(row)
                console.print(
                    f"{phase} {batch.key}: {'ok' if res.success else 'FAILED'} in "
                    f"{row['seconds']}s, peak RSS {row['peak_rss_mb']} MB; "
                    + ", ".join(f"{n}={row[n]['strategy']}" for n in (*FILTERS, OUTPUT) if n in row)
                )
    wall = time.perf_counter() - start

    store = RecordStore(work / "store")
    rows, kept = stored_output(store, f"enron__{OUTPUT}", OUTPUT)
    relevant = {n for n in names if labels.get(n)}
    held = set(heldout)
    calls = Counter()
    for row in timeline:
        for n in (*FILTERS, OUTPUT):
            if n in row:
                calls[(row["phase"], n)] += row[n]["model_calls"]
    final = {n: timeline[-1][n]["strategy"] for n in (*FILTERS, OUTPUT) if n in timeline[-1]}
    result = {
        "benchmark": "optimizer_enron_local",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "models": "smollm2-135m-instruct-q4_1 (in-process llama.cpp) + all-MiniLM-L6-v2",
        "policy": args.policy,
        "strategies": args.strategies.split(","),
        "split": "sha256(file name)[0] even = tune (labels given to the optimizer), odd = heldout",
        "emails": {"tune": len(tune), "heldout": len(heldout)},
        "relevant": {"tune": len(relevant & set(tune)), "heldout": len(relevant & held)},
        "records_ran": len(names),
        "wall_seconds": round(wall, 1),
        "final_plan": final,
        "model_calls": {f"{p}/{n}": c for (p, n), c in calls.items()},
        "heldout_filter": prf(kept, relevant, held),
        "heldout_extraction": exact_match(rows, labels, held),
        "tune_filter": prf(kept, relevant, set(tune)),
        "reference": {
            "naive one-prompt-per-email, same model (../shared/PEERS.md)": {"filter_f1": 0.11},
            "Palimpzest 1.5.3, same model (../shared/PEERS.md)": {"filter_f1": 0.0},
        },
        "timeline": timeline,
    }
    write_json(args.out, result)

    scores = table(
        "optimizer on the bundled defaults, Enron held-out half",
        (
            "part",
            "emails",
            "relevant",
            "kept",
            "precision",
            "recall",
            "F1",
            "sender EM",
            "subject EM",
        ),
    )
    for part, universe in (("tune", set(tune)), ("heldout", held)):
        f = prf(kept, relevant, universe)
        e = exact_match(rows, labels, universe)
        scores.add_row(
            part,
            str(len(universe)),
            str(f["relevant"]),
            str(f["kept"]),
            f"{f['precision']:.3f}",
            f"{f['recall']:.3f}",
            f"{f['f1']:.3f}",
            f"{e['sender_exact']:.2f}",
            f"{e['subject_exact']:.2f}",
        )
    console.print(scores)
    console.print(f"final plan: {final}; wall {wall:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
