"""How fast PDF text layers are read, and what each reader adds to the virtualenv: a generated
100-page report (``pz_dagster.testing.documents``, reportlab) read whole, page by page, N times
by pz-dagster's reader (PDFium through pypdfium2) and, when they are installed, by pypdf and
pdfminer.six for comparison. Pages/s is the best and the median run; install sizes are ``du``
of each distribution's files in site-packages, alone and with the distributions it requires.

    .venv/bin/python -m benchmarks.pdf_reading --repeat 5      # from the repo root
    .venv/bin/pip install pypdf pdfminer.six                    # to compare (not dependencies)
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import io
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from packaging.requirements import Requirement
from rich.console import Console

from benchmarks.cli_startup import commit
from benchmarks.common import RESULTS, machine, table, write_json
from pz_dagster.sources.pdf import read_pdf
from pz_dagster.testing.documents import layout, sample_text, write_pdf

LICENCES = {"pypdfium2": "Apache-2.0 / BSD-3", "pypdf": "BSD-3", "pdfminer.six": "MIT"}


def _pdfium(raw: bytes) -> list[str]:
    text = read_pdf(raw)  # the reader pz-dagster uses, checks included
    return list(text.pages or ())


def _pypdf(raw: bytes) -> list[str]:
    import pypdf

    return [p.extract_text() for p in pypdf.PdfReader(io.BytesIO(raw)).pages]


def _pdfminer(raw: bytes) -> list[str]:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTTextContainer

    return [
        "".join(e.get_text() for e in page if isinstance(e, LTTextContainer))
        for page in extract_pages(io.BytesIO(raw))
    ]


READERS: dict[str, Callable[[bytes], list[str]]] = {
    "pypdfium2": _pdfium,
    "pypdf": _pypdf,
    "pdfminer.six": _pdfminer,
}


def _top_level(dist: md.Distribution) -> set[Path]:
    """The entries of site-packages a distribution installed (its packages, its dist-info)."""
    root = Path(str(dist.locate_file("")))
    out = set()
    for f in dist.files or ():
        parts = Path(f).parts
        if parts and parts[0] != "..":  # scripts in bin/ are not part of site-packages
            out.add(root / parts[0])
    return {p for p in out if p.exists()}


def _du_mb(paths: set[Path]) -> float:
    if not paths:
        return 0.0
    done = subprocess.run(
        ["du", "-skc", *map(str, sorted(paths))], capture_output=True, text=True, check=True
    )
    return round(int(done.stdout.splitlines()[-1].split()[0]) / 1024, 1)


def _requirements(name: str, seen: set[str]) -> set[str]:
    """``name`` and every distribution it requires (no extras), installed ones only."""
    key = name.lower().replace("_", "-")
    if key in seen:
        return seen
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return seen
    seen.add(key)
    for spec in dist.requires or ():
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            _requirements(req.name, seen)
    return seen


def install_size(name: str) -> dict[str, object]:
    own = _top_level(md.distribution(name))
    deps = sorted(_requirements(name, set()) - {name.lower()})
    every = set(own).union(*(_top_level(md.distribution(d)) for d in deps))
    return {"own_mb": _du_mb(own), "with_requirements_mb": _du_mb(every), "requires": deps}


def measure(name: str, raw: bytes, pages: int, repeat: int) -> dict[str, object]:
    reader = READERS[name]
    got = reader(raw)  # warm: imports, file cache
    assert len(got) == pages and all(p.strip() for p in got), (name, len(got))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        reader(raw)
        times.append(time.perf_counter() - start)
    return {
        "reader": name,
        "version": md.version(name),
        "licence": LICENCES[name],
        "pages": pages,
        "runs": repeat,
        "best_pages_per_s": round(pages / min(times), 1),
        "median_pages_per_s": round(pages / statistics.median(times), 1),
        **install_size(name),
    }


def _installed(name: str) -> bool:
    try:
        md.distribution(name)
        return True
    except md.PackageNotFoundError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pages", type=int, default=100, help="pages of the generated PDF")
    ap.add_argument("--repeat", type=int, default=5, help="reads of the PDF per reader")
    ap.add_argument("--out", type=Path, default=RESULTS / "pdf_reading.json")
    args = ap.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    text = sample_text(args.pages)
    pages = len(layout(text))
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_pdf(Path(tmp) / "report.pdf", text).read_bytes()
    rows = [measure(n, raw, pages, args.repeat) for n in READERS if _installed(n)]
    out = table(
        f"PDF text layers, {pages} pages, {len(raw) // 1024} KiB, best of {args.repeat}",
        ["reader", "licence", "pages/s (best)", "pages/s (median)", "MB", "MB with deps"],
        ["reader", "licence"],
    )
    for r in rows:
        out.add_row(
            f"{r['reader']} {r['version']}",
            str(r["licence"]),
            f"{r['best_pages_per_s']:.0f}",
            f"{r['median_pages_per_s']:.0f}",
            f"{r['own_mb']:.1f}",
            f"{r['with_requirements_mb']:.1f}",
        )
    Console().print(out)
    write_json(
        args.out,
        {
            "benchmark": "pdf_reading",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "command": f"python -m benchmarks.pdf_reading --pages {args.pages} "
            f"--repeat {args.repeat}",
            "machine": {**machine(), "load_average_1_5_15_min": load},
            "pdf_bytes": len(raw),
            "results": rows,
        },
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
