"""How far ingest is, sampled through the run, and how long each fault held it up.

`Progress` reads the offsets of record (`ingest_offsets`: per partition, the next offset durably written)
every `interval_seconds`; while PostgreSQL is down it records nothing. A fault leaves a `Mark`: when it
started or ended, and which partitions it hit.

*Time to recover* of a mark is the seconds from that moment until every partition it hit has moved past
where it stood then, i.e. until ingest of those partitions progresses again. The publishers keep sending
through every fault, so each partition always has records waiting. Measured from the fault's start for
faults the rest of the system must route around (kill -9 of a broker or a worker, a worker stopped or cut
off: the survivors take over), from its end for outages everyone waits out (PostgreSQL down).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
from asyncpg.exceptions._base import InternalClientError

from pipeline.storage.db import CONNECTION_ERRORS

#: A crashed worker's last commit may still land just after the kill: progress from before this much
#: after a fault's start is not taken as recovery.
_IN_FLIGHT_SECONDS = 0.5


@dataclass(frozen=True)
class Mark:
    label: str
    #: time.monotonic() of the fault's start or end (see `from_start`)
    at: float
    partitions: frozenset[int]
    from_start: bool


class Progress:
    def __init__(self, dsn: str, schema: str, group: str, topic: str, interval_seconds: float = 0.2) -> None:
        self._dsn, self._schema, self._group, self._topic = dsn, schema, group, topic
        self.interval_seconds = interval_seconds
        #: (time.monotonic(), {partition: next offset durably written})
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.marks: list[Mark] = []
        self._task: asyncio.Task[None] | None = None

    def mark(self, label: str, partitions: Iterable[int], *, from_start: bool) -> Mark:
        mark = Mark(label, time.monotonic(), frozenset(partitions), from_start)
        self.marks.append(mark)
        return mark

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="progress")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(
                            self._dsn, timeout=1.0, server_settings={"search_path": self._schema}
                        )
                    rows = await conn.fetch(
                        """SELECT partition, next_offset FROM ingest_offsets
                            WHERE consumer_group = $1 AND topic = $2""",
                        self._group,
                        self._topic,
                        timeout=2.0,
                    )
                    self.samples.append((time.monotonic(), {r[0]: r[1] for r in rows}))
                except (
                    *CONNECTION_ERRORS,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    InternalClientError,
                ):
                    # the server went away: asyncpg may say so with an InterfaceError or InternalClientError
                    # ("another operation is in progress") when the shutdown notice and the closed socket
                    # arrive apart. A probe starts afresh.
                    if conn is not None:
                        conn.terminate()
                    conn = None
                await asyncio.sleep(self.interval_seconds)
        finally:
            if conn is not None:
                conn.terminate()

    def latest(self) -> dict[int, int]:
        return dict(self.samples[-1][1]) if self.samples else {}

    async def sample_after(self, moment: float, timeout_seconds: float = 15.0) -> dict[int, int] | None:
        """The offsets of record as read by a sample begun after `moment` (time.monotonic()): the second
        one to end after it, as the first may have begun before. None when none came within the timeout
        (PostgreSQL unreachable)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            after = [offsets for at, offsets in self.samples if at > moment]
            if len(after) >= 2:
                return dict(after[1])
            await asyncio.sleep(self.interval_seconds)
        return None

    def reached(self, since: float, offsets: dict[int, int]) -> float | None:
        """Seconds from `since` until every partition of `offsets` stood at or past its offset there; None
        if one has not yet."""
        for at, sampled in self.samples:
            if at > since and all(sampled.get(p, 0) >= n for p, n in offsets.items()):
                return at - since
        return None

    def since(self, mark: Mark) -> bool:
        """Whether every partition of `mark` has progressed since (see `recovery`)."""
        return self.recovery(mark) is not None

    def recovery(self, mark: Mark) -> float | None:
        """Seconds from `mark` until each of its partitions moved past where it stood; None if one has not."""
        base_until = mark.at + (_IN_FLIGHT_SECONDS if mark.from_start else 0.0)
        base: dict[int, int] = {}
        for at, offsets in self.samples:
            if at > base_until:
                break
            base = offsets
        recovered: dict[int, float] = {}
        for at, offsets in self.samples:
            if at <= base_until:
                continue
            for p in mark.partitions:
                if p not in recovered and offsets.get(p, 0) > base.get(p, 0):
                    recovered[p] = at
            if len(recovered) == len(mark.partitions):
                return max(recovered.values()) - mark.at
        return None

    def standstill(self, since: float, until: float) -> float:
        """The longest stretch within [since, until] in which no partition progressed, in seconds."""
        longest, moved_at, total = 0.0, since, None
        for at, offsets in self.samples:
            if at > until:
                break
            now = sum(offsets.values())
            if total is not None and now != total:
                if at >= since:
                    longest = max(longest, at - moved_at)
                moved_at = max(at, since)
            total = now
        return max(longest, until - moved_at)
