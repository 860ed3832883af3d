"""The metadata keys of pz-dagster's materializations, in one place: the assets write them, the
CLI, the benchmarks and the tests read them.

Numbers are grouped by a prefix (``records/``, ``usage/``, ``cost/``, ``time/``, ``quality/``,
``code/``, ``filter/``): Dagster's Plots tab draws one chart per numeric entry, sorted by key,
so a prefix keeps a group's charts together (Dagster's own ``dagster/row_count`` sorts the same
way). Display numbers are rounded; the exact values the optimizer learns from are in the one
history record entry (``HISTORY``, see ``tuning.history.HistoryRecord``).

Materializations written before these keys held ``records_in``, ``model_calls``, ...:
``metadata_value`` reads those under the new names (``LEGACY``), and ``HistoryRecord`` reads
their history.

>>> metadata_value({"model_calls": 3}, MODEL_CALLS), metadata_value({}, MODEL_CALLS, 0)
(3, 0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# -- text, JSON and Markdown: what ran, and what it produced ----------------------------------
MODEL = "model"
STRATEGY = "strategy"
PHYSICAL_CONFIG = "physical_config"
PREVIEW = "preview"
FAILURE_EXAMPLES = "failure_examples"
TRUNCATED_RECORDS = "truncated_records"
POLICY = "policy"
DECISION = "decision"
COLD_START_SAMPLE = "cold_start_sample"
HISTORY = "history/record"  # the optimizer's history record, exact values (JSON)

# -- records/: what went in and came out ------------------------------------------------------
RECORDS_IN = "records/in"
RECORDS_OUT = "records/out"
EVALUATED = "records/evaluated"
SELECTIVITY = "records/selectivity"
FAILURES = "records/failures"
PASSED_THROUGH_ERRORS = "records/passed_through_errors"
TRUNCATED = "records/truncated"
CHUNKED = "records/chunked"
CHUNKS = "records/chunks"  # chunks the chunked records were cut into
CHUNKS_READ = "records/chunks_read"  # of those, read by a model (chunk selection reads fewer)
CHUNKS_ABSTAINED = "records/chunks_abstained"  # chunks whose answer stayed invalid
ESCALATED = "records/escalated"  # a cascade's records the cheap model passed up
READ_ERRORS = "records/read_errors"  # a source's items that could not be read
STORED = "records/stored"  # a filter of a chain: what its asset stores

# -- usage/: model calls ----------------------------------------------------------------------
MODEL_CALLS = "usage/model_calls"
CACHE_HITS = "usage/cache_hits"
INPUT_TOKENS = "usage/input_tokens"
OUTPUT_TOKENS = "usage/output_tokens"
RETRIES = "usage/retries"
MODEL_MERGES = "usage/model_merges"  # fields whose chunks disagreed and the model chose

# -- cost/: dollars (a local model's: its compute at a price per hour, see DOLLARS_BASIS) ------
DOLLARS = "cost/dollars"
DOLLARS_PER_RECORD = "cost/dollars_per_record"
SAMPLE_DOLLARS = "cost/sample_dollars"  # the sample runs beside the chosen one
DOLLARS_BASIS = "cost/basis"

# -- time/: seconds ---------------------------------------------------------------------------
SECONDS = "time/seconds"  # the step's wall time
MODEL_SECONDS = "time/model_seconds"

# -- quality/: agreement with labels or the champion --------------------------------------------
QUALITY = "quality/score"
QUALITY_EVIDENCE = "quality/evidence"
QUALITY_SOURCE = "quality/source"
ESTIMATED_QUALITY = "quality/estimated"  # the optimizer's estimate when it chose
GROUNDED_SHARE = "quality/grounded_share"  # evidence quotes the document holds, of all given
UNGROUNDED = "quality/ungrounded"  # per field: ``quality/ungrounded/<field>``
UNGROUNDED_RECORDS = "ungrounded_records"
READING = "reading"  # how a map read documents past the context
LABEL_FREE = "quality/label_free"  # a filter's judges' quality estimated without labels (JSON)
GUARANTEE = "guarantee"  # a certified cascade's target, certificates, audits and oracle use (JSON)
GUARANTEE_CERTIFIED = "quality/certified"  # 1 when the batch was decided under its target
ORACLE_LABELS = "usage/oracle_labels"  # oracle labels a certified cascade took to certify, audit

# -- code/: code synthesis ----------------------------------------------------------------------
CODE_FUNCTIONS_SOURCE = "code/functions"
FALLBACK = "code/fallback"
FALLBACK_RATE = "code/fallback_rate"
REUSED_FUNCTIONS = "code/reused_functions"
RECOVERED_BY_FUNCTIONS = "code/recovered_by_functions"
OVERRULED_BY_FUNCTIONS = "code/overruled_by_functions"
SYNTHESIS_PROBLEMS = "code/synthesis_problems"
SYNTHESIS_SAMPLE = "code/synthesis_sample"
SYNTHESIS_TOKENS = "code/synthesis_tokens"
FALLBACK_TOKENS = "code/fallback_tokens"

# -- filter/: adjacent filters run as one chain --------------------------------------------------
FILTER_ORDER = "filter/order"
FILTER_CHAIN = "filter/chain"
FILTER_RANK = "filter/rank"
FILTER_RANK_BASIS = "filter/rank_basis"

# -- batch/: a source's batch ---------------------------------------------------------------------
BATCH_FILES = "batch/files"
BATCH_DIGEST = "batch/digest"

# The key each entry had before the grouping, for materializations written then.
LEGACY: dict[str, str] = {
    RECORDS_IN: "records_in",
    RECORDS_OUT: "records_out",
    EVALUATED: "evaluated",
    SELECTIVITY: "selectivity",
    FAILURES: "failures",
    PASSED_THROUGH_ERRORS: "passed_through_errors",
    TRUNCATED: "truncated",
    CHUNKED: "chunked",
    ESCALATED: "escalated",
    READ_ERRORS: "read_errors",
    STORED: "records_stored",
    MODEL_CALLS: "model_calls",
    CACHE_HITS: "cache_hits",
    INPUT_TOKENS: "input_tokens",
    OUTPUT_TOKENS: "output_tokens",
    RETRIES: "retries",
    DOLLARS: "dollars",
    SAMPLE_DOLLARS: "sample_dollars",
    DOLLARS_BASIS: "dollars_basis",
    SECONDS: "seconds",
    MODEL_SECONDS: "model_seconds",
    QUALITY: "quality",
    QUALITY_EVIDENCE: "quality_evidence",
    QUALITY_SOURCE: "quality_source",
    ESTIMATED_QUALITY: "estimated_quality",
    CODE_FUNCTIONS_SOURCE: "code_functions_source",
    FALLBACK: "fallback",
    FALLBACK_RATE: "fallback_rate",
    REUSED_FUNCTIONS: "reused_functions",
    RECOVERED_BY_FUNCTIONS: "recovered_by_functions",
    OVERRULED_BY_FUNCTIONS: "overruled_by_functions",
    SYNTHESIS_PROBLEMS: "synthesis_problems",
    SYNTHESIS_SAMPLE: "synthesis_sample",
    SYNTHESIS_TOKENS: "synthesis_tokens",
    FALLBACK_TOKENS: "fallback_tokens",
    FILTER_ORDER: "filter_order",
    FILTER_CHAIN: "filter_chain",
    FILTER_RANK: "filter_rank",
    FILTER_RANK_BASIS: "filter_rank_basis",
}


def metadata_value(md: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The plain value of one metadata entry (a Dagster ``MetadataValue`` or a plain value), read
    under its older name (``LEGACY``) in an older materialization; ``default`` when absent."""
    if key not in md:
        key = LEGACY.get(key, key)
        if key not in md:
            return default
    return getattr(md[key], "value", md[key])
