"""Realistic room traffic for demos, load tests and the benchmark (`roomlogs simulate`).

Rooms of three kinds (busy public rooms with max_occupancy >= 50, small public rooms, private rooms), each
created with its settings, an owner and moderators; users entering and leaving, chat bursts with replies,
gifts, moderation (warn, mute, kick, ban, and lifting them), settings and permission changes; and a share
of bad events a room server might send (broken JSON, wrong types, unknown types, missing fields, oversize
events, future timestamps, whispers), each labelled with the Reason the ingest worker must give it.

Everything is drawn from one seeded random generator: the same seed and start time give the same bytes.
Events are generated on the fly; memory depends on the number of rooms, not the number of events.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, Protocol

import orjson
from tqdm import tqdm

from pipeline.events.contract import EventType
from pipeline.events.reasons import Reason
from pipeline.publisher.events import User, envelope, user

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
    with tqdm(
        total=config.events, file=sys.stderr, disable=not progress, unit="ev", desc="simulate",
        mininterval=0.5, smoothing=0.05,
    ) as bar:  # fmt: skip
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
            max_event_bytes=config.max_event_bytes,
        )

    def __iter__(self) -> Iterator[tuple[bytes, bytes, str, Reason | None]]:
        world = self.world
        rand = world.rng.random
        ratio = self.config.bad_event_ratio
        pending = world.pending
        popleft = pending.popleft
        step = world.step
        bad_event = world.bad_event
        for _ in range(self.config.events):
            if ratio and rand() < ratio:
                key, value, reason = bad_event()
                yield key, value, "", reason
            else:
                while not pending:
                    step()
                key, value, etype = popleft()
                yield key, value, etype, None


# --- the simulated world ----------------------------------------------------------------------------------
BUSY, SMALL, PRIVATE = "busy_public", "small_public", "private"
KINDS = (BUSY, SMALL, PRIVATE)
_MAX_OCCUPANCY = {
    BUSY: (50, 64, 80, 100, 150, 200),
    SMALL: (6, 8, 10, 12, 16, 20, 25, 30),
    PRIVATE: (2, 4, 6, 8, 10, 12),
}
#: How much of the traffic a room of each kind gets, relative to a private room.
_TRAFFIC_WEIGHT = {BUSY: 20.0, SMALL: 3.0, PRIVATE: 1.0}
#: Moderators appointed at creation (min, max).
_MODERATORS = {BUSY: (2, 5), SMALL: (0, 2), PRIVATE: (0, 1)}
_OCCUPANCY_TARGET = {BUSY: (0.4, 0.9), SMALL: (0.3, 0.8), PRIVATE: (0.5, 1.0)}
_TEXT_POOL_SIZE = 4096
_MASK48 = (1 << 48) - 1
_UUID7_FORMAT = "%08x-%04x-%04x-%04x-%012x"  # unix_ts_ms (48) | 7 rand_a (16) | 10 rand_b (16 + 48)

# Vocabulary of the chat texts and names.
_VOCABULARY = """hi hello hey everyone anyone here lol haha yes no maybe ok sure thanks welcome back
    nice cool great awesome love this room music party dance tonight today later brb afk gg wow omg really
    what why how where when who is are was the a an to of in on at for with my your our their new old best
    worst song playlist outfit avatar hair shoes hat lounge beach club cafe rooftop garden stage dj set vibes
    chill game play join come follow meet friend friends chat talk say said think know see look like want
    need got get going go went stay leave there now soon always never ever again please"""
_NAME_PARTS = """Silent Happy Lucky Neon Cosmic Velvet Sunny Frosty Wild Misty Pixel Mellow Brave Shy
    | Fox Otter Panda Comet Tiger Raven Koala Falcon Lynx Whale Moth Gecko Bunny Drake"""
_WORDS = tuple(_VOCABULARY.split())
_ADJECTIVES, _NOUNS = (tuple(part.split()) for part in _NAME_PARTS.split("|"))
_EXTRA_WORDS = ("café", "naïve", "Grüße", "¡hola!", "привет", "こんにちは", "안녕", "ça va", "Zürich", "olá")
_EMOJI = ("🙂", "😂", "🎉", "❤️", "👍", "🔥", "✨", "😅", "🥳", "👀")
_LANGUAGES = ("en", "en", "en", "de", "fr", "es", "pt", "ja", "ko")
_TOPICS = ("chill vibes only", "friday party", "music requests open", "new here? say hi", "quiet hour",
           "fashion show at 9", "trivia night", "no spam please")  # fmt: skip
_REASONS = (
    "spamming the chat", "harassment of another user", "hate speech", "advertising", "inappropriate avatar",
    "flooding with emoji", "ban evasion", "sharing personal information", "repeated rule violations",
    "impersonating staff", "offensive display name", "begging for credits", "scam links",
)  # fmt: skip
_GIFTS = (
    ("rose", "Rose", 10), ("coffee", "Coffee", 5), ("teddy", "Teddy Bear", 50),
    ("fireworks", "Fireworks", 200), ("crown", "Golden Crown", 1000), ("star", "Shooting Star", 25),
)  # fmt: skip
_MUTE_SECONDS = (60, 300, 600, 3600, None)
_BAN_SECONDS = (3600, 86400, 604_800, 2_592_000, None)
_CHAT, _ENTERED, _LEFT = EventType.CHAT_MESSAGE.value, EventType.USER_ENTERED.value, EventType.USER_LEFT.value
_SETTINGS, _PERMISSIONS = EventType.ROOM_SETTINGS_CHANGED.value, EventType.ROOM_PERMISSIONS_CHANGED.value
_GIFT = EventType.GIFT_SENT.value


class _Room:
    __slots__ = (
        "banned", "created", "key", "kind", "last_chat_id", "moderators", "muted", "occupants", "owner",
        "positions", "room_id", "settings", "staff_ids", "target",
    )  # fmt: skip

    def __init__(self, room_id: str, kind: str, max_occupancy: int, target: int) -> None:
        self.room_id = room_id
        self.key = room_id.encode()
        self.kind = kind
        self.target = target
        self.created = False
        self.owner: User = {}
        self.moderators: list[User] = []
        self.staff_ids: set[str] = set()
        self.occupants: list[User] = []
        self.positions: dict[str, int] = {}
        self.muted: deque[User] = deque(maxlen=16)
        self.banned: deque[User] = deque(maxlen=16)
        self.last_chat_id: str | None = None
        self.settings: dict[str, Any] = {"max_occupancy": max_occupancy}


class World:
    """The rooms and users of one simulation; `step()` appends a room's next events to `pending`."""

    def __init__(
        self,
        *,
        rooms: int,
        seed: int,
        start_epoch_seconds: float,
        step_seconds: float,
        busy_room_share: float,
        private_room_share: float,
        max_event_bytes: int,
    ) -> None:
        rng = self.rng = random.Random(seed)  # noqa: S311 - simulated traffic, no secrets
        self.pending: deque[tuple[bytes, bytes, str]] = deque()
        self.rooms_created: Counter[str] = Counter()
        self._start, self._step, self._n = start_epoch_seconds, step_seconds, 0
        self._second, self._second_text = -1, ""
        self._max_event_bytes = max_event_bytes
        self._oversize: bytes | None = None
        prefix = f"room-{rng.getrandbits(24):06x}"
        small_room_share = 1.0 - busy_room_share - private_room_share
        # The first rooms are one of each kind (with a non-zero share), so even tiny runs show all three.
        forced = [kind for kind, share in ((BUSY, busy_room_share), (SMALL, small_room_share),
                                           (PRIVATE, private_room_share)) if share > 1e-9]  # fmt: skip
        self.rooms: list[_Room] = []
        cumulative, total = [], 0.0
        for i in range(rooms):
            if i < len(forced):
                kind = forced[i]
            else:
                r = rng.random()
                if r < busy_room_share:
                    kind = BUSY
                elif r < busy_room_share + private_room_share:
                    kind = PRIVATE
                else:
                    kind = SMALL
            max_occupancy = rng.choice(_MAX_OCCUPANCY[kind])
            low, high = _OCCUPANCY_TARGET[kind]
            target = max(2, round(max_occupancy * rng.uniform(low, high)))
            self.rooms.append(_Room(f"{prefix}-{i:05d}", kind, max_occupancy, target))
            total += _TRAFFIC_WEIGHT[kind]
            cumulative.append(total)
        self._cumulative, self._total_weight = cumulative, total
        user_count = max(64, int(sum(room.target for room in self.rooms) * 1.3))
        self._users: list[User | None] = [None] * user_count
        self._texts = [self._make_text() for _ in range(_TEXT_POOL_SIZE)]
        self._bad_makers: dict[Reason, Callable[[dict[str, Any], float], bytes | dict[str, Any]]] = {
            Reason.INVALID_JSON: self._bad_invalid_json,
            Reason.NOT_AN_OBJECT: self._bad_not_an_object,
            Reason.WRONG_TYPE: self._bad_wrong_type,
            Reason.UNKNOWN_TYPE: self._bad_unknown_type,
            Reason.MISSING_FIELD: self._bad_missing_field,
            Reason.TIMESTAMP_IN_FUTURE: self._bad_timestamp_in_future,
            Reason.PRIVATE_MESSAGE: self._bad_private_message,
            Reason.UNSUPPORTED_VERSION: self._bad_unsupported_version,
            Reason.INVALID_TIMESTAMP: self._bad_invalid_timestamp,
            Reason.INVALID_VALUE: self._bad_invalid_value,
        }

    # --- time, ids, output ----------------------------------------------------------------------------
    def _stamp(self) -> tuple[str, str, float]:
        """(event_id, occurred_at, epoch seconds) of the next event: UUIDv7 from the simulated clock."""
        t = self._start + self._n * self._step
        self._n += 1
        ms = int(t * 1000)
        r = self.rng.getrandbits(74)  # 12 bits rand_a, 62 bits rand_b
        event_id = _UUID7_FORMAT % (
            ms >> 16,
            ms & 0xFFFF,
            0x7000 | r >> 62,
            0x8000 | (r >> 48) & 0x3FFF,
            r & _MASK48,
        )
        return event_id, self._format(t), t

    def _format(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((t - second) * 1_000_000):06d}Z"

    def _emit(self, room: _Room, etype: str, actor: User | None, data: dict[str, Any]) -> str:
        event_id, occurred_at, _ = self._stamp()
        doc = envelope(etype, room.room_id, actor, data, event_id=event_id, occurred_at=occurred_at)
        self.pending.append((room.key, orjson.dumps(doc), etype))
        return event_id

    # --- people and text -------------------------------------------------------------------------------
    def _user(self, index: int) -> User:
        found = self._users[index]
        if found is None:
            rng = self.rng
            name = f"{rng.choice(_ADJECTIVES)}{rng.choice(_NOUNS)}{rng.randrange(100)}"
            if rng.random() < 0.7:
                avatar_id = f"av-{index:07d}-{rng.randrange(8)}"
                found = user(f"user-{index:07d}", name, avatar_id=avatar_id,
                             avatar_url=f"https://cdn.example.net/avatars/{avatar_id}.png")  # fmt: skip
            else:
                found = user(f"user-{index:07d}", name)
            self._users[index] = found
        return found

    def _random_user(self) -> User:
        return self._user(self.rng.randrange(len(self._users)))

    def _make_text(self) -> str:
        rng = self.rng
        words = [rng.choice(_WORDS) for _ in range(1 + int(rng.random() ** 1.5 * 14))]
        r = rng.random()
        if r < 0.10:
            words.append(rng.choice(_EMOJI))
        elif r < 0.14:
            words.insert(rng.randrange(len(words) + 1), rng.choice(_EXTRA_WORDS))
        elif r < 0.145:
            words += ["mail", "me", "at", f"{rng.choice(_WORDS)}{rng.randrange(100)}@example.com"]
        elif r < 0.15:  # a wall of text, sometimes over the 2,000-character limit (the worker truncates it)
            words = words * (1 + 2500 // (6 * len(words)))
        text = " ".join(words)
        return text[0].upper() + text[1:] + rng.choice(("", "", ".", "!", "?", "!!"))

    # --- valid traffic ---------------------------------------------------------------------------------
    def step(self) -> None:
        rng = self.rng
        room = self.rooms[bisect_right(self._cumulative, rng.random() * self._total_weight)]
        if not room.created:
            self._create(room)
            return
        n = len(room.occupants)
        below = n < room.target
        r = rng.random()
        if n < 2 or (r < (0.12 if below else 0.03) and n < room.settings["max_occupancy"]):
            self._enter(room)
        elif r < 0.15:
            self._leave(room, "quit" if rng.random() < 0.55 else "disconnect")
        else:
            r = rng.random()
            if r < 0.86:
                self._chat(room)
            elif r < 0.92:
                self._gift(room)
            elif r < 0.97:
                self._moderate(room)
            elif r < 0.99:
                self._change_settings(room)
            else:
                self._change_permissions(room)

    def _create(self, room: _Room) -> None:
        rng = self.rng
        room.created = True
        self.rooms_created[room.kind] += 1
        s = room.settings
        s["name"] = (
            f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(('Lounge', 'Club', 'Den', 'Hub'))}"
        )
        s["privacy"] = "private" if room.kind == PRIVATE else "public"
        if room.kind == PRIVATE:
            s["password_protected"] = rng.random() < 0.5
        else:
            s["language"] = rng.choice(_LANGUAGES)
            s["voice_enabled"] = rng.random() < 0.3
        self._emit(
            room, _SETTINGS, None, {"changes": {name: {"old": None, "new": v} for name, v in s.items()}}
        )
        room.owner = self._random_user()
        room.staff_ids.add(room.owner["user_id"])
        self._emit(room, _PERMISSIONS, None, {"change": "owner_transferred", "target": room.owner})
        low, high = _MODERATORS[room.kind]
        for _ in range(rng.randint(low, high)):
            moderator = self._random_user()
            if moderator["user_id"] not in room.staff_ids:
                self._appoint(room, moderator)
        self._enter(room, room.owner)

    def _appoint(self, room: _Room, moderator: User) -> None:
        room.moderators.append(moderator)
        room.staff_ids.add(moderator["user_id"])
        self._emit(room, _PERMISSIONS, room.owner, {"change": "moderator_added", "target": moderator})

    def _enter(self, room: _Room, who: User | None = None) -> None:
        if who is None:
            for _ in range(4):
                candidate = self._random_user()
                if candidate["user_id"] not in room.positions and candidate not in room.banned:
                    who = candidate
                    break
            else:
                self._chat(room)
                return
        room.positions[who["user_id"]] = len(room.occupants)
        room.occupants.append(who)
        self._emit(room, _ENTERED, who, {})

    def _leave(self, room: _Room, how: str, index: int | None = None) -> None:
        occupants, positions = room.occupants, room.positions
        if not occupants:
            return
        if index is None:
            index = self.rng.randrange(len(occupants))
        who = occupants[index]
        last = occupants.pop()
        if index < len(occupants):
            occupants[index] = last
            positions[last["user_id"]] = index
        del positions[who["user_id"]]
        self._emit(room, _LEFT, who, {"how": how})

    def _chat(self, room: _Room) -> None:
        rng, texts, occupants = self.rng, self._texts, room.occupants
        if not occupants:
            self._enter(room)
            return
        rand, n = rng.random, len(occupants)  # (index by rand(): random.choice is slow on this hot path)
        speakers = [occupants[int(rand() * n)] for _ in range(1 + int(rand() * 3))]
        for _ in range(1 + int(rand() ** 2 * 6)):
            data: dict[str, Any] = {"text": texts[int(rand() * _TEXT_POOL_SIZE)]}
            if room.last_chat_id is not None and rand() < 0.15:
                data["reply_to"] = room.last_chat_id
            room.last_chat_id = self._emit(room, _CHAT, speakers[int(rand() * len(speakers))], data)

    def _gift(self, room: _Room) -> None:
        rng, occupants = self.rng, room.occupants
        sender, recipient = rng.choice(occupants), rng.choice(occupants)
        if sender is recipient:
            self._chat(room)
            return
        item_id, name, price = rng.choice(_GIFTS)
        data = {"recipient": recipient, "item": {"item_id": item_id, "name": name},
                "credits": price * rng.choice((1, 1, 1, 2, 5))}  # fmt: skip
        self._emit(room, _GIFT, sender, data)

    def _moderate(self, room: _Room) -> None:
        rng = self.rng
        actor = rng.choice(room.moderators) if room.moderators and rng.random() < 0.7 else room.owner
        reason = rng.choice(_REASONS)
        r = rng.random()
        if r < 0.07 and room.muted:
            self._emit(
                room, EventType.MOD_UNMUTE.value, actor, {"target": room.muted.popleft(), "reason": reason}
            )
            return
        if r < 0.11 and room.banned:
            self._emit(
                room, EventType.MOD_UNBAN.value, actor, {"target": room.banned.popleft(), "reason": reason}
            )
            return
        index = rng.randrange(len(room.occupants))
        target = room.occupants[index]
        if target["user_id"] in room.staff_ids:
            self._chat(room)
            return
        data: dict[str, Any] = {"target": target, "reason": reason}
        if r < 0.40:
            self._emit(room, EventType.MOD_WARN.value, actor, data)
        elif r < 0.65:
            data["duration_seconds"] = rng.choice(_MUTE_SECONDS)
            self._emit(room, EventType.MOD_MUTE.value, actor, data)
            room.muted.append(target)
        elif r < 0.88:
            self._emit(room, EventType.MOD_KICK.value, actor, data)
            self._leave(room, "kicked", index)
        else:
            data["duration_seconds"] = rng.choice(_BAN_SECONDS)
            self._emit(room, EventType.MOD_BAN.value, actor, data)
            self._leave(room, "kicked", index)
            room.banned.append(target)

    def _change_settings(self, room: _Room) -> None:
        rng, s = self.rng, room.settings
        r = rng.random()
        new: Any
        if r < 0.05 and room.kind != BUSY:  # a small room goes private, or a private one opens up
            room.kind = SMALL if room.kind == PRIVATE else PRIVATE
            name, new = "privacy", ("private" if room.kind == PRIVATE else "public")
        elif r < 0.25:
            name, new = "max_occupancy", rng.choice(_MAX_OCCUPANCY[room.kind])
        elif r < 0.70:
            name, new = "topic", rng.choice(_TOPICS)
        elif r < 0.85:
            name, new = "description", f"{rng.choice(_TOPICS).capitalize()}. Be nice."
        else:
            name, new = "voice_enabled", not s.get("voice_enabled", False)
        old, s[name] = s.get(name), new
        self._emit(room, _SETTINGS, room.owner, {"changes": {name: {"old": old, "new": new}}})

    def _change_permissions(self, room: _Room) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.6 or not room.moderators:
            candidate = rng.choice(room.occupants)
            if candidate["user_id"] not in room.staff_ids:
                self._appoint(room, candidate)
            return
        moderator = room.moderators.pop(rng.randrange(len(room.moderators)))
        if r < 0.9:
            room.staff_ids.discard(moderator["user_id"])
            self._emit(room, _PERMISSIONS, room.owner, {"change": "moderator_removed", "target": moderator})
        else:  # the owner hands the room over and stays on as a moderator
            old_owner, room.owner = room.owner, moderator
            room.moderators.append(old_owner)
            self._emit(room, _PERMISSIONS, old_owner, {"change": "owner_transferred", "target": moderator})

    # --- bad events ------------------------------------------------------------------------------------
    def bad_event(self) -> tuple[bytes, bytes, Reason]:
        """A deliberately broken event for a random room, and the Reason the worker must give it."""
        rng = self.rng
        room = self.rooms[rng.randrange(len(self.rooms))]
        event_id, occurred_at, t = self._stamp()
        actor = self._random_user()
        doc = envelope(_CHAT, room.room_id, actor, {"text": self._texts[rng.randrange(_TEXT_POOL_SIZE)]},
                       event_id=event_id, occurred_at=occurred_at)  # fmt: skip
        kind = _BAD_KINDS[bisect_right(_BAD_CUMULATIVE, rng.random() * _BAD_CUMULATIVE[-1])]
        if kind is Reason.OVERSIZE:
            return room.key, self._oversize_event(doc), kind
        value = self._bad_makers[kind](doc, t)
        return room.key, value if type(value) is bytes else orjson.dumps(value), kind

    def _oversize_event(self, doc: dict[str, Any]) -> bytes:
        # One shared blob per run: the worker reads no further than its length, and a benchmark that
        # keeps every generated event in memory pays for it once.
        if self._oversize is None:
            doc["data"] = {"text": "x" * self._max_event_bytes}
            self._oversize = orjson.dumps(doc)
        return self._oversize

    def _bad_invalid_json(self, doc: dict[str, Any], t: float) -> bytes:
        raw = orjson.dumps(doc)
        variant = self.rng.randrange(4)
        if variant == 0:
            return raw[: len(raw) // 2]  # cut off mid-event
        if variant == 1:
            return b"\xff\xfe" + raw  # not UTF-8
        if variant == 2:
            return raw.replace(b'"', b"'")  # single quotes
        return raw[:-1] + b",}"  # trailing comma

    def _bad_not_an_object(self, doc: dict[str, Any], t: float) -> bytes:
        return self.rng.choice((b"[" + orjson.dumps(doc) + b"]", b'"chat.message"', b"null", b"42"))

    def _bad_wrong_type(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        variant = self.rng.randrange(5)
        if variant == 0:
            doc["data"] = {"text": 12345}
        elif variant == 1:
            doc["actor"] = doc["actor"]["user_id"]  # a bare id instead of a user object
        elif variant == 2:
            doc["occurred_at"] = int(t)  # epoch seconds instead of RFC 3339
        elif variant == 3:
            doc["room_id"] = 4242
        else:
            doc["data"] = [doc["data"]["text"]]
        return doc

    def _bad_unknown_type(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        doc["type"] = self.rng.choice(
            ("chat.reaction", "room.teleport", "user.afk", "emote.played", "CHAT.MESSAGE")
        )
        return doc

    def _bad_missing_field(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        name = self.rng.choice(
            ("type", "schema_version", "event_id", "room_id", "occurred_at", "actor", "text")
        )
        if name == "text":
            doc["data"] = {}
        else:
            del doc[name]
        return doc

    def _bad_timestamp_in_future(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        ahead = t + self.rng.choice((3600, 6 * 3600, 86400, 30 * 86400))
        doc["occurred_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ahead))
        return doc

    def _bad_private_message(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        recipient = self._random_user()
        variant = self.rng.randrange(4)
        if variant == 0:
            doc["type"] = "chat.whisper"
            doc["data"]["recipient"] = recipient
        elif variant == 1:
            doc["type"] = "chat.direct_message"
            doc["data"]["to"] = recipient["user_id"]
        else:  # a whisper disguised as a chat message
            doc["data"]["recipient" if variant == 2 else "whisper_to"] = recipient
        return doc

    def _bad_unsupported_version(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        doc["schema_version"] = self.rng.choice((2, 0, "1"))
        return doc

    def _bad_invalid_timestamp(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        stamp = doc["occurred_at"]
        doc["occurred_at"] = self.rng.choice(
            ("yesterday", "2024-13-45T25:00:00Z", stamp[:-1], "1999-12-31T23:59:59Z")
        )
        return doc

    def _bad_invalid_value(self, doc: dict[str, Any], t: float) -> dict[str, Any]:
        rng = self.rng
        variant = rng.randrange(6)
        if variant == 0:
            doc["data"] = {"text": ""}
        elif variant == 1:
            doc["event_id"] = "not-a-uuid"
        elif variant == 2:
            doc["room_id"] = ""
        elif variant == 3:
            doc["type"], doc["data"] = _LEFT, {"how": "teleported"}
        elif variant == 4:
            doc["type"] = _GIFT
            doc["data"] = {"recipient": self._random_user(), "item": {"item_id": "rose"}, "credits": -5}
        else:
            doc["type"] = EventType.MOD_BAN.value
            doc["data"] = {"target": self._random_user(), "reason": "spam", "duration_seconds": 0}
        return doc


#: Bad events by the reason they must get, and how often (relative weights).
_BAD_WEIGHTS = {
    Reason.INVALID_JSON: 10,
    Reason.NOT_AN_OBJECT: 3,
    Reason.WRONG_TYPE: 14,
    Reason.UNKNOWN_TYPE: 8,
    Reason.MISSING_FIELD: 14,
    Reason.OVERSIZE: 2,
    Reason.TIMESTAMP_IN_FUTURE: 8,
    Reason.PRIVATE_MESSAGE: 12,
    Reason.UNSUPPORTED_VERSION: 4,
    Reason.INVALID_TIMESTAMP: 8,
    Reason.INVALID_VALUE: 12,
}
_BAD_KINDS = tuple(_BAD_WEIGHTS)
_BAD_CUMULATIVE = tuple(accumulate(_BAD_WEIGHTS.values()))
