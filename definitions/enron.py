"""The legal-discovery query of the Palimpzest paper over the shared Enron emails."""

from __future__ import annotations

import os
from pathlib import Path

from pz_dagster import Dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENRON_DIR = REPO_ROOT.parent / "shared" / "data" / "enron-eval-medium"


def enron_dir() -> Path:
    """``$PZ_ENRON_DIR`` or the shared evaluation emails next to this repository."""
    return Path(os.environ.get("PZ_ENRON_DIR") or DEFAULT_ENRON_DIR)


FRAUD_PREDICATE = 'The email refers to a fraudulent scheme (i.e., "Raptor", "Deathstar", "Chewco", and/or "Fat Boy")'
NOT_NEWS_PREDICATE = (
    "The email is not quoting from a news article or an article written by someone outside of Enron"
)
SENDER_SUBJECT = [
    {"name": "sender", "type": "str", "desc": "The email address of the sender"},
    {"name": "subject", "type": "str", "desc": "The subject of the email"},
]


def legal_discovery_query(folder: str | Path | None = None, batch_size: int = 10) -> Dataset:
    """Emails about Enron's fraudulent schemes, not quoting the news, with sender and subject."""
    return (
        Dataset.from_directory(folder or enron_dir(), name="emails", batch_size=batch_size)
        .sem_filter(FRAUD_PREDICATE, depends_on="contents", name="mentions_fraud_scheme")
        .sem_filter(NOT_NEWS_PREDICATE, depends_on="contents", name="not_news_quote")
        .sem_add_columns(SENDER_SUBJECT, depends_on="contents", name="sender_and_subject")
    )
