"""Base classes of the logical plan: immutable nodes, each checked when it is built.

A node knows its parent and the columns (with types) it outputs, so a wrong column name fails
at declaration time, before any model call. The one exception is a DuckDB table, whose columns
are read when the query is compiled (no connection at declaration): until then it and the nodes
after it are not ``described``, and their column checks run when the plan is rebuilt with them
(``join.describe_tables``), still before any model call.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from pz_dagster.errors import PlanError
from pz_dagster.query.declaration import Declaration
from pz_dagster.query.schema import ERROR, RECORD_ID, check_column_name

PROVENANCE = "provenance"
SOURCE_COLUMNS = (RECORD_ID, "filename", "contents", PROVENANCE, ERROR)
# What one record of a folder is (see ``pz_dagster.sources.provenance``; sources/ is not
# imported here: query/ declares, sources/ reads).
SOURCE_UNITS = ("document", "page", "section")
Columns = tuple[tuple[str, Any], ...]  # (name, Python type) pairs


@dataclass(frozen=True)
class PlanNode:
    """Base of every logical node. ``name`` becomes the Dagster asset name. ``declared_at``
    is where the user declared it (for the UI's code reference): not part of the plan, so two
    equal declarations made on different lines are equal nodes."""

    kind: ClassVar[str] = "node"
    name: str
    declared_at: Declaration | None = field(default=None, compare=False, repr=False, kw_only=True)

    @property
    def parent(self) -> PlanNode | None:
        return None

    @property
    def schema(self) -> Columns:
        """(column, type) pairs of the node's output, record_id first and error last."""
        raise NotImplementedError

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.schema)

    @property
    def described(self) -> bool:
        """Whether the node's columns are known: not above a DuckDB table whose columns are
        read only when the query is compiled."""
        return True

    @property
    def reads(self) -> tuple[str, ...] | None:
        """Columns the node reads; None when it cannot say (an opaque Python callable)."""
        return ()

    @property
    def adds(self) -> tuple[str, ...]:
        """Columns the node adds to its input's."""
        return ()

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
class BatchedSource(PlanNode):
    """A source whose new items are grouped into batches, each batch a Dagster partition."""

    batch_size: int = 25

    @property
    def location(self) -> str:
        """Where the items come from, for descriptions and messages."""
        raise NotImplementedError

    def _check_batch_size(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise PlanError(f"batch_size must be a positive integer, got {self.batch_size!r}")


@dataclass(frozen=True)
class DirectorySource(BatchedSource):
    """Documents of a folder; batches of them become Dagster partitions. ``unit``: a record
    per document, per page (PDF, PPTX) or per section (DOCX, HTML, Markdown headings)."""

    kind: ClassVar[str] = "source"
    path: str = ""
    unit: str = "document"

    def __post_init__(self) -> None:
        self._check_name()
        if not self.path:
            raise PlanError("a directory source needs a path")
        self._check_batch_size()
        if self.unit not in SOURCE_UNITS:
            raise PlanError(f"unit must be one of {', '.join(SOURCE_UNITS)}, got {self.unit!r}")

    @property
    def location(self) -> str:
        return self.path

    @property
    def schema(self) -> Columns:
        return tuple((c, str) for c in SOURCE_COLUMNS)

    def describe(self) -> str:
        # The default unit is left out: plans declared before there were units read the same.
        unit = f", unit={self.unit!r}" if self.unit != "document" else ""
        path = Path(self.path).as_posix()
        return f"DirectorySource(path={path!r}, batch_size={self.batch_size}{unit})"


@dataclass(frozen=True)
class UnaryNode(PlanNode):
    input: PlanNode | None = None

    @property
    def parent(self) -> PlanNode:
        assert self.input is not None
        return self.input

    @property
    def schema(self) -> Columns:
        return self.parent.schema

    @property
    def described(self) -> bool:
        return self.parent.described

    def with_input(self, new_input: PlanNode) -> UnaryNode:
        """The same operator over another input (re-validated), for plan rewrites."""
        return replace(self, input=new_input)

    def _check_parent(self) -> None:
        if not isinstance(self.input, PlanNode):
            raise PlanError(f"{type(self).__name__} {self.name!r} needs an input node")
        self._check_name()

    def _check_columns(self, cols: tuple[str, ...], what: str) -> None:
        if not self.parent.described:
            return  # checked when the plan is rebuilt with the table's columns
        unknown = [c for c in cols if c not in self.parent.columns]
        if unknown:
            raise PlanError(
                f"{type(self).__name__} {self.name!r}: unknown column(s) {unknown} in {what}; "
                f"available columns are {list(self.parent.columns)}"
            )

    def _check_added(self, added: Columns) -> None:
        """Fail now if ``added`` clashes with a column upstream (once the columns are known)."""
        if self.parent.described:
            self._add_columns(added)

    def _add_columns(self, added: Columns) -> Columns:
        clash = [c for c, _ in added if c in self.parent.columns]
        if clash:
            raise PlanError(
                f"{self.kind} {self.name!r}: output column(s) {clash} already exist upstream; rename them"
            )
        body = tuple((c, t) for c, t in self.parent.schema if c != ERROR)
        return (*body, *added, (ERROR, str))


def all_nodes(node: PlanNode) -> list[PlanNode]:
    """Every node of a plan: the lineage and, for joins, the right side's nodes."""
    out: list[PlanNode] = []
    for n in node.lineage():
        out.append(n)
        right = getattr(n, "right", None)
        if isinstance(right, PlanNode):
            out.extend(all_nodes(right))
    return out


def default_depends_on(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns a semantic operator reads when it is not told: all but the bookkeeping
    ones (a record's provenance is where its text comes from, not text to judge)."""
    return tuple(c for c in columns if c not in (RECORD_ID, PROVENANCE, ERROR))


def callable_fingerprint(fn: Callable[..., Any]) -> str:
    """A stable identity for a Python callable: its qualified name and source text."""
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = repr(fn)
    name = getattr(fn, "__qualname__", type(fn).__name__)
    return f"{name}:{hashlib.sha256(src.encode()).hexdigest()[:12]}"
