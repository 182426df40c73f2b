"""Builders of valid contract-v1 event dicts, for room servers, the simulator and tests.

Each builder returns a plain dict in envelope order, ready for `RoomEventPublisher.send()`. `event_id` and
`occurred_at` are left out unless given (the publisher fills them); `schema_version` is always set.
The builders do not validate: the publisher's Normalizer does. They share the dicts they are handed
(a user dict may appear in many events), so treat built events as read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.events.contract import SCHEMA_VERSION, EventType

Event = dict[str, Any]
User = dict[str, Any]


def user(
    user_id: str,
    display_name: str | None = None,
    *,
    avatar_id: str | None = None,
    avatar_url: str | None = None,
) -> User:
    """A user object (`actor`, `data.target`, `data.recipient`)."""
    out: User = {"user_id": user_id}
    if display_name is not None:
        out["display_name"] = display_name
    if avatar_id is not None or avatar_url is not None:
        avatar: dict[str, str] = {}
        if avatar_id is not None:
            avatar["avatar_id"] = avatar_id
        if avatar_url is not None:
            avatar["url"] = avatar_url
        out["avatar"] = avatar
    return out


def envelope(
    event_type: str,
    room_id: str,
    actor: User | None,
    data: Mapping[str, Any] | None,
    *,
    event_id: str | None = None,
    occurred_at: str | None = None,
) -> Event:
    """Any event: the envelope around `data`. Absent `event_id`/`occurred_at` are left to the publisher."""
    out: Event = {}
    if event_id is not None:
        out["event_id"] = event_id
    out["type"] = str(event_type)  # an EventType member becomes its plain string value
    out["schema_version"] = SCHEMA_VERSION
    out["room_id"] = room_id
    if occurred_at is not None:
        out["occurred_at"] = occurred_at
    if actor is not None:
        out["actor"] = actor
    if data is not None:
        out["data"] = data
    return out


def chat_message(
    room_id: str,
    actor: User,
    text: str,
    *,
    reply_to: str | None = None,
    event_id: str | None = None,
    occurred_at: str | None = None,
) -> Event:
    data: dict[str, Any] = {"text": text}
    if reply_to is not None:
        data["reply_to"] = reply_to
    return envelope(EventType.CHAT_MESSAGE, room_id, actor, data, event_id=event_id, occurred_at=occurred_at)


def user_entered(
    room_id: str, actor: User, *, event_id: str | None = None, occurred_at: str | None = None
) -> Event:
    return envelope(EventType.USER_ENTERED, room_id, actor, {}, event_id=event_id, occurred_at=occurred_at)


def user_left(
    room_id: str,
    actor: User,
    how: str,
    *,
    event_id: str | None = None,
    occurred_at: str | None = None,
) -> Event:
    """`how` is one of quit, disconnect, kicked (contract.LEAVE_HOW)."""
    return envelope(
        EventType.USER_LEFT, room_id, actor, {"how": how}, event_id=event_id, occurred_at=occurred_at
    )


def moderation(
    action: EventType,
    room_id: str,
    actor: User,
    target: User,
    reason: str,
    *,
    duration_seconds: int | None = None,
    timed: bool = False,
    event_id: str | None = None,
    occurred_at: str | None = None,
) -> Event:
    """A moderation action (kick, ban, unban, mute, unmute, warn).

    `duration_seconds` is sent when given, or as null ("until lifted") when `timed` is true.
    """
    data: dict[str, Any] = {"target": target, "reason": reason}
    if duration_seconds is not None or timed:
        data["duration_seconds"] = duration_seconds
    return envelope(action, room_id, actor, data, event_id=event_id, occurred_at=occurred_at)


def settings_changed(
    room_id: str,
    actor: User | None,
    changes: Mapping[str, tuple[Any, Any]],
    *,
    event_id: str | None = None,
    occurred_at: str | None = None,
) -> Event:
    """`changes` maps a setting name (contract.ROOM_SETTINGS) to (old, new); old is None at creation."""
    data = {"changes": {name: {"old": old, "new": new} for name, (old, new) in changes.items()}}
    return envelope(
        EventType.ROOM_SETTINGS_CHANGED, room_id, actor, data, event_id=event_id, occurred_at=occurred_at
    )


def permissions_changed(
    room_id: str,
    actor: User | None,
    change: str,
    target: User,
    *,
    event_id: str | None = None,
    occurred_at: str | None = None,
) -> Event:
    """`change` is owner_transferred, moderator_added or moderator_removed; actor None = the platform."""
    return envelope(
        EventType.ROOM_PERMISSIONS_CHANGED,
        room_id,
        actor,
        {"change": change, "target": target},
        event_id=event_id,
        occurred_at=occurred_at,
    )


def gift_sent(
    room_id: str,
    actor: User,
    recipient: User,
    item_id: str,
    credits: int,
    *,
    item_name: str | None = None,
    event_id: str | None = None,
    occurred_at: str | None = None,
) -> Event:
    item: dict[str, Any] = {"item_id": item_id}
    if item_name is not None:
        item["name"] = item_name
    return envelope(
        EventType.GIFT_SENT,
        room_id,
        actor,
        {"recipient": recipient, "item": item, "credits": credits},
        event_id=event_id,
        occurred_at=occurred_at,
    )
