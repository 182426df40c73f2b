"""Traffic built to trigger each detector (pipeline/detectors) at its default settings:
`roomlogs simulate --scenario flood|spam|raid|modabuse|churn|giftburst`, and the detector tests.

Each scenario is one fresh room: created (settings, owner, a moderator, a few regulars entering), then the
burst, timed from `start` in event time. `Scenario.expected` names the detector that must fire and the
subject of its alert; the bursts sit well above the defaults (README "Detectors") and well inside the
windows, so a scenario fires whatever the batching. Event ids are derived from the room id and the event's
index (uuid5), so publishing a scenario twice is a replay of the same events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from pipeline.detectors.rules import text_key
from pipeline.events.contract import EventType
from pipeline.publisher import events as ev
from pipeline.publisher.events import Event, User

__all__ = ["SCENARIOS", "Scenario", "build"]

_NAMESPACE = uuid.UUID("6f1c3e5e-8a53-4d8e-9a3b-5c1d2e3f4a5b")


@dataclass
class Scenario:
    """A scenario's events in publishing order; the detector and subject it must raise an alert for."""

    name: str
    room_id: str
    detector: str
    subject: str
    #: (seconds after start, event); the trigger is the last event of the burst
    timeline: list[tuple[float, Event]] = field(default_factory=list)
    start: datetime | None = None

    def events(self) -> list[Event]:
        """The events with their event ids and times set."""
        assert self.start is not None
        out = []
        for i, (seconds, event) in enumerate(self.timeline):
            at = self.start + timedelta(seconds=seconds)
            out.append(
                {
                    **event,
                    "event_id": str(uuid.uuid5(_NAMESPACE, f"{self.room_id}/{i}")),
                    "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                }
            )
        return out

    def records(self) -> list[tuple[bytes, bytes]]:
        """(key, value) of each event, as a room server publishes them."""
        return [(self.room_id.encode(), orjson.dumps(e)) for e in self.events()]

    @property
    def trigger_at(self) -> datetime:
        """The event time of the burst's last event."""
        assert self.start is not None
        return self.start + timedelta(seconds=max(s for s, _ in self.timeline))


def _users(room_id: str, prefix: str, n: int) -> list[User]:
    return [ev.user(f"{prefix}-{room_id[-6:]}-{i:03d}", f"{prefix.title()} {i}") for i in range(n)]


def _room(s: Scenario, *, max_occupancy: int = 30) -> tuple[User, User]:
    """Create the room: settings, owner, a moderator, three regulars entering. Returns (owner, moderator)."""
    room = s.room_id
    owner, moderator = ev.user(f"owner-{room[-6:]}", "Owner"), ev.user(f"mod-{room[-6:]}", "Moderator")
    t = s.timeline
    t.append((0.0, ev.settings_changed(room, None, {"privacy": (None, "public"),
                                                     "max_occupancy": (None, max_occupancy)})))  # fmt: skip
    t.append((0.0, ev.permissions_changed(room, None, "owner_transferred", owner)))
    t.append((0.1, ev.permissions_changed(room, owner, "moderator_added", moderator)))
    for i, u in enumerate([owner, moderator, *_users(room, "regular", 3)]):
        t.append((0.2 + i * 0.1, ev.user_entered(room, u)))
    return owner, moderator


def _flood(s: Scenario) -> None:
    _room(s)
    flooder = _users(s.room_id, "flooder", 1)[0]
    s.subject = flooder["user_id"]
    s.timeline.append((1.0, ev.user_entered(s.room_id, flooder)))
    for i in range(80):  # 80 messages in 8 s (default: more than 40 in 10 s)
        s.timeline.append((2.0 + i * 0.1, ev.chat_message(s.room_id, flooder, f"look at me {i}")))


def _spam(s: Scenario) -> None:
    _room(s)
    bots = _users(s.room_id, "bot", 10)
    for i, b in enumerate(bots):
        s.timeline.append((1.0 + i * 0.1, ev.user_entered(s.room_id, b)))
    for i, b in enumerate(bots):  # 10 users, one text (case and spacing varied), 10 s (default: 6 in 30 s)
        text = "FREE  credits at example dot com!!" if i % 2 else "free credits at ex ample dot com!!"
        s.timeline.append((3.0 + i, ev.chat_message(s.room_id, b, text)))
    s.subject = text_key("free credits at example dot com!!")[0]


def _raid(s: Scenario) -> None:
    _room(s, max_occupancy=200)  # busy_public: the highest floor (80 users in 60 s)
    for i, u in enumerate(_users(s.room_id, "raider", 100)):  # 100 users in 20 s
        s.timeline.append((1.0 + i * 0.2, ev.user_entered(s.room_id, u)))
    s.subject = ""


def _modabuse(s: Scenario) -> None:
    _, moderator = _room(s)
    victims = _users(s.room_id, "victim", 20)
    for i, v in enumerate(victims):
        s.timeline.append((1.0 + i * 0.1, ev.user_entered(s.room_id, v)))
    actions = (EventType.MOD_WARN, EventType.MOD_MUTE, EventType.MOD_KICK, EventType.MOD_BAN)
    for i, v in enumerate(victims):  # 20 users in 38 s (default: more than 12 in 60 s)
        action = actions[i % 4]
        timed = action in (EventType.MOD_MUTE, EventType.MOD_BAN)
        s.timeline.append(
            (3.0 + i * 2, ev.moderation(action, s.room_id, moderator, v, "because", timed=timed))
        )
    s.subject = moderator["user_id"]


def _churn(s: Scenario) -> None:
    owner, _ = _room(s)
    voice = False
    for i in range(8):  # voice on, off, on, ... 8 times in 35 s: 7 reversions (default: 5 in 120 s)
        s.timeline.append(
            (2.0 + i * 5, ev.settings_changed(s.room_id, owner, {"voice_enabled": (voice, not voice)}))
        )
        voice = not voice
    s.subject = "setting:voice_enabled"


def _giftburst(s: Scenario) -> None:
    _room(s)
    sender, recipient = _users(s.room_id, "sender", 1)[0], _users(s.room_id, "recipient", 1)[0]
    for i, u in enumerate((sender, recipient)):
        s.timeline.append((1.0 + i * 0.1, ev.user_entered(s.room_id, u)))
    for i in range(20):  # 20 gifts in 19 s (default: more than 10 in 60 s)
        s.timeline.append((2.0 + i, ev.gift_sent(s.room_id, sender, recipient, "rose", 10, item_name="Rose")))
    s.subject = f"{sender['user_id']}>{recipient['user_id']}"


_BUILDERS: dict[str, tuple[str, Callable[[Scenario], None]]] = {
    "flood": ("chat_flood", _flood),
    "spam": ("spam_wave", _spam),
    "raid": ("raid", _raid),
    "modabuse": ("moderator_abuse", _modabuse),
    "churn": ("permission_churn", _churn),
    "giftburst": ("gift_burst", _giftburst),
}
#: Scenario names, for `roomlogs simulate --scenario`.
SCENARIOS = tuple(_BUILDERS)


def build(name: str, start: datetime, *, room_id: str | None = None) -> Scenario:
    """The scenario `name` in a fresh room (`room_id`, or one named after the scenario and `start`)."""
    detector, builder = _BUILDERS[name]
    room = room_id or f"scenario-{name}-{uuid.uuid4().hex[:8]}"
    s = Scenario(name, room, detector, "", start=start)
    builder(s)
    return s


def summary(s: Scenario) -> dict[str, Any]:
    """What `roomlogs simulate --scenario` prints."""
    return {
        "scenario": s.name,
        "room_id": s.room_id,
        "events": len(s.timeline),
        "expected_alert": {"detector": s.detector, "subject": s.subject},
        "trigger_at": s.trigger_at.isoformat(),
    }
