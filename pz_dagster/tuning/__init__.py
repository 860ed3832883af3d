"""The optimizer in the loop, framework-free: plan one operator from its own history, run it,
assess it (labels, champion, label-free signals), and the one typed history record that its
materialization's metadata is written from and read back into.

``run_operator_step`` is the whole loop for one operator on one batch; orchestration/ reads
the history from Dagster's event log and renders the metadata for its UI.
"""

from pz_dagster.tuning.history import HistoryRecord, NodeHistory, OneTimeCost, RunRecord
from pz_dagster.tuning.settings import TuningSettings
from pz_dagster.tuning.step import (
    EndpointUnanswered,
    StepResult,
    StepServices,
    run_operator_step,
)

__all__ = [
    "EndpointUnanswered",
    "HistoryRecord",
    "NodeHistory",
    "OneTimeCost",
    "RunRecord",
    "StepResult",
    "StepServices",
    "TuningSettings",
    "run_operator_step",
]
