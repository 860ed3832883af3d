"""How good a query's stored answer is against labels it was not given, and what its plan cost.

``score_output`` compares the query's final records with a labels file (the format of
``OptimizerResource.labels_path``): a labelled record is relevant when its label has fields (or
is ``true``), and the query got it right when it kept exactly the relevant ones; for the kept
relevant records, each field the labels give is compared by exact match after the optimizer's
own normalisation (case, surrounding space and quotes do not count). ``plan_summary`` reads
each semantic operator's latest materialization per batch: the plan it ended on, the model
calls it made (sample and exploration runs included) and how many a plan of one model call
per record would have made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from optimizer.observations import QualityCounts
from optimizer.quality import ValidationSet, normalize
from pz_dagster.errors import PzError
from pz_dagster.orchestration.compiler import CompiledQuery
from pz_dagster.orchestration.optimization import latest_materialization
from pz_dagster.orchestration.store import RecordStore
from pz_dagster.query import plan
from pz_dagster.query.nodes import all_nodes
from pz_dagster.tuning.history import HistoryRecord, RunRecord, holds_history


@dataclass
class OutputScore:
    """The query's answer on the labelled records it read."""

    labelled: int  # labelled records among those the query read
    counts: QualityCounts  # kept vs relevant, over those records
    fields: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (exact, scored)
    failed: int = 0  # labelled records an operator failed on (not kept, not dropped)

    def exact_match(self, name: str) -> float | None:
        exact, scored = self.fields.get(name, (0, 0))
        return exact / scored if scored else None


@dataclass
class OperatorSummary:
    """One semantic operator over the batches it ran on."""

    name: str
    final_plan: str  # strategy:model of its latest batch
    plans: list[str]  # of each batch, in batch order
    records: int  # records it decided, over the batches
    model_calls: int  # chosen runs' and sample runs' calls
    # what the labelled batches measured of each plan tried there ("strategy:model"), the
    # chosen runs' and the sample runs' together
    judged: dict[str, QualityCounts] = field(default_factory=dict)

    @property
    def calls_saved(self) -> int:
        """Calls a plan of one model call per record would have made, minus the calls made."""
        return self.records - self.model_calls


def _rows(store: RecordStore, key: dg.AssetKey, partitions: Sequence[str]) -> list[dict]:
    rows: list[dict] = []
    for p in partitions:
        try:
            rows += store.read(key.path, p).to_pylist()
        except PzError:  # not materialized (or failed) for this batch: nothing stored
            continue
    return rows


def score_output(
    store: RecordStore, query: CompiledQuery, labels: ValidationSet, partitions: Sequence[str]
) -> OutputScore:
    """The query's stored answer on ``partitions`` against ``labels`` (see the module doc)."""
    source_key = query.asset_key(query.sources[0].node.name)
    read = {r["record_id"] for r in _rows(store, source_key, partitions)}
    labelled = sorted(r for r in read if r in labels)
    filters = {n.name for n in all_nodes(query.plan) if isinstance(n, plan.SemanticFilter)}
    kept: dict[str, dict] = {}
    failed = 0
    for row in _rows(store, query.batch_output_key, partitions):
        rid, error = row["record_id"], row.get("error")
        if rid not in labels:
            continue
        if error and error.split(":", 1)[0] in filters:
            failed += 1  # a filter could not decide it: neither kept nor dropped
            continue
        kept[rid] = row
    counts = labels.filter_counts(set(kept), labelled)
    scored_fields: dict[str, tuple[int, int]] = {}
    for rid, row in kept.items():
        expected = labels.expected.get(rid) or {}
        for name, value in expected.items():
            exact, scored = scored_fields.get(name, (0, 0))
            hit = row.get(name) is not None and normalize(row.get(name)) == normalize(value)
            scored_fields[name] = (exact + hit, scored + 1)
    return OutputScore(len(labelled), counts, scored_fields, failed)


def plan_summary(
    instance: dg.DagsterInstance, query: CompiledQuery, partitions: Sequence[str]
) -> list[OperatorSummary]:
    """Each planned operator's plans, records and model calls over ``partitions``."""
    out = []
    for key in query.batch_asset_keys:
        plans, records, calls = [], 0, 0
        judged: dict[str, QualityCounts] = {}
        for p in partitions:
            latest = latest_materialization(instance, key, p)
            mat = latest[1] if latest else None
            held = mat is not None and holds_history(mat.metadata)
            record = HistoryRecord.from_metadata(mat.metadata) if held else None  # type: ignore[union-attr]
            if record is None or record.sample_runs is None:  # not planned (a source, a join...)
                continue
            plans.append(_plan(record.run))
            records += record.run.records
            calls += record.run.model_calls + sum(s.model_calls for s in record.sample_runs)
            for run in (record.run, *record.sample_runs):
                if run.quality is not None and run.quality_source == "labels":
                    name = _plan(run)
                    judged[name] = judged.get(name, QualityCounts()) + run.quality
        if plans:
            out.append(OperatorSummary(key.path[-1], plans[-1], plans, records, calls, judged))
    return out


def _plan(run: RunRecord) -> str:
    return f"{run.config.strategy}:{run.config.model or '-'}"
