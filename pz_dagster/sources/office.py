"""The text of Word (.docx, with python-docx) and PowerPoint (.pptx, with python-pptx) files,
both MIT. DOCX text follows the HTML reader's conventions: headings (by their ``Heading N``
style) as ``#`` lines, list paragraphs as ``- `` (``1. `` for numbered styles) lines, table
rows as ``| a | b |`` lines, blocks separated by blank lines. A PPTX gives one page per slide:
its text frames and tables in order."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from pz_dagster.sources.markup import cell_text, collapse, pipe_row
from pz_dagster.sources.units import Text, Unreadable

MAX_UNPACKED_BYTES = 512 * 1024 * 1024  # a zip bomb is refused before it is unpacked
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an encrypted OOXML file, or a .doc / .ppt
_HEADING = re.compile(r"^heading (\d)$", re.I)
_LIST = re.compile(r"^list (bullet|number|paragraph)(?: (\d))?$", re.I)


def _check_package(raw: bytes, kind: str) -> None:
    """Refuse what python-docx / python-pptx would fail on or choke on, with plain words."""
    if raw.startswith(_OLE):
        raise Unreadable(
            f"{kind} is encrypted (password-protected), or is an old binary Office file "
            "renamed: not read"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            size = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise Unreadable(f"{kind} is damaged: not a zip package ({exc})") from None
    if size > MAX_UNPACKED_BYTES:
        raise Unreadable(f"{kind} unpacks to {size} bytes, over {MAX_UNPACKED_BYTES}: not read")


def _lines(text: str) -> str:
    """A paragraph's text: soft line breaks kept, runs of spaces and tabs as one space."""
    return "\n".join(c for c in (collapse(line) for line in text.split("\n")) if c)


def _list_marker(paragraph: Any, counters: dict[int, int]) -> str | None:
    """``- `` or ``N. `` (indented by level) for a list paragraph, else None."""
    name = paragraph.style.name if paragraph.style is not None else ""
    m = _LIST.match(name or "")
    ppr = paragraph._p.pPr
    num = ppr.numPr if ppr is not None else None
    if m is None and num is None:
        return None
    level = int(m.group(2)) - 1 if m and m.group(2) else 0
    if num is not None and num.ilvl is not None and num.ilvl.val is not None:
        level = int(num.ilvl.val)
    if m and m.group(1).lower() == "number":
        counters[level] = counters.get(level, 0) + 1
        return "  " * level + f"{counters[level]}. "
    return "  " * level + "- "


def _paragraph(paragraph: Any, counters: dict[int, int]) -> tuple[str, str] | None:
    """(kind, line) of a paragraph: kind is "list" or "block"; None when it has no text."""
    text = _lines(paragraph.text)
    if not text:
        return None
    name = paragraph.style.name if paragraph.style is not None else ""
    heading = _HEADING.match(name or "")
    if heading or name == "Title":
        level = min(int(heading.group(1)), 6) if heading else 1
        return "block", "#" * level + " " + text.replace("\n", " ")
    marker = _list_marker(paragraph, counters)
    if marker is not None:
        return "list", marker + text.replace("\n", " ")
    counters.clear()
    return "block", text


def table_rows(rows: Any) -> list[str]:
    """A table's rows as pipe rows; a merged cell counts once."""
    out = []
    for row in rows:
        cells, last = [], None
        for cell in row.cells:
            if cell._tc is last:
                continue
            last = cell._tc
            cells.append(cell_text(cell.text))
        if any(cells):
            out.append(pipe_row(cells))
    return out


def _docx_blocks(document: Any) -> Iterator[str]:
    items: list[str] = []  # the list being built
    counters: dict[int, int] = {}
    for block in document.iter_inner_content():
        if hasattr(block, "rows"):
            found: tuple[str, str] | None = ("table", "\n".join(table_rows(block.rows)))
            counters.clear()
        else:
            found = _paragraph(block, counters)
        if found is None or not found[1]:
            continue
        kind, text = found
        if kind != "list" and items:
            yield "\n".join(items)
            items = []
        if kind == "list":
            items.append(text)
        else:
            yield text
    if items:
        yield "\n".join(items)


def read_docx(raw: bytes) -> Text:
    """The text of a .docx body (headers, footers and comments left out)."""
    _check_package(raw, "DOCX")
    import docx

    try:
        document = docx.Document(io.BytesIO(raw))
        return Text("\n\n".join(_docx_blocks(document)), headings=True)
    except Unreadable:
        raise
    except Exception as exc:  # python-docx raises KeyError, lxml errors... on a damaged part
        raise Unreadable(f"DOCX is damaged: {type(exc).__name__}: {exc}") from None


def _shape_blocks(shapes: Any) -> Iterator[str]:
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _shape_blocks(shape.shapes)
        elif getattr(shape, "has_table", False):
            yield "\n".join(table_rows(shape.table.rows))
        elif getattr(shape, "has_text_frame", False):
            lines = (_lines(p.text) for p in shape.text_frame.paragraphs)
            yield "\n".join(line for line in lines if line)


def read_pptx(raw: bytes) -> Text:
    """One page per slide: the text of its shapes, in order (notes left out)."""
    _check_package(raw, "PPTX")
    import pptx

    try:
        deck = pptx.Presentation(io.BytesIO(raw))
        slides = ["\n\n".join(b for b in _shape_blocks(s.shapes) if b) for s in deck.slides]
    except Exception as exc:  # python-pptx raises KeyError, lxml errors... on a damaged part
        raise Unreadable(f"PPTX is damaged: {type(exc).__name__}: {exc}") from None
    if not slides:
        raise Unreadable("PPTX has no slides")
    if not any(s.strip() for s in slides):
        raise Unreadable("PPTX has no text on any slide")
    return Text.paged(slides, page_word="slide")
