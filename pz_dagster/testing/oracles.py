"""Oracles for the simulator: correct answers read off a labelled folder of documents.

``LabelOracle`` knows each document's text and label, finds the document a prompt is about, and
answers a filter with whether the document is relevant and a map with the labelled field values
(for unlabelled fields, ``From:`` / ``Subject:`` headers where the document has them). The
simulator then degrades these answers by each model's accuracy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from optimizer.quality import ValidationSet
from pz_dagster.operators.prompts import OMITTED
from pz_dagster.sources import read_file, scan_folder
from pz_dagster.testing.simulator import ChatRequest, placeholder

_DOCUMENT = re.compile(r'Document:\n"""\n(.*?)\n"""', re.S)
_HEADERS = {
    "sender": re.compile(r"^From:[ \t]*(\S+)", re.M),
    # [ \t], not \s: an empty "Subject: \r\n" must not read the next header line
    "subject": re.compile(r"^Subject:[ \t]*(.*?)\s*$", re.M),
}


class LabelOracle:
    """Answers for the documents of ``folder`` given ``labels`` (see ``ValidationSet``)."""

    def __init__(self, folder: str | Path, labels: ValidationSet):
        self.labels = labels
        self.by_text: dict[str, str] = {}
        for ref in scan_folder(folder):
            for rec in read_file(Path(folder), ref.path):
                if not rec["error"]:
                    self.by_text[rec["contents"].strip()] = rec["record_id"]

    def record_of(self, req: ChatRequest) -> str | None:
        """The document the prompt shows: all of it, or (a view of the chunks naming the
        fields, parts joined by ``[...]``) the one holding its longest part."""
        m = _DOCUMENT.search(req.prompt)
        if not m:
            return None
        shown = m.group(1).strip()
        if shown in self.by_text:
            return self.by_text[shown]
        part = max(shown.split(OMITTED.strip()), key=len).strip()
        found = [rid for text, rid in self.by_text.items() if part and part in text]
        return found[0] if len(found) == 1 else None

    def __call__(self, req: ChatRequest) -> Any:
        rid = self.record_of(req)
        schema = req.schema or {}
        props = schema.get("properties", {})
        if rid is None:
            return placeholder(schema)
        if set(props) == {"answer"}:
            return {"answer": "YES" if self.labels.relevant(rid) else "NO"}
        expected = self.labels.expected.get(rid) or {}
        doc = _DOCUMENT.search(req.prompt).group(1)  # type: ignore[union-attr]
        out = {}
        for name, prop in props.items():
            if name in expected:
                out[name] = expected[name]
            elif name in _HEADERS and (h := _HEADERS[name].search(doc)):
                out[name] = h.group(1).strip()
            else:
                out[name] = placeholder(prop)
        return out
