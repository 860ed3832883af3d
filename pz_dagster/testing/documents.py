"""Writers of test documents: one Markdown-lite text as PDF, DOCX, HTML (and PPTX) files, plus
image-only (scanned), encrypted and, by cutting bytes, truncated PDFs. For tests and benchmarks:
reportlab (PDF) is a dev dependency, imported when a PDF is written; python-docx and
python-pptx are the readers' own.

The source text is Markdown-lite, one block per line group:

- ``# `` / ``## `` ... heading lines;
- ``- `` bullet lines;
- ``| a | b |`` table rows (consecutive rows make one table);
- paragraphs: other lines, separated by blank lines (a paragraph's lines are joined);
- a line holding only a form feed (``"\\f"``): an explicit page break (a new PDF page, a DOCX
  page break, a new PPTX slide; HTML ignores it). Long paragraphs wrap, and overflow onto new
  PDF pages by themselves.

"The same text" that the readers must give back:

- DOCX and HTML keep the structure, so the reader's text equals the source modulo whitespace:
  ``normalized(read) == normalized(source)``;
- PDF (and PPTX) keep no markup, so the reader's text equals the source with its markup
  (``#``, ``- ``, the pipes of table rows) removed, modulo whitespace and line wrapping:
  ``normalized(read) == normalized(source, drop_markup=True)``.

>>> normalized("# Title\\n\\n- one\\n| a | b |\\n\\f\\nend", drop_markup=True)
'Title one a b end'
>>> normalized("# Title\\n\\n- one\\n| a | b |")
'# Title - one | a | b |'
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE_BREAK = "\f"
PAGE_W, PAGE_H, MARGIN = 595.0, 842.0, 72.0  # A4, in points
_FONTS = {"heading1": ("Helvetica-Bold", 16), "heading": ("Helvetica-Bold", 13)}
_BODY = ("Helvetica", 11)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*\S)\s*$")
_MARKER = re.compile(r"^\s*(#{1,6}[ \t]+|[-*][ \t]+|\d+\.[ \t]+)")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Block:
    """A block of Markdown-lite: kind is heading, bullet, row, para or break."""

    kind: str
    text: str = ""
    level: int = 0
    cells: tuple[str, ...] = ()

    @property
    def plain(self) -> str:
        """Its text without markup."""
        return "   ".join(self.cells) if self.kind == "row" else self.text


def _cells(line: str) -> tuple[str, ...]:
    inner = line.strip()[1:-1]
    return tuple(c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(inner))


def _line_block(line: str) -> Block | None:
    """The block a single line makes, or None for a paragraph line."""
    s = line.strip()
    if line == PAGE_BREAK or s == PAGE_BREAK:
        return Block("break")
    if m := _HEADING.match(s):
        return Block("heading", m.group(2), level=len(m.group(1)))
    if s.startswith("- "):
        return Block("bullet", s[2:].strip())
    if len(s) > 1 and s.startswith("|") and s.endswith("|"):
        return Block("row", cells=_cells(s))
    return None


def blocks(text: str) -> list[Block]:
    """The blocks of a Markdown-lite text, in order.

    >>> [(b.kind, b.text or b.cells) for b in blocks("# T\\npara\\nmore\\n\\n- x\\n| a | b |")]
    [('heading', 'T'), ('para', 'para more'), ('bullet', 'x'), ('row', ('a', 'b'))]
    """
    out: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(Block("para", " ".join(" ".join(para).split())))
            para.clear()

    for line in text.split("\n"):  # not splitlines: it splits at the form feed too
        block = _line_block(line)
        if block is not None or not line.strip():
            flush()
            if block is not None:
                out.append(block)
        else:
            para.append(line.strip())
    flush()
    return out


def normalized(text: str, drop_markup: bool = False) -> str:
    """``text`` with whitespace runs (line breaks, blank lines, page breaks) as one space and,
    with ``drop_markup``, without the Markdown-lite markup: heading and bullet markers, and the
    pipes of table rows (cells separated by a space)."""
    lines = []
    for line in text.replace(PAGE_BREAK, "\n").split("\n"):
        s = line.strip()
        if drop_markup and len(s) > 1 and s.startswith("|") and s.endswith("|"):
            line = " ".join(_cells(s))
        elif drop_markup:
            line = _MARKER.sub("", line)
        lines.append(line)
    return " ".join(" ".join(lines).split())


# --- PDF -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    font: str
    size: float
    x: float
    y: float
    text: str


def _style(block: Block) -> tuple[str, float, float]:
    """(font, size, indent) of a block's lines."""
    if block.kind == "heading":
        return (*_FONTS["heading1" if block.level == 1 else "heading"], 0.0)
    return (*_BODY, 18.0 if block.kind == "bullet" else 0.0)


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    from reportlab.lib.utils import simpleSplit

    return simpleSplit(text, font, size, width) or [""]


def layout(text: str) -> list[list[_Line]]:
    """The lines of each PDF page of ``text``: blocks wrap to the page's width and overflow
    onto a new page; a page break starts one."""
    pages: list[list[_Line]] = [[]]
    y = PAGE_H - MARGIN
    for block in blocks(text):
        if block.kind == "break":
            pages.append([])
            y = PAGE_H - MARGIN
            continue
        font, size, indent = _style(block)
        leading = size * 1.3
        for line in _wrap(block.plain, font, size, PAGE_W - 2 * MARGIN - indent):
            if y - leading < MARGIN:
                pages.append([])
                y = PAGE_H - MARGIN
            y -= leading
            pages[-1].append(_Line(font, size, MARGIN + indent, y, line))
        y -= size * 0.6  # space after the block
    return pages


def _page_image(lines: Sequence[_Line], dpi: int = 72) -> Any:
    """A picture of a page's text (what a scanner gives): pixels, no text layer."""
    from PIL import Image, ImageDraw, ImageFont

    scale = dpi / 72
    img = Image.new("L", (int(PAGE_W * scale), int(PAGE_H * scale)), 255)
    draw = ImageDraw.Draw(img)
    for ln in lines:
        font = ImageFont.load_default(size=ln.size * scale)
        draw.text((ln.x * scale, (PAGE_H - ln.y - ln.size) * scale), ln.text, fill=0, font=font)
    return img


def write_pdf(
    path: Path,
    text: str,
    *,
    image_pages: Collection[int] = (),
    password: str | None = None,
) -> Path:
    """``text`` as a PDF with a text layer; the 1-based ``image_pages`` are pictures of their
    text instead (no text layer there); with ``password``, encrypted (opening needs it)."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    encrypt = None
    if password is not None:
        from reportlab.lib import pdfencrypt

        encrypt = pdfencrypt.StandardEncryption(password, ownerPassword=password + "-owner")
    c = canvas.Canvas(str(path), pagesize=(PAGE_W, PAGE_H), encrypt=encrypt, invariant=1)
    for n, lines in enumerate(layout(text), start=1):
        if n in image_pages:
            c.drawImage(ImageReader(_page_image(lines)), 0, 0, PAGE_W, PAGE_H)
        for ln in lines if n not in image_pages else ():
            c.setFont(ln.font, ln.size)
            c.drawString(ln.x, ln.y, ln.text)
        c.showPage()
    c.save()
    return Path(path)


SCANNED_TEXT = "# Scanned letter\n\nThis page was scanned: it is a picture of text.\n\f\nPage two."


def write_scanned_pdf(path: Path, text: str = SCANNED_TEXT) -> Path:
    """An image-only PDF (every page a picture, no text layer), as a scanner makes."""
    pages = len(layout(text))
    return write_pdf(path, text, image_pages=range(1, pages + 1))


def write_encrypted_pdf(path: Path, text: str, password: str = "secret") -> Path:
    """A password-protected PDF of ``text``."""
    return write_pdf(path, text, password=password)


# --- DOCX, PPTX, HTML ------------------------------------------------------------------------


def _rows(group: list[Block]) -> list[tuple[str, ...]]:
    width = max(len(b.cells) for b in group)
    return [b.cells + ("",) * (width - len(b.cells)) for b in group]


def grouped(items: Iterable[Block]) -> list[list[Block]]:
    """Blocks with consecutive rows (one table) and consecutive bullets (one list) together."""
    out: list[list[Block]] = []
    for b in items:
        if out and b.kind in ("row", "bullet") and out[-1][0].kind == b.kind:
            out[-1].append(b)
        else:
            out.append([b])
    return out


def _docx_group(document: Any, group: list[Block]) -> None:
    head = group[0]
    if head.kind == "break":
        document.add_page_break()
    elif head.kind == "row":
        rows = _rows(group)
        table = document.add_table(rows=len(rows), cols=len(rows[0]))
        table.style = "Table Grid"
        for r, cells in enumerate(rows):
            for c, value in enumerate(cells):
                table.cell(r, c).text = value
    elif head.kind == "heading":
        document.add_heading(head.text, level=head.level)
    else:
        for b in group:
            document.add_paragraph(b.text, style="List Bullet" if b.kind == "bullet" else None)


def write_docx(path: Path, text: str) -> Path:
    """``text`` as a DOCX: Heading N styles, List Bullet paragraphs, tables, page breaks."""
    import docx

    document = docx.Document()
    for group in grouped(blocks(text)):
        _docx_group(document, group)
    document.save(str(path))
    return Path(path)


def _html_group(group: list[Block]) -> str:
    head = group[0]
    e = html.escape
    if head.kind == "heading":
        return f"<h{head.level}>{e(head.text)}</h{head.level}>"
    if head.kind == "bullet":
        return "<ul>" + "".join(f"<li>{e(b.text)}</li>" for b in group) + "</ul>"
    if head.kind == "row":
        rows = _rows(group)
        first = "".join(f"<th>{e(c)}</th>" for c in rows[0])
        rest = ("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><tr>{first}</tr>{''.join(rest)}</table>"
    return f"<p>{e(head.text)}</p>" if head.kind == "para" else ""


def write_html(path: Path, text: str) -> Path:
    """``text`` as an HTML page (with a head, a style and a script the reader must drop)."""
    body = "\n".join(_html_group(g) for g in grouped(blocks(text)))
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{html.escape(Path(path).stem)}</title>"
        "<style>body { font-family: sans-serif }</style></head>\n<body>\n"
        f"<script>var hidden = 'not text';</script>\n{body}\n</body></html>\n"
    )
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)


def _slides(text: str) -> list[list[list[Block]]]:
    slides: list[list[list[Block]]] = [[]]
    for group in grouped(blocks(text)):
        if group[0].kind == "break":
            slides.append([])
        else:
            slides[-1].append(group)
    return slides


def write_pptx(path: Path, text: str) -> Path:
    """``text`` as a PPTX: a slide per page break, a text box per run of text blocks (their
    text without markup) and a table per run of rows."""
    import pptx
    from pptx.util import Emu

    deck = pptx.Presentation()
    width = deck.slide_width - Emu(2 * 457200)
    for groups in _slides(text):
        slide = deck.slides.add_slide(deck.slide_layouts[6])  # blank
        top = Emu(457200)
        for group in groups:
            if group[0].kind == "row":
                rows = _rows(group)
                shape = slide.shapes.add_table(
                    len(rows), len(rows[0]), Emu(457200), top, width, Emu(300000 * len(rows))
                )
                for r, cells in enumerate(rows):
                    for c, value in enumerate(cells):
                        shape.table.cell(r, c).text = value
            else:
                box = slide.shapes.add_textbox(Emu(457200), top, width, Emu(400000))
                box.text_frame.text = "\n".join(b.plain for b in group)
            top = Emu(top + 500000)
    deck.save(str(path))
    return Path(path)


WRITERS = {"pdf": write_pdf, "docx": write_docx, "html": write_html, "pptx": write_pptx}


def render(
    text: str, folder: Path, stem: str, formats: Sequence[str] = ("pdf", "docx", "html")
) -> dict[str, Path]:
    """``text`` (Markdown-lite) written as ``folder/stem.<format>`` for each format."""
    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; known: {sorted(WRITERS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {f: WRITERS[f](folder / f"{stem}.{f}", text) for f in formats}


def sample_text(pages: int, seed: int = 0) -> str:
    """A report of about ``pages`` PDF pages (a page break after each part): headings,
    paragraphs, a list and a small table per part, from a fixed vocabulary."""
    import random

    rng = random.Random(seed)
    words = [
        *("revenue", "contract", "energy", "trading", "partnership", "audit", "board"),
        *("meeting", "quarterly", "risk", "pipeline", "gas", "power", "market", "forecast"),
        *("budget", "review", "counsel", "filing", "settlement"),
    ]

    def sentence(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."

    parts = []
    for p in range(1, pages + 1):
        paras = "\n\n".join(" ".join(sentence(12) for _ in range(6)) for _ in range(3))
        parts.append(
            f"# Part {p}\n\n{paras}\n\n## Figures\n\n- {sentence(5)}\n- {sentence(5)}\n\n"
            f"| item | amount |\n| part {p} | {rng.randint(1, 999)} |"
        )
    return "\n\f\n".join(parts)
