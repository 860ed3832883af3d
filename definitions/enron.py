"""The legal-discovery query of the Palimpzest paper over the Enron emails shipped in data/enron."""

from __future__ import annotations

import os
from pathlib import Path

from pz_dagster import Dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "data" / "enron"
DEFAULT_ENRON_DIR = DEMO_DIR / "emails"
# The labels the optimizer learns from: the first two batches of 20 (data/enron/README.md).
DEMO_LABELS = DEMO_DIR / "labels.json"
# The labels of the other emails, never given to the optimizer: the demo scores against them.
HELD_BACK_LABELS = DEMO_DIR / "held-back-labels.json"
DEMO_BATCH_SIZE = 20


def enron_dir() -> Path:
    """``$PZ_ENRON_DIR`` or the emails shipped in data/enron/emails."""
    return Path(os.environ.get("PZ_ENRON_DIR") or DEFAULT_ENRON_DIR)


def enron_labels() -> Path | None:
    """``$PZ_ENRON_LABELS`` (empty: none), or the demo's labels when the folder is the demo's."""
    if "PZ_ENRON_LABELS" in os.environ:
        return Path(os.environ["PZ_ENRON_LABELS"]) if os.environ["PZ_ENRON_LABELS"] else None
    return DEMO_LABELS if enron_dir().resolve() == DEFAULT_ENRON_DIR.resolve() else None


FRAUD_PREDICATE = 'The email refers to a fraudulent scheme (i.e., "Raptor", "Deathstar", "Chewco", and/or "Fat Boy")'
NOT_NEWS_PREDICATE = (
    "The email is not quoting from a news article or an article written by someone outside of Enron"
)
SENDER_SUBJECT = [
    {"name": "sender", "type": "str", "desc": "The email address of the sender"},
    {"name": "subject", "type": "str", "desc": "The subject of the email"},
]


def legal_discovery_query(
    folder: str | Path | None = None, batch_size: int = DEMO_BATCH_SIZE
) -> Dataset:
    """Emails about Enron's fraudulent schemes, not quoting the news, with sender and subject."""
    return (
        Dataset.from_directory(folder or enron_dir(), name="emails", batch_size=batch_size)
        .sem_filter(FRAUD_PREDICATE, depends_on="contents", name="mentions_fraud_scheme")
        .sem_filter(NOT_NEWS_PREDICATE, depends_on="contents", name="not_news_quote")
        .sem_add_columns(SENDER_SUBJECT, depends_on="contents", name="sender_and_subject")
    )
