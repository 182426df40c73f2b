"""Whether sealing keeps up: closed days still unsealed, daily heads not yet on the witness topic.

Who calls it: every worker's maintenance timer (any role: it only reads the seal tables and the partition
catalog), which sets the gauges of `SealMetrics` so that an alert fires when the process that holds the
key (compose's retention service) stopped sealing, lost its key or cannot reach the broker; and
`roomlogs status`, which prints it. A schema no key was ever registered in does not seal: nothing is
overdue there (`enabled` False), so a deployment that never set up sealing gets no alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg
from prometheus_client import CollectorRegistry, Gauge

from pipeline.retention_rules import closed_before
from pipeline.storage import seals
from pipeline.storage.partitions import day_start

__all__ = ["SealMetrics", "SealingState", "sealing_state"]


@dataclass(frozen=True, slots=True)
class SealingState:
    #: a signing key was registered: this schema seals its closed days
    enabled: bool
    #: closed days (past the late window) with a partition and no daily head yet, oldest first
    overdue: list[date]
    #: daily heads the witness topic has not acknowledged
    unpublished_heads: int
    #: the newest day sealed whole (None: none yet)
    last_sealed_day: date | None
    #: the witness topic is not the one the heads were published to (set by `roomlogs status`, which asks
    #: the broker: pipeline.sealing.witness.judge)
    witness_problem: str | None = None

    def say(self) -> str:
        """One line for `roomlogs status`."""
        if not self.enabled:
            return "sealing: off (no signing key registered; see README, Evidence)"
        last = self.last_sealed_day.isoformat() if self.last_sealed_day else "none yet"
        line = f"sealing: last day sealed {last}"
        if self.overdue:
            days = ", ".join(d.isoformat() for d in self.overdue[:3]) + (
                " ..." if len(self.overdue) > 3 else ""
            )
            line += f"; ERROR {len(self.overdue)} closed day(s) not sealed: {days}"
        if self.unpublished_heads:
            line += f"; {self.unpublished_heads} daily head(s) not yet on the witness topic"
        if self.witness_problem:
            line += f"; ERROR {self.witness_problem}"
        return line


async def sealing_state(
    conn: asyncpg.Connection, *, now: datetime, late_window_seconds: float, heads_topic: str
) -> SealingState:
    if not await seals.public_keys(conn):
        return SealingState(False, [], 0, None)
    overdue = await seals.unsealed_days(conn, closed_before(now, late_window_seconds))
    sealed = await seals.sealed_days(conn)
    history = await seals.incarnations(conn, heads_topic)
    # the heads the witness topic published to last acknowledged (a new topic gets them all again)
    published = await seals.published(conn, heads_topic, [history[-1].topic_id] if history else [])
    unpublished = sum(1 for h in await seals.heads(conn) if h.head_id not in published)
    return SealingState(True, overdue, unpublished, sealed[0] if sealed else None)


class SealMetrics:
    """Gauges of `SealingState`, in the worker's registry."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "roomlogs") -> None:
        p = prefix
        self.enabled = Gauge(
            f"{p}_sealing_enabled",
            "1 when a signing key is registered: closed days are sealed",
            registry=registry,
        )
        self.overdue_days = Gauge(
            f"{p}_seal_overdue_days",
            "Closed days (past ROOMLOGS_SEAL_LATE_WINDOW_SECONDS) that have a partition and no seal yet",
            registry=registry,
        )
        self.unpublished_heads = Gauge(
            f"{p}_seal_heads_unpublished",
            "Daily heads of the seals not yet acknowledged by the witness topic",
            registry=registry,
        )
        self.last_sealed_day = Gauge(
            f"{p}_seal_last_day_timestamp_seconds",
            "Start (Unix time) of the newest UTC day sealed whole; 0 before the first",
            registry=registry,
        )

    def observe(self, state: SealingState) -> None:
        self.enabled.set(1 if state.enabled else 0)
        self.overdue_days.set(len(state.overdue))
        self.unpublished_heads.set(state.unpublished_heads)
        last = state.last_sealed_day
        self.last_sealed_day.set(day_start(last).timestamp() if last else 0)
