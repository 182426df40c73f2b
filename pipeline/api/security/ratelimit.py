"""Per-caller limits: a token bucket for request rate, a counter for concurrent streams.

One instance per API process (limits are per instance: with N instances behind a balancer a caller gets
up to N times the rate). Memory is bounded: idle buckets are forgotten once the table is full.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.api.errors import RateLimited, TooManyStreams


class RateLimiter:
    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        max_callers: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = float(burst)
        self.max_callers = max_callers
        self._clock = clock
        #: caller -> (tokens, last refill time)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, caller: str, cost: float = 1.0) -> None:
        """Spend `cost` tokens of the caller's bucket, or raise RateLimited with the wait."""
        now = self._clock()
        tokens, last = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_second)
        if tokens < cost:
            self._buckets[caller] = (tokens, now)
            wait = (cost - tokens) / self.per_second
            raise RateLimited(f"rate limit exceeded; retry in {wait:.1f} s", retry_after_seconds=wait)
        if len(self._buckets) >= self.max_callers and caller not in self._buckets:
            self._forget_idle(now)
        self._buckets[caller] = (tokens - cost, now)

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.per_second
        idle = [c for c, (_, last) in self._buckets.items() if now - last >= full_after]
        for c in idle:
            del self._buckets[c]
        if len(self._buckets) >= self.max_callers:
            self._buckets.clear()  # everyone is active: start afresh rather than grow without bound


class StreamQuota:
    """At most `per_caller` concurrent exports / live tails per caller: `acquire()` before the response
    starts, `release()` when the stream ends (however it ends)."""

    def __init__(self, per_caller: int) -> None:
        self.per_caller = per_caller
        self._open: dict[str, int] = {}

    def acquire(self, caller: str) -> None:
        held = self._open.get(caller, 0)
        if held >= self.per_caller:
            raise TooManyStreams(
                f"at most {self.per_caller} exports or live tails at once per caller", retry_after_seconds=5.0
            )
        self._open[caller] = held + 1

    def release(self, caller: str) -> None:
        left = self._open.get(caller, 1) - 1
        if left > 0:
            self._open[caller] = left
        else:
            self._open.pop(caller, None)

    def held(self, caller: str) -> int:
        return self._open.get(caller, 0)
