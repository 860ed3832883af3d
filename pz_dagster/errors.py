"""Typed errors. Every message says what to fix."""

from __future__ import annotations


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
    ``transport`` is True when no answer came back (timeout, lost connection, HTTP 5xx/429
    after every retry, an open circuit): the endpoint's fault, not the record's. A partition
    whose records all fail that way fails its asset instead of being stored as a success.
    """

    def __init__(self, message: str, usage: object | None = None, *, transport: bool = False):
        super().__init__(message)
        self.usage = usage
        self.transport = transport

    def with_usage(self, usage: object, message: str | None = None) -> RecordFailure:
        """The same failure (same kind) carrying ``usage``: for callers that add earlier calls'
        cost before passing it on."""
        return RecordFailure(message or str(self), usage, transport=self.transport)
