"""Dagster code location: the Enron legal-discovery demo on the bundled local model.

Only wiring lives here. Point ``$PZ_ENRON_DIR`` elsewhere to run the query on other emails, and
``$PZ_DAGSTER_STORE`` to keep records somewhere other than ``$DAGSTER_HOME/pz_store``.
"""

from definitions.enron import legal_discovery_query
from pz_dagster.orchestration import LocalLlamaModel, build_definitions

QUERY_NAME = "enron"

defs, enron = build_definitions(legal_discovery_query(), QUERY_NAME, model=LocalLlamaModel())
