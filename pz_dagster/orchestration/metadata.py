"""Materialization metadata with fixed keys; numbers stay numbers so the UI plots them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import dagster as dg

from optimizer import PhysicalConfig
from pz_dagster.operators.base import OperatorResult, Record

PREVIEW_ROWS = 5
PREVIEW_CHARS = 60


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return text.replace("|", "\\|")


def markdown_preview(records: Sequence[Record], columns: Sequence[str]) -> str:
    if not records:
        return "_no records_"
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    rows = [
        "| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in records[:PREVIEW_ROWS]
    ]
    more = f"\n\n_{len(records) - PREVIEW_ROWS} more rows_" if len(records) > PREVIEW_ROWS else ""
    return head + "\n".join(rows) + more


def column_schema(columns: Sequence[tuple[str, Any]]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, getattr(t, "__name__", str(t))) for name, t in columns]
    )


def code_metadata(result: OperatorResult) -> dict[str, Any]:
    """What code synthesis ran: the kept functions (JSON for the next batch to reuse, and their
    source for the UI), and how many records the model answered instead."""
    functions = result.extras.get("functions")
    if functions is None:
        return {}
    blocks = []
    for field, fs in functions.items():
        if not fs:
            blocks.append(f"**{field}**: no function kept; the model answered")
        for f in fs:
            blocks.append(
                f"**{field}** (accuracy {f['accuracy']:.2f}, precision {f['precision']:.2f}, "
                f"coverage {f['coverage']:.2f}, weight {f['weight']:.2f})\n"
                f"```python\n{f['source']}\n```"
            )
    evaluated = result.stats.evaluated
    return {
        "code_functions": dg.MetadataValue.json(functions),
        "code_functions_source": dg.MetadataValue.md("\n\n".join(blocks)),
        "fallback": int(result.extras.get("fallback", 0)),
        "fallback_rate": float(result.extras.get("fallback", 0) / evaluated) if evaluated else 0.0,
        "reused_functions": bool(result.extras.get("reused_functions")),
        # records the model failed on (invalid JSON) that the functions decided instead
        "recovered_by_functions": int(result.extras.get("recovered", 0)),
        # records the model answered (sample, fallbacks) whose value the functions' vote set
        "overruled_by_functions": int(result.extras.get("overruled", 0)),
        # the one-time part (the sample the model answered, the functions it wrote) apart
        # from the recurring one (fallbacks), which is what the optimizer's history keeps
        "synthesis_sample": int(result.extras.get("sample", 0)),
        "synthesis_tokens": int(result.extras.get("synthesis_tokens", 0)),
        "fallback_tokens": int(result.extras.get("fallback_tokens", 0)),
        # candidates that did not load, raised, stalled or attempted a forbidden operation
        # (the sandbox stopped them): the first 10, so a hostile model shows in the UI
        "synthesis_problems": dg.MetadataValue.json(
            list(result.extras.get("synthesis_problems", []))
        ),
    }


def recurring_part(extras: dict[str, Any], records: int) -> tuple[int, float]:
    """Of a run over ``records`` records, the records and the share of its cost that recur
    per batch: all of them for a strategy without a one-time cost; for code synthesis, the
    records outside the sample the model answered to write the functions, and the fallback
    tokens' share of the tokens.

    >>> recurring_part({}, 10)
    (10, 1.0)
    >>> recurring_part({"sample": 8, "synthesis_tokens": 900, "fallback_tokens": 100}, 10)
    (2, 0.1)
    """
    once = float(extras.get("synthesis_tokens", 0) or 0)
    recurring = float(extras.get("fallback_tokens", 0) or 0)
    share = recurring / (once + recurring) if once + recurring else 1.0
    return max(records - int(extras.get("sample", 0) or 0), 0), share


def operator_metadata(
    operator: str,
    result: OperatorResult,
    columns: Sequence[tuple[str, Any]],
    wall_seconds: float,
    *,
    with_selectivity: bool = True,
    config: PhysicalConfig | None = None,
) -> dict[str, Any]:
    """``config``: the physical config as the optimizer names it (default: read off the result)."""
    s = result.stats
    config = config or PhysicalConfig(operator, result.model, result.strategy)
    kept = s.records_out - s.passed_through_errors - s.failures
    md: dict[str, Any] = {
        "model": result.model or "none",
        "strategy": result.strategy,
        "records_in": s.records_in,
        "records_out": s.records_out,
        "evaluated": s.evaluated,
        "failures": s.failures,
        "passed_through_errors": s.passed_through_errors,
        "truncated": s.truncated,
        "chunked": s.chunked,
        "input_tokens": s.usage.input_tokens,
        "output_tokens": s.usage.output_tokens,
        "model_calls": s.usage.calls,
        "cache_hits": s.usage.cache_hits,
        "retries": s.usage.retries,
        "dollars": float(s.usage.dollars),
        "model_seconds": float(s.usage.seconds),
        "seconds": float(wall_seconds),
        "dagster/row_count": s.records_out,
        "dagster/column_schema": column_schema(columns),
        "physical_config": dg.MetadataValue.json(json.loads(config.to_json())),
        "preview": dg.MetadataValue.md(markdown_preview(result.records, [c for c, _ in columns])),
    }
    if with_selectivity and s.evaluated:
        md["selectivity"] = float(kept / s.evaluated)
    if s.failure_examples:
        md["failure_examples"] = dg.MetadataValue.md(
            "\n".join(f"- {e}" for e in s.failure_examples)
        )
    if s.truncated_ids:
        md["truncated_records"] = dg.MetadataValue.md(
            "\n".join(f"- {r}" for r in s.truncated_ids[:20])
        )
    return md
