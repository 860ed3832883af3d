"""Quality of outputs against a reference (labels, or the champion's outputs on a sample)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
