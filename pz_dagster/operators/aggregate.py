"""Aggregations over all records: relational (count/sum/avg/min/max) and semantic (a model
answers over many records, hierarchically when they exceed its context)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from pz_dagster.errors import RecordFailure
from pz_dagster.models.base import ChatModel, Usage, json_schema_for
from pz_dagster.operators.base import OperatorResult, OperatorStats, Progress, Record, ask_json
from pz_dagster.operators.map import TOKENS_PER_FIELD
from pz_dagster.operators.prompts import budget_chars, document_prompt, field_lines, render_fields
from pz_dagster.query.plan import Aggregate, GlobalNode, SemanticAggregate


def _groups(
    node: GlobalNode, records: list[Record]
) -> tuple[dict[tuple, list[Record]], list[Record]]:
    groups: dict[tuple, list[Record]] = {}
    failed = []
    for r in records:
        if r.get("error"):
            failed.append(r)
        else:
            groups.setdefault(tuple(r.get(c) for c in node.group_by), []).append(r)
    if not node.group_by and not groups:
        groups[()] = []  # an aggregate over nothing is still one row (count 0)
    return groups, failed


def _group_row(node: GlobalNode, key: tuple) -> Record:
    rid = "all" if not node.group_by else "group:" + json.dumps(list(key), default=str)
    return {"record_id": rid, **dict(zip(node.group_by, key, strict=True)), "error": None}


def _stats(records: list[Record], failed: list[Record], out: list[Record]) -> OperatorStats:
    stats = OperatorStats(
        records_in=len(records), evaluated=len(records) - len(failed), records_out=len(out)
    )
    # Records that arrived with an error cannot be aggregated; the asset's metadata counts them.
    stats.passed_through_errors = len(failed)
    stats.failure_examples = [f"{r.get('record_id')}: {r.get('error')}" for r in failed[:5]]
    return stats


def _apply(function: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if function == "count":
        return len(values)
    if not present:
        return None
    if function == "sum":
        return sum(present)
    if function == "avg":
        return sum(present) / len(present)
    return min(present) if function == "min" else max(present)


def run_aggregate(node: Aggregate, records: list[Record]) -> OperatorResult:
    groups, failed = _groups(node, records)
    out = []
    for key, rows in groups.items():
        row = _group_row(node, key)
        for a in node.aggs:
            values = [1] * len(rows) if a.column is None else [r.get(a.column) for r in rows]
            row[a.output] = _apply(a.function, values)
        out.append(row)
    return OperatorResult(out, _stats(records, failed, out), strategy="relational")


def _pack(texts: Sequence[str], budget_chars: int) -> list[list[str]]:
    """Consecutive texts grouped so that each group's total stays within the budget."""
    packs: list[list[str]] = [[]]
    size = 0
    for t in texts:
        t = t[:budget_chars]
        if packs[-1] and size + len(t) > budget_chars:
            packs.append([])
            size = 0
        packs[-1].append(t)
        size += len(t) + 8
    return packs


MAX_LEVELS = 8


def _ask(
    node: SemanticAggregate,
    texts: list[str],
    model: ChatModel,
    output: type[BaseModel],
    max_tokens: int,
    partial: bool,
) -> tuple[BaseModel, Usage]:
    what = "partial answers, each over a part of the records" if partial else "records"
    instruction = (
        f"The document above lists {what}.\nTask: {node.instruction.strip()}\n"
        f"Answer with these fields:\n{field_lines(output)}\nReply with one JSON object with exactly these keys."
    )
    joined = "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts, start=1))
    return ask_json(
        model, document_prompt(joined, instruction), output, json_schema_for(output), max_tokens
    )


def _reduce(
    node: SemanticAggregate,
    texts: list[str],
    model: ChatModel,
    output: type[BaseModel],
    max_tokens: int,
) -> tuple[BaseModel, Usage, int]:
    """Answer over ``texts``; past the context, answer over context-sized packs of them, then
    over those partial answers, and so on. Returns (answer, usage, levels)."""
    usage, partial = Usage(), False
    for level in range(1, MAX_LEVELS + 1):
        joined = "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts, start=1))
        budget = budget_chars(joined, model, max_tokens)
        packs = [texts] if budget is None else _pack(texts, budget)
        try:
            if len(packs) == 1:  # fits (a lone oversized text was cut to the budget by _pack)
                answer, spent = _ask(node, packs[0], model, output, max_tokens, partial)
                return answer, usage + spent, level
            answers = []
            for pack in packs:
                answer, spent = _ask(node, pack, model, output, max_tokens, partial)
                usage += spent
                answers.append(answer.model_dump_json())
        except RecordFailure as exc:  # keep what the earlier calls cost
            failed = exc.usage if isinstance(exc.usage, Usage) else Usage()
            raise exc.with_usage(usage + failed) from None
        texts, partial = answers, True
    raise RecordFailure(
        f"partial answers did not fit the model's context after {MAX_LEVELS} levels", usage
    )


def semantic_aggregate(
    node: SemanticAggregate,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
) -> OperatorResult:
    """One answer per group (or one overall), reduced hierarchically past the context window."""
    assert node.output is not None
    output = node.output
    max_tokens = TOKENS_PER_FIELD * len(node.output.model_fields) + 16
    groups, failed = _groups(node, records)
    out, usage, failures, levels = [], Usage(), [], 0
    unanswered: list[str] = []  # records of groups that failed for a transport reason
    if progress and groups:
        progress(0, len(groups), usage)
    for done, (key, rows) in enumerate(groups.items(), start=1):
        row = _group_row(node, key)
        texts = [render_fields(r, node.depends_on) for r in rows]
        try:
            if not texts:
                raise RecordFailure("no records to aggregate")
            answer, spent, depth = _reduce(node, texts, model, output, max_tokens)
            usage += spent
            levels = max(levels, depth)
            row.update(answer.model_dump())
        except RecordFailure as exc:
            if isinstance(exc.usage, Usage):
                usage += exc.usage
            row.update(dict.fromkeys(output.model_fields))
            row["error"] = f"{node.name}: {exc}"
            failures.append(f"{row['record_id']}: {exc}")
            if exc.transport:
                unanswered += [failures[-1]] * len(rows)
        out.append(row)
        if progress:
            progress(done, len(groups), usage)
    stats = _stats(records, failed, out)
    stats.usage, stats.failures = usage, len(failures)
    stats.failure_examples = (failures + stats.failure_examples)[:5]
    # Counted in records, like ``evaluated``: every group unanswered is every record unanswered.
    stats.transport_failures = len(unanswered)
    stats.transport_example = unanswered[0] if unanswered else None
    strategy = "direct" if levels <= 1 else f"hierarchical ({levels} levels)"
    return OperatorResult(out, stats, strategy=strategy, model=model.model_name)
