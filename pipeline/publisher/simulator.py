"""Realistic room traffic for demos, load tests and the benchmark (`roomlogs simulate`).

The valid traffic of a simulated world of rooms and users (`pipeline.publisher.world`), interleaved with a
share of bad events a room server might send (`pipeline.publisher.bad_events`), each labelled with the
Reason the ingest worker must give it. This module owns the run: its configuration, the interleaving,
publishing with optional pacing, and the summary of what was published.

Everything is drawn from one seeded random generator: the same seed and start time give the same bytes.
Events are generated on the fly; memory depends on the number of rooms, not the number of events.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.events.reasons import Reason
from pipeline.publisher.bad_events import BadEvents
from pipeline.publisher.world import KINDS, World

Generated = tuple[bytes, bytes, Reason | None]


class RawEventSink(Protocol):
    """What simulate() needs from a publisher (RoomEventPublisher is one)."""

    async def send_raw(self, key: bytes | None, value: bytes) -> None: ...

    async def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    rooms: int
    events: int
    #: Share of events (0..1) that break the contract on purpose; each is labelled with its Reason.
    bad_event_ratio: float
    seed: int
    #: Events per second, paced in real time (timestamps follow the clock); None: as fast as possible.
    rate_per_second: float | None = None
    #: Unpaced runs spread the events' timestamps over this many seconds before the start time.
    history_seconds: float = 600.0
    #: Shares of room kinds; the rest are small public rooms.
    busy_room_share: float = 0.1
    private_room_share: float = 0.4
    #: The worker's limit (Settings.max_event_bytes): oversize bad events are just above it.
    max_event_bytes: int = 64 * 1024
    #: Whether owners now and then hand their rooms over. False: a room keeps the owner it was created
    #: with (`roomlogs up` runs its traffic so: its sign-in link names a room's owner and must keep working).
    owner_transfers: bool = True

    def __post_init__(self) -> None:
        if self.rooms < 1 or self.events < 0:
            raise ValueError("rooms must be at least 1 and events not negative")
        if not 0.0 <= self.bad_event_ratio <= 1.0:
            raise ValueError("bad_event_ratio must be between 0 and 1")
        if self.rate_per_second is not None and self.rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive (or None for as fast as possible)")
        if self.history_seconds < 0 or self.max_event_bytes <= 0:
            raise ValueError("history_seconds must not be negative and max_event_bytes must be positive")
        shares = (self.busy_room_share, self.private_room_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise ValueError("busy_room_share and private_room_share must be shares adding up to at most 1")


@dataclass(slots=True)
class SimulationSummary:
    """What a simulation published: valid events by type, bad events by the Reason expected for them."""

    published: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    #: Rooms that received traffic, by kind (busy_public, small_public, private) at creation.
    rooms_by_kind: Counter[str] = field(default_factory=Counter)
    elapsed_seconds: float = field(default=0.0, compare=False)

    @property
    def valid_total(self) -> int:
        return sum(self.published.values())

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    @property
    def total(self) -> int:
        return self.valid_total + self.bad_total

    def render(self) -> str:
        total = self.total
        rate = total / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0
        lines = [
            f"published {total:,} events in {self.elapsed_seconds:.1f} s ({rate:,.0f} events/s)",
            f"  valid {self.valid_total:>12,}",
        ]
        lines += [f"    {name:<26}{count:>12,}" for name, count in sorted(self.published.items())]
        share = self.bad_total / total if total else 0.0
        lines.append(f"  bad   {self.bad_total:>12,}  ({share:.1%}), by the reason the worker should give:")
        lines += [f"    {name:<26}{count:>12,}" for name, count in sorted(self.bad.items())]
        rooms = ", ".join(f"{self.rooms_by_kind.get(kind, 0):,} {kind}" for kind in KINDS)
        lines.append(f"  rooms with traffic: {rooms}")
        return "\n".join(lines)


def iter_events(config: SimulationConfig, now: datetime) -> Iterator[Generated]:
    """(key, value, expected Reason or None) for every event of a simulation starting at `now`.

    Pure and deterministic: the same config and `now` give the same bytes. Valid events (reason None) pass
    the Normalizer at `now` (unpaced runs) or at their own `occurred_at` (paced runs).
    """
    for key, value, _etype, reason in _Generator(config, now):
        yield key, value, reason


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress_bar(total: int, shown: bool) -> Any:
    """A tqdm bar on stderr, or nothing: tqdm is not in the SDK's base install (the worker extra has it)."""
    if not shown:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="ev", desc="simulate", mininterval=0.5, smoothing=0.05)


async def simulate(
    publisher: RawEventSink,
    config: SimulationConfig,
    progress: bool,
    *,
    now: datetime | None = None,
) -> SimulationSummary:
    """Publish a simulation through `publisher` (started by the caller), then flush it.

    Paced runs sleep to keep `rate_per_second`; a publisher that cannot keep up makes the run longer, not
    the timestamps wrong by more than the lag. A delivery failure surfaces as the publisher's flush() error.
    """
    start = now if now is not None else datetime.now(UTC)
    generator = _Generator(config, start)
    summary = SimulationSummary()
    published, bad = summary.published, summary.bad
    interval = 1.0 / config.rate_per_second if config.rate_per_second else None
    began = time.monotonic()
    unreported = 0
    with _progress_bar(config.events, progress) as bar:
        for index, (key, value, etype, reason) in enumerate(generator):
            if interval is not None:
                delay = began + index * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await publisher.send_raw(key, value)
            if reason is None:
                published[etype] += 1
            else:
                bad[reason] += 1
            unreported += 1
            if unreported == 2048:
                bar.update(unreported)
                unreported = 0
        bar.update(unreported)
    await publisher.flush()
    summary.rooms_by_kind.update(generator.world.rooms_created)
    summary.elapsed_seconds = time.monotonic() - began
    return summary


#: Paced runs: the least time between two messages of one user (pipeline.publisher.world, `_chat`). At the
#: traffic of `roomlogs up` (12 rooms, 25 events/s) the busiest room's first users, chatting alone, posted
#: 42 messages in 10 s: a chat flood (more than 40), raised on the console's first view.
PACED_CHAT_GAP_SECONDS = 2.0


class _Generator:
    """One pass over a simulation: interleaves the world's valid events with bad ones."""

    def __init__(self, config: SimulationConfig, now: datetime) -> None:
        self.config = config
        base = now.timestamp()
        if config.rate_per_second:
            start, step = base, 1.0 / config.rate_per_second
        else:
            step = config.history_seconds / config.events if config.events else 0.0
            start = base - config.history_seconds
        self.world = World(
            rooms=config.rooms,
            seed=config.seed,
            start_epoch_seconds=start,
            step_seconds=step,
            busy_room_share=config.busy_room_share,
            private_room_share=config.private_room_share,
            owner_transfers=config.owner_transfers,
            chat_gap_seconds=PACED_CHAT_GAP_SECONDS if config.rate_per_second else 0.0,
        )
        self.bad_events = BadEvents(self.world, config.max_event_bytes)

    def __iter__(self) -> Iterator[tuple[bytes, bytes, str, Reason | None]]:
        world = self.world
        rand = world.rng.random
        ratio = self.config.bad_event_ratio
        pending = world.pending
        popleft = pending.popleft
        step = world.step
        bad_event = self.bad_events.draw
        for _ in range(self.config.events):
            if ratio and rand() < ratio:
                key, value, reason = bad_event()
                yield key, value, "", reason
            else:
                while not pending:
                    step()
                key, value, etype = popleft()
                yield key, value, etype, None
