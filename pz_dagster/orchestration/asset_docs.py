"""What an asset shows in the Dagster UI before it ever runs: a description in prose (what the
operator keeps or adds, which columns it reads, who chooses its model), and definition
metadata: the column schema with each column's description, column lineage, the DuckDB view
that holds its records and a code reference to where the query declared it."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, get_origin

import dagster as dg

from pz_dagster.operators import needs_model
from pz_dagster.orchestration.keys import MODEL_KEY, OPTIMIZER_KEY
from pz_dagster.orchestration.store import view_name
from pz_dagster.query import plan
from pz_dagster.query.columns import column_descriptions, column_sources
from pz_dagster.query.schema import describe_fields
from pz_dagster.tuning.planning import OPTIMIZED

OPTIMIZER_NOTE = (
    f"The optimizer (resource `{OPTIMIZER_KEY}`) chooses the model (resource `{MODEL_KEY}`) "
    "and the strategy for each batch from this asset's own history; each materialization's "
    "metadata says which it chose."
)
DEFAULT_MODEL_NOTE = (
    f"Calls the default model of the resource `{MODEL_KEY}`; the run config's `model` and "
    "`strategy` choose others."
)


def _code(names: Sequence[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "no column"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.strip().splitlines())


def _reads(node: plan.PlanNode) -> str:
    reads = node.reads
    if reads is None:
        return "Reads any column (a Python function that declares no `depends_on`)."
    return f"Reads {_code(list(dict.fromkeys(reads)))}."


def _fields_table(model: Any) -> str:
    rows = [f"| `{n}` | {t} | {d} |" for n, t, d in describe_fields(model)]
    return "\n".join(["| column | type | description |", "|---|---|---|", *rows])


def _directory(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.DirectorySource)
    return (
        f"The documents of the folder `{node.location}`, one record per document (a CSV or "
        f"JSONL file gives one per row), in batches of {node.batch_size}: each batch is a "
        "partition. A file that cannot be read is kept as a record with `error` set."
    )


def _table_batches(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.TableBatchSource)
    return (
        f"The rows of `{node.sql}` in the DuckDB file `{node.database}`, watched for new or "
        f"edited rows by `{node.id_column}`, in batches of {node.batch_size}: each batch is a "
        "partition. The file is opened read-only."
    )


def _table(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.TableSource)
    if node.database:
        return (
            f"The table `{node.sql}` of the DuckDB file `{node.database}`, read whole (read-only) "
            "each time this asset materializes."
        )
    return f"A table of {len(node.records)} records given in Python, stored whole."


def _sem_filter(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.SemanticFilter)
    return (
        "Keeps the records for which a model judges that this holds:\n\n"
        f"{_quote(node.predicate)}\n\n{_reads(node)}"
    )


def _sem_map(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.SemanticMap)
    evidence = (
        f" With evidence for {_code(node.evidence)}: the verbatim quote each value rests on "
        "and where the document holds it."
        if node.evidence
        else ""
    )
    return (
        f"Adds {_code(node.output_fields)}, extracted by a model from each record.{evidence} "
        f"{_reads(node)}\n\n{_fields_table(node.output)}"
    )


def _sem_classify(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.SemanticClassify)
    return (
        f"Puts each record in one of {_code(node.classes)} (column `{node.output}`), as a "
        f"model answers:\n\n{_quote(node.instruction)}\n\n{_reads(node)}"
    )


def _sem_flat_map(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.SemanticFlatMap)
    return (
        f"Zero or more records per record (at most {node.max_items}), each an item a model "
        f"finds in it with {_code(node.output_fields)}; an item keeps its record's columns and "
        f"id in `{plan.PARENT_ID}`. {_reads(node)}\n\n{_fields_table(node.output)}"
    )


def _sem_join(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.SemanticJoin) and node.right is not None
    return (
        f"Pairs each record with each record of `{node.right.name}` for which a model judges "
        f"that this holds:\n\n{_quote(node.predicate)}\n\nReads {_code(node.depends_on)} here "
        f"and {_code(node.right_depends_on)} of `{node.right.name}` (its columns are added; "
        "a name this side has already gets `right_`)."
    )


def _sem_topk(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.SemanticTopK)
    return (
        f"The {node.k} records over every batch that best match:\n\n{_quote(node.criterion)}\n\n"
        f"An embedding search picks {node.candidates} candidates, a model rates each 0-10 and "
        f"the best {node.k} stay, with `similarity`, `relevance` and `rank`. {_reads(node)}"
    )


def _per(node: plan.GlobalNode) -> str:
    return f" per {_code(node.group_by)}" if node.group_by else ""


def _sem_agg(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.SemanticAggregate)
    return (
        f"A model answers over the records of every batch{_per(node)}:\n\n"
        f"{_quote(node.instruction)}\n\n{_reads(node)}\n\n{_fields_table(node.output)}"
    )


def _aggregate(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.Aggregate)
    aggs = ", ".join(f"`{a.describe()}`" for a in node.aggs)
    return f"{aggs} over the records of every batch{_per(node)} (records with an error left out)."


def _function_name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _python_filter(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.Filter)
    fn = _function_name(node.predicate)
    return f"Keeps the records for which the Python function `{fn}` returns true. {_reads(node)}"


def _python_map(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.Map)
    fn = _function_name(node.fn)
    return f"Adds {_code(node.adds)}, computed by the Python function `{fn}`. {_reads(node)}"


def _project(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.Project)
    return f"Keeps only the columns {_code(node.keep)} (and `record_id`, `error`)."


def _limit(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.Limit)
    return f"The first {node.n} records of each batch."


def _sort(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.Sort)
    order = "descending" if node.descending else "ascending"
    return f"The records of each batch ordered by {_code(node.by)}, {order} (empty values last)."


def _distinct(node: plan.PlanNode) -> str:
    assert isinstance(node, plan.Distinct)
    return f"The first record of each distinct {_code(node.on)} in each batch."


_LEADS: dict[type, Callable[[plan.PlanNode], str]] = {
    plan.DirectorySource: _directory,
    plan.TableBatchSource: _table_batches,
    plan.TableSource: _table,
    plan.SemanticFilter: _sem_filter,
    plan.SemanticMap: _sem_map,
    plan.SemanticClassify: _sem_classify,
    plan.SemanticFlatMap: _sem_flat_map,
    plan.SemanticJoin: _sem_join,
    plan.SemanticTopK: _sem_topk,
    plan.SemanticAggregate: _sem_agg,
    plan.Aggregate: _aggregate,
    plan.Filter: _python_filter,
    plan.Map: _python_map,
    plan.Project: _project,
    plan.Limit: _limit,
    plan.Sort: _sort,
    plan.Distinct: _distinct,
}


def _chain_note(node: plan.PlanNode, chain: Sequence[str]) -> str:
    others = [n for n in chain if n != node.name]
    stores = (
        "the records that passed every filter of the chain"
        if node.name == chain[-1]
        else "the records it kept among those it was shown"
    )
    return (
        f"Runs in one step with the adjacent filter(s) {_code(others)}: their order is chosen "
        f"for each batch from each one's cost and selectivity. It stores {stores}."
    )


def asset_description(
    node: plan.PlanNode, key: dg.AssetKey, *, filter_chain: Sequence[str] = ()
) -> str:
    """The asset's description (Markdown): what the operator does, in words, its first
    sentence able to stand alone on the asset graph; who chooses the model of a semantic
    operator (the optimizer, for those it plans); the DuckDB view of its records. ``filter_chain``: the adjacent filters it runs
    with, in declared order.

    >>> from pz_dagster import Dataset
    >>> ds = Dataset.from_directory("emails").sem_filter("The email mentions Raptor")
    >>> print(asset_description(ds.node, dg.AssetKey(["q", "sem_filter_1"])).split("\\n\\n")[1])
    > The email mentions Raptor
    """
    parts = [_LEADS[type(node)](node)]
    if filter_chain:
        parts.append(_chain_note(node, filter_chain))
    if isinstance(node, OPTIMIZED):
        parts.append(OPTIMIZER_NOTE)
    elif needs_model(node):
        parts.append(DEFAULT_MODEL_NOTE)
    parts.append(
        f"Records: the DuckDB view `{view_name(key.path)}` of the record store's catalog "
        "(`catalog.duckdb`, open it read-only)."
    )
    return "\n\n".join(parts)


def _type_name(typ: Any) -> str:
    return str(typ) if get_origin(typ) is not None else getattr(typ, "__name__", str(typ))


def column_schema(node: plan.PlanNode) -> dg.TableSchema:
    """The node's output columns with their types and descriptions."""
    described = column_descriptions(node)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, _type_name(typ), description=described[name])
            for name, typ in node.schema
        ]
    )


def column_lineage(node: plan.PlanNode, key: dg.AssetKey) -> dg.TableColumnLineage | None:
    """Each output column's upstream columns; every asset of a query shares ``key``'s prefix,
    so an upstream node's asset key is its name under that prefix. None for a source."""
    sources = column_sources(node)
    if not sources:
        return None
    prefix = key.path[:-1]
    return dg.TableColumnLineage(
        deps_by_column={
            column: [
                dg.TableColumnDep(asset_key=dg.AssetKey([*prefix, up]), column_name=up_column)
                for up, up_column in deps
            ]
            for column, deps in sources.items()
        }
    )


def lineage_metadata(node: plan.PlanNode, key: dg.AssetKey) -> dict[str, Any]:
    """Column lineage as a materialization carries it (Dagster+ draws it from there; the
    definition has it too), to merge into the materialization's metadata."""
    lineage = column_lineage(node, key)
    return {"dagster/column_lineage": lineage} if lineage is not None else {}


def code_references(node: plan.PlanNode) -> dg.CodeReferencesMetadataValue | None:
    """A link to the line that declared ``node`` (None when it names no place)."""
    at = node.declared_at
    if at is None:
        return None
    with warnings.catch_warnings():  # code references are a beta API of Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)
        reference = dg.LocalFileCodeReference(
            file_path=at.file, line_number=at.line, label=f"{node.kind} {node.name}"
        )
        return dg.CodeReferencesMetadataValue(code_references=[reference])


def definition_metadata(node: plan.PlanNode, key: dg.AssetKey) -> dict[str, Any]:
    """The asset's definition metadata under Dagster's own keys: column schema, column
    lineage, table name and, when the node knows where it was declared, a code reference to
    that line."""
    md = {
        "dagster/column_schema": column_schema(node),
        "dagster/column_lineage": column_lineage(node, key),
        "dagster/table_name": view_name(key.path),
        "dagster/code_references": code_references(node),
    }
    return {k: v for k, v in md.items() if v is not None}
