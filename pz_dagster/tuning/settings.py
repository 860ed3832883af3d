"""How the optimizer chooses each semantic operator's model and strategy, framework-free.

``orchestration.resources.OptimizerResource`` is these settings as a Dagster resource.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, PrivateAttr, field_validator

from optimizer import Policy, parse_policy
from optimizer.quality import ValidationSet
from pz_dagster.operators.registry import strategy_names


class TuningSettings(BaseModel):
    """Policy, strategies, sample sizes and labels of the optimizer in the loop.

    >>> TuningSettings(policy="MinCostAtQuality(0.9)").get_policy()
    MinCostAtQuality(quality=0.9)
    """

    policy: str = Field(
        default="MaxQuality",
        description="MaxQuality, MinCost, MinTime, MinCostAtQuality(q), MinTimeAtQuality(q) or "
        "MaxQualityAtCost(dollars per input record).",
    )
    strategies: list[str] = Field(
        default_factory=lambda: ["direct"],
        description="Strategies the optimizer may choose (each with every model of the model "
        "resource), e.g. direct, batched, chain_of_thought, critique, ensemble, cascade.",
    )
    sample_size: int = Field(
        default=10, description="Records per partition for measuring quality and exploring."
    )
    exploration_slots: int = Field(
        default=1, description="Under-observed candidates tried per partition on the sample."
    )
    cold_start_candidates: int = Field(
        default=3,
        description="Candidates tried on the sample of the first partition, before any history.",
    )
    labels_path: str | None = Field(
        default=None,
        description="JSON labels {record_id: relevant fields | [] | null}; quality is then "
        "measured against them instead of against the champion.",
    )
    history_limit: int = Field(
        default=100, description="Latest materializations per asset read as history."
    )

    _labels: ValidationSet | None = PrivateAttr(default=None)

    # Checked where the settings are built (the query's module, or the YAML component), so a
    # mistake is reported at load, not as a failed step of a run.
    @field_validator("policy")
    @classmethod
    def _policy_parses(cls, value: str) -> str:
        parse_policy(value)  # its ValueError names the known policies
        return value

    @field_validator("strategies")
    @classmethod
    def _strategies_known(cls, value: list[str]) -> list[str]:
        if unknown := [s for s in value if s not in strategy_names()]:
            raise ValueError(f"unknown strategies {unknown}; known: {list(strategy_names())}")
        if "certified_cascade" in value:
            raise ValueError(
                "certified_cascade is not chosen: a filter that declares a target "
                "(sem_filter(..., target=Recall(0.9, delta=0.05))) runs as one"
            )
        return value

    def get_policy(self) -> Policy:
        return parse_policy(self.policy)

    def get_labels(self) -> ValidationSet | None:
        if self.labels_path and self._labels is None:
            self._labels = ValidationSet.from_json(self.labels_path)
        return self._labels
