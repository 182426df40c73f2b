"""Capped exponential back-off: the one waiting rule of the ingest stage (writes, reads, the relay)."""

from __future__ import annotations


class Backoff:
    """`next_delay()` gives `initial`, then twice the previous, never above `maximum`."""

    __slots__ = ("_delay", "initial", "maximum")

    def __init__(self, initial_seconds: float, maximum_seconds: float) -> None:
        self.initial = initial_seconds
        self.maximum = max(initial_seconds, maximum_seconds)
        self._delay = initial_seconds

    def next_delay(self) -> float:
        delay = self._delay
        self._delay = min(delay * 2, self.maximum)
        return delay

    @property
    def exhausted(self) -> bool:
        """The delays have reached their cap (waiting longer would not come sooner)."""
        return self._delay >= self.maximum
