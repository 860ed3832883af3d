"""Asset checks of every operator asset: output schema, failure/null rate, and quality.

The checks run inside the asset's own step (``@asset(check_specs=...)``), on the records and the
counts the operator just produced, so they cost nothing extra. They are not partitioned (per
partition checks are a preview feature of Dagster 1.13): each check's latest result is the one of
the latest materialized batch, and its metadata names the batch. The optimizer's history never
reads them; it reads the materialization metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, Field

from optimizer import QualityCounts
from pz_dagster.operators.base import OperatorResult, Record
from pz_dagster.query import plan
from pz_dagster.query.schema import ERROR, RECORD_ID, coerce_value
from pz_dagster.tuning.planning import OPTIMIZED

SCHEMA_CHECK = "schema_valid"
FAILURE_CHECK = "failure_rate"
QUALITY_CHECK = "quality"
GROUNDING_CHECK = "evidence_grounded"
GUARANTEE_CHECK = "guarantee_certified"

Severity = Literal["WARN", "ERROR"]


class CheckSettings(BaseModel, frozen=True):
    """Thresholds and severities of the checks on every operator asset of a query.

    A check with severity ERROR and ``blocking`` stops the assets downstream of a failing batch
    (Dagster skips them and the run fails); WARN only flags the asset in the UI.

    >>> CheckSettings(quality_severity="ERROR").severity(QUALITY_CHECK)
    <AssetCheckSeverity.ERROR: 'ERROR'>
    """

    max_failure_rate: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Highest share of evaluated records that may fail (model error, invalid "
        "answer, unreadable file) or come back with a declared output field empty.",
    )
    min_quality: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Lowest quality (F1 of a filter, exact match of a map) against labels or the "
        "champion on the batch's sample.",
    )
    max_ungrounded_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Highest share of a map's evidence-backed answers whose quote the document "
        "does not hold (ungrounded: made up, paraphrased or from elsewhere).",
    )
    schema_severity: Severity = "ERROR"
    failure_severity: Severity = "WARN"
    quality_severity: Severity = "WARN"
    grounding_severity: Severity = "WARN"
    guarantee_severity: Severity = "ERROR"
    blocking: bool = Field(
        default=False,
        description="Make ERROR-severity checks blocking: a failing batch stops downstream assets.",
    )

    def severity(self, check: str) -> dg.AssetCheckSeverity:
        name = {
            SCHEMA_CHECK: self.schema_severity,
            FAILURE_CHECK: self.failure_severity,
            QUALITY_CHECK: self.quality_severity,
            GROUNDING_CHECK: self.grounding_severity,
            GUARANTEE_CHECK: self.guarantee_severity,
        }[check]
        return dg.AssetCheckSeverity(name)


def check_names(node: plan.PlanNode) -> list[str]:
    """The checks of a node's asset: every asset checks its schema and failures; operators the
    optimizer plans also check their measured quality."""
    names = [SCHEMA_CHECK, FAILURE_CHECK]
    if isinstance(node, OPTIMIZED):
        names.append(QUALITY_CHECK)
    if isinstance(node, plan.SemanticMap) and node.evidence:
        names.append(GROUNDING_CHECK)
    if isinstance(node, plan.SemanticFilter) and node.target:
        names.append(GUARANTEE_CHECK)
    return names


_DESCRIPTIONS = {
    SCHEMA_CHECK: "Every record has the declared columns with values of the declared types, a "
    "unique record_id, and (unless it failed) every output field filled.",
    FAILURE_CHECK: "The share of evaluated records that failed or left an output field empty "
    "stays under the threshold.",
    QUALITY_CHECK: "The quality measured on the batch's sample (labels, else the champion) "
    "reaches the threshold.",
    GROUNDING_CHECK: "The answers that come with evidence quote the document: the share of "
    "quotes the document does not hold (ungrounded) stays under the threshold.",
    GUARANTEE_CHECK: "The batch was decided under the filter's declared target: thresholds "
    "certified on this batch's oracle labels, or carried from an earlier batch and not rejected "
    "by this batch's audit. Fails while they are not (an oracle that did not answer).",
}


def check_specs(
    node: plan.PlanNode, key: dg.AssetKey, settings: CheckSettings
) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name,
            asset=key,
            description=_DESCRIPTIONS[name],
            blocking=settings.blocking and settings.severity(name) == dg.AssetCheckSeverity.ERROR,
        )
        for name in check_names(node)
    ]


def produced_fields(node: plan.PlanNode) -> tuple[str, ...]:
    """The columns a semantic map/classification fills per record (empty for other operators)."""
    if isinstance(node, plan.SemanticMap | plan.SemanticClassify | plan.SemanticFlatMap):
        return node.adds if isinstance(node, plan.SemanticClassify) else node.output_fields
    return ()


def required_fields(node: plan.PlanNode) -> tuple[str, ...]:
    """The produced columns the schema requires filled: a classification's label. A map's
    field may be null where a long document, read in parts, states it in none (the failure
    check counts such empty outputs)."""
    return produced_fields(node) if isinstance(node, plan.SemanticClassify) else ()


def schema_problems(
    records: Sequence[Record], columns: Sequence[tuple[str, Any]], produced: Sequence[str] = ()
) -> list[str]:
    """What is wrong with ``records`` against the declared ``columns`` (empty: valid). A failed
    record (error column set) may leave produced fields empty; nothing else may.

    >>> schema_problems([{"record_id": "a", "n": "x", "error": None}], [("record_id", str), ("n", int), ("error", str)])
    ["a: column 'n': 'x' is not a int"]
    """
    problems: list[str] = []
    names = [c for c, _ in columns]
    seen: set[Any] = set()
    for r in records:
        rid = r.get(RECORD_ID)
        if rid is None or rid in seen:
            problems.append(f"{rid}: record_id missing or repeated")
        seen.add(rid)
        missing = [c for c in names if c not in r]
        if missing:
            problems.append(f"{rid}: missing columns {missing}")
        for c, typ in columns:
            try:
                coerce_value(r.get(c), typ)
            except TypeError as exc:
                problems.append(f"{rid}: column {c!r}: {exc}")
        if not r.get(ERROR):
            empty = [f for f in produced if r.get(f) is None]
            if empty:
                problems.append(f"{rid}: output fields left empty {empty}")
    return problems


def empty_outputs(records: Sequence[Record], produced: Sequence[str]) -> int:
    """Records without an error that still have an output field empty."""
    return sum(1 for r in records if not r.get(ERROR) and any(r.get(f) is None for f in produced))


def evaluate(
    node: plan.PlanNode,
    key: dg.AssetKey,
    result: OperatorResult,
    settings: CheckSettings,
    partition: str | None,
    quality: QualityCounts | None = None,
    quality_source: str = "",
) -> list[dg.AssetCheckResult]:
    """Results of the node's checks on what its asset just produced. ``quality``: what the
    optimizer's assessment measured (against ``quality_source``), None where it measured
    nothing."""
    found = {
        SCHEMA_CHECK: _schema_finding(node, result),
        FAILURE_CHECK: _failure_finding(node, result, settings),
    }
    if QUALITY_CHECK in check_names(node):
        found[QUALITY_CHECK] = _quality_finding(settings, quality, quality_source)
    if GROUNDING_CHECK in check_names(node):
        found[GROUNDING_CHECK] = _grounding_finding(result, settings)
    if GUARANTEE_CHECK in check_names(node):
        found[GUARANTEE_CHECK] = _guarantee_finding(node, result)
    where = {"partition": partition} if partition else {}
    return [
        dg.AssetCheckResult(
            asset_key=key,
            check_name=name,
            passed=f.passed,
            severity=settings.severity(name),
            description=f.description,
            metadata={**where, **f.metadata},
        )
        for name, f in found.items()
    ]


@dataclass(frozen=True)
class _Finding:
    """One check's verdict on a batch."""

    passed: bool
    metadata: dict[str, Any]
    description: str | None = None


def _schema_finding(node: plan.PlanNode, result: OperatorResult) -> _Finding:
    columns = list(plan.column_types(node))
    problems = schema_problems(result.records, columns, required_fields(node))
    if isinstance(node, plan.SemanticClassify):
        problems += [
            f"{r.get(RECORD_ID)}: class {r.get(node.output)!r} is not one of {list(node.classes)}"
            for r in result.records
            if not r.get(ERROR) and r.get(node.output) not in node.classes
        ]
    metadata: dict[str, Any] = {"records": len(result.records), "problems": len(problems)}
    if problems:
        metadata["examples"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in problems[:10]))
    return _Finding(not problems, metadata)


def _failure_finding(
    node: plan.PlanNode, result: OperatorResult, settings: CheckSettings
) -> _Finding:
    s = result.stats
    empty = empty_outputs(result.records, produced_fields(node))
    failed = s.failures + empty
    if isinstance(node, plan.BatchedSource | plan.TableSource):
        failed += s.passed_through_errors  # a source's failures are the files it could not read
    rate = failed / s.evaluated if s.evaluated else 0.0
    return _Finding(
        rate <= settings.max_failure_rate,
        {
            "failure_rate": float(rate),
            "max_failure_rate": float(settings.max_failure_rate),
            "failures": s.failures,
            "empty_outputs": empty,
            "evaluated": s.evaluated,
        },
    )


def _grounding_finding(result: OperatorResult, settings: CheckSettings) -> _Finding:
    s = result.stats
    grounded, ungrounded = sum(s.grounded.values()), sum(s.ungrounded.values())
    answers = grounded + ungrounded
    share = ungrounded / answers if answers else 0.0
    metadata: dict[str, Any] = {
        "answers_with_evidence": answers,
        "ungrounded": ungrounded,
        "ungrounded_share": float(share),
        "max_ungrounded_share": float(settings.max_ungrounded_share),
    }
    metadata |= {f"ungrounded/{f}": n for f, n in sorted(s.ungrounded.items())}
    if s.ungrounded_examples:
        metadata["examples"] = dg.MetadataValue.md(
            "\n".join(f"- {e}" for e in s.ungrounded_examples)
        )
    return _Finding(share <= settings.max_ungrounded_share, metadata)


def _guarantee_finding(node: plan.SemanticFilter, result: OperatorResult) -> _Finding:
    g = result.extras.get("guarantee")
    targets = ", ".join(f"{t.kind} >= {t.target:g} (delta {t.delta:g})" for t in node.target)
    if not g:
        return _Finding(False, {"target": targets}, "the filter did not run as a certified cascade")
    metadata: dict[str, Any] = {
        "target": targets,
        "certified": bool(g["certified"]),
        "mode": g["mode"],
        "oracle_labels": g["labels"],
        "label_budget": g["label_budget"],
        "oracle_calls": g["oracle_calls"],
        "oracle_dollars": float(g["oracle_dollars"]),
        "decided_by_score": g["decided_by_score"],
        "escalated": g["escalated"],
    }
    for c in g["certificates"]:
        metadata[f"{c['kind']}/threshold"] = c["threshold"]
        metadata[f"{c['kind']}/bound"] = float(c["bound"])
    for a in g["audits"]:
        metadata[f"audit/{a['kind']}_upper"] = float(a["upper"])
    return _Finding(bool(g["certified"]), metadata, f"{g['mode']}: {g['reason']}")


def _quality_finding(
    settings: CheckSettings, quality: QualityCounts | None, source: str
) -> _Finding:
    if quality is None:
        # Nothing to compare with on this batch: the chosen config is the champion and
        # there are no labels. Passing says "no evidence against", the metadata says why.
        return _Finding(
            True,
            {"measured": False},
            "not measured on this batch: no labels, and the champion ran",
        )
    score = float(quality.score)
    return _Finding(
        score >= settings.min_quality,
        {
            "measured": True,
            "quality": score,
            "min_quality": float(settings.min_quality),
            "quality_source": source,
        },
    )
