"""What each output column of a plan node holds and where it comes from: the descriptions a
column schema shows (every declared field's ``desc``, and words for the columns pz-dagster
adds itself), and column lineage (a passed-through column comes from the same column of the
input; a column an operator adds, from the columns it reads).

>>> from pz_dagster import Dataset
>>> ds = Dataset.from_directory("emails").sem_map(
...     [{"name": "sender", "type": "str", "desc": "The sender's address"}], depends_on="contents")
>>> column_descriptions(ds.node)["sender"]
"The sender's address"
>>> column_sources(ds.node)["sender"], column_sources(ds.node)["filename"]
([('documents', 'contents')], [('documents', 'filename')])
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from pz_dagster.query.aggregate import Aggregate, GlobalNode, SemanticAggregate, SemanticTopK
from pz_dagster.query.join import SemanticJoin, TableBatchSource, TableSource
from pz_dagster.query.nodes import PROVENANCE, DirectorySource, PlanNode, UnaryNode
from pz_dagster.query.relational import Map
from pz_dagster.query.schema import ERROR, RECORD_ID, describe_fields
from pz_dagster.query.semantic import (
    PARENT_ID,
    SemanticClassify,
    SemanticFlatMap,
    SemanticMap,
    SemanticNode,
)

ERROR_DESCRIPTION = (
    "Why this record could not be read or processed; empty when it was. Such a record is "
    "passed on, never dropped silently."
)
DOCUMENT_COLUMNS = {
    RECORD_ID: "The record's id: the document's path in the folder (a row of a CSV file adds "
    "`#row3`, a line of a JSONL file `#line3`, a page `#page3`, a section `#section3`).",
    "filename": "The document's path, relative to the folder.",
    "contents": "The document's text (extracted from HTML, PDF, DOCX and PPTX files).",
    PROVENANCE: "Where the text comes from, as JSON: the file, the unit (document, page, "
    "section, row, line), its pages (first and last, with the offset where each starts), its "
    "character offsets in the whole document's text and the document's record_id for a page "
    "or section.",
    ERROR: ERROR_DESCRIPTION,
}
TOPK_COLUMNS = {
    "similarity": "Cosine similarity of the record's embedding to the criterion's.",
    "relevance": "The model's rating of the record against the criterion, 0 (none) to 10.",
    "rank": "The record's place among the best matches: 1 is the best.",
}

Describer = Callable[[PlanNode], dict[str, str]]


def _field_descriptions(model: type[BaseModel] | None) -> dict[str, str]:
    if model is None:
        return {}
    return {name: desc for name, _, desc in describe_fields(model) if desc}


def _table(node: PlanNode) -> dict[str, str]:
    assert isinstance(node, TableSource | TableBatchSource)
    where = f"the DuckDB table {node.sql}" if node.database else f"table {node.name}"
    out = {c: f"Column {c} of {where}." for c in node.columns}
    if isinstance(node, TableBatchSource):
        out[RECORD_ID] = f"The row's id: its {node.id_column} column."
    else:
        out[RECORD_ID] = (
            f"The row's id: its own record_id column, else `{node.name}#` and the row number."
        )
    return out | {ERROR: ERROR_DESCRIPTION}


def _classify(node: PlanNode) -> dict[str, str]:
    assert isinstance(node, SemanticClassify)
    labels = ", ".join(node.classes)
    return {node.output: f"One of {labels}: the model's answer to {node.instruction!r}"}


def _flat_map(node: PlanNode) -> dict[str, str]:
    assert isinstance(node, SemanticFlatMap)
    return _field_descriptions(node.output) | {
        RECORD_ID: "The parent record's id with the item's number appended (`#1`, `#2`...).",
        PARENT_ID: "The record_id of the record this item was found in.",
    }


def _aggregate(node: PlanNode) -> dict[str, str]:
    assert isinstance(node, GlobalNode)
    per = f" per {', '.join(node.group_by)}" if node.group_by else ""
    if node.group_by:
        out = {RECORD_ID: "The group's id: `group:` and its values as a JSON list."}
    else:
        out = {RECORD_ID: "The id of the one record: `all`."}
    if isinstance(node, Aggregate):
        for a in node.aggs:
            out[a.output] = f"{a.function}({a.column or '*'}) over every batch{per}."
    if isinstance(node, SemanticAggregate):
        out |= _field_descriptions(node.output)
    return out


def _join(node: PlanNode) -> dict[str, str]:
    assert isinstance(node, SemanticJoin) and node.right is not None
    right = column_descriptions(node.right)
    return {
        node.right_name(c): f"From {node.right.name}: {right[c]}"
        for c in node.right.columns
        if c != ERROR
    }


def _sem_map(node: PlanNode) -> dict[str, str]:
    assert isinstance(node, SemanticMap)
    out = _field_descriptions(node.output)
    for f in node.evidence:
        out[f"{f}_evidence"] = f"The words of the document the value of {f} rests on, verbatim."
        out[f"{f}_evidence_at"] = (
            f"Where the document holds the evidence of {f} (JSON: chars, pages, file, match); "
            "null when it does not (ungrounded)."
        )
    return out


def _map(node: PlanNode) -> dict[str, str]:
    assert isinstance(node, Map)
    fn = getattr(node.fn, "__name__", type(node.fn).__name__)
    return {c: f"Computed by the Python function {fn}." for c in node.adds}


_ADDED: dict[type, Describer] = {
    DirectorySource: lambda node: dict(DOCUMENT_COLUMNS),
    TableSource: _table,
    TableBatchSource: _table,
    SemanticMap: _sem_map,
    SemanticClassify: _classify,
    SemanticFlatMap: _flat_map,
    SemanticTopK: lambda node: dict(TOPK_COLUMNS),
    Aggregate: _aggregate,
    SemanticAggregate: _aggregate,
    SemanticJoin: _join,
    Map: _map,
}


def column_descriptions(node: PlanNode) -> dict[str, str]:
    """What each output column of ``node`` holds: the description its declaration gave, else
    the one of the same column upstream, else a sentence naming the operator that adds it."""
    own = _ADDED.get(type(node), lambda n: {})(node)
    above = column_descriptions(node.parent) if isinstance(node, UnaryNode) else {}
    fallback = f"Added by {node.kind} {node.name}."
    return {c: own.get(c) or above.get(c) or fallback for c in node.columns}


ColumnSources = dict[str, list[tuple[str, str]]]  # column -> [(upstream node name, column)]


def _reads(node: UnaryNode) -> list[str]:
    """The input columns a column the node adds is computed from."""
    if isinstance(node, SemanticNode | SemanticAggregate | SemanticTopK):
        return list(node.depends_on)
    reads = node.reads
    if reads is None:  # an opaque Python function may read any column
        return [c for c in node.parent.columns if c != ERROR]
    return list(reads)


def column_sources(node: PlanNode) -> ColumnSources:
    """For each output column of ``node``, the (node, column) pairs upstream it is computed
    from; a source's columns come from no node, so a source has none."""
    if not isinstance(node, UnaryNode):
        return {}
    parent = node.parent
    added = set(node.adds)
    out: ColumnSources = {}
    for c in node.columns:
        if c in parent.columns and c not in added:
            out[c] = [(parent.name, c)]
        else:
            out[c] = [(parent.name, r) for r in _reads(node)]
    if isinstance(node, SemanticJoin) and node.right is not None:
        for c in node.right.columns:
            if c != ERROR:
                out[node.right_name(c)] = [(node.right.name, c)]
    if isinstance(node, GlobalNode):
        out[RECORD_ID] = [(parent.name, c) for c in node.group_by]
    if isinstance(node, Aggregate):
        for a in node.aggs:
            out[a.output] = [(parent.name, a.column or RECORD_ID)]
    if isinstance(node, SemanticFlatMap):
        out[PARENT_ID] = [(parent.name, RECORD_ID)]
    return {c: deps for c, deps in out.items() if deps}
