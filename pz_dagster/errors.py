"""Typed errors. Every message says what to fix."""


class PzError(Exception):
    """Base class of every error raised by pz-dagster."""


class PlanError(PzError):
    """A query was declared wrongly (unknown column, empty predicate, duplicate name...)."""


class SchemaError(PlanError):
    """An output schema is invalid (bad field name or type, column clash)."""


class SourceError(PzError):
    """A data source cannot be read as a whole (missing folder, unknown partition)."""


class ModelError(PzError):
    """A model call failed in a way that concerns the whole asset (dead endpoint, bad config)."""


class RecordFailure(PzError):
    """A model call failed for one record; the record is kept with an error column.

    ``usage`` carries what the failed attempts cost, so that failures are paid for in the books.
    """

    def __init__(self, message: str, usage: object | None = None):
        super().__init__(message)
        self.usage = usage
