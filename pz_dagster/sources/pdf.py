"""The text layer of a PDF, page by page, with PDFium (``pypdfium2``: Apache-2.0 / BSD).

A PDF with no text on any page (scanned), a password-protected one, and a damaged or truncated
one raise ``Unreadable`` with a message saying which; pages without text in a PDF that has text
elsewhere are kept (empty) and listed by ``Text.pages_without_text``. No OCR."""

from __future__ import annotations

import threading

from pz_dagster.sources.units import OCR_OFF, Text, Unreadable

NO_TEXT_LAYER = f"PDF has no text layer {OCR_OFF}"
ENCRYPTED = "PDF is encrypted (password-protected): not read"
_TAIL = 1024  # readers look for the end-of-file marker this far from the end
_LOCK = threading.Lock()  # PDFium is not thread-safe
# FPDF_GetLastError codes (fpdfview.h)
_WHY = {1: "unknown error", 2: "cannot be opened", 3: "not in PDF format or corrupted"}
_PASSWORD, _SECURITY = 4, 5


def page_text(raw: str) -> str:
    """A page's text, lightly normalised: line breaks as ``\\n``, no trailing spaces, no blank
    lines at its ends; nothing de-hyphenated or joined.

    >>> page_text("  Title  \\r\\nline two \\r\\n\\r\\n")
    '  Title\\nline two'
    """
    lines = raw.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _check_envelope(raw: bytes) -> None:
    if b"%PDF-" not in raw[:_TAIL]:
        raise Unreadable("PDF is damaged: no %PDF header (not a PDF file?)")
    if b"%%EOF" not in raw[-_TAIL:]:
        raise Unreadable("PDF is damaged: no end-of-file marker (truncated?)")


def _open(raw: bytes):
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(raw)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == _PASSWORD:
            raise Unreadable(ENCRYPTED) from None
        if code == _SECURITY:
            raise Unreadable("PDF is encrypted with an unsupported security handler") from None
        raise Unreadable(f"PDF is damaged: {_WHY.get(code, str(exc))}") from None


def _pages(doc) -> list[str]:
    out = []
    for i in range(len(doc)):
        page = doc[i]
        try:
            textpage = page.get_textpage()
            try:
                out.append(page_text(textpage.get_text_range()))
            finally:
                textpage.close()
        except Exception as exc:  # PdfiumError, or a bad text object
            raise Unreadable(f"PDF is damaged: page {i + 1} cannot be read ({exc})") from None
        finally:
            page.close()
    return out


def read_pdf(raw: bytes) -> Text:
    """The text of each page of a PDF. Raises Unreadable for a PDF without a text layer, an
    encrypted or a damaged one."""
    _check_envelope(raw)
    with _LOCK:
        doc = _open(raw)
        try:
            pages = _pages(doc)
        finally:
            doc.close()
    if not pages:
        raise Unreadable("PDF has no pages")
    if not any(p.strip() for p in pages):
        raise Unreadable(NO_TEXT_LAYER)
    return Text.paged(pages)
