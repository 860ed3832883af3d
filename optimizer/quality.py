"""Quality of outputs against a reference (labels, or the champion's outputs on a sample)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optimizer.observations import QualityCounts


def normalize(value: Any) -> str:
    """Values compared for exact match: case, surrounding space and quotes do not count."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(sorted(normalize(v) for v in value))
    return " ".join(str(value).strip().strip("\"'<>").lower().split())


def filter_counts(predicted: Mapping[str, bool], reference: Mapping[str, bool]) -> QualityCounts:
    """Confusion counts over the records both sides decided.

    >>> filter_counts({"a": True, "b": False, "c": True}, {"a": True, "b": True, "c": False})
    QualityCounts(tp=1, fp=1, fn=1, tn=0, agree=0.0, total=0.0)
    """
    tp = fp = fn = tn = 0
    for rid, ref in reference.items():
        if rid not in predicted:
            continue
        got = predicted[rid]
        tp += got and ref
        fp += got and not ref
        fn += (not got) and ref
        tn += (not got) and (not ref)
    return QualityCounts(tp, fp, fn, tn)


def field_counts(
    predicted: Mapping[str, Mapping[str, Any]],
    reference: Mapping[str, Mapping[str, Any]],
    fields: Sequence[str],
) -> QualityCounts:
    """Exact-match agreement per (record, field) over the records both sides have.

    >>> field_counts({"a": {"x": "Ken "}}, {"a": {"x": "ken"}, "b": {"x": "y"}}, ["x"])
    QualityCounts(tp=0.0, fp=0.0, fn=0.0, tn=0.0, agree=1, total=1)
    """
    agree = total = 0
    for rid, ref in reference.items():
        if rid not in predicted:
            continue
        for f in fields:
            total += 1
            agree += normalize(predicted[rid].get(f)) == normalize(ref.get(f))
    return QualityCounts(agree=agree, total=total)


class ValidationSet:
    """Labels of some records: relevant (with the expected field values) or not.

    For a filter, a labelled record is a positive when it is relevant: with a chain of filters
    whose conjunction the labels describe, every filter is judged by how it serves the final
    answer. For a map, the expected values of the fields it produces are compared on the
    relevant records.

    >>> v = ValidationSet({"a.txt": {"sender": "ken@enron.com"}, "b.txt": None})
    >>> v.filter_counts(kept={"a.txt", "b.txt"}, evaluated=["a.txt", "b.txt", "c.txt"])
    QualityCounts(tp=1, fp=1, fn=0, tn=0, agree=0.0, total=0.0)
    """

    def __init__(self, expected: Mapping[str, Mapping[str, Any] | None]):
        self.expected = dict(expected)

    @classmethod
    def from_json(cls, path: str | Path) -> ValidationSet:
        """Labels as ``{record_id: value}``. A value is ``null``/``false``/``[]`` (not relevant),
        ``true`` (relevant), an object of expected fields, or a list holding one (the format of
        Palimpzest's Enron labels)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read labels from {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"labels in {path} must be a JSON object keyed by record id")
        out: dict[str, Mapping[str, Any] | None] = {}
        for rid, value in data.items():
            if isinstance(value, list):
                value = value[0] if value else None
            if value is True:
                value = {}
            if value is False:
                value = None
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"label of {rid!r} in {path}: expected an object, got {value!r}")
            out[str(rid)] = value
        return cls(out)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.expected

    def without(self, record_ids: set[str]) -> ValidationSet:
        """The labels less those of ``record_ids`` (records they cannot judge here).

        >>> len(ValidationSet({"a": None, "b": {}}).without({"a"}))
        1
        """
        return ValidationSet({r: v for r, v in self.expected.items() if r not in record_ids})

    def __len__(self) -> int:
        return len(self.expected)

    def relevant(self, record_id: str) -> bool:
        return self.expected.get(record_id) is not None

    def filter_counts(self, kept: set[str], evaluated: Sequence[str]) -> QualityCounts:
        labelled = [r for r in evaluated if r in self.expected]
        return filter_counts(
            {r: r in kept for r in labelled}, {r: self.relevant(r) for r in labelled}
        )

    def field_counts(
        self, outputs: Mapping[str, Mapping[str, Any]], fields: Sequence[str]
    ) -> QualityCounts:
        """Exact match of ``fields`` on the relevant labelled records among ``outputs``, for the
        fields the labels have."""
        reference = {r: exp for r, exp in self.expected.items() if exp is not None and r in outputs}
        known = [f for f in fields if any(f in exp for exp in reference.values())]
        return field_counts(outputs, reference, known)
