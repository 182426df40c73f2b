"""The simulated world: rooms, users, and the valid events their life produces.

Rooms of three kinds (busy public rooms with max_occupancy >= 50, small public rooms, private rooms), each
created with its settings, an owner and moderators; users entering and leaving, chat bursts with replies,
gifts, moderation (warn, mute, kick, ban, and lifting them), settings and permission changes.

One seeded random generator (`World.rng`) and one simulated clock (`World.stamp()`) drive everything, the
bad events of `pipeline.publisher.bad_events` included: the order of the draws is part of the output, so
reordering them changes the bytes a seed gives. Memory depends on the number of rooms, not of events.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections import Counter, deque
from typing import Any

import orjson

from pipeline.events.contract import EventType
from pipeline.publisher.events import User, envelope, user

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
TEXT_POOL_SIZE = 4096
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


class Room:
    """One room's state: kind, settings, staff, who is in it, and who is muted or banned."""

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
    """The rooms and users of one simulation; `step()` appends a room's next events to `pending`.

    `rng`, `stamp()`, `random_user()` and `texts` are shared with the bad events drawn between valid ones.
    """

    def __init__(
        self,
        *,
        rooms: int,
        seed: int,
        start_epoch_seconds: float,
        step_seconds: float,
        busy_room_share: float,
        private_room_share: float,
        owner_transfers: bool = True,
        chat_gap_seconds: float = 0.0,
    ) -> None:
        rng = self.rng = random.Random(seed)  # noqa: S311 - simulated traffic, no secrets
        #: the least time between two messages of one user (0: none; see `_chat`)
        self._chat_gap = chat_gap_seconds
        #: user id -> simulated time of their last message (kept when `_chat_gap`)
        self._spoke: dict[str, float] = {}
        self.pending: deque[tuple[bytes, bytes, str]] = deque()
        self.rooms_created: Counter[str] = Counter()
        self._start, self._step, self._n = start_epoch_seconds, step_seconds, 0
        self._owner_transfers = owner_transfers
        self._second, self._second_text = -1, ""
        prefix = f"room-{rng.getrandbits(24):06x}"
        small_room_share = 1.0 - busy_room_share - private_room_share
        # The first rooms are one of each kind (with a non-zero share), so even tiny runs show all three.
        forced = [kind for kind, share in ((BUSY, busy_room_share), (SMALL, small_room_share),
                                           (PRIVATE, private_room_share)) if share > 1e-9]  # fmt: skip
        self.rooms: list[Room] = []
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
            self.rooms.append(Room(f"{prefix}-{i:05d}", kind, max_occupancy, target))
            total += _TRAFFIC_WEIGHT[kind]
            cumulative.append(total)
        self._cumulative, self._total_weight = cumulative, total
        user_count = max(64, int(sum(room.target for room in self.rooms) * 1.3))
        self._users: list[User | None] = [None] * user_count
        self.texts = [self._make_text() for _ in range(TEXT_POOL_SIZE)]

    # --- time, ids, output ----------------------------------------------------------------------------
    def stamp(self) -> tuple[str, str, float]:
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

    def _emit(self, room: Room, etype: str, actor: User | None, data: dict[str, Any]) -> str:
        event_id, occurred_at, _ = self.stamp()
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

    def random_user(self) -> User:
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

    def _create(self, room: Room) -> None:
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
        room.owner = self.random_user()
        room.staff_ids.add(room.owner["user_id"])
        self._emit(room, _PERMISSIONS, None, {"change": "owner_transferred", "target": room.owner})
        low, high = _MODERATORS[room.kind]
        for _ in range(rng.randint(low, high)):
            moderator = self.random_user()
            if moderator["user_id"] not in room.staff_ids:
                self._appoint(room, moderator)
        self._enter(room, room.owner)

    def _appoint(self, room: Room, moderator: User) -> None:
        room.moderators.append(moderator)
        room.staff_ids.add(moderator["user_id"])
        self._emit(room, _PERMISSIONS, room.owner, {"change": "moderator_added", "target": moderator})

    def _enter(self, room: Room, who: User | None = None) -> None:
        if who is None:
            for _ in range(4):
                candidate = self.random_user()
                if candidate["user_id"] not in room.positions and candidate not in room.banned:
                    who = candidate
                    break
            else:
                self._chat(room)
                return
        room.positions[who["user_id"]] = len(room.occupants)
        room.occupants.append(who)
        self._emit(room, _ENTERED, who, {})

    def _leave(self, room: Room, how: str, index: int | None = None) -> None:
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

    def _chat(self, room: Room) -> None:
        rng, texts, occupants = self.rng, self.texts, room.occupants
        if not occupants:
            self._enter(room)
            return
        rand, n = rng.random, len(occupants)  # (index by rand(): random.choice is slow on this hot path)
        speakers = [occupants[int(rand() * n)] for _ in range(1 + int(rand() * 3))]
        for i in range(1 + int(rand() ** 2 * 6)):
            data: dict[str, Any] = {"text": texts[int(rand() * TEXT_POOL_SIZE)]}
            if room.last_chat_id is not None and rand() < 0.15:
                data["reply_to"] = room.last_chat_id
            speaker = speakers[int(rand() * len(speakers))]
            if self._chat_gap:
                found = self._at_human_pace(room, speaker)
                if found is None:
                    if not i:
                        self._crowd(room)  # everyone here just spoke: someone comes or goes instead
                    return
                speaker = found
            room.last_chat_id = self._emit(room, _CHAT, speaker, data)

    def _at_human_pace(self, room: Room, speaker: User) -> User | None:
        """Paced traffic (`roomlogs up`, `simulate --rate`) is watched live and must look like people:
        nobody posts twice within `_chat_gap` seconds of simulated time. `speaker` if they may post now,
        else another occupant who may (None: none). Unpaced runs keep every burst whole: they are for
        volume, and the detectors' normal-traffic test measures them as they are."""
        now, spoke, gap = self._start + self._n * self._step, self._spoke, self._chat_gap
        if now - spoke.get(speaker["user_id"], -gap) >= gap:
            spoke[speaker["user_id"]] = now
            return speaker
        occupants = room.occupants
        first = int(self.rng.random() * len(occupants))
        for k in range(len(occupants)):
            who = occupants[(first + k) % len(occupants)]
            if now - spoke.get(who["user_id"], -gap) >= gap:
                spoke[who["user_id"]] = now
                return who
        return None

    def _crowd(self, room: Room) -> None:
        """Someone enters the room (if there is room and a newcomer is found), else someone leaves."""
        if len(room.occupants) < room.settings["max_occupancy"]:
            for _ in range(4):
                candidate = self.random_user()
                if candidate["user_id"] not in room.positions and candidate not in room.banned:
                    self._enter(room, candidate)
                    return
        self._leave(room, "quit")

    def _gift(self, room: Room) -> None:
        rng, occupants = self.rng, room.occupants
        sender, recipient = rng.choice(occupants), rng.choice(occupants)
        if sender is recipient:
            self._chat(room)
            return
        item_id, name, price = rng.choice(_GIFTS)
        data = {"recipient": recipient, "item": {"item_id": item_id, "name": name},
                "credits": price * rng.choice((1, 1, 1, 2, 5))}  # fmt: skip
        self._emit(room, _GIFT, sender, data)

    def _moderate(self, room: Room) -> None:
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

    def _change_settings(self, room: Room) -> None:
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

    def _change_permissions(self, room: Room) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.6 or not room.moderators:
            candidate = rng.choice(room.occupants)
            if candidate["user_id"] not in room.staff_ids:
                self._appoint(room, candidate)
            return
        moderator = room.moderators.pop(rng.randrange(len(room.moderators)))
        if r < 0.9 or not self._owner_transfers:  # (the same draws either way: a seed's other events stay)
            room.staff_ids.discard(moderator["user_id"])
            self._emit(room, _PERMISSIONS, room.owner, {"change": "moderator_removed", "target": moderator})
        else:  # the owner hands the room over and stays on as a moderator
            old_owner, room.owner = room.owner, moderator
            room.moderators.append(old_owner)
            self._emit(room, _PERMISSIONS, old_owner, {"change": "owner_transferred", "target": moderator})
