"""Query layer: the Dataset DSL, output schemas and the logical plan."""

from pz_dagster.query.dataset import Dataset
from pz_dagster.query.schema import FieldSpec, output_model

__all__ = ["Dataset", "FieldSpec", "output_model"]
