"""The history record: what one materialization of an operator tells the next batch, and an
operator's history merged over its materializations, which planning reads.

A record is written as one materialization metadata entry, with exact values
(``HistoryRecord.to_metadata``, key ``metadata_keys.HISTORY``), and read back from it
(``HistoryRecord.from_metadata``), which also reads the separate entries that materializations
written before that entry held (``_LEGACY_*``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from optimizer import Candidate, Observation, PhysicalConfig, QualityCounts
from pz_dagster.metadata_keys import HISTORY, metadata_value
from pz_dagster.models.base import Usage

logger = logging.getLogger(__name__)

CHAMPION_JUDGED = "@champion"  # suffix of proxy pairs whose truth is the champion's answer
Pairs = list[tuple[float, bool]]

# OneTimeCost's fields, as an operator result's extras name them
_ONE_TIME_FIELDS = ("sample", "synthesis_tokens", "fallback_tokens")
# Older materializations: OneTimeCost's fields and the keys of the run's one-time part
_LEGACY_ONE_TIME_KEYS = {
    "sample": "synthesis_sample",
    "synthesis_tokens": "synthesis_tokens",
    "fallback_tokens": "fallback_tokens",
}
# Older materializations: the materialized run's fields and their keys
_LEGACY_RUN_KEYS = {
    "records": "evaluated",
    "model_calls": "model_calls",
    "cache_hits": "cache_hits",
    "dollars": "dollars",
    "seconds": "model_seconds",
}
_LEGACY_KEYS = (
    "physical_config",
    *_LEGACY_RUN_KEYS.values(),
    *_LEGACY_ONE_TIME_KEYS.values(),
    "input_tokens",
    "selectivity",
    "quality_counts",
    "quality_source",
    "sample_runs",
    "proxy_pairs",
    "proxy_pairs_source",
    "cascade_pairs",
    "examples",
    "code_functions",
)


def holds_history(md: Mapping[str, Any]) -> bool:
    """Whether a materialization's metadata holds a history record (an operator's, of either
    format; a source's holds none).

    >>> holds_history({HISTORY: {}}), holds_history({"physical_config": {}}), holds_history({})
    (True, True, False)
    """
    return HISTORY in md or "physical_config" in md


class OneTimeCost(BaseModel):
    """Code synthesis's one-time part of a run: the records the model answered to write the
    functions (``sample``) and the tokens that took, apart from the fallbacks' tokens, which
    recur per batch."""

    model_config = ConfigDict(frozen=True)

    sample: int = 0
    synthesis_tokens: int = 0
    fallback_tokens: int = 0

    @classmethod
    def of(cls, extras: Mapping[str, Any]) -> OneTimeCost | None:
        """Read off an operator result's extras; None for a strategy without a one-time cost."""
        if not any(k in extras for k in _ONE_TIME_FIELDS):
            return None
        return cls(**{k: int(extras.get(k, 0) or 0) for k in _ONE_TIME_FIELDS})

    def recurring(self, records: int) -> tuple[int, float]:
        """Of a run over ``records`` records, the records and the share of its cost that recur
        per batch: the records outside the sample the model answered to write the functions,
        and the fallback tokens' share of the tokens (all of it without synthesis tokens).

        >>> OneTimeCost().recurring(10)
        (10, 1.0)
        >>> OneTimeCost(sample=8, synthesis_tokens=900, fallback_tokens=100).recurring(10)
        (2, 0.1)
        """
        once, recurring = float(self.synthesis_tokens), float(self.fallback_tokens)
        share = recurring / (once + recurring) if once + recurring else 1.0
        return max(records - self.sample, 0), share


class RunRecord(BaseModel):
    """What one candidate did on some records: the materialized run, or a run on the sample.

    ``dollars`` and ``seconds`` (model time) are what was paid. Answers from the response
    cache cost nothing now; ``observation`` counts them at the rate of the model's answers.
    """

    model_config = ConfigDict(ser_json_inf_nan="constants")

    config: PhysicalConfig
    records: int  # records it evaluated
    model_calls: int = 0
    cache_hits: int = 0
    dollars: float = 0.0
    seconds: float = 0.0
    records_out: int | None = None  # records it kept; None: no selectivity to learn from
    one_time: OneTimeCost | None = None
    quality: QualityCounts | None = None
    quality_source: str = ""  # what the quality is measured against: labels or the champion
    # answers with evidence whose quote the document holds, and those it does not: a quality
    # signal that needs no labels
    grounded: int = 0
    ungrounded: int = 0

    @classmethod
    def measured(
        cls,
        config: PhysicalConfig,
        usage: Usage,
        records: int,
        records_out: int | None,
        extras: Mapping[str, Any],
        quality: QualityCounts | None = None,
        quality_source: str = "",
    ) -> RunRecord:
        """A run's record from its usage and its result's ``extras``."""
        return cls(
            config=config,
            records=records,
            model_calls=usage.calls,
            cache_hits=usage.cache_hits,
            dollars=usage.dollars,
            seconds=usage.seconds,
            records_out=records_out,
            one_time=OneTimeCost.of(extras),
            quality=quality,
            quality_source=quality_source,
            grounded=int(extras.get("grounding", {}).get("grounded", 0)),
            ungrounded=int(extras.get("grounding", {}).get("ungrounded", 0)),
        )

    @property
    def costed(self) -> bool:
        """False when every answer came from the cache: what the run costs is unknown."""
        return self.model_calls > 0 or self.cache_hits == 0

    def observation(self, sequence: float) -> Observation:
        """The optimizer's observation of this run: its recurring records and cost, with
        cache hits counted at the rate of the model's answers."""
        calls, hits = self.model_calls, self.cache_hits
        dollars, seconds = self.dollars, self.seconds
        if calls and hits:  # answers from the cache cost nothing now but would have cost this
            dollars, seconds = dollars * (calls + hits) / calls, seconds * (calls + hits) / calls
        recurring, share = (self.one_time or OneTimeCost()).recurring(self.records)
        kept = self.records_out
        return Observation(
            Candidate.from_config(self.config),
            recurring,
            dollars=dollars * share,
            seconds=seconds * share,
            records_out=None if kept is None else round(kept * recurring / max(self.records, 1)),
            quality=self.quality,
            quality_source=self.quality_source,
            sequence=sequence,
            costed=self.costed,
        )


class HistoryRecord(BaseModel):
    """What one materialization of an operator tells the next batch: its run, the runs on its
    sample (champion, explored candidates, proxies), and what proxies, cascades, few-shot
    prompts and code synthesis learn from.

    >>> rec = HistoryRecord(run=RunRecord(config=PhysicalConfig("f", "m", "direct"), records=4))
    >>> HistoryRecord.from_metadata(rec.to_metadata()) == rec
    True
    """

    model_config = ConfigDict(ser_json_inf_nan="constants")

    run: RunRecord
    input_tokens: int = 0  # of the run's model calls: the size of the next batch's prompts
    sample_runs: list[RunRecord] | None = None  # None: an operator the optimizer does not plan
    proxy_pairs: dict[str, Pairs] = {}  # (score, truth) of the judged records, by proxy
    proxy_pairs_source: str = "labels"  # what judged them: labels, else the champion
    cascade_pairs: dict[str, Pairs] = {}  # (cheap model's score, truth), by cheap model
    examples: list[tuple[str, bool]] = []  # labelled excerpts for a few-shot prompt
    functions: dict[str, list[dict[str, Any]]] | None = None  # what code synthesis kept
    # a certified cascade's guarantee on the batch (optimizer.guarantees.Guarantee.to_dict,
    # with what the oracle was asked): its certificates are the next batch's to audit
    guarantee: dict[str, Any] | None = None
    # a filter's judges' quality estimated without labels on the sample (label model)
    label_free: dict[str, Any] | None = None

    def to_metadata(self) -> dict[str, Any]:
        """The record as materialization metadata: one entry of plain JSON-able values, exact
        (what the UI shows beside it is rounded for reading; see ``tuning.report``)."""
        return {HISTORY: self.model_dump(mode="json")}

    @classmethod
    def from_metadata(
        cls, md: Mapping[str, Any], where: str = "a materialization"
    ) -> HistoryRecord | None:
        """The record ``md`` holds (plain values or Dagster ``MetadataValue``s), in its own entry
        or, written before that, in separate entries; None, with a warning logged, where it
        holds none (written before the record existed) or a malformed one. ``where`` names the
        materialization in the warning."""
        try:
            if HISTORY in md:
                return cls.model_validate(metadata_value(md, HISTORY))
            values = {k: metadata_value(md, k) for k in _LEGACY_KEYS if k in md}
            if values.get("physical_config") is None:
                logger.warning("%s holds no history record (no physical_config): no history", where)
                return None
            return cls._parse_legacy(values)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # pydantic's included
            reason = " ".join(str(exc).split())[:300]
            logger.warning("%s holds a malformed history record, read as none: %s", where, reason)
            return None

    @classmethod
    def _parse_legacy(cls, values: dict[str, Any]) -> HistoryRecord:
        """A record from the separate entries of a materialization written before ``HISTORY``."""
        run: dict[str, Any] = {
            name: values[key] for name, key in _LEGACY_RUN_KEYS.items() if key in values
        }
        run["records"] = run.get("records") or 0
        if (selectivity := values.get("selectivity")) is not None:
            run["records_out"] = round(float(selectivity) * run["records"])
        if any(key in values for key in _LEGACY_ONE_TIME_KEYS.values()):
            run["one_time"] = {n: values.get(k) or 0 for n, k in _LEGACY_ONE_TIME_KEYS.items()}
        run["config"] = values["physical_config"]
        run["quality"] = values.get("quality_counts")
        run["quality_source"] = values.get("quality_source") or ""
        return cls.model_validate(
            {
                "run": run,
                "input_tokens": values.get("input_tokens") or 0,
                "sample_runs": values.get("sample_runs"),
                "proxy_pairs": values.get("proxy_pairs") or {},
                "proxy_pairs_source": values.get("proxy_pairs_source") or "labels",
                "cascade_pairs": values.get("cascade_pairs") or {},
                "examples": values.get("examples") or [],
                "functions": values.get("code_functions"),
            }
        )

    def config_dict(self) -> dict[str, Any]:
        """The run's physical config as plain values."""
        return asdict(self.run.config)


@dataclass
class NodeHistory:
    """An operator's history merged over its materializations, newest first."""

    observations: list[Observation] = field(default_factory=list)
    prompt_tokens: list[float] = field(default_factory=list)  # per model call
    cost: list[float] = field(default_factory=list)  # dollars per record (any candidate)
    seconds: list[float] = field(default_factory=list)
    selectivity: list[float] = field(default_factory=list)
    # scored, labelled records by proxy: what a proxy's threshold is learned from
    proxy_pairs: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    # labelled excerpts of earlier inputs, newest first: a few-shot prompt's examples
    examples: list[tuple[str, bool]] = field(default_factory=list)
    # the newest functions code synthesis kept, per field (reused while they keep answering)
    functions: dict[str, list[dict[str, Any]]] | None = None
    # (candidate key, guarantee) of certified cascades, newest first
    guarantees: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def of(cls, records: Iterable[tuple[HistoryRecord, float]]) -> NodeHistory:
        """The history of (record, time) pairs, newest first."""
        out = cls()
        for record, sequence in records:
            out.add(record, sequence)
        return out

    def add(self, record: HistoryRecord, sequence: float) -> None:
        """Extend the history with an older materialization's record."""
        run = record.run
        if run.records:
            seen = run.observation(sequence)
            self.observations.append(seen)
            if run.model_calls:
                self.prompt_tokens.append(float(record.input_tokens) / run.model_calls)
            if seen.costed and seen.records:
                self.cost.append(seen.dollars / seen.records)
                self.seconds.append(seen.seconds / seen.records)
            if run.records_out is not None:
                self.selectivity.append(run.records_out / run.records)
        self.observations += [s.observation(sequence) for s in record.sample_runs or ()]
        suffix = "" if record.proxy_pairs_source == "labels" else CHAMPION_JUDGED
        for proxy, pairs in record.proxy_pairs.items():
            self.proxy_pairs.setdefault(proxy + suffix, []).extend(pairs)
        for cheap, pairs in record.cascade_pairs.items():
            self.proxy_pairs.setdefault(f"cascade:{cheap}", []).extend(pairs)
        self.examples += record.examples
        if record.guarantee:
            self.guarantees.append((Candidate.from_config(run.config).key, record.guarantee))
        if self.functions is None and record.functions and any(record.functions.values()):
            self.functions = record.functions

    def pairs(self, proxy: str) -> list[tuple[float, bool]]:
        """Scored examples to learn ``proxy``'s threshold from: those judged by labels when
        they hold both answers, else those judged by the champion. Never a mix: a weak
        champion's verdicts must not drag a threshold learned on labels."""
        labelled = self.proxy_pairs.get(proxy, [])
        if {y for _, y in labelled} == {True, False}:
            return labelled
        return self.proxy_pairs.get(f"{proxy}{CHAMPION_JUDGED}", [])

    def certificates_for(self, key: str) -> list[dict[str, Any]]:
        """The certificates of the newest batch of candidate ``key`` that was decided under its
        target (a batch that was not, say while the oracle failed, is passed over: the next
        batch audits the certificates before it).

        >>> h = NodeHistory(guarantees=[("c:a+b", {"certified": False, "certificates": [1]}),
        ...                             ("c:a+b", {"certified": True, "certificates": [2]})])
        >>> h.certificates_for("c:a+b"), h.certificates_for("c:x+b")
        ([2], [])
        """
        for seen, guarantee in self.guarantees:
            if seen == key and guarantee.get("certified"):
                return list(guarantee.get("certificates") or [])
        return []

    def can_learn(self, proxy: str) -> bool:
        labels = {y for _, y in self.pairs(proxy)}
        return labels == {True, False}

    @staticmethod
    def mean(xs: list[float], default: float) -> float:
        return sum(xs) / len(xs) if xs else default
