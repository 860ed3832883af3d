"""Oracles for the simulator: correct answers read off a labelled folder of documents, or off
the generated long documents one chunk at a time.

``LabelOracle`` knows each document's text and label, finds the document a prompt is about, and
answers a filter with whether the document is relevant and a map with the labelled field values
(for unlabelled fields, ``From:`` / ``Subject:`` headers where the document has them).
``ChunkOracle`` answers what the shown chunk of a long document (``long_documents``) supports,
with evidence, and can hallucinate or be misled by distractors. The simulator then degrades
these answers by each model's accuracy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer.quality import ValidationSet
from pz_dagster.operators.prompts import OMITTED
from pz_dagster.sources import read_file, scan_folder
from pz_dagster.testing.long_documents import LongDocument, words
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
        if set(props.get("answer", {}).get("enum") or ()) == {"YES", "NO"}:
            # a yes/no with more to say (a confidence, a reasoning): the label, sure of it
            out = {k: placeholder(v) for k, v in props.items()}
            out["answer"] = "YES" if self.labels.relevant(rid) else "NO"
            if props.get("confidence", {}).get("type") == "integer":
                out["confidence"] = int(props["confidence"].get("maximum", 5))
            return out
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


# --- long documents, one chunk at a time ---------------------------------------------------

_PART_BREAK = re.compile(r"^[ \t]*\[\.\.\.\][ \t]*$", re.M)  # OMITTED, between kept chunks
_GRAM, _STRIDE = 8, 8  # the index holds every _STRIDE-th run of _GRAM words of each document
_PLACED_KEPT = 4096  # shown texts whose document is remembered


@dataclass(frozen=True)
class _Known:
    """A document as the oracle holds it: its text in ``words`` form, its labels, the
    sentence of each label, and its distractors as (value, sentence) pairs."""

    doc_id: str
    text: str
    words: str
    labels: dict[str, str]
    evidence: dict[str, str]
    distractors: dict[str, list[tuple[str, str]]]
    unique: frozenset[str]  # fields whose value occurs once in the text (as words)


def _known(doc_id: str, text: str, labels: Any, evidence: Any, distractors: Any) -> _Known:
    w = words(text)
    pairs = {
        k: [(d["value"], d["sentence"]) if isinstance(d, dict) else tuple(d) for d in ds]
        for k, ds in (distractors or {}).items()
    }
    unique = frozenset(k for k, v in labels.items() if w.count(words(str(v))) == 1)
    return _Known(doc_id, text, w, dict(labels), dict(evidence or {}), pairs, unique)


def _as_known(docs: Any) -> list[_Known]:
    """``LongDocument``s, or ``{doc_id: {"text", "labels", "evidence"[, "distractors"]}}``."""
    if isinstance(docs, dict):
        return [
            _known(k, d["text"], d["labels"], d.get("evidence"), d.get("distractors"))
            for k, d in docs.items()
        ]
    return [_known(d.doc_id, d.text, d.labels, d.evidence, d.distractors) for d in docs]


class ChunkOracle:
    """Answers like an honest model that sees one chunk of a long document at a time.

    The document a prompt shows (``Document:\\n\"\"\"...\"\"\"``) is placed by its longest
    ``[...]``-separated part: the part, as ``words`` (so reflowed lines, markup and punctuation
    do not matter) less its first and last word (a chunk may cut a word), must occur in exactly
    one document; an index of word runs finds the candidates. Then, for each requested
    property that is a labelled field:

    - its value when the field's evidence sentence, or the value itself (where it occurs once
      in the document), is in the shown text, else null (the placeholder where the schema has
      no null);
    - with probability ``confusion``, when a distractor sentence of the field is shown, the
      distractor's value instead (grounded, wrong);
    - with probability ``hallucination``, when the value is not shown, a plausible wrong value
      (a distractor of the document, another document's value) with a made-up evidence
      sentence that the document does not contain.

    ``<field>_evidence`` gets the sentence the answer rests on. The draws are fixed by
    ``seed``, the field and the prompt, so the same request gets the same answer. A filter
    (schema of ``answer`` only) is YES when some labelled field's evidence is shown.

    Merge requests (a model asked to choose among candidate values of a record's fields, with
    no document it can place) are assumed to name the record's file (``lease-007.pdf``) or to
    quote a candidate's evidence (a true or distractor sentence of exactly one document), and to
    list the candidates verbatim: a field gets the labelled value when the prompt holds it,
    else null. (One that shows a chunk is answered from the chunk, as above.) Anything else
    gets ``placeholder(schema)``. A numeric property gets the number of the value's first word
    ("150 psi" -> 150).
    """

    def __init__(
        self,
        docs: Iterable[LongDocument] | dict[str, dict[str, Any]],
        hallucination: float = 0.0,
        confusion: float = 0.0,
        seed: int = 0,
    ):
        self.docs = _as_known(docs)
        self.hallucination, self.confusion, self.seed = hallucination, confusion, seed
        self.fields = {k for d in self.docs for k in d.labels}
        self._index: dict[str, set[int]] = {}
        for i, d in enumerate(self.docs):
            toks = d.words.split()
            for j in range(0, max(len(toks) - _GRAM + 1, 0), _STRIDE):
                self._index.setdefault(" ".join(toks[j : j + _GRAM]), set()).add(i)
        self._placed: dict[str, int | None] = {}

    # --- which document -------------------------------------------------------------------

    def place(self, shown: str) -> _Known | None:
        """The one document ``shown`` (a chunk, or chunks joined by ``[...]``) comes from."""
        part = max(_PART_BREAK.split(shown), key=len)
        toks = words(part).split()[1:-1]
        key = " ".join(toks)
        if key not in self._placed:
            if len(self._placed) >= _PLACED_KEPT:
                self._placed.clear()
            found = [i for i in self._candidates(toks) if f" {key} " in self.docs[i].words]
            self._placed[key] = found[0] if len(found) == 1 and toks else None
        i = self._placed[key]
        return None if i is None else self.docs[i]

    def _candidates(self, toks: list[str]) -> Iterable[int]:
        """Documents holding an indexed run of the words ``toks`` (all, when too short)."""
        if len(toks) < _GRAM + _STRIDE - 1:
            return range(len(self.docs))
        hits = [self._index.get(" ".join(toks[j : j + _GRAM])) for j in range(_STRIDE)]
        return sorted(set().union(*(h for h in hits if h)))

    # --- answers ----------------------------------------------------------------------------

    def __call__(self, req: ChatRequest) -> Any:
        schema = req.schema or {}
        props = schema.get("properties", {})
        m = _DOCUMENT.search(req.prompt)
        doc = self.place(m.group(1)) if m else None
        if doc is None:
            merged = self._merge(req.prompt, props)
            return placeholder(schema) if merged is None else merged
        parts = [words(p) for p in _PART_BREAK.split(m.group(1))]  # type: ignore[union-attr]
        if set(props) - {"reasoning"} == {"answer"}:
            shown = any(_shown(words(e), parts) for e in doc.evidence.values())
            return {"answer": _yes_no(props["answer"], shown)}
        picks = {k: self._pick(req.prompt, doc, k, parts) for k in doc.labels}
        return _fill(props, doc, picks)

    def _pick(
        self, prompt: str, doc: _Known, name: str, parts: list[str]
    ) -> tuple[str | None, str | None]:
        """(value, evidence) of field ``name`` as the chunks ``parts`` (in words) show it."""
        lures = [(v, s) for v, s in doc.distractors.get(name, []) if _shown(words(s), parts)]
        if lures and self._draw(prompt, name, "confusion") < self.confusion:
            return lures[0]
        value, sentence = doc.labels[name], doc.evidence.get(name)
        if (sentence and _shown(words(sentence), parts)) or (
            name in doc.unique and _shown(words(value), parts)
        ):
            return value, sentence or value
        if self._draw(prompt, name, "hallucination") < self.hallucination:
            return self._made_up(prompt, doc, name)
        return None, None

    def _choose(self, prompt: str) -> dict[str, Any] | None:
        return _choose_among(self, prompt)

    def _draw(self, prompt: str, name: str, kind: str) -> float:
        key = f"{self.seed}\0{kind}\0{name}\0{prompt}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64

    def _made_up(self, prompt: str, doc: _Known, name: str) -> tuple[str, str]:
        """A wrong value for ``name`` (a distractor of ``doc``, another document's value, a
        changed digit) and a sentence stating it that ``doc`` does not contain."""
        true = words(doc.labels[name])
        pool = [v for v, _ in doc.distractors.get(name, [])]
        pool += sorted({d.labels[name] for d in self.docs if name in d.labels})
        pool = [v for v in dict.fromkeys(pool) if words(v) != true] or [_changed(doc.labels[name])]
        r = self._draw(prompt, name, "made-up")
        value = pool[int(r * len(pool))]
        label = name.replace("_", " ")
        for template in _MADE_UP[int(r * 7) % len(_MADE_UP) :] + _MADE_UP:
            sentence = template.format(label=label, value=value)
            if words(sentence) not in doc.words:
                return value, sentence
        return value, f"{sentence} ({doc.doc_id}, summary table)"

    def _merge(self, prompt: str, props: dict[str, Any]) -> dict[str, Any] | None:
        """A merge request's answer (see the class), or None when it is not one."""
        if set(props) == {"choice"}:
            return self._choose(prompt)
        if not set(props) & self.fields:
            return None
        said = words(prompt)
        named = [d for d in self.docs if words(d.doc_id) in said]
        if len(named) != 1:
            named = [d for d in self.docs if _quotes(d, said)]
        if len(named) != 1:
            return None
        doc = named[0]
        picks = {
            k: (v, doc.evidence.get(k, v)) if words(v) in said else (None, None)
            for k, v in doc.labels.items()
        }
        return _fill(props, doc, picks)


_FIELD = re.compile(r'answers for the field "(\w+)"')
_CANDIDATE = re.compile(r"^(\d+)\. (.*?), from the passage: ", re.M)


def _choose_among(oracle: ChunkOracle, prompt: str) -> dict[str, Any] | None:
    """``gather.choose``'s request: the numbered candidate that is the labelled value of the
    named field, for the document a candidate's passage quotes; None when none is."""
    field, said = _FIELD.search(prompt), words(prompt)
    docs = [d for d in oracle.docs if _quotes(d, said)]
    if field is None or len(docs) != 1 or field.group(1) not in docs[0].labels:
        return None
    want = words(docs[0].labels[field.group(1)])
    for number, value in _CANDIDATE.findall(prompt):
        if words(value) == want:
            return {"choice": int(number)}
    return None


_MADE_UP = (
    "The {label} stated in this document is {value}.",
    "As summarised on the cover page, the {label} is {value}.",
    "According to the schedule, the {label} is {value}.",
    "For the avoidance of doubt, the {label} shall be {value}.",
)


def _shown(needle: str, parts: list[str]) -> bool:
    return needle.strip() != "" and any(needle in p for p in parts)


def _quotes(doc: _Known, said: str) -> bool:
    """Whether ``said`` (words) quotes an evidence or distractor sentence of ``doc``."""
    sentences = list(doc.evidence.values()) + [s for ds in doc.distractors.values() for _, s in ds]
    return any(words(s) in said for s in sentences)


def _changed(value: str) -> str:
    """``value`` with its last digit changed (or a word added when it has none)."""
    for i in range(len(value) - 1, -1, -1):
        if value[i].isdigit():
            return value[:i] + str((int(value[i]) + 3) % 10) + value[i + 1 :]
    return value + " Holdings"


def _yes_no(prop: dict[str, Any], yes: bool) -> Any:
    if prop.get("type") == "boolean":
        return yes
    options = prop.get("enum") or ["YES", "NO"]
    pick = "YES" if yes else "NO"
    return pick if pick in options else options[0 if yes else -1]


def _fill(
    props: dict[str, Any], doc: _Known, picks: dict[str, tuple[str | None, str | None]]
) -> dict[str, Any]:
    """The answer object: each labelled field's picked value, ``<field>_evidence`` its
    sentence, other properties null where allowed, else their placeholder."""
    out = {}
    for name, prop in props.items():
        base = name.removesuffix("_evidence")
        if name in picks:
            out[name] = _fit(picks[name][0], prop)
        elif base != name and base in picks:
            out[name] = _fit(picks[base][1] if picks[base][0] is not None else None, prop)
        else:
            out[name] = _fit(None, prop)
    return out


def _types(prop: dict[str, Any]) -> set[str]:
    t = prop.get("type")
    out = set(t) if isinstance(t, list) else {t} if t else set()
    for branch in prop.get("anyOf", []) + prop.get("oneOf", []):
        out |= _types(branch)
    return out


def _fit(value: str | None, prop: dict[str, Any]) -> Any:
    """``value`` in a form ``prop`` accepts: null (or, where null is not allowed, the
    placeholder of the property's first non-null type), or a number for a numeric property."""
    types = _types(prop)
    if value is None:
        if "null" in types:
            return None
        branches = [
            b for b in prop.get("anyOf", []) + prop.get("oneOf", []) if "null" not in _types(b)
        ]
        t = sorted(types - {"null"})
        return placeholder(branches[0] if branches else dict(prop, type=t[0]) if t else prop)
    if "string" not in types and types & {"integer", "number"}:
        digits = re.sub(r"[^0-9.]", "", value.split()[0] if value.split() else value)
        try:
            return int(float(digits)) if "integer" in types else float(digits)
        except ValueError:
            return value
    return value
