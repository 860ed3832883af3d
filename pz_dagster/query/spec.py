"""A query as data (YAML, JSON, a dict): a source folder and operator entries, in order.

Each operator entry names a ``Dataset`` method (``type``) and its arguments, with the DSL's own
parameter names; ``dataset_from_spec`` calls those methods in order, so a query declared as data
and the same query declared in Python give the same plan. The Dagster Component
(``pz_dagster.orchestration.component``) reads its YAML into these models.

>>> spec = QuerySpec.model_validate({
...     "name": "enron",
...     "source": {"path": "emails", "batch_size": 10},
...     "operators": [
...         {"type": "sem_filter", "predicate": "The email mentions Raptor", "name": "raptor"},
...         {"type": "limit", "n": 5},
...     ],
... })
>>> [n.name for n in dataset_from_spec(spec).node.lineage()]
['documents', 'raptor', 'limit_1']
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pz_dagster.errors import PlanError, PzError
from pz_dagster.query.aggregate import AGG_FUNCTIONS
from pz_dagster.query.dataset import Dataset
from pz_dagster.query.declaration import Declaration
from pz_dagster.query.schema import TYPE_NAMES

Columns = str | list[str] | None
FieldType = Literal[tuple(TYPE_NAMES)]  # type: ignore[valid-type]
AggFunction = Literal[AGG_FUNCTIONS]  # type: ignore[valid-type]
CALLABLE_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class Spec(BaseModel):
    """Base of the spec models: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class FieldDecl(Spec):
    """One output column of a semantic operator."""

    name: str = Field(description="Column name (letters, digits, underscores).")
    type: FieldType = Field(default="str", description="Column type.")
    desc: str = Field(description="What the model should put in the column.")


class _Op(Spec):
    """An operator entry: ``type`` is the Dataset method, the other keys its arguments."""

    name: str | None = Field(default=None, description="Asset name; default <type>_<n>.")

    def apply(self, ds: Dataset) -> Dataset:
        return getattr(ds, self.type)(**self.model_dump(exclude={"type"}))  # type: ignore[attr-defined]


class _ReadsOp(_Op):
    depends_on: Columns = Field(default=None, description="Columns read; default all.")


class SemFilterOp(_ReadsOp):
    type: Literal["sem_filter"]
    predicate: str = Field(description="Keep records for which this holds (plain language).")
    target: dict[str, float] | None = Field(
        default=None,
        description="A guarantee, e.g. {recall: 0.9, delta: 0.05} (also precision): the filter "
        "runs as a certified cascade whose thresholds are certified on oracle labels.",
    )
    label_budget: int | None = Field(
        default=None, description="Oracle labels per batch for certifying the target (200)."
    )


class SemMapOp(_ReadsOp):
    type: Literal["sem_map", "sem_add_columns"]
    fields: list[FieldDecl] = Field(description="Columns a model adds: [{name, type, desc}].")
    evidence: bool | list[str] = Field(
        default=False,
        description="Fields (true: all) whose answer comes with the verbatim quote it rests on "
        "(<field>_evidence) and its location in the document (<field>_evidence_at).",
    )


class SemClassifyOp(_ReadsOp):
    type: Literal["sem_classify"]
    instruction: str = Field(description="What to classify, e.g. 'Who wrote the email?'.")
    classes: list[str] = Field(description="At least two distinct labels.")
    output: str = Field(default="label", description="Column receiving the label.")


class SemFlatMapOp(_ReadsOp):
    type: Literal["sem_flat_map"]
    fields: list[FieldDecl] = Field(description="Columns of each item: [{name, type, desc}].")
    max_items: int = Field(default=20, description="Most items kept per record.")


class SemTopKOp(_ReadsOp):
    type: Literal["sem_topk"]
    criterion: str = Field(description="What a good match is (over every partition).")
    k: int = Field(default=10, description="Records kept.")
    candidates: int | None = Field(default=None, description="Reranked by the model; default 3k.")


class _GroupedOp(_Op):
    group_by: list[str] = Field(default_factory=list, description="Group columns; default none.")


class SemAggOp(_GroupedOp):
    type: Literal["sem_agg"]
    instruction: str = Field(description="The question a model answers over all records.")
    fields: list[FieldDecl] = Field(description="Columns of the answer: [{name, type, desc}].")
    depends_on: Columns = Field(default=None, description="Columns read; default all.")

    def apply(self, ds: Dataset) -> Dataset:
        kw = self.model_dump(exclude={"type", "group_by"})
        return ds.groupby(*self.group_by).sem_agg(**kw)


class AggregateDecl(Spec):
    function: AggFunction = Field(description="count, sum, avg, min or max.")
    column: str | None = Field(default=None, description="Input column; count may omit it.")


class AggOp(_GroupedOp):
    type: Literal["agg"]
    aggregates: dict[str, AggregateDecl] = Field(description="Output column: {function, column}.")

    def apply(self, ds: Dataset) -> Dataset:
        aggs = {out: (a.function, a.column) for out, a in self.aggregates.items()}
        return ds.groupby(*self.group_by).agg(name=self.name, **aggs)


class FilterOp(_ReadsOp):
    type: Literal["filter"]
    predicate: str = Field(
        description="A Python function record -> bool, as 'package.module:function'.",
        json_schema_extra={"pattern": CALLABLE_PATTERN},
    )

    def apply(self, ds: Dataset) -> Dataset:
        module, _, attr = self.predicate.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise PlanError(f"filter: cannot import {self.predicate!r} ({exc})") from None
        return ds.filter(fn, depends_on=self.depends_on, name=self.name)


class ProjectOp(_Op):
    type: Literal["project"]
    cols: list[str] = Field(description="Columns kept (record_id and error always are).")


class LimitOp(_Op):
    type: Literal["limit"]
    n: int = Field(description="Records kept per partition.")


class SortOp(_Op):
    type: Literal["sort"]
    by: str | list[str] = Field(description="Sort columns (per partition).")
    descending: bool = False


class DistinctOp(_Op):
    type: Literal["distinct"]
    # The DSL's `on`; YAML 1.1 reads the key `on` as the boolean true.
    cols: str | list[str] = Field(
        description="Keep the first record of each value (per partition)."
    )

    def apply(self, ds: Dataset) -> Dataset:
        return ds.distinct(self.cols, name=self.name)


OperatorSpec = Annotated[
    SemFilterOp
    | SemMapOp
    | SemClassifyOp
    | SemFlatMapOp
    | SemTopKOp
    | SemAggOp
    | AggOp
    | FilterOp
    | ProjectOp
    | LimitOp
    | SortOp
    | DistinctOp,
    Field(discriminator="type"),
]


class SourceSpec(Spec):
    path: str = Field(description="Folder of documents, relative to the spec's file or absolute.")
    batch_size: int = Field(default=25, description="Documents per partition.")
    name: str = Field(default="documents", description="Asset name of the source.")
    unit: Literal["document", "page", "section"] = Field(
        default="document",
        description="A record per document, per page (PDF, PPTX) or per section (headings of "
        "DOCX, HTML, Markdown).",
    )


def resolve_path(path: str, base_dir: Path | None) -> str:
    """``path`` as is when absolute (or without a base), else relative to ``base_dir``."""
    p = Path(path).expanduser()
    return str(p if p.is_absolute() or base_dir is None else (base_dir / p).resolve())


class QuerySpec(Spec):
    """A query: a name, a source folder and its operators, in order. The DSL's declaration
    checks (columns, names, classes) run on validation, with the DSL's messages."""

    name: str = Field(description="Query name: prefix of its asset keys, job and sensor.")
    source: SourceSpec = Field(description="Folder of documents; batches become partitions.")
    operators: list[OperatorSpec] = Field(
        default_factory=list, description="Operators applied in order, each a Dagster asset."
    )

    @model_validator(mode="after")
    def _plan_is_valid(self) -> QuerySpec:
        try:
            dataset_from_spec(self)
        except PzError as exc:
            raise ValueError(str(exc)) from None
        return self


@dataclass(frozen=True)
class SpecLines:
    """Where a spec's source and each of its operators (in order) are written in its file."""

    source: Declaration | None = None
    operators: tuple[Declaration | None, ...] = ()


def _declared(ds: Dataset, at: Declaration | None) -> Dataset:
    # The DSL noted its caller: this module's caller (pydantic, Dagster), not the spec's file.
    return Dataset(replace(ds.node, declared_at=at))


def dataset_from_spec(
    spec: QuerySpec, base_dir: Path | None = None, lines: SpecLines | None = None
) -> Dataset:
    """The Dataset the Python DSL builds for ``spec``; a relative source path is taken
    relative to ``base_dir`` (e.g. the folder of the YAML file) when one is given. ``lines``
    says where each node was declared (the nodes name no place without it)."""
    lines = lines or SpecLines()
    src = spec.source
    ds = Dataset.from_directory(
        resolve_path(src.path, base_dir), name=src.name, batch_size=src.batch_size, unit=src.unit
    )
    ds = _declared(ds, lines.source)
    for i, op in enumerate(spec.operators):
        at = lines.operators[i] if i < len(lines.operators) else None
        ds = _declared(op.apply(ds), at)
    return ds
