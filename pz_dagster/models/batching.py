"""Micro-batching: many threads call ``complete`` one request at a time; a batch engine (vLLM
in-process) gets them as one batch. Operators stay the same for per-request and batch engines."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pz_dagster.models.base import Completion, Message


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[Message]
    json_schema: dict[str, Any] | None = None
    max_tokens: int = 256
    temperature: float = 0.0


@dataclass
class _Pending:
    request: GenerationRequest
    future: Future[Completion] = field(default_factory=Future)


class MicroBatcher:
    """Collects requests for up to ``max_wait_s`` or ``max_batch`` requests, then runs them as one
    call of ``run_batch``; every caller gets its own completion back (or the batch's exception).

    >>> batcher = MicroBatcher(lambda reqs: [f"echo {len(reqs)}" for reqs_ in [reqs] for _ in reqs_],
    ...                        max_batch=4, max_wait_s=0.01)
    >>> batcher.submit(GenerationRequest(messages=[]))
    'echo 1'
    """

    def __init__(
        self,
        run_batch: Callable[[list[GenerationRequest]], list[Any]],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.02,
    ):
        self._run_batch = run_batch
        self._max_batch = max(1, max_batch)
        self._max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._leader_active = False
        self.batch_sizes: list[int] = []

    def submit(self, request: GenerationRequest) -> Any:
        pending = _Pending(request)
        with self._cond:
            self._queue.append(pending)
            self._cond.notify_all()
            lead = not self._leader_active
            if lead:
                self._leader_active = True
        if lead:
            self._lead()
        return pending.future.result()

    def _one_by_one(self, batch: list[_Pending]) -> None:
        for p in batch:
            try:
                (result,) = self._run_batch([p.request])
            except Exception as exc:
                p.future.set_exception(exc)
            else:
                p.future.set_result(result)

    def _lead(self) -> None:
        """The first waiting caller runs batches until the queue is empty (no background thread
        to leak, no idle polling)."""
        while True:
            with self._cond:
                if not self._queue:
                    self._leader_active = False
                    return
                if len(self._queue) < self._max_batch:
                    self._cond.wait_for(
                        lambda: len(self._queue) >= self._max_batch, self._max_wait_s
                    )
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self.batch_sizes.append(len(batch))
            try:
                results = self._run_batch([p.request for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"batch engine returned {len(results)} results for {len(batch)}"
                    )
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].future.set_exception(exc)
                else:  # one bad request must not fail its neighbours: retry them one by one
                    self._one_by_one(batch)
                continue
            for p, r in zip(batch, results, strict=True):
                p.future.set_result(r)
