"""Who hears of the operators' progress while they run: a ``ProgressReporter`` that a caller
installs around a run (``reporting``), for this thread and what it calls (a context variable,
so that two runs in one process report to their own). `pz-dagster run` installs one that
draws a live display; with none installed, progress goes nowhere.

The operators themselves only call their ``progress`` callback (``operators.base.Progress``);
the orchestration's callback forwards to ``current_reporter()``.

>>> seen = []
>>> class Lines:
...     def update(self, operator, done, total, usage):
...         seen.append(f"{operator} {done}/{total} {usage.calls if usage else 0} call(s)")
...     def close(self, operator):
...         seen.append(f"{operator} done")
>>> with reporting(Lines()):
...     current_reporter().update("f", 1, 2, Usage(calls=1))
...     current_reporter().close("f")
>>> seen, current_reporter()
(['f 1/2 1 call(s)', 'f done'], None)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from pz_dagster.models.base import Usage


class ProgressReporter(Protocol):
    """Receives each operator's progress: ``update`` after each record it settles (and once
    with ``done == 0`` as it starts), with ``usage`` the model work the operator has done so
    far (None where it does not say); ``close`` when it has finished."""

    def update(self, operator: str, done: int, total: int, usage: Usage | None) -> None: ...

    def close(self, operator: str) -> None: ...


_REPORTER: ContextVar[ProgressReporter | None] = ContextVar("pz_progress_reporter", default=None)


def current_reporter() -> ProgressReporter | None:
    """The reporter installed around the running code, or None."""
    return _REPORTER.get()


@contextmanager
def reporting(reporter: ProgressReporter) -> Iterator[ProgressReporter]:
    """Install ``reporter`` for the code run inside the block."""
    token = _REPORTER.set(reporter)
    try:
        yield reporter
    finally:
        _REPORTER.reset(token)
