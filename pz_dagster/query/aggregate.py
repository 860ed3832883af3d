"""Aggregations over every partition: relational ``agg`` (count/sum/avg/min/max) and the semantic
``sem_agg`` (a model summarizes or answers over many records), optionally grouped.

These nodes are *global*: they read all partitions of their input, so they and everything after
them compile to unpartitioned Dagster assets downstream of the partitioned ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from pz_dagster.errors import PlanError
from pz_dagster.query.nodes import Columns, UnaryNode, default_depends_on
from pz_dagster.query.schema import ERROR, RECORD_ID, check_column_name, describe_fields

AGG_FUNCTIONS = ("count", "sum", "avg", "min", "max")


@dataclass(frozen=True)
class AggSpec:
    """``output = function(column)``; ``count`` may leave the column empty (count records)."""

    output: str
    function: str
    column: str | None = None

    def describe(self) -> str:
        return f"{self.output}={self.function}({self.column or '*'})"


@dataclass(frozen=True)
class GlobalNode(UnaryNode):
    """Reads every partition of its input."""

    group_by: tuple[str, ...] = ()

    def _check_group_by(self) -> None:
        self._check_columns(self.group_by, "group_by")
        if RECORD_ID in self.group_by or ERROR in self.group_by:
            raise PlanError(f"{self.kind} {self.name!r}: cannot group by record_id or error")

    def _grouped(self, added: Columns) -> Columns:
        types = dict(self.parent.schema)
        return ((RECORD_ID, str), *((c, types[c]) for c in self.group_by), *added, (ERROR, str))

    @property
    def adds(self) -> tuple[str, ...]:
        return tuple(
            c for c, _ in self.schema if c not in self.group_by and c not in (RECORD_ID, ERROR)
        )


@dataclass(frozen=True)
class Aggregate(GlobalNode):
    """count/sum/avg/min/max over all records (per group). Records carrying an error are not
    aggregated; they are counted in the asset's metadata."""

    kind: ClassVar[str] = "agg"
    aggs: tuple[AggSpec, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        self._check_group_by()
        if not self.aggs:
            raise PlanError(
                f"agg {self.name!r} needs at least one aggregate, e.g. n=('count', None)"
            )
        outputs = [a.output for a in self.aggs]
        if len(set(outputs)) != len(outputs):
            raise PlanError(f"agg {self.name!r}: output names repeat: {outputs}")
        for a in self.aggs:
            check_column_name(a.output)
            if a.output in self.group_by:
                raise PlanError(f"agg {self.name!r}: output {a.output!r} is also a group_by column")
            if a.function not in AGG_FUNCTIONS:
                raise PlanError(
                    f"agg {self.name!r}: unknown function {a.function!r}; use one of {AGG_FUNCTIONS}"
                )
            if a.column is None and a.function != "count":
                raise PlanError(f"agg {self.name!r}: {a.function} needs a column")
            if a.column is not None:
                self._check_columns((a.column,), f"{a.function}()")

    @property
    def reads(self) -> tuple[str, ...]:
        return (*self.group_by, *(a.column for a in self.aggs if a.column))

    @property
    def schema(self) -> Columns:
        types = dict(self.parent.schema)
        added: list[tuple[str, Any]] = []
        for a in self.aggs:
            t = int if a.function == "count" else float if a.function == "avg" else types[a.column]  # type: ignore[index]
            added.append((a.output, t))
        return self._grouped(tuple(added))

    def describe(self) -> str:
        by = f" by {list(self.group_by)}" if self.group_by else ""
        return f"Aggregate({', '.join(a.describe() for a in self.aggs)}{by}, all partitions)"


@dataclass(frozen=True)
class SemanticAggregate(GlobalNode):
    """A model reads all records (per group) and answers ``instruction`` with ``output`` fields.

    Inputs larger than the model's context are reduced hierarchically: partial answers over
    context-sized groups of records, then an answer over the partial answers.
    """

    kind: ClassVar[str] = "sem_agg"
    instruction: str = ""
    output: type[BaseModel] | None = None
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        self._check_group_by()
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise PlanError(f"sem_agg {self.name!r} needs a non-empty instruction")
        if self.output is None:
            raise PlanError(f"sem_agg {self.name!r} needs output fields")
        if not self.depends_on and self.parent.described:
            object.__setattr__(self, "depends_on", default_depends_on(self.parent.columns))
        self._check_columns(self.depends_on, "depends_on")
        clash = [f for f in self.output.model_fields if f in self.group_by]
        if clash:
            raise PlanError(f"sem_agg {self.name!r}: output field(s) {clash} are group_by columns")

    @property
    def reads(self) -> tuple[str, ...]:
        return (*self.group_by, *self.depends_on)

    @property
    def schema(self) -> Columns:
        assert self.output is not None
        return self._grouped(tuple((k, f.annotation) for k, f in self.output.model_fields.items()))

    def describe(self) -> str:
        assert self.output is not None
        fields = ", ".join(f"{n}: {t}" for n, t, _ in describe_fields(self.output))
        by = f" by {list(self.group_by)}" if self.group_by else ""
        return f"SemanticAggregate({self.instruction!r} -> [{fields}]{by}, all partitions)"


@dataclass(frozen=True)
class SemanticTopK(GlobalNode):
    """The ``k`` records that best match ``criterion`` over every partition: embedding search
    picks ``candidates`` records, a model rates each against the criterion, the best k stay.

    Adds ``similarity`` (cosine), ``relevance`` (the model's 0-10 rating) and ``rank`` (1 = best).
    """

    kind: ClassVar[str] = "sem_topk"
    criterion: str = ""
    k: int = 10
    candidates: int = 0
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        if self.group_by:
            raise PlanError(
                f"sem_topk {self.name!r}: grouping is not supported; filter per group first"
            )
        if not isinstance(self.criterion, str) or not self.criterion.strip():
            raise PlanError(f"sem_topk {self.name!r} needs a non-empty criterion")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise PlanError(f"sem_topk {self.name!r}: k must be a positive integer")
        if not self.candidates:
            object.__setattr__(self, "candidates", 3 * self.k)
        if self.candidates < self.k:
            raise PlanError(f"sem_topk {self.name!r}: candidates ({self.candidates}) must be >= k")
        if not self.parent.described:
            return  # the rest when the table's columns are known
        if not self.depends_on:
            object.__setattr__(self, "depends_on", default_depends_on(self.parent.columns))
        self._check_columns(self.depends_on, "depends_on")
        clash = [c for c in ("similarity", "relevance", "rank") if c in self.parent.columns]
        if clash:
            raise PlanError(f"sem_topk {self.name!r}: column(s) {clash} already exist upstream")

    @property
    def reads(self) -> tuple[str, ...]:
        return self.depends_on

    @property
    def adds(self) -> tuple[str, ...]:
        return ("similarity", "relevance", "rank")

    @property
    def schema(self) -> Columns:
        body = tuple((c, t) for c, t in self.parent.schema if c != ERROR)
        return (*body, ("similarity", float), ("relevance", int), ("rank", int), (ERROR, str))

    def describe(self) -> str:
        return (
            f"SemanticTopK({self.criterion!r}, k={self.k}, embedding search over {self.candidates} "
            f"candidates + model rerank, all partitions)"
        )
