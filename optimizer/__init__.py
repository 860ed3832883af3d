"""The optimizer: pure Python, no Dagster, no model clients (see DESIGN.md).

Today it holds the vocabulary the orchestration layer records with every materialization, so
that history written now can be read back as observations when the cost-based search lands.
"""

from optimizer.config import PhysicalConfig

__all__ = ["PhysicalConfig"]
