"""What the optimizer chooses among: models, strategies, and their combinations per operator.

A ``ModelProfile`` holds a model's priors (price, speed, a quality prior); a ``StrategyProfile``
says how a prompting technique changes calls, tokens and quality relative to one direct call;
an ``OperatorSpec`` describes a logical operator by what drives its cost (tokens per record) and
how many records it lets through (selectivity). ``candidates_for`` spells out the candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from optimizer.config import PhysicalConfig

FILTER_KINDS = frozenset({"sem_filter"})


@dataclass(frozen=True)
class ModelProfile:
    """Priors of one model; observations replace them as history accumulates.

    >>> ModelProfile("big", input_price=1e-5, output_price=3e-5, quality=0.95).name
    'big'
    """

    name: str
    input_price: float = 0.0  # dollars per prompt token
    output_price: float = 0.0  # dollars per generated token
    prompt_tokens_per_s: float = 2000.0
    output_tokens_per_s: float = 50.0
    latency_s: float = 0.3  # per call, before the first token
    quality: float = 0.8  # prior probability of a correct answer
    max_concurrency: int = 8
    # dollars per second of one call's model time: a local model's compute (its machine's
    # price per hour, shared by the calls in flight at once); its dollars are an estimate
    second_price: float = 0.0

    @property
    def compute_priced(self) -> bool:
        """Whether this model's dollars are a compute estimate rather than token prices."""
        return self.second_price > 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.quality <= 1.0:
            raise ValueError(f"model {self.name!r}: quality prior must be in [0, 1]")
        if min(self.input_price, self.output_price, self.second_price) < 0:
            raise ValueError(f"model {self.name!r}: prices cannot be negative")
        if min(self.prompt_tokens_per_s, self.output_tokens_per_s) <= 0:
            raise ValueError(f"model {self.name!r}: speeds must be positive")
        if self.max_concurrency < 1:
            raise ValueError(f"model {self.name!r}: max_concurrency must be at least 1")

    def call_dollars(self, prompt_tokens: float, output_tokens: float) -> float:
        tokens = prompt_tokens * self.input_price + output_tokens * self.output_price
        if not self.second_price:
            return tokens
        return tokens + self.second_price * self.call_seconds(prompt_tokens, output_tokens)

    def call_seconds(self, prompt_tokens: float, output_tokens: float) -> float:
        return (
            self.latency_s
            + prompt_tokens / self.prompt_tokens_per_s
            + output_tokens / self.output_tokens_per_s
        )


@dataclass(frozen=True)
class StrategyProfile:
    """How a strategy runs relative to one direct call of its model.

    ``models`` is how many models it combines (1, or 2 for a cascade, 3+ for an ensemble);
    ``uses_model`` False marks a proxy that answers without a chat model (embeddings, code).
    """

    name: str
    kinds: frozenset[str]  # operator kinds it applies to
    calls: float = 1.0  # model calls per record (per model)
    prompt_factor: float = 1.0  # prompt tokens relative to a direct call
    extra_output_tokens: float = 0.0  # e.g. the reasoning of chain-of-thought
    quality_delta: float = 0.0  # prior change of the quality of its model
    models: int = 1
    uses_model: bool = True
    # what must be available: "examples" (labelled records for prompts), or a proxy's own name
    # once there are scored examples to learn its threshold from
    needs: frozenset[str] = frozenset()
    params: dict[str, object] = field(default_factory=dict, hash=False, compare=False)
    # a one-time cost, in direct calls of its model (code synthesis: the sample's reference
    # answers and the candidate functions), spread over the records of the runs that reuse
    # what it made (``OperatorSpec.runs_ahead``), and not counted once that is at hand
    fixed_calls: float = 0.0
    fixed_prompt_factor: float = 1.0
    fixed_output_tokens: float = 0.0


CODE_FALLBACK_PRIOR = 0.25  # share of records synthesized functions leave to the model

# Every strategy, declared once: its name, the operator kinds it runs on (``kinds``: where it is
# a candidate, and where pz_dagster.operators.registry must give it a runner: it checks both
# agree when imported) and its priors. Priors are rough and deliberately modest; observations
# decide. A proxy's quality prior is low so that it is chosen only once observations (against
# labels or the champion) show it works.
FILTERS_ONLY = frozenset({"sem_filter"})
SEMANTIC_KINDS = frozenset(
    {"sem_filter", "sem_map", "sem_classify", "sem_flat_map", "sem_agg", "sem_join", "sem_topk"}
)
STRATEGIES: dict[str, StrategyProfile] = {
    s.name: s
    for s in (
        StrategyProfile("direct", SEMANTIC_KINDS),
        StrategyProfile(
            "few_shot",
            FILTERS_ONLY,
            prompt_factor=1.6,
            quality_delta=0.02,
            needs=frozenset({"examples"}),
        ),
        StrategyProfile(
            "batched",  # several records per prompt: fewer calls, a little less accurate
            FILTERS_ONLY,
            calls=1 / 8,
            prompt_factor=8.0,
            extra_output_tokens=60,
            quality_delta=-0.05,
        ),
        StrategyProfile(
            "chain_of_thought", FILTERS_ONLY, extra_output_tokens=120, quality_delta=0.02
        ),
        StrategyProfile("critique", FILTERS_ONLY, calls=2.0, prompt_factor=1.1, quality_delta=0.02),
        StrategyProfile("ensemble", FILTERS_ONLY, models=3),
        StrategyProfile("cascade", FILTERS_ONLY, models=2),
        StrategyProfile(
            # a filter that declares a target (Recall / Precision): a cheap score decides what
            # certified thresholds let it, the strong model the rest. Never enumerated: a
            # filter with a target runs as one (pz_dagster.tuning.planning pins it)
            "certified_cascade",
            FILTERS_ONLY,
            models=2,
            needs=frozenset({"target"}),
        ),
        StrategyProfile(
            # Evaporate: the model answers a sample and writes functions (fixed cost); the
            # functions answer the rest, the model only where they abstain or disagree
            "code_synthesis",
            frozenset({"sem_map", "sem_filter"}),
            calls=CODE_FALLBACK_PRIOR,
            quality_delta=-0.05,
            fixed_calls=8 + 2 * 2,  # sample of 8 + 2 candidates for each of ~2 fields
            fixed_prompt_factor=1.3,
            fixed_output_tokens=150,
        ),
        StrategyProfile(
            # a document past the context: only the chunks that matter for a field are read
            # (a document that fits is read whole, as by direct)
            "chunk_select",
            frozenset({"sem_map"}),
            prompt_factor=0.6,
            quality_delta=-0.03,
        ),
        StrategyProfile(
            "embedding_proxy",
            FILTERS_ONLY,
            uses_model=False,
            needs=frozenset({"embedding_proxy"}),  # scored examples to learn its threshold from
        ),
        StrategyProfile(
            "lexical_proxy", FILTERS_ONLY, uses_model=False, needs=frozenset({"lexical_proxy"})
        ),
    )
}
PROXY_QUALITY_PRIOR = 0.5
CASCADE_ESCALATION_PRIOR = 0.3  # share of records a cascade's cheap stage is unsure about


@dataclass(frozen=True)
class OperatorSpec:
    """A logical operator as the optimizer sees it.

    ``selectivity`` is the prior share of records it outputs per input (filters < 1, a flat map
    may be > 1); ``prompt_tokens`` / ``output_tokens`` are per direct call on one record.
    """

    name: str
    kind: str
    prompt_tokens: float = 500.0
    output_tokens: float = 8.0
    selectivity: float = 1.0
    batch_records: int = 100  # records per run
    # runs (this one and those still to come) that reuse what a strategy made once (code
    # synthesis's functions): its one-time cost is spread over their records
    runs_ahead: int = 1
    paid_once: frozenset[str] = frozenset()  # strategies whose one-time product is at hand

    def __post_init__(self) -> None:
        if self.selectivity < 0:
            raise ValueError(f"operator {self.name!r}: selectivity cannot be negative")
        if self.runs_ahead < 1:
            raise ValueError(f"operator {self.name!r}: runs_ahead must be at least 1")

    @property
    def is_filter(self) -> bool:
        return self.kind in FILTER_KINDS


@dataclass(frozen=True)
class Candidate:
    """One way to run one operator: a model (or models) and a strategy."""

    operator: str
    strategy: str
    model: str | None  # the model that answers (a cascade's final model), None for proxies
    models: tuple[str, ...] = ()  # every model used, cheapest first (cascade, ensemble)

    @property
    def key(self) -> str:
        used = "+".join(self.models) if self.models else (self.model or "-")
        return f"{self.strategy}:{used}"

    def config(self, **params: object) -> PhysicalConfig:
        extra = {"models": list(self.models)} if len(self.models) > 1 else {}
        return PhysicalConfig(self.operator, self.model, self.strategy, {**extra, **params})

    @classmethod
    def from_config(cls, config: PhysicalConfig) -> Candidate:
        models = tuple(config.params.get("models") or ())  # type: ignore[arg-type]
        if not models and config.model is not None:
            models = (config.model,)
        return cls(config.operator, config.strategy, config.model, models)


def candidates_for(
    op: OperatorSpec,
    models: Sequence[ModelProfile],
    strategies: Iterable[str] = ("direct",),
    available: frozenset[str] = frozenset(),
) -> list[Candidate]:
    """Every candidate of ``op``: each single-model strategy with each model, a cascade for
    each (cheaper, better) pair, an ensemble of the three best models, and proxies when what
    they need is ``available`` (a proxy's name once its threshold can be learned).

    >>> ms = [ModelProfile("a", quality=0.7), ModelProfile("b", quality=0.9, input_price=1e-6)]
    >>> [c.key for c in candidates_for(OperatorSpec("f", "sem_filter"), ms, ["direct", "cascade"])]
    ['direct:a', 'direct:b', 'cascade:a+b']
    """
    out: list[Candidate] = []
    by_quality = sorted(models, key=lambda m: (m.quality, -m.input_price))
    for name in strategies:
        s = STRATEGIES.get(name)
        if s is None:
            raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
        if op.kind not in s.kinds or not s.needs <= available:
            continue
        if not s.uses_model:
            out.append(Candidate(op.name, name, None))
        elif s.models == 1:
            out += [Candidate(op.name, name, m.name, (m.name,)) for m in models]
        elif name == "cascade":
            for i, cheap in enumerate(by_quality):
                for strong in by_quality[i + 1 :]:
                    if cheap.call_dollars(1, 1) <= strong.call_dollars(1, 1) or (
                        cheap.call_seconds(1, 1) < strong.call_seconds(1, 1)
                    ):
                        out.append(Candidate(op.name, name, strong.name, (cheap.name, strong.name)))
        elif len(models) >= s.models:
            best = tuple(m.name for m in reversed(by_quality[-s.models :]))
            out.append(Candidate(op.name, name, best[0], best))
    return out
