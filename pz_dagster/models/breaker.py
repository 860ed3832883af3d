"""A circuit breaker for one model endpoint: after ``failures`` transport failures in a row it
stops sending (every call fails at once with ``CircuitOpenError``), then after ``cooldown_s``
lets a single probe through, whose success closes it again.

Why not pybreaker or circuitbreaker (both on PyPI): pybreaker runs the guarded call while holding
its lock, so the client's concurrent requests would go one at a time; circuitbreaker keeps its
state without a lock and, once the cool-down is over, lets every waiting caller through at once
instead of one probe. The client calls from a pool of threads, so this one holds its lock only
to read and change the state, never during the call.

>>> breaker = CircuitBreaker(failures=2, cooldown_s=30)
>>> breaker.call(lambda: "answer"), breaker.state
('answer', 'closed')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")
State = Literal["closed", "open", "half-open"]


class CircuitOpenError(Exception):
    """The breaker is open: the call was not made. Says how many failures in a row opened it,
    the last of them, and when the next probe goes out."""

    def __init__(self, failures: int, last: BaseException | None, retry_in_s: float, probing: bool):
        self.failures = failures
        self.last = last  # the failure that opened the circuit (the caller tells what kind)
        self.retry_in_s = retry_in_s
        self.probing = probing  # a half-open probe is in flight: it decides what comes next
        self.last_error = f"{type(last).__name__}: {last}"[:200] if last is not None else ""
        when = "a probe is in flight" if probing else f"next probe in {retry_in_s:.0f} s"
        super().__init__(
            f"circuit open: failed {failures} times in a row (last: {self.last_error}); {when}"
        )


class CircuitBreaker:
    """Thread-safe: callers share one breaker per endpoint. ``failures`` 0 turns it off.
    ``is_failure`` tells which exceptions are the endpoint's fault (the others, and successes,
    prove it answers, and reset the count)."""

    def __init__(
        self,
        failures: int = 5,
        cooldown_s: float = 30.0,
        *,
        is_failure: Callable[[BaseException], bool] = lambda exc: True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._is_failure = is_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0  # failures in a row
        self._opened_at: float | None = None  # None: closed
        self._probing = False  # a half-open probe is in flight
        self._last: BaseException | None = None

    @property
    def state(self) -> State:
        with self._lock:
            return self._state()

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._count

    def _state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self._cooldown_s:
            return "half-open"
        return "open"

    def _admit(self) -> bool:
        """Whether the call may go out as the half-open probe; raises when it may not go out."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return False
            if state == "half-open" and not self._probing:
                self._probing = True
                return True
            assert self._opened_at is not None
            wait = max(self._opened_at + self._cooldown_s - self._clock(), 0.0)
            raise CircuitOpenError(self._count, self._last, wait, self._probing)

    def _settle(self, probe: bool, failure: BaseException | None) -> None:
        with self._lock:
            if probe:
                self._probing = False
            if failure is None:  # the endpoint answered: close
                self._count, self._opened_at, self._last = 0, None, None
                return
            self._count += 1
            self._last = failure
            # A failed probe opens it again for a whole cool-down; so does the failure that
            # reaches the threshold. Failures of calls sent before it opened change nothing.
            if probe or (self._opened_at is None and 0 < self._threshold <= self._count):
                self._opened_at = self._clock()

    def call(
        self, fn: Callable[[], T], is_failure: Callable[[BaseException], bool] | None = None
    ) -> T:
        """``fn()``, unless the circuit is open (``CircuitOpenError``, ``fn`` not called)."""
        probe = self._admit()
        try:
            result = fn()
        except BaseException as exc:
            counts = (is_failure or self._is_failure)(exc)
            self._settle(probe, exc if counts else None)
            raise
        self._settle(probe, None)
        return result
