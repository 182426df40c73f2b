"""Audit of 429s at a bounded cost: per caller, the first refusal of a window, then one row with a count.

Called by the gate for every 429 (`note`), by the API's periodic flush (`due`) and at shutdown (`drain`);
each returns the audit rows to write now. A caller's first 429 opens a window of `window_seconds` and is
written at once, like any refusal, with its own request id. Later 429s of that caller (same identity, same
code) are only counted until the window closes; then one row records them: outcome `rate_limited`,
`occurrences` = how many, `request_id` = the first of them, `filters` = the window's first and last times,
the last request id and the count per action. A window closes when it is due and the next 429 or flush
comes, or early when `max_callers` windows are open. So a flood costs at most two rows per caller per
window, and memory stays bounded. Anonymous callers (failed authentication) share one tally.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.api.security.audit import AuditEntry

#: `action` of a tally row whose 429s were for more than one action.
MULTIPLE_ACTIONS = "multiple"


@dataclass(slots=True)
class _Window:
    opened: float
    first_suppressed: AuditEntry | None = None
    last_request_id: str | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None
    count: int = 0
    actions: Counter[str] = field(default_factory=Counter)

    def add(self, entry: AuditEntry, at: datetime) -> None:
        if self.first_suppressed is None:
            self.first_suppressed, self.first_at = entry, at
        self.count += 1
        self.last_request_id, self.last_at = str(entry.request_id), at
        self.actions[entry.action] += 1

    def summary(self) -> AuditEntry | None:
        """The one row standing for the 429s counted in this window (None when there were none)."""
        first = self.first_suppressed
        if first is None or self.first_at is None or self.last_at is None:
            return None
        action = first.action if len(self.actions) == 1 else MULTIPLE_ACTIONS
        return first.replace(
            action=action,
            room_id=first.room_id if len(self.actions) == 1 else None,
            user_id=first.user_id if len(self.actions) == 1 else None,
            filters={
                "first_at": self.first_at.isoformat(),
                "last_at": self.last_at.isoformat(),
                "last_request_id": self.last_request_id,
                "actions": dict(self.actions),
            },
            client_request_id=None,
            occurrences=self.count,
        )


class FloodTally:
    def __init__(
        self,
        window_seconds: float,
        *,
        max_callers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.window_seconds = window_seconds
        self.max_callers = max_callers
        self._clock = clock
        self._wall_clock = wall_clock
        #: open windows, oldest first (a dict keeps insertion order and every window is equally long)
        self._open: dict[tuple[str, str, str], _Window] = {}

    def note(self, entry: AuditEntry) -> list[AuditEntry]:
        """Rows to write for this 429: its own when it opens a window, and those of windows now closed."""
        now = self._clock()
        out = self.due(now)
        key = (*entry.caller, entry.detail or "")
        window = self._open.get(key)
        if window is not None:
            window.add(entry, self._wall_clock())
            return out
        if len(self._open) >= self.max_callers:
            out += self._close(next(iter(self._open)))
        self._open[key] = _Window(opened=now)
        out.append(entry)
        return out

    def due(self, now: float | None = None) -> list[AuditEntry]:
        """Rows of the windows that have closed by now."""
        now = self._clock() if now is None else now
        out: list[AuditEntry] = []
        while self._open:
            oldest = next(iter(self._open))
            if self._open[oldest].opened + self.window_seconds > now:
                break
            out += self._close(oldest)
        return out

    def drain(self) -> list[AuditEntry]:
        """Rows of every open window, closing them all (at shutdown)."""
        out: list[AuditEntry] = []
        while self._open:
            out += self._close(next(iter(self._open)))
        return out

    def open_windows(self) -> int:
        return len(self._open)

    def _close(self, key: tuple[str, str, str]) -> list[AuditEntry]:
        summary = self._open.pop(key).summary()
        return [] if summary is None else [summary]
