"""HTML as readable Markdown-like text: headings as ``#`` lines, list items as ``- `` or
``1. `` lines, table rows as ``| a | b |`` lines, blocks separated by blank lines; scripts,
styles and the head dropped. The DOCX reader writes the same conventions.

A small converter on the standard library's parser, rather than a library: it never escapes
the text (``report_v2`` stays as it is), writes tables without a ``---`` row, as the DOCX
reader does, and a document the parser gives up on is a ``MalformedHTML`` error.

>>> html_to_text("<h2>Q3</h2><p>Revenue &amp; costs</p><ul><li>one</li><li>two</li></ul>"
...              "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>")
'## Q3\\n\\nRevenue & costs\\n\\n- one\\n- two\\n\\n| a | b |\\n| 1 | 2 |'
"""

from __future__ import annotations

from html.parser import HTMLParser

_SKIP = frozenset({"script", "style", "head", "noscript", "template", "svg", "title"})
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "main", "nav", "aside",
        "blockquote", "form", "figure", "figcaption", "address", "dl", "dt", "dd", "hr",
        "fieldset", "details", "summary", "body", "html", "center",
    }
)  # fmt: skip
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_CELLS = frozenset({"td", "th"})


class MalformedHTML(ValueError):
    """HTML that the standard parser gives up on."""


def collapse(text: str) -> str:
    """Runs of whitespace as one space, none at the ends."""
    return " ".join(text.split())


def cell_text(text: str) -> str:
    """A table cell's text on one line, with its pipes escaped."""
    return collapse(text).replace("|", "\\|")


def pipe_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


class _Converter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._lines: list[str] = []  # of the block being built
        self._inline: list[str] = []  # text of the line being built
        self._skipping = 0
        self._heading = 0
        self._lists: list[list] = []  # [tag, items so far] per open list
        self._in_item = False
        self._tables = 0
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._pre = 0

    # --- output --------------------------------------------------------------------------

    def _line(self, prefix: str = "") -> None:
        text = "".join(self._inline)
        self._inline = []
        text = text.strip("\n") if self._pre else collapse(text)
        if text:
            self._lines.append(prefix + text)

    def _end_block(self) -> None:
        self._end_item()
        self._line()
        if self._lines:
            self.blocks.append("\n".join(self._lines))
        self._lines = []

    # --- lists ---------------------------------------------------------------------------

    def _end_item(self) -> None:
        if not self._in_item:
            return
        self._in_item = False
        tag, _ = entry = self._lists[-1]
        entry[1] += 1
        marker = f"{entry[1]}. " if tag == "ol" else "- "
        self._line("  " * (len(self._lists) - 1) + marker)

    def _list_tag(self, tag: str, start: bool) -> None:
        if start:
            if self._lists:
                self._end_item()  # an item's text before its nested list
            else:
                self._end_block()
            self._lists.append([tag, 0])
            return
        if self._lists:
            self._end_item()
            self._lists.pop()
            self._in_item = bool(self._lists)  # back in the outer item (its text follows)
            if self._in_item:
                self._lists[-1][1] -= 1  # the outer item's marker is counted again
            else:
                self._end_block()

    def _item(self) -> None:
        if not self._lists:
            self._lists.append(["ul", 0])  # a stray <li>
        self._end_item()
        self._line()
        self._in_item = True

    # --- tables --------------------------------------------------------------------------

    def _end_cell(self) -> None:
        if self._cell is not None and self._row is not None:
            self._row.append(cell_text("".join(self._cell)))
        self._cell = None

    def _end_row(self) -> None:
        self._end_cell()
        if self._row and any(self._row):
            self._lines.append(pipe_row(self._row))
        self._row = None

    def _table_tag(self, tag: str, start: bool) -> None:
        if tag == "table":
            if start:
                self._tables += 1
                if self._tables == 1:
                    self._end_block()
            elif self._tables:
                self._tables -= 1
                if not self._tables:
                    self._end_row()
                    self._end_block()
        elif self._tables == 1 and tag == "tr":
            self._end_row()
            if start:
                self._line()  # a caption's text, before the rows
                self._row = []
        elif self._tables == 1 and tag in _CELLS:
            self._end_cell()
            if start:
                if self._row is None:
                    self._row = []
                self._cell = []
        else:
            self._text(" ")  # a nested table's cells stay in the outer cell

    # --- parser callbacks ----------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag == "body":
            self._skipping = 0  # an unclosed <head> ends here
            self._end_block()
        elif self._skipping:
            return
        elif tag == "table" or (self._tables and tag in {"tr", *_CELLS}):
            self._table_tag(tag, start=True)
        elif self._cell is not None or self._tables:
            self._text(" ")
        elif tag in ("ul", "ol"):
            self._list_tag(tag, start=True)
        elif tag == "li":
            self._item()
        elif tag == "br" and (self._heading or self._in_item):
            self._text(" ")
        elif tag == "br":
            self._line()
        elif self._in_item:
            return  # blocks and headings inside an item stay on its line
        elif tag in _HEADINGS:
            self._end_block()
            self._heading = _HEADINGS[tag]
        elif tag == "pre":
            self._end_block()
            self._pre += 1
        elif tag in _BLOCKS:
            self._end_block()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(self._skipping - 1, 0)
        elif self._skipping:
            return
        elif tag == "table" or (self._tables and tag in {"tr", *_CELLS}):
            self._table_tag(tag, start=False)
        elif self._tables:
            return
        elif tag in ("ul", "ol"):
            self._list_tag(tag, start=False)
        elif tag == "li":
            self._end_item()
        elif self._in_item:
            return
        elif tag in _HEADINGS and self._heading:
            self._line("#" * self._heading + " ")
            self._heading = 0
            self._end_block()
        elif tag == "pre" and self._pre:
            self._end_block()
            self._pre -= 1
        elif tag in _BLOCKS:
            self._end_block()

    def _text(self, data: str) -> None:
        (self._cell if self._cell is not None else self._inline).append(data)

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._text(data)

    def finish(self) -> str:
        self._tables = min(self._tables, 1)
        self._table_tag("table", start=False)
        while self._lists:
            self._list_tag(self._lists[-1][0], start=False)
        if self._heading:
            self._line("#" * self._heading + " ")
        self._end_block()
        return "\n\n".join(self.blocks)


def html_to_text(html: str) -> str:
    """The text of an HTML document, as Markdown-like text (see the module's docstring).
    Raises MalformedHTML when the standard parser gives up on it."""
    parser = _Converter()
    try:
        parser.feed(html)
        parser.close()
    except AssertionError as exc:  # html.parser asserts on an unknown "<![keyword" section
        raise MalformedHTML(f"malformed HTML: {exc}") from None
    return parser.finish()
