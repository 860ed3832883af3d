"""Client-side requests-per-minute and tokens-per-minute limits (moving window, blocking)."""

from __future__ import annotations

import threading
import time

from limits import RateLimitItemPerMinute, storage, strategies


class RateLimiter:
    """Blocks until a request of ``tokens`` estimated tokens fits both per-minute budgets.

    >>> lim = RateLimiter(rpm=600, tpm=None)
    >>> lim.acquire(tokens=100)
    0.0
    """

    def __init__(self, rpm: int | None = None, tpm: int | None = None):
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._rpm = RateLimitItemPerMinute(rpm) if rpm else None
        self._tpm = RateLimitItemPerMinute(tpm) if tpm else None
        self._tpm_amount = tpm or 0
        # Checking both windows and hitting them must be one step, or two threads could each
        # see room for one request and both take it.
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._rpm is not None or self._tpm is not None

    def acquire(self, tokens: int = 0) -> float:
        """Wait for room; returns the seconds waited."""
        if not self.active:
            return 0.0
        cost = min(max(tokens, 1), self._tpm_amount) if self._tpm else 1
        waited = 0.0
        while True:
            with self._lock:
                ok = all(
                    self._limiter.test(item, "pz", cost=c)
                    for item, c in ((self._rpm, 1), (self._tpm, cost))
                    if item is not None
                )
                if ok:
                    for item, c in ((self._rpm, 1), (self._tpm, cost)):
                        if item is not None:
                            self._limiter.hit(item, "pz", cost=c)
                    return waited
                resets = [
                    self._limiter.get_window_stats(item, "pz").reset_time
                    for item in (self._rpm, self._tpm)
                    if item is not None
                ]
            pause = min(max(min(resets) - time.time(), 0.01), 1.0)
            time.sleep(pause)
            waited += pause
