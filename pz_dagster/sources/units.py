"""A document's extracted text as records: one for the whole document, one per page (PDF pages,
PPTX slides) or one per section (at the heading lines of DOCX, HTML and Markdown text), each
with its provenance (see ``provenance``)."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

from pz_dagster.sources import provenance as prov
from pz_dagster.sources.provenance import DOCUMENT, PAGE, SECTION

Record = dict[str, Any]
PAGE_SEPARATOR = "\n\n"
OCR_OFF = "(scanned?): OCR is not enabled"
_HEADING = re.compile(r"^#{1,6}[ \t]+\S", re.M)
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)


class Unreadable(ValueError):
    """A document whose text cannot be extracted; the message says why, in plain words."""


def record(
    record_id: str,
    filename: str,
    contents: str,
    error: str | None = None,
    provenance: str | None = None,
) -> Record:
    """A source record; without ``provenance``, that of the whole file ``filename``."""
    if provenance is None:
        provenance = prov.provenance(filename, chars=(0, len(contents)))
    return {
        "record_id": record_id,
        "filename": filename,
        "contents": contents,
        "provenance": provenance,
        "error": error,
    }


@dataclass(frozen=True)
class Text:
    """A document's extracted text. ``pages``: the text of each page (or slide) when the format
    has pages, ``text`` being them joined with a blank line; ``headings``: whether its ``#``
    lines are headings (DOCX, HTML, Markdown), so that it splits into sections."""

    text: str
    pages: tuple[str, ...] | None = None
    headings: bool = False
    page_word: str = "page"  # what a page is called in messages ("slide" for PPTX)

    @classmethod
    def paged(cls, pages: list[str], page_word: str = "page") -> Text:
        return cls(PAGE_SEPARATOR.join(pages), tuple(pages), page_word=page_word)

    @property
    def page_starts(self) -> list[int]:
        starts, at = [], 0
        for page in self.pages or ():
            starts.append(at)
            at += len(page) + len(PAGE_SEPARATOR)
        return starts

    @property
    def pages_without_text(self) -> list[int]:
        return [i for i, page in enumerate(self.pages or (), start=1) if not page.strip()]


def _span(rid: str, doc: Text, unit: str, start: int, end: int) -> str:
    """The provenance of the record of ``doc.text[start:end]`` (a page or a section)."""
    pages = page_starts = None
    if doc.pages is not None:
        starts = doc.page_starts
        first = max(i for i, s in enumerate(starts) if s <= start)
        last = max(i for i, s in enumerate(starts) if s <= max(start, end - 1))
        pages = (first + 1, last + 1)
        page_starts = [max(s - start, 0) for s in starts[first : last + 1]]
    return prov.provenance(
        rid, unit, chars=(start, end), pages=pages, page_starts=page_starts, parent=rid
    )


def whole(rid: str, doc: Text) -> Record:
    """The record of the whole document."""
    if doc.pages is None:
        return record(rid, rid, doc.text)
    n = len(doc.pages)
    meta = prov.provenance(
        rid,
        chars=(0, len(doc.text)),
        pages=(1, n),
        page_starts=doc.page_starts,
        pages_without_text=doc.pages_without_text,
    )
    return record(rid, rid, doc.text, provenance=meta)


def page_records(rid: str, doc: Text) -> list[Record]:
    """One record per page; a page without text is an error record (never dropped)."""
    assert doc.pages is not None
    out = []
    for n, (page, start) in enumerate(zip(doc.pages, doc.page_starts, strict=True), start=1):
        why = None if page.strip() else f"{doc.page_word} {n} has no text"
        if why and doc.page_word == "page":
            why = f"page {n} has no text layer {OCR_OFF}"
        meta = _span(rid, doc, PAGE, start, start + len(page))
        out.append(record(f"{rid}#page{n}", rid, page, why, meta))
    return out


def heading_starts(text: str) -> list[int]:
    """Offsets of the Markdown heading lines of ``text``, outside fenced code blocks.

    >>> heading_starts("intro\\n# One\\nx\\n```\\n# not a heading\\n```\\n## Two\\n")
    [6, 38]
    """
    fences = [m.start() for m in _FENCE.finditer(text)]
    out = []
    for m in _HEADING.finditer(text):
        if bisect.bisect_left(fences, m.start()) % 2 == 0:  # not inside an open fence
            out.append(m.start())
    return out


def section_records(rid: str, doc: Text) -> list[Record]:
    """One record per section: the text before the first heading (when there is some), then
    each heading line and what follows it up to the next one."""
    bounds = sorted({0, *heading_starts(doc.text), len(doc.text)})
    out = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        body = doc.text[start:stop].rstrip()
        if not body.strip():
            continue  # only whitespace before the first heading
        meta = _span(rid, doc, SECTION, start, start + len(body))
        out.append(record(f"{rid}#section{len(out) + 1}", rid, body, None, meta))
    return out or [whole(rid, doc)]


def split(rid: str, doc: Text, unit: str = DOCUMENT) -> list[Record]:
    """The records of a document for ``unit``: ``page`` and ``section`` fall back to the whole
    document for formats without pages or headings."""
    if unit == PAGE and doc.pages is not None:
        return page_records(rid, doc)
    if unit == SECTION and doc.headings:
        return section_records(rid, doc)
    return [whole(rid, doc)]
