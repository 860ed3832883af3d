"""Logical plan: immutable nodes, each checked when it is built.

A node knows its parent and the columns it outputs, so a wrong column name fails at
declaration time, before any model call.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from pz_dagster.errors import PlanError
from pz_dagster.query.schema import ERROR, RECORD_ID, check_column_name, describe_fields

SOURCE_COLUMNS = (RECORD_ID, "filename", "contents", ERROR)


@dataclass(frozen=True)
class PlanNode:
    """Base of every logical node. ``name`` becomes the Dagster asset name."""

    kind: ClassVar[str] = "node"
    name: str

    @property
    def parent(self) -> PlanNode | None:
        return None

    @property
    def columns(self) -> tuple[str, ...]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def lineage(self) -> list[PlanNode]:
        """Nodes from the source down to this one."""
        chain: list[PlanNode] = []
        node: PlanNode | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        return chain[::-1]

    def _check_name(self) -> None:
        try:
            check_column_name(self.name)
        except PlanError:
            raise PlanError(
                f"invalid operator name {self.name!r}: it becomes a Dagster asset name, so use "
                "letters, digits and underscores"
            ) from None


@dataclass(frozen=True)
class DirectorySource(PlanNode):
    """Text-like files of a folder; document batches of it become Dagster partitions."""

    kind: ClassVar[str] = "source"
    path: str = ""
    batch_size: int = 25

    def __post_init__(self) -> None:
        self._check_name()
        if not self.path:
            raise PlanError("a directory source needs a path")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise PlanError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    @property
    def columns(self) -> tuple[str, ...]:
        return SOURCE_COLUMNS

    def describe(self) -> str:
        return f"DirectorySource(path={Path(self.path).as_posix()!r}, batch_size={self.batch_size})"


@dataclass(frozen=True)
class UnaryNode(PlanNode):
    input: PlanNode | None = None

    @property
    def parent(self) -> PlanNode:
        assert self.input is not None
        return self.input

    @property
    def columns(self) -> tuple[str, ...]:
        return self.parent.columns

    def _check_parent(self) -> None:
        if not isinstance(self.input, PlanNode):
            raise PlanError(f"{type(self).__name__} {self.name!r} needs an input node")
        self._check_name()

    def _check_columns(self, cols: tuple[str, ...], what: str) -> None:
        unknown = [c for c in cols if c not in self.parent.columns]
        if unknown:
            raise PlanError(
                f"{type(self).__name__} {self.name!r}: unknown column(s) {unknown} in {what}; "
                f"available columns are {list(self.parent.columns)}"
            )


def _default_depends_on(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in columns if c not in (RECORD_ID, ERROR))


@dataclass(frozen=True)
class SemanticFilter(UnaryNode):
    """Keep the records for which a natural-language predicate holds."""

    kind: ClassVar[str] = "sem_filter"
    predicate: str = ""
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        if not isinstance(self.predicate, str) or not self.predicate.strip():
            raise PlanError(f"sem_filter {self.name!r} needs a non-empty predicate")
        if not self.depends_on:
            object.__setattr__(self, "depends_on", _default_depends_on(self.parent.columns))
        self._check_columns(self.depends_on, "depends_on")

    def describe(self) -> str:
        return f"SemanticFilter({self.predicate!r}, depends_on={list(self.depends_on)})"


@dataclass(frozen=True)
class SemanticMap(UnaryNode):
    """Add columns computed by a model from the record (one output per input)."""

    kind: ClassVar[str] = "sem_map"
    output: type[BaseModel] | None = None
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        if self.output is None:
            raise PlanError(f"sem_map {self.name!r} needs output fields")
        if not self.depends_on:
            object.__setattr__(self, "depends_on", _default_depends_on(self.parent.columns))
        self._check_columns(self.depends_on, "depends_on")
        clash = [c for c in self.output_fields if c in self.parent.columns]
        if clash:
            raise PlanError(
                f"sem_map {self.name!r}: output field(s) {clash} already exist upstream; rename them"
            )

    @property
    def output_fields(self) -> tuple[str, ...]:
        assert self.output is not None
        return tuple(self.output.model_fields)

    @property
    def columns(self) -> tuple[str, ...]:
        cols = [c for c in self.parent.columns if c != ERROR]
        return (*cols, *self.output_fields, ERROR)

    def describe(self) -> str:
        assert self.output is not None
        fields = ", ".join(f"{n}: {t}" for n, t, _ in describe_fields(self.output))
        return f"SemanticMap(fields=[{fields}], depends_on={list(self.depends_on)})"


def callable_fingerprint(fn: Callable[..., Any]) -> str:
    """A stable identity for a Python callable: its qualified name and source text."""
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = repr(fn)
    name = getattr(fn, "__qualname__", type(fn).__name__)
    return f"{name}:{hashlib.sha256(src.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Filter(UnaryNode):
    """Keep the records for which a Python predicate on the record dict returns True."""

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

    def describe(self) -> str:
        deps = f", depends_on={list(self.depends_on)}" if self.depends_on else ""
        return f"Filter({self.fingerprint.split(':')[0]}{deps})"


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
    def columns(self) -> tuple[str, ...]:
        wanted = [c for c in self.keep if c not in (RECORD_ID, ERROR)]
        return (RECORD_ID, *dict.fromkeys(wanted), ERROR)

    def describe(self) -> str:
        return f"Project({list(self.keep)})"


@dataclass(frozen=True)
class Limit(UnaryNode):
    """The first ``n`` records of each partition (in record order)."""

    kind: ClassVar[str] = "limit"
    n: int = 0

    def __post_init__(self) -> None:
        self._check_parent()
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise PlanError(f"limit {self.name!r} needs a non-negative integer, got {self.n!r}")

    def describe(self) -> str:
        return f"Limit({self.n}, per partition)"


def explain(node: PlanNode) -> str:
    """A printable view of the plan, source first, one operator per line."""
    lines = []
    for depth, n in enumerate(node.lineage()):
        prefix = "  " * depth + ("└─ " if depth else "")
        lines.append(f"{prefix}{n.name}: {n.describe()}")
        lines.append(f"{'  ' * depth}{'   ' if depth else ''}   columns: {', '.join(n.columns)}")
    return "\n".join(lines)


def column_types(node: PlanNode) -> list[tuple[str, Any]]:
    """(column, Python type) of the node's output: source columns are text, semantic map
    columns carry their declared types."""
    types: dict[str, Any] = dict.fromkeys(SOURCE_COLUMNS, str)
    for n in node.lineage():
        if isinstance(n, SemanticMap) and n.output is not None:
            types.update({k: f.annotation for k, f in n.output.model_fields.items()})
    return [(c, types.get(c, str)) for c in node.columns]
