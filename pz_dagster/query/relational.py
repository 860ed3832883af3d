"""Relational plan nodes: Python predicates and functions, projection, limit, sort, distinct."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pz_dagster.errors import PlanError
from pz_dagster.query.nodes import Columns, UnaryNode, callable_fingerprint
from pz_dagster.query.schema import ERROR, RECORD_ID, check_column_name


@dataclass(frozen=True)
class Filter(UnaryNode):
    """Keep the records for which a Python predicate on the record dict returns True.

    ``depends_on`` names the columns the predicate reads; with it, rewrites may run the filter
    before semantic operators that add other columns.
    """

    kind: ClassVar[str] = "filter"
    predicate: Callable[[dict[str, Any]], bool] | None = field(default=None, compare=False)
    depends_on: tuple[str, ...] = ()
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self._check_parent()
        if not callable(self.predicate):
            raise PlanError(f"filter {self.name!r} needs a callable taking a record dict")
        self._check_columns(self.depends_on, "depends_on")
        object.__setattr__(self, "fingerprint", callable_fingerprint(self.predicate))

    @property
    def reads(self) -> tuple[str, ...] | None:
        return self.depends_on or None

    def describe(self) -> str:
        deps = f", depends_on={list(self.depends_on)}" if self.depends_on else ""
        return f"Filter({self.fingerprint.split(':')[0]}{deps})"


@dataclass(frozen=True)
class Map(UnaryNode):
    """Add columns computed by a Python function: ``fn(record) -> {column: value}``."""

    kind: ClassVar[str] = "map"
    fn: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, compare=False)
    output: Columns = ()
    depends_on: tuple[str, ...] = ()
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self._check_parent()
        if not callable(self.fn):
            raise PlanError(f"map {self.name!r} needs a callable returning a dict of new columns")
        if not self.output:
            raise PlanError(f"map {self.name!r} needs output columns, e.g. {{'length': int}}")
        for col, _ in self.output:
            check_column_name(col)
        self._check_columns(self.depends_on, "depends_on")
        self._check_added(self.output)
        object.__setattr__(self, "fingerprint", callable_fingerprint(self.fn))

    @property
    def reads(self) -> tuple[str, ...] | None:
        return self.depends_on or None

    @property
    def adds(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.output)

    @property
    def schema(self) -> Columns:
        return self._add_columns(self.output)

    def describe(self) -> str:
        cols = ", ".join(f"{c}: {getattr(t, '__name__', t)}" for c, t in self.output)
        return f"Map({self.fingerprint.split(':')[0]} -> [{cols}])"


@dataclass(frozen=True)
class Project(UnaryNode):
    """Keep only the named columns (record_id and error are always kept)."""

    kind: ClassVar[str] = "project"
    keep: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        if not self.keep:
            raise PlanError(f"project {self.name!r} needs at least one column")
        self._check_columns(self.keep, "project")

    @property
    def reads(self) -> tuple[str, ...]:
        return self.keep

    @property
    def schema(self) -> Columns:
        types = dict(self.parent.schema)
        wanted = [c for c in dict.fromkeys(self.keep) if c not in (RECORD_ID, ERROR)]
        return ((RECORD_ID, types[RECORD_ID]), *((c, types[c]) for c in wanted), (ERROR, str))

    def describe(self) -> str:
        return f"Project({list(self.keep)})"


@dataclass(frozen=True)
class Limit(UnaryNode):
    """The first ``n`` records of each partition (in record order; flagged records count)."""

    kind: ClassVar[str] = "limit"
    n: int = 0

    def __post_init__(self) -> None:
        self._check_parent()
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise PlanError(f"limit {self.name!r} needs a non-negative integer, got {self.n!r}")

    def describe(self) -> str:
        return f"Limit({self.n}, per partition)"


@dataclass(frozen=True)
class Sort(UnaryNode):
    """Order each partition's records by columns (nulls last)."""

    kind: ClassVar[str] = "sort"
    by: tuple[str, ...] = ()
    descending: bool = False

    def __post_init__(self) -> None:
        self._check_parent()
        if not self.by:
            raise PlanError(f"sort {self.name!r} needs at least one column")
        self._check_columns(self.by, "sort")

    @property
    def reads(self) -> tuple[str, ...]:
        return self.by

    def describe(self) -> str:
        return f"Sort({list(self.by)}{', descending' if self.descending else ''}, per partition)"


@dataclass(frozen=True)
class Distinct(UnaryNode):
    """The first record of each distinct combination of ``on`` columns, per partition."""

    kind: ClassVar[str] = "distinct"
    on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        if not self.on:
            raise PlanError(f"distinct {self.name!r} needs at least one column")
        self._check_columns(self.on, "distinct")

    @property
    def reads(self) -> tuple[str, ...]:
        return self.on

    def describe(self) -> str:
        return f"Distinct({list(self.on)}, per partition)"
