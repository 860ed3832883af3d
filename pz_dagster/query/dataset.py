"""The Dataset DSL: a thin, immutable, chainable wrapper around one logical plan node."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from optimizer.guarantees import Target
from pz_dagster.errors import PlanError
from pz_dagster.query import plan, rewrites
from pz_dagster.query.declaration import caller_declaration
from pz_dagster.query.nodes import all_nodes
from pz_dagster.query.schema import FieldSpec, output_model

FieldsArg = type[BaseModel] | Iterable[Mapping[str, Any] | FieldSpec]


def _evidence_fields(evidence: bool | str | Sequence[str], model: Any) -> tuple[str, ...]:
    """The fields ``evidence`` names: all of them for True, none for False."""
    if evidence is True:
        return tuple(model.model_fields)
    if evidence is False or evidence is None:
        return ()
    return (evidence,) if isinstance(evidence, str) else tuple(evidence)


def _as_tuple(cols: str | Sequence[str] | None) -> tuple[str, ...]:
    if cols is None:
        return ()
    if isinstance(cols, str):
        return (cols,)
    return tuple(cols)


def _fields_model(fields: FieldsArg, node_name: str, suffix: str) -> type[BaseModel]:
    """The pydantic model of an operator's declared fields, named after the operator."""
    return output_model(fields, model_name=f"{node_name.title().replace('_', '')}{suffix}")


class Dataset:
    """A declared query. Every method returns a new Dataset; nothing runs until Dagster does.

    >>> ds = (Dataset.from_directory("emails")
    ...       .sem_filter("The email discusses fraud", depends_on="contents")
    ...       .sem_add_columns([{"name": "sender", "type": "str", "desc": "sender address"}])
    ...       .project(["sender"]))
    >>> [n.name for n in ds.node.lineage()]
    ['documents', 'sem_filter_1', 'sem_map_1', 'project_1']
    """

    __slots__ = ("_node",)

    def __init__(self, node: plan.PlanNode):
        if not isinstance(node, plan.PlanNode):
            raise PlanError(f"Dataset wraps a plan node, got {type(node).__name__}")
        self._node = node

    @classmethod
    def from_directory(
        cls,
        path: str | Path,
        *,
        name: str = "documents",
        batch_size: int = 25,
        unit: str = "document",
    ) -> Dataset:
        """Documents of a folder (.txt .md .eml .html .json .jsonl .csv .pdf .docx .pptx);
        batches become partitions. ``unit``: one record per ``document`` (a CSV row, a JSONL
        line), per ``page`` of a PDF or slide of a PPTX, or per ``section`` (at the headings of
        DOCX, HTML and Markdown); formats without pages or headings give one per document.

        >>> Dataset.from_directory("reports", unit="page").node.describe()
        "DirectorySource(path='reports', batch_size=25, unit='page')"
        """
        return cls(
            plan.DirectorySource(
                declared_at=caller_declaration(),
                name=name,
                path=str(path),
                batch_size=batch_size,
                unit=unit,
            )
        )

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], *, name: str = "table") -> Dataset:
        """An unpartitioned table of records given in Python (e.g. reference data to join with)."""
        table = plan.TableSource.from_records(name, [dict(r) for r in records])
        return cls(replace(table, declared_at=caller_declaration()))

    @classmethod
    def from_pandas(cls, df: Any, *, name: str = "table") -> Dataset:
        """An unpartitioned table from a pandas DataFrame (its rows, read now)."""
        return cls.from_records(df.to_dict(orient="records"), name=name)

    @classmethod
    def from_duckdb(
        cls,
        database: str | Path,
        table_or_sql: str,
        *,
        name: str = "table",
        id_column: str | None = None,
        batch_size: int | None = None,
    ) -> Dataset:
        """A table read from a DuckDB file (read-only). Without ``batch_size``: unpartitioned,
        read whole each time it materializes (reference data to join with). With ``batch_size``
        and ``id_column``: watched, new rows grouped into batches that become partitions, like
        the files of a folder. Nothing is opened now: the table's columns are read when the
        query is compiled, and the checks that need them (a column an operator names, the id
        column) run then.

        >>> ds = Dataset.from_duckdb("tickets.duckdb", "tickets", id_column="id", batch_size=100)
        >>> ds.node.described
        False
        """
        if batch_size is None and id_column is None:
            return cls(
                plan.TableSource(
                    declared_at=caller_declaration(),
                    name=name,
                    database=str(database),
                    sql=table_or_sql,
                )
            )
        if batch_size is None or not id_column:
            raise PlanError("a watched DuckDB table needs both id_column and batch_size")
        return cls(
            plan.TableBatchSource(
                declared_at=caller_declaration(),
                name=name,
                database=str(database),
                sql=table_or_sql,
                id_column=id_column,
                batch_size=batch_size,
            )
        )

    @property
    def node(self) -> plan.PlanNode:
        return self._node

    @property
    def columns(self) -> tuple[str, ...]:
        return self._node.columns

    def _name(self, kind: str, name: str | None) -> str:
        taken = {n.name for n in all_nodes(self._node)}
        if name is not None:
            if name in taken:
                raise PlanError(f"an operator named {name!r} already exists in this query")
            return name
        i = 1 + sum(1 for n in self._node.lineage() if n.kind == kind)
        while f"{kind}_{i}" in taken:
            i += 1
        return f"{kind}_{i}"

    def sem_filter(
        self,
        predicate: str,
        *,
        depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
        target: Target | Sequence[Target] | Mapping[str, float] | None = None,
        label_budget: int | None = None,
    ) -> Dataset:
        """Keep records for which the natural-language ``predicate`` holds.

        ``target`` states a guarantee instead of leaving quality to the optimizer:
        ``Recall(0.9, delta=0.05)``, ``Precision(...)`` or both (``[Recall(..),
        Precision(..)]``; YAML: ``{recall: 0.9, delta: 0.05}``). The filter then runs as a
        certified cascade: a cheap model scores every record, and the strong model (the
        oracle) decides the records the score cannot decide within the target, on thresholds
        certified with at most ``label_budget`` oracle labels per batch (default 200)."""
        return Dataset(
            plan.SemanticFilter(
                declared_at=caller_declaration(),
                name=self._name("sem_filter", name),
                input=self._node,
                predicate=predicate,
                depends_on=_as_tuple(depends_on),
                target=() if target is None else target,  # type: ignore[arg-type]
                label_budget=label_budget,
            )
        )

    def sem_map(
        self,
        fields: FieldsArg,
        *,
        depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
        evidence: bool | str | Sequence[str] = False,
    ) -> Dataset:
        """Add the columns of ``fields`` (a pydantic model or ``[{name, type, desc}]``).

        ``evidence`` (True: every field; or some field names) also asks, per field, for the
        verbatim quote its value rests on: column ``<field>_evidence``, and
        ``<field>_evidence_at`` with where the document holds it (JSON: character offsets, pages,
        file), null when the document does not hold it (counted as ungrounded)."""
        node_name = self._name("sem_map", name)
        model = _fields_model(fields, node_name, "Output")
        return Dataset(
            plan.SemanticMap(
                declared_at=caller_declaration(),
                name=node_name,
                input=self._node,
                output=model,
                depends_on=_as_tuple(depends_on),
                evidence=_evidence_fields(evidence, model),
            )
        )

    sem_add_columns = sem_map

    def sem_classify(
        self,
        instruction: str,
        classes: Sequence[str],
        *,
        output: str = "label",
        depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Label each record with one of ``classes`` (column ``output``)."""
        if isinstance(classes, str):
            raise PlanError("classes must be a list of labels, not one string")
        return Dataset(
            plan.SemanticClassify(
                declared_at=caller_declaration(),
                name=self._name("sem_classify", name),
                input=self._node,
                output=output,
                classes=tuple(classes),
                instruction=instruction,
                depends_on=_as_tuple(depends_on),
            )
        )

    def sem_flat_map(
        self,
        fields: FieldsArg,
        *,
        depends_on: str | Sequence[str] | None = None,
        max_items: int = 20,
        name: str | None = None,
    ) -> Dataset:
        """Zero or more records per record, each with the item ``fields`` (e.g. every person named)."""
        node_name = self._name("sem_flat_map", name)
        model = _fields_model(fields, node_name, "Item")
        return Dataset(
            plan.SemanticFlatMap(
                declared_at=caller_declaration(),
                name=node_name,
                input=self._node,
                output=model,
                max_items=max_items,
                depends_on=_as_tuple(depends_on),
            )
        )

    def map(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        output: Mapping[str, Any],
        *,
        depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Add the columns of ``output`` ({name: type}) computed by ``fn(record) -> dict``."""
        if not isinstance(output, Mapping):
            raise PlanError("map output must be a mapping of new column names to types")
        return Dataset(
            plan.Map(
                declared_at=caller_declaration(),
                name=self._name("map", name),
                input=self._node,
                fn=fn,
                output=tuple(output.items()),
                depends_on=_as_tuple(depends_on),
            )
        )

    def sort(
        self, by: str | Sequence[str], *, descending: bool = False, name: str | None = None
    ) -> Dataset:
        """Order each partition's records by ``by``."""
        return Dataset(
            plan.Sort(
                declared_at=caller_declaration(),
                name=self._name("sort", name),
                input=self._node,
                by=_as_tuple(by),
                descending=descending,
            )
        )

    def distinct(self, on: str | Sequence[str], *, name: str | None = None) -> Dataset:
        """Keep the first record of each distinct value of ``on``, per partition."""
        return Dataset(
            plan.Distinct(
                declared_at=caller_declaration(),
                name=self._name("distinct", name),
                input=self._node,
                on=_as_tuple(on),
            )
        )

    def filter(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Keep records for which ``predicate(record_dict)`` is true."""
        return Dataset(
            plan.Filter(
                declared_at=caller_declaration(),
                name=self._name("filter", name),
                input=self._node,
                predicate=predicate,
                depends_on=_as_tuple(depends_on),
            )
        )

    def project(self, cols: str | Sequence[str], *, name: str | None = None) -> Dataset:
        """Keep only ``cols`` (record_id and error are always kept)."""
        return Dataset(
            plan.Project(
                declared_at=caller_declaration(),
                name=self._name("project", name),
                input=self._node,
                keep=_as_tuple(cols),
            )
        )

    def limit(self, n: int, *, name: str | None = None) -> Dataset:
        """The first ``n`` records of each partition."""
        return Dataset(
            plan.Limit(
                declared_at=caller_declaration(),
                name=self._name("limit", name),
                input=self._node,
                n=n,
            )
        )

    def optimized(self) -> Dataset:
        """The same query after the always-safe logical rewrites (see ``query.rewrites``)."""
        return Dataset(rewrites.optimize(self._node))

    def sem_join(
        self,
        right: Dataset,
        predicate: str,
        *,
        depends_on: str | Sequence[str] | None = None,
        right_depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Pairs of records (this, right) for which ``predicate`` holds; ``right`` is a table."""
        if not isinstance(right, Dataset):
            raise PlanError("sem_join needs a Dataset to join with")
        taken = {n.name for n in all_nodes(self._node)}
        clash = sorted(taken & {n.name for n in all_nodes(right.node)})
        if clash:
            raise PlanError(
                f"sem_join: operator names {clash} appear on both sides; rename one side's"
            )
        return Dataset(
            plan.SemanticJoin(
                declared_at=caller_declaration(),
                name=self._name("sem_join", name),
                input=self._node,
                right=right.node,
                predicate=predicate,
                depends_on=_as_tuple(depends_on),
                right_depends_on=_as_tuple(right_depends_on),
            )
        )

    def sem_topk(
        self,
        criterion: str,
        k: int = 10,
        *,
        candidates: int | None = None,
        depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """The k best matches of ``criterion`` over every partition (embedding search, then a
        model reranks ``candidates`` of them, default 3k)."""
        return Dataset(
            plan.SemanticTopK(
                declared_at=caller_declaration(),
                name=self._name("sem_topk", name),
                input=self._node,
                criterion=criterion,
                k=k,
                candidates=candidates or 0,
                depends_on=_as_tuple(depends_on),
            )
        )

    retrieve = sem_topk

    def agg(self, *, name: str | None = None, **aggs: tuple[str, str | None]) -> Dataset:
        """Aggregate over every partition: ``agg(n=("count", None), total=("sum", "amount"))``."""
        return self.groupby().agg(name=name, **aggs)

    def sem_agg(
        self,
        instruction: str,
        fields: FieldsArg,
        *,
        depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """A model answers ``instruction`` over all records (every partition) with ``fields``."""
        return self.groupby().sem_agg(instruction, fields, depends_on=depends_on, name=name)

    def groupby(self, *cols: str) -> GroupBy:
        """Group records by columns before ``agg`` / ``sem_agg``."""
        return GroupBy(self, tuple(cols))

    def explain(self) -> str:
        """The declared plan and, where the rewrites change it, the plan that will run."""
        declared = plan.explain(self._node)
        if not self._node.described:  # the rewrites need the columns of the DuckDB tables
            return f"plan (rewritten once the tables' columns are read, when compiled):\n{declared}"
        optimized = rewrites.optimize(self._node)
        if optimized == self._node:
            return f"plan (no rewrite applies):\n{declared}"
        return (
            f"declared plan:\n{declared}\n\noptimized plan (what runs):\n{plan.explain(optimized)}"
        )

    def __repr__(self) -> str:
        return f"Dataset(\n{self.explain()}\n)"


class GroupBy:
    """``Dataset.groupby(cols)``: the aggregations of a grouped dataset.

    >>> ds = Dataset.from_directory("emails").sem_classify("Topic?", ["fraud", "other"], output="topic")
    >>> ds.groupby("topic").agg(n=("count", None)).columns
    ('record_id', 'topic', 'n', 'error')
    """

    def __init__(self, dataset: Dataset, cols: tuple[str, ...]):
        self._ds = dataset
        self._cols = cols

    def agg(self, *, name: str | None = None, **aggs: tuple[str, str | None]) -> Dataset:
        specs = []
        for out, spec in aggs.items():
            if not isinstance(spec, tuple) or len(spec) != 2:
                raise PlanError(
                    f"aggregate {out!r} must be (function, column), e.g. ('sum', 'amount')"
                )
            specs.append(plan.AggSpec(out, spec[0], spec[1]))
        ds = self._ds
        return Dataset(
            plan.Aggregate(
                declared_at=caller_declaration(),
                name=ds._name("agg", name),
                input=ds.node,
                group_by=self._cols,
                aggs=tuple(specs),
            )
        )

    def sem_agg(
        self,
        instruction: str,
        fields: FieldsArg,
        *,
        depends_on: str | Sequence[str] | None = None,
        name: str | None = None,
    ) -> Dataset:
        ds = self._ds
        node_name = ds._name("sem_agg", name)
        model = _fields_model(fields, node_name, "Output")
        return Dataset(
            plan.SemanticAggregate(
                declared_at=caller_declaration(),
                name=node_name,
                input=ds.node,
                group_by=self._cols,
                instruction=instruction,
                output=model,
                depends_on=_as_tuple(depends_on),
            )
        )
