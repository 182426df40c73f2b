"""The event contract, version 1, in one place: types, their fields, and the values they allow.

`schemas/` holds the same contract as JSON Schema for room-server teams in other languages;
`tests/events/test_contract.py` runs every example there and generated cases through both.
"""

from __future__ import annotations

from enum import StrEnum

SCHEMA_VERSION = 1


class EventType(StrEnum):
    CHAT_MESSAGE = "chat.message"
    USER_ENTERED = "user.entered"
    USER_LEFT = "user.left"
    MOD_KICK = "moderation.kick"
    MOD_BAN = "moderation.ban"
    MOD_UNBAN = "moderation.unban"
    MOD_MUTE = "moderation.mute"
    MOD_UNMUTE = "moderation.unmute"
    MOD_WARN = "moderation.warn"
    ROOM_SETTINGS_CHANGED = "room.settings_changed"
    ROOM_PERMISSIONS_CHANGED = "room.permissions_changed"
    GIFT_SENT = "gift.sent"


#: Types a room server might send that are not room logs: refused, counted, never stored.
PRIVATE_TYPES = frozenset({"chat.whisper", "chat.direct_message", "chat.private_message"})
#: A chat.message carrying any of these is addressed to one person: a whisper in disguise.
PRIVATE_MARKERS = frozenset({"recipient", "recipient_id", "to", "whisper_to", "direct_to"})

MODERATION_TYPES = frozenset(
    {
        EventType.MOD_KICK,
        EventType.MOD_BAN,
        EventType.MOD_UNBAN,
        EventType.MOD_MUTE,
        EventType.MOD_UNMUTE,
        EventType.MOD_WARN,
    }
)
#: Moderation actions that carry a duration (null: until lifted).
TIMED_MODERATION = frozenset({EventType.MOD_BAN, EventType.MOD_MUTE})
#: Types whose actor may be absent (the platform itself changed the room).
ACTOR_OPTIONAL = frozenset({EventType.ROOM_SETTINGS_CHANGED, EventType.ROOM_PERMISSIONS_CHANGED})

LEAVE_HOW = frozenset({"quit", "disconnect", "kicked"})
PERMISSION_CHANGES = frozenset({"owner_transferred", "moderator_added", "moderator_removed"})
ROOM_PRIVACY = frozenset({"public", "private"})

#: Room settings that may be logged, with the JSON types their values may take (None: null allowed).
ROOM_SETTINGS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "description": (str,),
    "topic": (str,),
    "privacy": (str,),
    "max_occupancy": (int,),
    "language": (str,),
    "rating": (str,),
    "password_protected": (bool,),
    "voice_enabled": (bool,),
}

# Length limits (characters). Identifiers over the limit are invalid; free text is truncated.
ID_MAX_CHARS = 64
DISPLAY_NAME_MAX_CHARS = 64
URL_MAX_CHARS = 512
SETTING_VALUE_MAX_CHARS = 500
#: Integer room settings (max_occupancy) fit PostgreSQL's integer.
SETTING_INT_MAX = 2**31 - 1
ITEM_NAME_MAX_CHARS = 128
CREDITS_MAX = 1_000_000_000
DURATION_MAX_SECONDS = 10 * 365 * 24 * 3600

#: Envelope fields; anything else at the top level is dropped and counted.
ENVELOPE_FIELDS = frozenset({"event_id", "type", "schema_version", "room_id", "occurred_at", "actor", "data"})
USER_FIELDS = frozenset({"user_id", "display_name", "avatar"})
AVATAR_FIELDS = frozenset({"avatar_id", "url"})
