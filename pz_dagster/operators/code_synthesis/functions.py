"""Code synthesis (Evaporate): a model writes extraction functions from sample documents once;
the functions that agree with the model's own answers on the sample are combined by a weighted
vote and run on every document, with no model call. Where they abstain or disagree, the model
answers that record (counted as a fallback).

This module holds the model-free parts: the prompt, reading a function out of an answer,
scoring candidates and voting. Running untrusted code is the sandbox's job
(``pz_dagster.operators.code_synthesis.sandbox``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from optimizer.quality import normalize
from pz_dagster.models.base import Message

ENTRY = "extract"
SAMPLE_CHARS = 1000  # of each sample document shown to the model
CODE_MAX_TOKENS = 320
SYSTEM = "You write short, correct Python functions. Reply with Python code only."
EXAMPLE = """import re

def extract(text):
    m = re.search(r"^Date:\\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else None"""
FILTER_EXAMPLE = """import re

def extract(text):
    return bool(re.search(r"\\b(meeting|call|agenda)\\b", text, re.IGNORECASE))"""


def synthesis_messages(field: str, type_name: str, description: str, sample: str) -> list[Message]:
    """Ask for one function ``extract(text)`` returning the field from documents like ``sample``.

    >>> synthesis_messages("sender", "str", "The sender's address", "From: a@b.c")[1]["content"][:9]
    'Document:'
    """
    doc = sample[:SAMPLE_CHARS]
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": f'Document:\n"""\n{doc}\n"""\n\n'
            + (
                "Write a Python function `extract(text)` that returns True when a document "
                f"like the one above satisfies this condition: {description}; False when it "
                "does not; None when the text does not tell."
                if type_name == "bool"
                else f"Write a Python function `extract(text)` that returns {field!r} "
                f"({type_name}): {description}, from any document formatted like the one "
                "above, or None when it is not there."
            )
            + " Use only the standard library (re, json, datetime, email, html).\n\n"
            + (
                f'For example, for "the email is about a meeting":\n{FILTER_EXAMPLE}'
                if type_name == "bool"
                else f'For example, for "the date the email was sent":\n{EXAMPLE}'
            ),
        },
    ]


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


def parse_function(answer: str) -> tuple[str, str] | None:
    """(source, entry function name) from a model's answer, or None when it holds no function.
    Code inside a Markdown fence wins; the entry is ``extract`` if defined, else the last
    function defined (helpers come first).

    >>> parse_function("Sure!\\n```python\\ndef get(t):\\n    return t[:3]\\n```")
    ('def get(t):\\n    return t[:3]', 'get')
    """
    fenced = _FENCE.search(answer)
    source = (fenced.group(1) if fenced else answer).strip()
    names = _DEF.findall(source)
    if not names:
        return None
    return source, ENTRY if ENTRY in names else names[-1]


EMPTY_ANSWERS = frozenset({"", "none", "null", "n/a", "na", "unknown", "no subject"})


def is_empty(value: Any) -> bool:
    """An answer that says the field is absent."""
    return value is None or normalize(value) in EMPTY_ANSWERS


def stated_empty(output: Any) -> bool:
    """A function's output saying the document states the field empty: ``""``, the value of
    a labelled line with nothing after its label (``Subject:`` alone). Unlike None (the
    function did not find it), it decides the record: the field is absent, no model call. A
    weak model asked about such a record invents a value from the body.

    >>> stated_empty(""), stated_empty(None), stated_empty("x")
    (True, False, False)
    """
    return isinstance(output, str) and not output.strip()


def similarity(output: Any, reference: Any) -> float:
    """How far a function's output agrees with a reference answer: 1.0 when equal (normalized),
    else the F1 of their words, as Evaporate scores candidates against a model's extractions. A
    weak model's answer may run on past the subject, or miss a word of it; the line that holds
    the subject still agrees with it far more than any other line does.

    >>> similarity("Re: Raptor P&L", "re: raptor p&l"), similarity("Raptor P&L", "Raptor P&L (Non-Privileged)")
    (1.0, 0.8)
    >>> similarity("a@x.com", "b@x.com"), similarity(True, False)
    (0.0, 0.0)
    """
    a, b = normalize(output), normalize(reference)
    if a == b:
        return 1.0
    if not isinstance(output, str) or not isinstance(reference, str):
        return 0.0
    words_a, words_b = a.split(), b.split()
    common = sum(min(words_a.count(w), words_b.count(w)) for w in set(words_a))
    if not common:
        return 0.0
    precision, recall = common / len(words_a), common / len(words_b)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class ScoredFunction:
    """A candidate's record against reference answers (the sample's, then every answer the
    model gives on a fallback record): ``seen`` records, ``answered`` by it, ``right`` among
    those (summed ``similarity``: 1 per exact agreement), ``abstained`` on, ``abstained_empty``
    where the reference also said the field is absent. Sums, so that a function reused on later
    batches keeps learning."""

    field: str
    source: str
    entry: str
    seen: int = 0
    answered: int = 0
    right: float = 0.0
    abstained: int = 0
    abstained_empty: int = 0

    @property
    def accuracy(self) -> float:
        return self.right / self.seen if self.seen else 0.0

    @property
    def precision(self) -> float:
        return self.right / self.answered if self.answered else 0.0

    @property
    def coverage(self) -> float:
        return self.answered / self.seen if self.seen else 0.0

    @property
    def weight(self) -> float:
        """Its vote: how often it agrees when it answers, smoothed so that a function that
        answered once is not trusted fully."""
        return (self.right + 1) / (self.answered + 2)

    @property
    def absent_confidence(self) -> float:
        """How far its abstaining means the field is absent (smoothed)."""
        return (self.abstained_empty + 1) / (self.abstained + 2)

    def observe(self, output: Any, reference: Any) -> ScoredFunction:
        """The record with one more (output, reference) pair. Stating the field empty is an
        answer, right when the reference also says it is absent."""
        if stated_empty(output):
            hit = float(is_empty(reference))
            return replace(
                self, seen=self.seen + 1, answered=self.answered + 1, right=self.right + hit
            )
        if is_empty(output):
            return replace(
                self,
                seen=self.seen + 1,
                abstained=self.abstained + 1,
                abstained_empty=self.abstained_empty + int(is_empty(reference)),
            )
        hit = 0.0 if is_empty(reference) else similarity(output, reference)
        return replace(self, seen=self.seen + 1, answered=self.answered + 1, right=self.right + hit)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "accuracy": round(self.accuracy, 4),
            "precision": round(self.precision, 4),
            "coverage": round(self.coverage, 4),
            "right": round(self.right, 4),
            "weight": round(self.weight, 4),
        }


_LABEL = re.compile(r"^[A-Za-z][\w .\-]{0,40}:\s*$")
_EMAIL = re.compile(r"[\w.+\-']+@[\w\-]+(?:\.[\w\-]+)+")


MIN_OVERLAP_CHARS = 5  # of a line's value that a run-on answer must hold to point at it


def _labelled_line(text: str, value: str) -> tuple[str, bool] | None:
    """The label of the line of ``text`` that ``value`` sits on, and whether to read an email
    address off it: the first line holding ``value`` right after a label (``From: value``),
    or holding it as an address on a labelled line; else (a run-on answer, ``"Fw: Golf!!!
    2001-10-29T0..."``) the labelled line whose whole value the answer holds, the longest."""
    email = bool(_EMAIL.fullmatch(value))
    for line in text.splitlines():
        at = line.find(value)
        if at < 0:
            continue
        label = line[:at]
        if not _LABEL.match(label) and not (email and _LABEL.match(label.split(":")[0] + ":")):
            break
        return label.split(":")[0].strip() + ":", email
    best: tuple[int, str, bool] | None = None
    for line in text.splitlines():
        label, colon, rest = line.partition(":")
        rest = rest.strip()
        if not colon or not _LABEL.match(label + ":") or len(rest) < MIN_OVERLAP_CHARS:
            continue
        if rest in value and (best is None or len(rest) > best[0]):
            best = (len(rest), label.strip() + ":", bool(_EMAIL.fullmatch(rest)))
    return best[1:] if best else None


def induce_functions(texts: Sequence[str], answers: Sequence[Any]) -> list[tuple[str, str]]:
    r"""Functions induced from the model's own answers on the sample (programming by example,
    no model call): where an answer sits on a labelled line of its document (``From: ...``,
    or a run-on answer holds a labelled line's whole value), a function that reads the same
    label's line in any document, the whole rest of the line or, when the answer is an email
    address, the address on it; ``""`` when the line is there with nothing after its label
    (``stated_empty``), None when it is not there. Returns (source, entry) pairs, one per
    distinct label, in the order first seen.

    >>> src, entry = induce_functions(["Date: x\nFrom: Bob <b@x.org>"], ["b@x.org"])[0]
    >>> namespace = {}
    >>> exec(src, namespace)
    >>> namespace[entry]("To: z@q.org\nFrom:  Al <al@y.com>  ")
    'al@y.com'
    >>> namespace[entry]("From: \nTo: z@q.org"), namespace[entry]("To: z@q.org")
    ('', None)
    >>> src, _ = induce_functions(["To: a@x.org\nSubject: Golf!!!"], ["Golf!!! 2001-10-29"])[0]
    >>> "Subject:" in src
    True
    """
    out: dict[str, str] = {}
    for text, answer in zip(texts, answers, strict=True):
        if not isinstance(answer, str) or not answer.strip():
            continue
        found = _labelled_line(text, answer.strip())
        if found is None:
            continue
        label, pick = found
        body = [
            "import re",
            "def extract(text):",
            f"    m = re.search(r'^{re.escape(label)}[ \\t]*(.*?)[ \\t]*$', text, re.MULTILINE)",
            "    if not m:",
            "        return None",
            "    if not m.group(1):",
            "        return ''",
        ]
        if pick:
            body = [
                body[0],
                f"_EMAIL = re.compile({_EMAIL.pattern!r})",
                *body[1:],
                "    found = _EMAIL.search(m.group(1))",
                "    return found.group(0) if found else None",
            ]
        else:
            body.append("    return m.group(1)")
        out.setdefault(label + (" email" if pick else ""), "\n".join(body) + "\n")
    return [(src, ENTRY) for src in out.values()]


def score(
    field: str,
    source: str,
    entry: str,
    outputs: Sequence[Any],
    reference: Sequence[Any],
) -> ScoredFunction:
    """Score one function's outputs (None: abstained) against reference answers (the model's
    own, or labels). The reference may be noisy (a small model's answers): a function that is
    right where the model is right agrees with it only as often as the model is right, so the
    bar is low and the vote weighs functions by their agreement.

    >>> s = score("f", "src", "extract", ["a", None, "b"], ["a", "", "c"])
    >>> (round(s.accuracy, 2), round(s.precision, 2), round(s.coverage, 2), round(s.weight, 2))
    (0.33, 0.5, 0.67, 0.5)
    >>> round(s.absent_confidence, 2)  # it abstained once, where the field was absent
    0.67
    """
    scored = ScoredFunction(field, source, entry)
    for output, ref in zip(outputs, reference, strict=True):
        scored = scored.observe(output, ref)
    return scored


def select(
    scored: Sequence[ScoredFunction], *, min_precision: float = 0.3, keep: int = 3
) -> list[ScoredFunction]:
    """The functions worth voting: right at least once, and agreeing with the reference on
    at least ``min_precision`` of the records they answer (smoothed: the weight), best first
    (accuracy, then weight, then the shorter source); a duplicate of a kept source is dropped.
    A function may abstain where the field is absent (an email without a subject)."""
    good = [s for s in scored if s.accuracy > 0 and s.weight >= min_precision]
    good.sort(key=lambda s: (-s.accuracy, -s.weight, len(s.source), s.source))
    out: list[ScoredFunction] = []
    for s in good:
        if all(s.source != o.source for o in out):
            out.append(s)
    return out[:keep]


def agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    """How often two functions give the same (normalized) value where both answer; 1.0 when
    they never both answer (they complement each other). Functions that mostly disagree read
    different things (the To: line and the From: line) and are rivals, not a second opinion.

    >>> agreement(["a", "b", None, "c"], ["A ", "x", "y", None])
    0.5
    """
    both = [(x, y) for x, y in zip(a, b, strict=True) if not is_empty(x) and not is_empty(y)]
    if not both:
        return 1.0
    return sum(1 for x, y in both if normalize(x) == normalize(y)) / len(both)


def vote(
    outputs: Sequence[Any],
    functions: Sequence[ScoredFunction],
    *,
    min_share: float = 2 / 3,
    min_absent: float = 0.8,
) -> tuple[Any, bool]:
    """(value, decided) for one record and field. Functions that answered vote with their
    weight for their (normalized) value, stating the field empty included (the value is then
    None); the record is decided when the winner holds at least ``min_share`` of the weight
    that voted. When all abstain, the field is decided absent (None) if a function's
    abstentions have meant "absent" often enough (``min_absent``). Undecided: the model
    answers instead.

    >>> f = [ScoredFunction("f", "a", "extract", 10, 10, 9), ScoredFunction("f", "b", "extract", 10, 10, 4)]
    >>> vote(["a@x.com", "A@x.com "], f), vote(["a", "b"], f), vote([None, None], f)
    (('a@x.com', True), ('a', True), (None, False))
    >>> vote(["", None], f), vote(["", "b"], f), vote(["b", ""], f)
    ((None, True), (None, True), ('b', True))
    """
    tally: dict[str, float] = {}
    first: dict[str, Any] = {}
    for value, fn in zip(outputs, functions, strict=True):
        if is_empty(value) and not stated_empty(value):
            continue
        key = normalize(value)
        tally[key] = tally.get(key, 0.0) + fn.weight
        first.setdefault(key, value)
    if not tally:
        absent = max((fn.absent_confidence for fn in functions), default=0.0)
        return None, absent >= min_absent
    total = sum(tally.values())
    best = max(sorted(tally), key=lambda k: tally[k])
    if tally[best] / total < min_share:
        return None, False
    return (None if stated_empty(first[best]) else first[best]), True


def sample_indices(ids: Sequence[str], size: int) -> list[int]:
    """``size`` positions spread over the batch, fixed by the record ids (not their order)."""
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha256(ids[i].encode()).hexdigest())
    return sorted(order[:size])


def as_type(value: Any, type_name: str) -> Any:
    """A function's output as the field's type, or None (abstain) when it does not fit."""
    if value is None:
        return None
    try:
        if type_name == "str":
            return str(value).strip()  # "": stated empty
        if type_name == "int" and not isinstance(value, bool):
            return int(value)
        if type_name == "float" and not isinstance(value, bool):
            return float(value)
        if type_name == "bool":
            return value if isinstance(value, bool) else None
        if type_name.startswith("list"):
            return list(value) if isinstance(value, list | tuple) else None
    except (TypeError, ValueError):
        return None
    return None


def functions_from(
    raw: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, list[ScoredFunction]]:
    """Functions per field back from metadata (reused while they keep working)."""
    names = {f.name for f in fields(ScoredFunction)}
    return {
        f: [ScoredFunction(**{k: v for k, v in dict(s).items() if k in names}) for s in fs]
        for f, fs in raw.items()
    }
