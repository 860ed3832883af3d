"""What `pz-dagster run` shows while a batch runs: per operator the records done of its total,
the model calls and tokens so far, the time taken and the time left. In a terminal, a live
display (rich.progress); piped, a plain line per operator at every quarter of its records."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pz_dagster.models.base import Usage
from pz_dagster.operators.progress import ProgressReporter, reporting


def _counts(usage: Usage | None) -> dict[str, str]:
    """The model calls (and answers from the response cache) and tokens so far, as text."""
    if usage is None:
        return {"calls": "- model calls", "tokens": "-"}
    cached = f", {usage.cache_hits:,} answered from the cache" if usage.cache_hits else ""
    return {
        "calls": f"{usage.calls:,} model calls{cached}",
        "tokens": f"{usage.input_tokens + usage.output_tokens:,}",
    }


class LiveProgress:
    """One row per operator, redrawn in place."""

    def __init__(self, console: Console):
        self._tasks: dict[str, TaskID] = {}
        self.display = Progress(
            TextColumn("  {task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("records · {task.fields[calls]} · {task.fields[tokens]} tokens ·"),
            TimeElapsedColumn(),
            TextColumn("elapsed ·"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=console,
            # a local model takes seconds to a minute per record: estimate the rate over
            # the last ten minutes (rich's default of 30 s would often have no record in it)
            speed_estimate_period=600,
        )

    def update(self, operator: str, done: int, total: int, usage: Usage | None) -> None:
        counts = _counts(usage)
        task = self._tasks.get(operator)
        if task is None:  # its fields from the start: the display is redrawn from a thread
            task = self._tasks[operator] = self.display.add_task(operator, total=total, **counts)
        self.display.update(task, completed=done, total=total, **counts)

    def close(self, operator: str) -> None:
        pass  # a finished row stays as it ended, with its final counts


@dataclass
class _Line:
    started: float
    next: float = 0.25
    finished: bool = False


class LineProgress:
    """A line per operator at 25%, 50%, 75% and 100% of its records: no cursor movement, for a
    pipe or a log file."""

    STEP = 0.25

    def __init__(self, console: Console):
        self._console = console
        self._lines: dict[str, _Line] = {}
        self._lock = threading.Lock()

    def update(self, operator: str, done: int, total: int, usage: Usage | None) -> None:
        with self._lock:
            line = self._lines.setdefault(operator, _Line(time.monotonic()))
            if line.finished or not total or done < total * line.next and done < total:
                return
            elapsed = time.monotonic() - line.started
            line.next = done / total + self.STEP
            line.finished = done >= total
            left = "" if line.finished else f", about {elapsed / done * (total - done):.0f}s left"
            counts = _counts(usage)
            self._console.print(
                f"  {operator}: {done}/{total} records, {counts['calls']}, "
                f"{counts['tokens']} tokens, {elapsed:.1f}s{left}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def close(self, operator: str) -> None:
        pass


@contextmanager
def showing_progress(console: Console) -> Iterator[ProgressReporter]:
    """Report the operators' progress on ``console`` while the block runs."""
    if not console.is_terminal:
        with reporting(LineProgress(console)) as reporter:
            yield reporter
        return
    live = LiveProgress(console)
    with live.display, reporting(live) as reporter:
        yield reporter
