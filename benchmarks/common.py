"""What the benchmarks share: the shared Enron emails and their labels, the tune / held-out
split, copying emails into a watched folder, scoring (filter precision/recall/F1, extraction
exact match), the result JSON and the printed tables. Not for the peers' runners: they run in
other virtualenvs and import only ``benchmarks.peers.common``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from pz_dagster.orchestration import RecordStore
from pz_dagster.sources import read_file, scan_folder

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# The benchmarks run on the 250 evaluation emails of the workspace's shared data (the demo's
# 100 in data/enron are a subset of them): set $PZ_SHARED_ENRON_DIR to put them elsewhere.
SHARED_ENRON_DIR = Path(
    os.environ.get("PZ_SHARED_ENRON_DIR") or REPO.parent / "shared" / "data" / "enron-eval-medium"
)
LABELS = SHARED_ENRON_DIR.parent / "enron-eval-medium-labels.json"

# --- the emails, their labels and the split -----------------------------------------------------


def load_labels() -> dict[str, list]:
    """The shared labels: file name -> the expected extractions (empty: not relevant)."""
    return json.loads(LABELS.read_text())


def email_names(folder: Path) -> list[str]:
    """The file names of a folder, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def copy_emails(names: Iterable[str], source: Path, folder: Path) -> None:
    """Copy the named files of ``source`` into ``folder`` (as they would arrive in a watched
    folder): copies, since sources never follow links out of their folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, folder / name)


def read_emails(folder: Path) -> list[dict]:
    """The readable records of a folder, as its source asset would read them."""
    out = []
    for ref in scan_folder(folder):
        out += [r for r in read_file(folder, ref.path) if not r["error"]]
    return out


def in_tune_half(name: str) -> bool:
    """The documented split: an email is in the tune half when the first byte of the SHA-256
    of its file name is even, else in the held-out half."""
    return hashlib.sha256(name.encode()).digest()[0] % 2 == 0


def write_tune_labels(path: Path, labels: dict[str, list], names: Iterable[str]) -> Path:
    """The labels of the tune half of ``names`` (all an optimizer may see), written to ``path``."""
    path.write_text(json.dumps({n: labels[n] for n in names if in_tune_half(n) and n in labels}))
    return path


def split_policies(text: str) -> list[str]:
    """Comma-separated policies; commas inside parentheses do not split.

    >>> split_policies("MaxQuality, MinCostAtQuality(0.8)")
    ['MaxQuality', 'MinCostAtQuality(0.8)']
    """
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


# --- scoring ------------------------------------------------------------------------------------


def prf(predicted: set[str], relevant: set[str], universe: set[str]) -> dict[str, float | int]:
    """Precision, recall and F1 of the kept emails within ``universe``.

    >>> prf({"a", "b"}, {"a", "c"}, {"a", "b", "c"})["f1"]
    0.5
    """
    p, r = predicted & universe, relevant & universe
    tp = len(p & r)
    precision = tp / len(p) if p else 0.0
    recall = tp / len(r) if r else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "kept": len(p),
        "relevant": len(r),
        "true_positives": tp,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def exact_match(
    rows: dict[str, dict], labels: dict[str, list], universe: set[str]
) -> dict[str, float | int]:
    """Exact match of sender and subject on the labelled emails of ``universe`` the system
    extracted."""
    hits = {"sender": 0, "subject": 0}
    scored = 0
    for rid, row in rows.items():
        if rid not in universe or not labels.get(rid):
            continue
        scored += 1
        gold = labels[rid][0]
        for f in hits:
            hits[f] += int((row.get(f) or "").strip() == gold[f].strip())
    return {
        "scored": scored,
        **{f"{f}_exact": (round(h / scored, 4) if scored else 0.0) for f, h in hits.items()},
    }


def stored_output(store: RecordStore, view: str, output: str) -> tuple[dict[str, dict], set[str]]:
    """(extracted fields by record id, ids that passed both filters) from the query's output
    view. A record the extraction failed on still passed both filters: it counts as kept."""
    with store.connect() as con:
        out_rows = con.execute(f'select record_id, sender, subject, error from "{view}"').fetchall()
    rows = {r[0]: {"sender": r[1], "subject": r[2]} for r in out_rows if r[3] is None}
    kept = {r[0] for r in out_rows if r[3] is None or r[3].startswith(f"{output}:")}
    return rows, kept


# --- results ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The machine a result was measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def write_json(path: Path, result: dict[str, Any], indent: int = 1) -> None:
    """Write a benchmark's result (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent) + "\n")


def table(title: str, columns: Sequence[str], left: Iterable[str] = ()) -> Table:
    """A result table with these columns, right-aligned (numbers) but for those in ``left``."""
    out = Table(title=title)
    keep_left = set(left)
    for c in columns:
        out.add_column(c, justify="left" if c in keep_left else "right")
    return out
