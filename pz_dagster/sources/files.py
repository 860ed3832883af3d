"""Read text-like files into records. A file that cannot be read becomes a record with an
``error`` column: never a crash of the whole batch, never a silent drop."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

SUPPORTED_SUFFIXES = frozenset(
    {".txt", ".text", ".md", ".eml", ".html", ".htm", ".json", ".jsonl", ".csv"}
)
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024

Record = dict[str, Any]


def _record(record_id: str, filename: str, contents: str, error: str | None = None) -> Record:
    return {"record_id": record_id, "filename": filename, "contents": contents, "error": error}


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "head", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in {"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"}:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def eml_to_text(raw: bytes) -> str:
    """Headers that matter for analysis, then the plain-text body (HTML bodies are stripped)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    head = [f"{h}: {msg[h]}" for h in ("From", "To", "Cc", "Date", "Subject") if msg[h]]
    body = msg.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        content = body.get_content()
        text = html_to_text(content) if body.get_content_type() == "text/html" else content
    return "\n".join(head) + "\n\n" + text


def _decode(raw: bytes) -> str:
    # utf-8-sig strips a byte-order mark; anything that is not UTF-8 raises and is reported.
    return raw.decode("utf-8-sig")


def read_file(root: Path, relpath: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Record]:
    """Records of one file (one per file; one per row for .csv and per line for .jsonl)."""
    path = root / relpath
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return [
                _record(
                    relpath,
                    relpath,
                    "",
                    f"file is {size} bytes, over the {max_bytes}-byte "
                    "limit (max_file_bytes); split it or raise the limit",
                )
            ]
        raw = path.read_bytes()
    except OSError as exc:
        return [_record(relpath, relpath, "", f"cannot read file: {exc.strerror or exc}")]
    if not raw.strip():
        return [_record(relpath, relpath, "", "empty file: nothing to analyse")]
    suffix = path.suffix.lower()
    try:
        if suffix == ".eml":
            return [_record(relpath, relpath, eml_to_text(raw))]
        text = _decode(raw)
    except UnicodeDecodeError as exc:
        return [
            _record(
                relpath,
                relpath,
                "",
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                f"offset {exc.start}); re-encode the file as UTF-8",
            )
        ]
    except Exception as exc:  # malformed MIME: report, keep going
        return [_record(relpath, relpath, "", f"cannot parse email: {exc}")]
    if suffix in {".html", ".htm"}:
        return [_record(relpath, relpath, html_to_text(text))]
    if suffix == ".csv":
        return _csv_records(relpath, text)
    if suffix == ".jsonl":
        return _jsonl_records(relpath, text)
    if suffix == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return [
                _record(relpath, relpath, text, f"malformed JSON: {exc.msg} at line {exc.lineno}")
            ]
    return [_record(relpath, relpath, text)]


def _csv_records(relpath: str, text: str) -> list[Record]:
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        return [_record(relpath, relpath, text, f"malformed CSV: {exc}")]
    if not rows:
        return [_record(relpath, relpath, "", "CSV has a header but no rows")]
    out = []
    for i, row in enumerate(rows, start=1):
        # A row longer than the header puts the extras under the key None.
        extra = row.pop(None, None)  # type: ignore[call-overload]
        body = "\n".join(f"{k}: {v}" for k, v in row.items())
        err = f"row {i} has {len(extra)} more value(s) than the header" if extra else None
        out.append(_record(f"{relpath}#row{i}", relpath, body, err))
    return out


def _jsonl_records(relpath: str, text: str) -> list[Record]:
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        err = None
        try:
            value = json.loads(line)
            body = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        except json.JSONDecodeError as exc:
            body, err = line, f"malformed JSON on line {i}: {exc.msg}"
        out.append(_record(f"{relpath}#line{i}", relpath, body, err))
    return out
