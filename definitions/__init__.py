"""Dagster code location: the Enron legal-discovery demo on the bundled local model.

Only wiring lives here. Point ``$PZ_ENRON_DIR`` elsewhere to run the query on other emails, and
``$PZ_DAGSTER_STORE`` to keep records somewhere other than ``$DAGSTER_HOME/pz_store``.
"""

from definitions.enron import legal_discovery_query
from pz_dagster.orchestration import LocalLlamaModel, build_definitions

QUERY_NAME = "enron"

# A nightly refresh of every batch (stopped until turned on in the UI): each operator asks the
# optimizer again, so a better plan learned since a batch ran is applied to it.
defs, enron = build_definitions(
    legal_discovery_query(), QUERY_NAME, model=LocalLlamaModel(), refresh_cron="0 3 * * *"
)
