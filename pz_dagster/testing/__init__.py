"""Test and benchmark helpers. ``OpenAISimulator`` is a simulator, not a model."""

from pz_dagster.testing.simulator import (
    ChatRequest,
    Fault,
    OpenAISimulator,
    Rendered,
    SimulatedModel,
)

__all__ = ["ChatRequest", "Fault", "OpenAISimulator", "Rendered", "SimulatedModel"]
