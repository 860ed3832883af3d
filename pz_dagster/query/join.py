"""Reference tables and the semantic join.

A ``TableSource`` is an unpartitioned input (a DuckDB table or query, or records given in
Python such as a DataFrame's). ``SemanticJoin`` pairs each record of a partitioned dataset with
each record of such a table for which a natural-language predicate holds.

A DuckDB table is declared here and read in ``pz_dagster.sources.tables``: declaring one opens no
connection, so its columns are not known yet (``described`` is False) and the checks of the
operators after it that need them wait. ``describe_tables`` fills the columns in (from a reader
it is given) and rebuilds the plan, which runs those checks; the compiler's caller does it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from pz_dagster.errors import PlanError
from pz_dagster.query.aggregate import GlobalNode
from pz_dagster.query.nodes import (
    BatchedSource,
    Columns,
    DirectorySource,
    PlanNode,
    UnaryNode,
    default_depends_on,
)
from pz_dagster.query.schema import ERROR, RECORD_ID, check_column_name, coerce_value


def _widest(kinds: set[type]) -> Any:
    """One column type for the Python types seen: int and float widen to float, a single simple
    type stays, anything else is text."""
    if kinds in ({int, float}, {float}):
        return float
    if len(kinds) == 1 and next(iter(kinds)) in (str, int, bool):
        return next(iter(kinds))
    return str


def _undescribed(name: str, database: str) -> PlanError:
    return PlanError(
        f"table {name!r}: its columns are read from {database} when the query is compiled "
        "(build_definitions does it; before compile_query, call "
        "pz_dagster.orchestration.describe_tables on the dataset)"
    )


@dataclass(frozen=True)
class TableBatchSource(BatchedSource):
    """Rows of a DuckDB table (or SELECT) watched for new rows: rows not seen before (by
    ``id_column``, and content) are grouped into batches, each a Dagster partition; an edited
    row becomes part of a new batch. The file is opened read-only, so the process writing the
    table keeps DuckDB's single writer lock (a tick that finds it locked tries again later).
    ``fields`` stay empty until the table is described (``with_columns``)."""

    kind: ClassVar[str] = "table_batches"
    fields: Columns = ()
    database: str = ""
    sql: str = ""
    id_column: str = ""

    def __post_init__(self) -> None:
        self._check_name()
        self._check_batch_size()
        if not self.database or not self.sql:
            raise PlanError(f"table {self.name!r}: a watched table needs a database and a table")
        if not isinstance(self.id_column, str) or not self.id_column:
            raise PlanError(f"table {self.name!r}: a watched table needs an id column")
        if not self.fields:
            return
        names = [c for c, _ in self.fields]
        if self.id_column not in names:
            raise PlanError(
                f"table {self.name!r}: id column {self.id_column!r} is not one of its columns "
                f"{[c for c in names if c not in (RECORD_ID, ERROR)]}"
            )

    @property
    def described(self) -> bool:
        return bool(self.fields)

    def with_columns(self, columns: Columns) -> TableBatchSource:
        """The same table with its columns (as the table has them, without record_id and
        error, which are pz-dagster's), checked."""
        clash = [c for c, _ in columns if c in (RECORD_ID, ERROR)]
        if clash:
            raise PlanError(f"table {self.name!r}: columns {clash} are reserved by pz-dagster")
        return replace(self, fields=((RECORD_ID, str), *columns, (ERROR, str)))

    @property
    def schema(self) -> Columns:
        if not self.fields:
            raise _undescribed(self.name, self.database)
        return self.fields

    @property
    def location(self) -> str:
        return f"{self.database} ({self.sql})"

    def describe(self) -> str:
        return (
            f"TableBatchSource(DuckDB {self.database}: {self.sql}, id={self.id_column}, "
            f"batch_size={self.batch_size})"
        )


@dataclass(frozen=True)
class TableSource(PlanNode):
    """An unpartitioned table: ``records`` given in Python, or ``sql`` (a table name or a
    SELECT) run on a DuckDB file when the asset materializes (read-only, so it never takes
    DuckDB's writer lock). A DuckDB table's ``fields`` stay empty until it is described."""

    kind: ClassVar[str] = "table"
    fields: Columns = ()
    records: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)
    database: str | None = None
    sql: str | None = None

    def __post_init__(self) -> None:
        self._check_name()
        if (self.database is None) != (self.sql is None):
            raise PlanError(f"table {self.name!r}: a DuckDB table needs both database and sql")
        if not self.fields and self.database is None:
            raise PlanError(f"table {self.name!r} has no columns")
        for c, _ in self.fields:
            if c not in (RECORD_ID, ERROR):
                check_column_name(c)

    @classmethod
    def from_records(cls, name: str, records: Sequence[dict[str, Any]]) -> TableSource:
        if not records:
            raise PlanError(f"table {name!r} has no records")
        seen: dict[str, set[type]] = {}  # column -> the types of its non-null values
        for r in records:
            for k, v in r.items():
                kinds = seen.setdefault(k, set())
                if v is not None:
                    kinds.add(type(v))
        types = {k: _widest(kinds) for k, kinds in seen.items()}
        rows = tuple(
            {
                **{k: coerce_value(r.get(k), types[k]) for k in types},
                RECORD_ID: str(r.get(RECORD_ID, f"{name}#{i}")),
                ERROR: None,
            }
            for i, r in enumerate(records, start=1)
        )
        cols = [(k, t) for k, t in types.items() if k not in (RECORD_ID, ERROR)]
        return cls(name=name, fields=((RECORD_ID, str), *cols, (ERROR, str)), records=rows)

    @property
    def described(self) -> bool:
        return bool(self.fields)

    def with_columns(self, columns: Columns) -> TableSource:
        """The same DuckDB table with its columns (a record_id column of its own is kept as
        the records' ids; an error column of its own is dropped)."""
        cols = [(c, t) for c, t in columns if c not in (RECORD_ID, ERROR)]
        return replace(self, fields=((RECORD_ID, str), *cols, (ERROR, str)))

    @property
    def schema(self) -> Columns:
        if not self.fields:
            raise _undescribed(self.name, str(self.database))
        return self.fields

    def describe(self) -> str:
        where = (
            f"DuckDB {self.database}: {self.sql}"
            if self.database
            else f"{len(self.records)} records"
        )
        return f"TableSource({where})"


@dataclass(frozen=True)
class SemanticJoin(UnaryNode):
    """Pairs of (record of the input, record of ``right``) for which ``predicate`` holds.

    The right side is a table (TableSource) or another document folder (DirectorySource), with
    per-record operators on it. Each left partition is joined with all of the right side: every
    materialized batch of a right folder. Right columns that clash with left ones get ``right_``.
    """

    kind: ClassVar[str] = "sem_join"
    right: PlanNode | None = None
    predicate: str = ""
    depends_on: tuple[str, ...] = ()
    right_depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_parent()
        if not isinstance(self.right, PlanNode):
            raise PlanError(f"sem_join {self.name!r} needs a right dataset")
        right_nodes = self.right.lineage()
        if not isinstance(right_nodes[0], TableSource | DirectorySource):
            raise PlanError(
                f"sem_join {self.name!r}: the right side must start from a table or a folder"
            )
        nested = [n.name for n in right_nodes if isinstance(n, SemanticJoin)]
        if nested:
            raise PlanError(
                f"sem_join {self.name!r}: its right side joins again ({nested}); join the "
                "datasets one after another on the left side instead"
            )
        if isinstance(right_nodes[0], DirectorySource):
            whole = [n.name for n in right_nodes if isinstance(n, GlobalNode)]
            if whole:
                raise PlanError(
                    f"sem_join {self.name!r}: the right side reads a folder batch by batch, so it "
                    f"cannot aggregate or rank over all of it ({whole}); aggregate after the join"
                )
        if not isinstance(self.predicate, str) or not self.predicate.strip():
            raise PlanError(f"sem_join {self.name!r} needs a non-empty predicate")
        if self.parent.described:
            if not self.depends_on:
                object.__setattr__(self, "depends_on", default_depends_on(self.parent.columns))
            self._check_columns(self.depends_on, "depends_on")
        if not self.right.described:
            return  # checked when the table is described
        if not self.right_depends_on:
            object.__setattr__(self, "right_depends_on", default_depends_on(self.right.columns))
        unknown = [c for c in self.right_depends_on if c not in self.right.columns]
        if unknown:
            raise PlanError(
                f"sem_join {self.name!r}: unknown right column(s) {unknown}; "
                f"available: {list(self.right.columns)}"
            )
        if self.parent.described:
            left_names = {self.right_name(c) for c, _ in self.right.schema if c not in (ERROR,)}
            if len(left_names) != len([c for c, _ in self.right.schema if c != ERROR]):
                raise PlanError(f"sem_join {self.name!r}: right column names clash after prefixing")

    @property
    def described(self) -> bool:
        assert self.right is not None
        return self.parent.described and self.right.described

    @property
    def reads(self) -> tuple[str, ...]:
        return self.depends_on

    def right_name(self, col: str) -> str:
        assert self.right is not None
        return f"right_{col}" if col in self.parent.columns else col

    @property
    def adds(self) -> tuple[str, ...]:
        assert self.right is not None
        return tuple(self.right_name(c) for c, _ in self.right.schema if c != ERROR)

    @property
    def schema(self) -> Columns:
        assert self.right is not None
        body = tuple((c, t) for c, t in self.parent.schema if c != ERROR)
        right = tuple((self.right_name(c), t) for c, t in self.right.schema if c != ERROR)
        return (*body, *right, (ERROR, str))

    def describe(self) -> str:
        assert self.right is not None
        return (
            f"SemanticJoin({self.predicate!r} with {self.right.name}, depends_on="
            f"{list(self.depends_on)} / {list(self.right_depends_on)})"
        )


TableDescriber = Callable[[TableSource | TableBatchSource], Columns]


def describe_tables(node: PlanNode, columns_of: TableDescriber) -> PlanNode:
    """The plan with every DuckDB table not yet described given its columns by ``columns_of``
    (the table's own columns, as ``pz_dagster.sources.tables.describe_table`` reads them), and
    every operator after one rebuilt, so that the checks that waited for its columns run now.
    A plan without such a table comes back as it is.

    >>> t = TableSource(name="t", database="x.duckdb", sql="t")
    >>> ds = describe_tables(t, lambda table: (("body", str),))
    >>> ds.described, ds.columns
    (True, ('record_id', 'body', 'error'))
    """
    if node.described:
        return node
    if isinstance(node, TableSource | TableBatchSource):
        return node.with_columns(columns_of(node))
    assert isinstance(node, UnaryNode), type(node).__name__
    parent = describe_tables(node.parent, columns_of)
    if isinstance(node, SemanticJoin):
        assert node.right is not None
        return replace(node, input=parent, right=describe_tables(node.right, columns_of))
    return node.with_input(parent)
