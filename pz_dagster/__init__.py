"""pz-dagster: declarative, optimized AI batch analytics over documents, as Dagster assets.

>>> from pz_dagster import Dataset
>>> ds = Dataset.from_directory("emails").sem_filter("The email discusses fraud")
"""

from optimizer.guarantees import Precision, Recall
from pz_dagster.errors import (
    ModelError,
    PlanError,
    PzError,
    RecordFailure,
    SchemaError,
    SourceError,
)
from pz_dagster.query import Dataset, FieldSpec

__all__ = [
    "Dataset",
    "FieldSpec",
    "ModelError",
    "PlanError",
    "Precision",
    "PzError",
    "Recall",
    "RecordFailure",
    "SchemaError",
    "SourceError",
]
__version__ = "0.1.0"
