"""Semantic plan nodes: operators whose work is done by a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel

from optimizer.guarantees import Target, parse_targets
from pz_dagster.errors import PlanError
from pz_dagster.query.nodes import Columns, UnaryNode, default_depends_on
from pz_dagster.query.schema import ERROR, RECORD_ID, check_column_name, describe_fields

PARENT_ID = "parent_record_id"


@dataclass(frozen=True)
class SemanticNode(UnaryNode):
    depends_on: tuple[str, ...] = ()

    def _resolve_depends_on(self) -> None:
        if not self.parent.described:
            return  # the default, and the check, when the table's columns are known
        if not self.depends_on:
            object.__setattr__(self, "depends_on", default_depends_on(self.parent.columns))
        self._check_columns(self.depends_on, "depends_on")

    @property
    def reads(self) -> tuple[str, ...]:
        return self.depends_on


@dataclass(frozen=True)
class SemanticFilter(SemanticNode):
    """Keep the records for which a natural-language predicate holds."""

    kind: ClassVar[str] = "sem_filter"
    predicate: str = ""
    # a stated guarantee (Recall / Precision with delta), certified on at most label_budget
    # oracle labels per batch; empty: the optimizer's choice, with no guarantee
    target: tuple[Target, ...] = ()
    label_budget: int | None = None

    def __post_init__(self) -> None:
        self._check_parent()
        if not isinstance(self.predicate, str) or not self.predicate.strip():
            raise PlanError(f"sem_filter {self.name!r} needs a non-empty predicate")
        try:
            object.__setattr__(self, "target", parse_targets(self.target))
        except ValueError as exc:
            raise PlanError(f"sem_filter {self.name!r}: {exc}") from None
        if self.label_budget is not None and (
            not isinstance(self.label_budget, int) or self.label_budget < 0
        ):
            raise PlanError(f"sem_filter {self.name!r}: label_budget is a count of labels >= 0")
        if self.label_budget is not None and not self.target:
            raise PlanError(f"sem_filter {self.name!r}: label_budget goes with a target")
        self._resolve_depends_on()

    def describe(self) -> str:
        guarantee = "".join(f", {t.kind}>={t.target:g} (delta {t.delta:g})" for t in self.target)
        budget = f", label_budget={self.label_budget}" if self.label_budget is not None else ""
        return (
            f"SemanticFilter({self.predicate!r}, depends_on={list(self.depends_on)}"
            f"{guarantee}{budget})"
        )


def _fields_of(model: type[BaseModel]) -> Columns:
    return tuple((k, f.annotation) for k, f in model.model_fields.items())


@dataclass(frozen=True)
class SemanticMap(SemanticNode):
    """Add columns computed by a model from the record (one output per input)."""

    kind: ClassVar[str] = "sem_map"
    output: type[BaseModel] | None = None
    # fields whose answer comes with its evidence: the verbatim quote it rests on
    # (``<field>_evidence``) and where the document holds it (``<field>_evidence_at``, JSON)
    evidence: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        if self.output is None:
            raise PlanError(f"sem_map {self.name!r} needs output fields")
        if isinstance(self.evidence, str):
            object.__setattr__(self, "evidence", (self.evidence,))
        unknown = [f for f in self.evidence if f not in self.output_fields]
        if unknown:
            raise PlanError(
                f"sem_map {self.name!r}: evidence asked for {unknown}, which are not its fields "
                f"{list(self.output_fields)}"
            )
        self._resolve_depends_on()
        self._check_added(self._added_columns())

    @property
    def output_fields(self) -> tuple[str, ...]:
        assert self.output is not None
        return tuple(self.output.model_fields)

    @property
    def evidence_columns(self) -> tuple[str, ...]:
        """Per evidence field, its quote column and its location column."""
        return tuple(f"{f}{s}" for f in self.evidence for s in ("_evidence", "_evidence_at"))

    @property
    def adds(self) -> tuple[str, ...]:
        return self.output_fields + self.evidence_columns

    def _added_columns(self) -> Columns:
        assert self.output is not None
        return _fields_of(self.output) + tuple((c, str) for c in self.evidence_columns)

    @property
    def schema(self) -> Columns:
        return self._add_columns(self._added_columns())

    def describe(self) -> str:
        assert self.output is not None
        fields = ", ".join(f"{n}: {t}" for n, t, _ in describe_fields(self.output))
        evidence = f", evidence={list(self.evidence)}" if self.evidence else ""
        return f"SemanticMap(fields=[{fields}], depends_on={list(self.depends_on)}{evidence})"


@dataclass(frozen=True)
class SemanticClassify(SemanticNode):
    """Put each record in exactly one of ``classes``; the label goes to column ``output``."""

    kind: ClassVar[str] = "sem_classify"
    output: str = ""
    classes: tuple[str, ...] = ()
    instruction: str = ""

    def __post_init__(self) -> None:
        self._check_parent()
        check_column_name(self.output)
        if len(self.classes) < 2:
            raise PlanError(
                f"sem_classify {self.name!r} needs at least two classes, got {list(self.classes)}"
            )
        bad = [c for c in self.classes if not isinstance(c, str) or not c.strip()]
        if bad or len(set(self.classes)) != len(self.classes):
            raise PlanError(
                f"sem_classify {self.name!r}: classes must be distinct non-empty strings"
            )
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise PlanError(
                f"sem_classify {self.name!r} needs a non-empty instruction (what to classify)"
            )
        self._resolve_depends_on()
        self._check_added(((self.output, str),))

    @property
    def adds(self) -> tuple[str, ...]:
        return (self.output,)

    @property
    def schema(self) -> Columns:
        return self._add_columns(((self.output, str),))

    def describe(self) -> str:
        return (
            f"SemanticClassify({self.instruction!r} -> {self.output} in {list(self.classes)}, "
            f"depends_on={list(self.depends_on)})"
        )


@dataclass(frozen=True)
class SemanticFlatMap(SemanticNode):
    """Zero or more output records per input record (e.g. every person an email mentions).

    Each output record gets the input's columns, ``parent_record_id`` and the item's fields; its
    ``record_id`` is the parent's with ``#<n>`` appended. A record with no items yields none.
    """

    kind: ClassVar[str] = "sem_flat_map"
    output: type[BaseModel] | None = None
    max_items: int = 20

    def __post_init__(self) -> None:
        self._check_parent()
        if self.output is None:
            raise PlanError(f"sem_flat_map {self.name!r} needs output fields")
        if (
            isinstance(self.max_items, bool)
            or not isinstance(self.max_items, int)
            or self.max_items < 1
        ):
            raise PlanError(f"sem_flat_map {self.name!r}: max_items must be a positive integer")
        self._resolve_depends_on()
        if self.parent.described:
            self.schema  # noqa: B018 - checks for column clashes now, not at run time

    @property
    def output_fields(self) -> tuple[str, ...]:
        assert self.output is not None
        return tuple(self.output.model_fields)

    @property
    def adds(self) -> tuple[str, ...]:
        return (PARENT_ID, *self.output_fields)

    @property
    def schema(self) -> Columns:
        assert self.output is not None
        fields = _fields_of(self.output)
        clash = [c for c, _ in fields if c in self.parent.columns or c == PARENT_ID]
        if clash:
            raise PlanError(
                f"sem_flat_map {self.name!r}: output column(s) {clash} already exist upstream"
            )
        body = tuple((c, t) for c, t in self.parent.schema if c not in (ERROR, PARENT_ID))
        return (*body, (PARENT_ID, str), *fields, (ERROR, str))

    def describe(self) -> str:
        assert self.output is not None
        fields = ", ".join(f"{n}: {t}" for n, t, _ in describe_fields(self.output))
        return f"SemanticFlatMap(items=[{fields}], max_items={self.max_items}, depends_on={list(self.depends_on)})"


__all__ = [
    "PARENT_ID",
    "RECORD_ID",
    "SemanticClassify",
    "SemanticFilter",
    "SemanticFlatMap",
    "SemanticMap",
    "SemanticNode",
]
