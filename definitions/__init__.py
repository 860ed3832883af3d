"""Dagster code location: the Enron legal-discovery demo on the bundled local models.

Only wiring lives here. The optimizer may choose, per operator and batch, SmolLM2's direct
answers, the lexical and embedding proxies or synthesized extraction functions; it learns which
from the labels of the first two batches (data/enron/labels.json). Point ``$PZ_ENRON_DIR``
elsewhere to run the query on other emails (with ``$PZ_ENRON_LABELS`` for their labels, if any),
and ``$PZ_DAGSTER_STORE`` to keep records somewhere other than ``$DAGSTER_HOME/pz_store``.
"""

from definitions.enron import enron_labels, legal_discovery_query
from pz_dagster.orchestration import (
    LocalEmbeddingResource,
    LocalLlamaModel,
    OptimizerResource,
    build_definitions,
)

QUERY_NAME = "enron"
DEMO_STRATEGIES = ["direct", "lexical_proxy", "embedding_proxy", "code_synthesis"]

labels = enron_labels()
# Four records per operator and batch are judged for quality and exploration: the labelled
# ones where the batch has labels, else against the champion (the bundled model, slow on CPU).
optimizer = OptimizerResource(
    policy="MaxQuality",
    strategies=DEMO_STRATEGIES,
    labels_path=str(labels) if labels else None,
    sample_size=4,
)
# A nightly refresh of every batch (stopped until turned on in the UI): each operator asks the
# optimizer again, so a better plan learned since a batch ran is applied to it.
defs, enron = build_definitions(
    legal_discovery_query(),
    QUERY_NAME,
    model=LocalLlamaModel(),
    embeddings=LocalEmbeddingResource(),
    optimizer=optimizer,
    refresh_cron="0 3 * * *",
)
