"""The optimizer: pure Python, no Dagster, no model clients (see DESIGN.md).

``decide`` turns operators, model profiles, observations from history and a policy into a
``Decision``: the chosen candidate per operator, the Pareto frontier of plans, each operator's
champion and the candidates to explore on a sample.
"""

from optimizer.candidates import Candidate, ModelProfile, OperatorSpec, candidates_for
from optimizer.config import PhysicalConfig
from optimizer.observations import Estimate, EstimateSettings, Observation, QualityCounts, estimate
from optimizer.planner import Decision, decide
from optimizer.policies import (
    MaxQuality,
    MaxQualityAtCost,
    MinCost,
    MinCostAtQuality,
    MinTime,
    MinTimeAtQuality,
    Policy,
    parse_policy,
)
from optimizer.search import PlanEstimate, SearchResult, search

__all__ = [
    "Candidate",
    "Decision",
    "Estimate",
    "EstimateSettings",
    "MaxQuality",
    "MaxQualityAtCost",
    "MinCost",
    "MinCostAtQuality",
    "MinTime",
    "MinTimeAtQuality",
    "ModelProfile",
    "Observation",
    "OperatorSpec",
    "PhysicalConfig",
    "PlanEstimate",
    "Policy",
    "QualityCounts",
    "SearchResult",
    "candidates_for",
    "decide",
    "estimate",
    "parse_policy",
    "search",
]
