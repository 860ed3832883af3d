"""Where a record's text comes from: the ``provenance`` source column (JSON text).

Every record a folder gives carries one JSON object::

    {"file": "report.pdf",          # the document's path in the folder
     "unit": "page",                # "document", "page", "section", "row" (CSV) or "line" (JSONL)
     "pages": [3, 3],               # 1-based first and last page of the contents; null: no pages
     "page_starts": [0],            # offset in contents where each page first..last starts
     "chars": [5120, 7301],         # offsets of contents in the whole document's text
     "parent": "report.pdf",        # the whole document's record_id for a page or section
     "pages_without_text": [4]}     # optional: pages that had no extractable text

Formats without pages (text, HTML, DOCX, e-mail) have ``pages`` and ``page_starts`` null; rows
and lines have ``chars`` null. ``locate`` turns a span of a record's contents into the file,
pages and offsets of the whole document it comes from.
"""

from __future__ import annotations

import bisect
import json
from typing import Any

DOCUMENT, PAGE, SECTION, ROW, LINE = "document", "page", "section", "row", "line"
UNITS = (DOCUMENT, PAGE, SECTION)  # what ``Dataset.from_directory(unit=...)`` accepts


def provenance(
    file: str,
    unit: str = DOCUMENT,
    *,
    chars: tuple[int, int] | list[int] | None = None,
    pages: tuple[int, int] | list[int] | None = None,
    page_starts: list[int] | None = None,
    parent: str | None = None,
    pages_without_text: list[int] | None = None,
) -> str:
    """The provenance JSON of a record, keys in the contract's order.

    >>> provenance("a.txt", chars=(0, 5))
    '{"file": "a.txt", "unit": "document", "pages": null, "page_starts": null, "chars": [0, 5], "parent": null}'
    """
    out: dict[str, Any] = {
        "file": file,
        "unit": unit,
        "pages": list(pages) if pages is not None else None,
        "page_starts": list(page_starts) if page_starts is not None else None,
        "chars": list(chars) if chars is not None else None,
        "parent": parent,
    }
    if pages_without_text:
        out["pages_without_text"] = list(pages_without_text)
    return json.dumps(out, ensure_ascii=False)


def parse(text: str | None) -> dict[str, Any]:
    """The provenance object of a record; {} for none (a record of an older store, a table row)
    or for text that is not a JSON object."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _page_of(prov: dict[str, Any], offset: int) -> int | None:
    pages, starts = prov.get("pages"), prov.get("page_starts")
    if not pages or not starts:
        return None
    # The last page starting at or before ``offset``.
    return pages[0] + max(bisect.bisect_right(starts, offset) - 1, 0)


def locate(provenance: str | None, start: int, end: int) -> dict[str, Any]:
    """Where ``contents[start:end]`` of a record is in its document: the file, the pages the
    span touches (None for formats without pages) and its offsets in the whole document's
    text (shifted by the record's own ``chars[0]``; relative to the record when unknown).

    >>> whole = provenance("r.pdf", chars=(0, 30), pages=(1, 3), page_starts=[0, 10, 20])
    >>> locate(whole, 22, 25)
    {'file': 'r.pdf', 'pages': [3, 3], 'chars': [22, 25]}
    >>> locate(whole, 5, 15)
    {'file': 'r.pdf', 'pages': [1, 2], 'chars': [5, 15]}
    >>> page2 = provenance("r.pdf", "page", chars=(10, 18), pages=(2, 2), page_starts=[0], parent="r.pdf")
    >>> locate(page2, 1, 4)
    {'file': 'r.pdf', 'pages': [2, 2], 'chars': [11, 14]}
    >>> locate(None, 0, 3)
    {'file': None, 'pages': None, 'chars': [0, 3]}
    """
    if start < 0 or end < start:
        raise ValueError(f"not a span: [{start}, {end})")
    prov = parse(provenance)
    chars = prov.get("chars")
    shift = chars[0] if chars else 0
    first = _page_of(prov, start)
    # The page of the span's last character (an empty span: the page it starts on).
    last = _page_of(prov, max(end - 1, start))
    return {
        "file": prov.get("file"),
        "pages": [first, last] if first is not None and last is not None else None,
        "chars": [start + shift, end + shift],
    }
