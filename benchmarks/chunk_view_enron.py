"""What the model answers when it reads only the chunks of an email that name the fields
(code synthesis's view, ``field_chunks``) against the whole email: one direct prompt per email
for ``sender`` and ``subject``, on the shared Enron emails the view cuts.

    .venv/bin/python -m benchmarks.chunk_view_enron     # 40 emails, bundled SmolLM2, from the repo root

Code synthesis judges its candidate functions by these answers, so what matters is how often
an answer points at the right line: exact match with the ``From:`` address and the
``Subject:`` line, and the word-F1 agreement the functions are scored by. The model runs
in-process with a 4096-token context, so whole emails are not cut.
"""

from __future__ import annotations

import argparse
import platform
import random
import re
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from benchmarks.common import RESULTS, SHARED_ENRON_DIR, read_emails, table, write_json
from definitions.enron import SENDER_SUBJECT
from pz_dagster import Dataset
from pz_dagster.operators.code_synthesis.functions import score
from pz_dagster.operators.map import direct_map
from pz_dagster.operators.prompts import field_chunks

FIELDS = [f["name"] for f in SENDER_SUBJECT]


def line(text: str, label: str, address: bool = False) -> str | None:
    m = re.search(
        rf"^{label}:[ \t]*(\S+)" if address else rf"^{label}:[ \t]*(.*?)[ \t]*$", text, re.M
    )
    return m.group(1) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--emails", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "chunk_view_enron.json")
    args = ap.parse_args()

    cut = [
        r
        for r in read_emails(SHARED_ENRON_DIR)
        if field_chunks(r["contents"], FIELDS) != r["contents"]
    ]
    random.Random(args.seed).shuffle(cut)
    chosen = cut[: args.emails]
    node = (
        Dataset.from_directory("unused")
        .sem_add_columns(SENDER_SUBJECT, depends_on="contents", name="sender_and_subject")
        .node
    )
    from pz_dagster.models.local_llama import LocalLlamaClient

    model = LocalLlamaClient(None, n_ctx=4096)
    console = Console(width=140)
    rows = {}
    for name, text_of in (
        ("chunks naming the fields", lambda r: field_chunks(r["contents"], FIELDS)),
        ("whole email", None),
    ):
        res = direct_map(node, chosen, model, text_of=text_of)
        ok = [r for r in res.records if not r.get("error")]
        sender = [line(r["contents"], "From", address=True) for r in ok]
        subject = [line(r["contents"], "Subject") for r in ok]
        rows[name] = {
            "emails": len(chosen),
            "failures": res.stats.failures,
            "tokens": res.stats.usage.input_tokens + res.stats.usage.output_tokens,
            "characters_read": sum(
                len(text_of(r)) if text_of else len(r["contents"]) for r in chosen
            ),
            "sender_is_from_address": sum(
                1 for r, s in zip(ok, sender, strict=True) if (r.get("sender") or "").strip() == s
            ),
            "subject_is_subject_line": sum(
                1 for r, s in zip(ok, subject, strict=True) if (r.get("subject") or "").strip() == s
            ),
            "from_line_agreement": round(
                score("sender", "", "", sender, [r.get("sender") for r in ok]).accuracy, 3
            ),
            "subject_line_agreement": round(
                score("subject", "", "", subject, [r.get("subject") for r in ok]).accuracy, 3
            ),
        }
        console.print(f"{name}: {rows[name]}")

    cols = list(next(iter(rows.values())))
    shown = table(
        f"SmolLM2 on {len(chosen)} long Enron emails: chunks vs whole",
        ("model reads", *(c.replace("_", " ") for c in cols)),
        left=("model reads",),
    )
    for name, r in rows.items():
        shown.add_row(name, *(str(r[c]) for c in cols))
    console.print(shown)
    write_json(
        args.out,
        {
            "benchmark": "chunk_view_enron",
            "model": model.model_name,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, Python {platform.python_version()}",
            "seed": args.seed,
            "rows": rows,
        },
    )
    console.print(f"results: {args.out}")


if __name__ == "__main__":
    main()
