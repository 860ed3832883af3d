"""Evidence of an extracted value: the verbatim span the model says its answer rests on,
checked against the document and located in it.

A quote is *grounded* when it occurs in the document: exactly, or after a normalisation that
forgives what copying text changes without changing its words (case, runs of whitespace and
line breaks, curly quotes and dashes, a trailing full stop). A quote the document does not hold
(made up, paraphrased, or from another document) is *ungrounded*: its value is kept, its
location is null, and the operator counts it per field.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from pz_dagster.sources.provenance import locate

# A quote shorter than this (after normalisation) is too short to locate a value: "the" occurs
# in any document.
MIN_QUOTE_CHARS = 4
EVIDENCE_SUFFIX = "_evidence"
LOCATION_SUFFIX = "_evidence_at"
MAX_QUOTE_CHARS = 300

_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u00a0": " ",
    }
)


def evidence_column(field: str) -> str:
    return field + EVIDENCE_SUFFIX


def location_column(field: str) -> str:
    return field + LOCATION_SUFFIX


def _normalized(text: str) -> tuple[str, list[int]]:
    """``text`` case-folded with whitespace runs as one space and typographic quotes and
    dashes as ASCII, and for each character of the result its offset in ``text``."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        ch = unicodedata.normalize("NFKC", ch).translate(_FOLD).lower()
        if ch.isspace() or not ch:
            if out and out[-1] != " ":
                out.append(" ")
                where.append(i)
            continue
        for c in ch:
            out.append(c)
            where.append(i)
    return "".join(out), where


@dataclass(frozen=True)
class Span:
    """Where a quote was found: ``text[start:end]``, and how (``exact`` or ``normalized``)."""

    start: int
    end: int
    match: str


def find_quote(quote: str, text: str) -> Span | None:
    """The first place ``text`` holds ``quote``, or None.

    >>> find_quote("rent is  $4,250", "The monthly Rent is $4,250.\\n")
    Span(start=12, end=26, match='normalized')
    >>> find_quote("Rent is $4,250", "The monthly Rent is $4,250.")
    Span(start=12, end=26, match='exact')
    >>> find_quote("rent is $5,000", "The monthly Rent is $4,250.") is None
    True
    """
    quote = quote.strip()
    if len(quote) < MIN_QUOTE_CHARS:
        return None
    at = text.find(quote)
    if at >= 0:
        return Span(at, at + len(quote), "exact")
    needle, _ = _normalized(quote)
    needle = needle.strip().rstrip(".").strip()
    if len(needle) < MIN_QUOTE_CHARS:
        return None
    hay, where = _normalized(text)
    at = hay.find(needle)
    if at < 0:
        return None
    end = where[at + len(needle) - 1] + 1
    if quote.endswith(".") and text[end : end + 1] == ".":
        end += 1  # the full stop the needle left out, where the document has it too
    return Span(where[at], end, "normalized")


def holds_value(value: Any, quote: str) -> bool:
    """Whether the value's text occurs in the quote (normalised): the quote names the value,
    not just some true sentence of the document.

    >>> holds_value(4250, "a rent of $4,250"), holds_value("Acme Ltd", "by ACME  Ltd.")
    (False, True)
    """
    if value is None or isinstance(value, bool):
        return False
    items = value if isinstance(value, list) else [value]
    quoted, _ = _normalized(quote)
    return all(_normalized(str(v))[0].strip() in quoted for v in items)


def locate_quote(
    quote: str | None, value: Any, text: str, provenance: str | None = None
) -> dict[str, Any] | None:
    """The location of ``quote`` in ``text`` (the record's contents), or None when it is not
    there (ungrounded): character offsets, pages where the record's provenance knows them,
    how it matched, and whether the quote names the value."""
    if not quote:
        return None
    span = find_quote(quote, text)
    if span is None:
        return None
    where = _provenance_location(provenance, span.start, span.end)
    return {
        **where,
        "match": span.match,
        "names_value": holds_value(value, text[span.start : span.end]),
    }


def _provenance_location(provenance: str | None, start: int, end: int) -> dict[str, Any]:
    """``{"file", "pages", "chars"}`` of a span of a record's contents: offsets into the whole
    document and its pages where the record's provenance says where the contents came from."""
    return dict(locate(provenance, start, end))


def line_holding(value: Any, text: str) -> str | None:
    """The line of ``text`` where a value's text first occurs (at most ``MAX_QUOTE_CHARS``
    around it): the evidence of a value a function read off the document.

    >>> line_holding("4,250", "Lease\\nThe rent is $4,250 a month.\\n")
    'The rent is $4,250 a month.'
    """
    if blank(value) or isinstance(value, bool | list):
        return None
    needle = str(value).strip()
    at = text.find(needle)
    if at < 0:
        at = text.lower().find(needle.lower())
    if at < 0:
        return None
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    end = len(text) if end < 0 else end
    if end - start > MAX_QUOTE_CHARS:
        start = max(start, at - MAX_QUOTE_CHARS // 2)
        end = min(end, start + MAX_QUOTE_CHARS)
    return text[start:end].strip() or None


def location_json(location: dict[str, Any] | None) -> str | None:
    return None if location is None else json.dumps(location, sort_keys=True)


def blank(text: Any) -> bool:
    """Whether an extracted value is missing: None, or an empty or blank string or list."""
    if text is None:
        return True
    if isinstance(text, str):
        return not text.strip()
    if isinstance(text, list):
        return not text
    return False


_WORD = re.compile(r"[0-9a-z]+")


def value_key(value: Any) -> str:
    """The value as answers are compared when they are gathered: case, spacing and
    punctuation do not tell two answers apart.

    >>> value_key(" Acme  Ltd. ") == value_key("ACME LTD")
    True
    """
    if isinstance(value, list):
        return json.dumps([value_key(v) for v in value])
    return " ".join(_WORD.findall(_normalized(str(value))[0]))
