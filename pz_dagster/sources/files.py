"""Read files into records: text-like files, and the text of PDF, DOCX and PPTX documents
(``pdf``, ``office``). A file that cannot be read becomes a record with an ``error`` column:
never a crash of the whole batch, never a silent drop. Every record says where its text comes
from in its ``provenance`` column (see ``provenance``)."""

from __future__ import annotations

import codecs
import csv
import email
import email.message
import email.policy
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from pz_dagster.sources import provenance as prov
from pz_dagster.sources.markup import MalformedHTML, html_to_text
from pz_dagster.sources.office import read_docx, read_pptx
from pz_dagster.sources.paths import ESCAPE_HINT, Refused, open_in_folder, shown
from pz_dagster.sources.pdf import read_pdf
from pz_dagster.sources.units import Record, Text, Unreadable, split
from pz_dagster.sources.units import record as _record

TEXT_SUFFIXES = frozenset(
    {".txt", ".text", ".md", ".eml", ".html", ".htm", ".json", ".jsonl", ".csv"}
)
DOCUMENT_SUFFIXES = frozenset({".pdf", ".docx", ".pptx"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | DOCUMENT_SUFFIXES
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
CHANGED = "file changed since its batch was registered; the new version is a new batch"

_DOCUMENTS: dict[str, Callable[[bytes], Text]] = {
    ".pdf": read_pdf,
    ".docx": read_docx,
    ".pptx": read_pptx,
}


class MalformedEmail(ValueError):
    """A .eml file that does not parse as a MIME message; the message says what is wrong."""


# The headers shown to the model, in this order.
_EMAIL_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_DEFECTS = {
    "MissingHeaderBodySeparatorDefect": "no blank line between the headers and the body "
    "(a line of the header block is not a header)",
    "CloseBoundaryNotFoundDefect": "a multipart part has no closing boundary (truncated?)",
    "StartBoundaryNotFoundDefect": "the boundary of a multipart message is never found",
    "NoBoundaryInMultipartDefect": "a multipart message has no boundary parameter",
    "MultipartInvariantViolationDefect": "a multipart message holds no parts",
    "FirstHeaderLineIsContinuationDefect": "the first header line is a continuation line",
    "InvalidBase64PaddingDefect": "a base64 part is damaged (padding)",
    "InvalidBase64CharactersDefect": "a base64 part is damaged (bad characters)",
    "InvalidBase64LengthDefect": "a base64 part is damaged (length)",
}


def _defects(msg: email.message.Message) -> list[str]:
    """Plain words for the parser's defects of every part: each means the text would be
    mojibake or cut short."""
    found: list[str] = []
    for part in msg.walk():
        for d in part.defects:
            why = _DEFECTS.get(type(d).__name__, f"{type(d).__name__}: {d}".rstrip(": "))
            if why not in found:
                found.append(why)
    return found


def _email_headers(msg: email.message.EmailMessage) -> list[str]:
    raw = dict(msg.raw_items())
    head = []
    for h in _EMAIL_HEADERS:
        value = msg[h]
        if value is None:
            continue
        text = str(value)
        undecodable = any(type(d).__name__ == "UndecodableBytesDefect" for d in value.defects)
        if undecodable or ("\ufffd" in text and "\ufffd" not in str(raw.get(h, ""))):
            raise MalformedEmail(f"the {h} header cannot be decoded (bad charset or bytes)")
        head.append(f"{h}: {text}")
    if not head:
        raise MalformedEmail("no From, To, Date or Subject header: not an email")
    return head


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _email_body(msg: email.message.EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is None:
        raise MalformedEmail("no text/plain or text/html part")
    payload = body.get_payload(decode=True) or b""
    ctype = body.get_content_type()
    found = _defects(body)  # decoding base64 adds its defects only now
    if found:
        raise MalformedEmail("; ".join(found))
    charset = body.get_content_charset() or "us-ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        raise MalformedEmail(f"unknown charset {charset!r} of the {ctype} part") from None
    try:
        text = payload.decode(charset)
    except UnicodeDecodeError as exc:
        # Undeclared or "us-ascii" 8-bit text is UTF-8 more often than not; anything else
        # decoded with errors="replace" (what get_content does) would be silent mojibake.
        text = _utf8(payload) if codecs.lookup(charset).name == "ascii" else None
        if text is None:
            raise MalformedEmail(
                f"the {ctype} part is not valid {charset} "
                f"(byte 0x{payload[exc.start]:02x} at offset {exc.start})"
            ) from None
    try:
        return html_to_text(text) if ctype == "text/html" else text
    except MalformedHTML as exc:
        raise MalformedEmail(f"the text/html part: {exc}") from None


def eml_to_text(raw: bytes) -> str:
    """Headers that matter for analysis, then the plain-text body (HTML bodies are stripped).
    Raises MalformedEmail when the message is not MIME (parser defects, no usual header, no text
    part, a part not in its charset): decoding it anyway gives mojibake or a cut text."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        found = _defects(msg)
        if found:
            raise MalformedEmail("; ".join(found))
        assert isinstance(msg, email.message.EmailMessage)  # policy.default makes them
        return "\n".join(_email_headers(msg)) + "\n\n" + _email_body(msg)
    except MalformedEmail:
        raise
    except Exception as exc:  # the header parser has raised on odd input; say so, keep going
        raise MalformedEmail(f"cannot parse ({type(exc).__name__}: {exc})") from exc


def _decode(raw: bytes) -> str:
    # utf-8-sig strips a byte-order mark; anything that is not UTF-8 raises and is reported.
    return raw.decode("utf-8-sig")


def _read_bytes(root: Path, relpath: str, max_bytes: int) -> bytes:
    """The bytes of a file of the folder, never read outside it (see paths.open_in_folder).
    Raises Refused, OSError, or _TooBig."""
    fd, st = open_in_folder(root, relpath)
    try:
        if st.st_size > max_bytes:
            raise _TooBig(st.st_size)
        buf = bytearray()
        # At most one byte past the limit: a file growing since the fstat is still caught.
        while len(buf) <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - len(buf))):
            buf += chunk
        if len(buf) > max_bytes:
            raise _TooBig(len(buf))
        return bytes(buf)
    finally:
        os.close(fd)


class _TooBig(Exception):
    def __init__(self, size: int):
        self.size = size


def _fetch(root: Path, relpath: str, rid: str, max_bytes: int) -> bytes | Record:
    """The file's bytes, or the error record saying why there are none."""
    try:
        return _read_bytes(root, relpath, max_bytes)
    except Refused as exc:
        return _record(rid, rid, "", str(exc))
    except _TooBig as exc:
        return _record(
            rid,
            rid,
            "",
            f"file is {exc.size} bytes, over the {max_bytes}-byte "
            "limit (max_file_bytes); split it or raise the limit",
        )
    except FileNotFoundError as exc:
        if "\\x" in relpath:  # most likely the escaped name of a file listed as unreadable
            return _record(rid, rid, "", f"not read: {ESCAPE_HINT}")
        return _record(rid, rid, "", f"cannot read file: {exc.strerror or exc}")
    except OSError as exc:
        return _record(rid, rid, "", f"cannot read file: {exc.strerror or exc}")


def read_file(
    root: Path,
    relpath: str,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    expected_sha256: str | None = None,
    unit: str = prov.DOCUMENT,
) -> list[Record]:
    """Records of one file: one per file, or with ``unit`` "page" one per page of a PDF or
    slide of a PPTX, with "section" one per heading of a DOCX, HTML or Markdown file (other
    formats: one per file); always one per row for .csv and per line for .jsonl.

    The file is opened inside ``root`` only (links out of it, FIFOs and hard-linked files are
    error records). With ``expected_sha256`` (the batch manifest's), records of bytes that hash
    otherwise are flagged: the file changed between the scan and this read."""
    rid = shown(relpath)  # scan gives clean paths; a manifest edited by hand may not
    raw = _fetch(Path(root), relpath, rid, max_bytes)
    if isinstance(raw, dict):
        return [raw]
    try:
        records = _parse(rid, raw, unit)
    except Exception as exc:  # a parser bug on odd input: one error record, never a failed run
        records = [_record(rid, rid, "", f"cannot parse file ({type(exc).__name__}: {exc})")]
    for rec in records:
        _make_storable(rec)
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        for rec in records:
            rec["error"] = rec["error"] or CHANGED
    return records


def _make_storable(rec: Record) -> None:
    """A lone surrogate (an undecodable byte kept by a parser) would fail the whole batch when
    the store encodes it as UTF-8: such contents are dropped with an error, errors escaped."""
    if rec["error"] and not _is_utf8(rec["error"]):
        rec["error"] = shown(rec["error"])
    if not _is_utf8(rec["contents"]):
        rec["contents"], rec["error"] = "", "file has text that is not valid Unicode"
        rec["provenance"] = prov.provenance(rec["filename"], chars=(0, 0))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _not_utf8(rid: str, raw: bytes, exc: UnicodeDecodeError) -> Record:
    why = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    return _record(rid, rid, "", f"{why}; re-encode the file as UTF-8")


def _document(rid: str, raw: bytes, suffix: str, unit: str) -> list[Record]:
    try:
        return split(rid, _DOCUMENTS[suffix](raw), unit)
    except Unreadable as exc:
        return [_record(rid, rid, "", str(exc))]


def _parse(rid: str, raw: bytes, unit: str = prov.DOCUMENT) -> list[Record]:
    if not raw.strip():
        return [_record(rid, rid, "", "empty file: nothing to analyse")]
    suffix = PurePosixPath(rid).suffix.lower()
    if suffix in _DOCUMENTS:
        return _document(rid, raw, suffix, unit)
    try:
        if suffix == ".eml":
            return split(rid, Text(eml_to_text(raw)), unit)
        text = _decode(raw)
    except UnicodeDecodeError as exc:
        return [_not_utf8(rid, raw, exc)]
    except MalformedEmail as exc:
        return [_record(rid, rid, "", f"malformed email: {exc}")]
    if suffix in {".html", ".htm"}:
        try:
            return split(rid, Text(html_to_text(text), headings=True), unit)
        except MalformedHTML as exc:
            return [_record(rid, rid, "", str(exc))]
    if suffix == ".csv":
        return _csv_records(rid, text)
    if suffix == ".jsonl":
        return _jsonl_records(rid, text)
    if suffix == ".json":
        try:
            json.loads(text)
        except (ValueError, RecursionError) as exc:
            return [_record(rid, rid, text, f"malformed JSON: {_json_why(exc)}")]
    return split(rid, Text(text, headings=suffix == ".md"), unit)


def _json_why(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)  # e.g. an integer of more than 4300 digits


class _Lines:
    """Iterator over ``lines`` from ``pos`` that tells which line it gives next: the csv module
    pulls one line at a time, so a row starts at the ``pos`` seen before it is read."""

    def __init__(self, lines: list[str], pos: int):
        self.lines, self.pos = lines, pos

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


def _csv_why(exc: csv.Error) -> str:
    msg = str(exc)
    if "unexpected end of data" in msg:
        return "a quote opened in this row is never closed"
    if "expected after" in msg:
        return "text follows a closing quote (a stray quote joined lines into one value?)"
    if "field larger than field limit" in msg:
        return f"a value is longer than {csv.field_size_limit()} characters (unclosed quote?)"
    return msg


def _csv_rows(lines: list[str]) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line number, values, None) per row, or (line number, None, why) for a row the csv
    module rejects. Strict mode makes a stray quote an error instead of a value that swallows
    the rows after it; parsing then resumes on the line after the bad row's first line, so the
    good rows after it are kept."""
    pos = 0
    while pos < len(lines):
        feed = _Lines(lines, pos)
        reader = csv.reader(feed, strict=True)
        start = pos
        try:
            while True:
                start = feed.pos
                values = next(reader, None)
                if values is None:
                    return
                if values:  # [] is a blank line
                    yield start + 1, values, None
        except csv.Error as exc:
            yield start + 1, None, _csv_why(exc)
            pos = start + 1


def _csv_records(relpath: str, text: str) -> list[Record]:
    # Lines as the csv module sees them (\n, \r\n, \r), never split on U+2028 and the like.
    lines = io.StringIO(text, newline="").readlines()
    rows = _csv_rows(lines)
    first = next(rows, None)
    if first is None:
        return [_record(relpath, relpath, "", "CSV has no header")]
    line_no, header, why = first
    if header is None:
        return [_record(relpath, relpath, text, f"malformed CSV header (line {line_no}): {why}")]
    out = []
    for i, (line_no, values, why) in enumerate(rows, start=1):
        rid = f"{relpath}#row{i}"
        meta = prov.provenance(relpath, prov.ROW)
        if values is None:
            bad = lines[line_no - 1].rstrip("\r\n")
            why = f"malformed CSV row {i} (line {line_no}): {why}"
            out.append(_record(rid, relpath, bad, why, meta))
            continue
        # Pairs, not a dict: a repeated column name keeps both values.
        body = "\n".join(f"{k}: {v}" for k, v in zip(header, values, strict=False))
        err = None
        if len(values) != len(header):
            err = (
                f"row {i} (line {line_no}) has {len(values)} value(s), the header has {len(header)}"
            )
            if len(values) > len(header):
                err += f" ({len(values) - len(header)} more value(s) than the header, left out)"
        out.append(_record(rid, relpath, body, err, meta))
    if not out:
        return [_record(relpath, relpath, "", "CSV has a header but no rows")]
    return out


def _jsonl_records(relpath: str, text: str) -> list[Record]:
    out = []
    # JSON Lines are split on \n only: U+2028, U+2029 and NEL are valid inside a JSON string.
    for i, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        err = None
        try:
            value = json.loads(line)
            body = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        except (ValueError, RecursionError) as exc:
            body, err = line, f"malformed JSON on line {i}: {_json_why(exc)}"
        meta = prov.provenance(relpath, prov.LINE)
        out.append(_record(f"{relpath}#line{i}", relpath, body, err, meta))
    return out
