"""The event contract, version 1, in one place: one `EventSpec` per type (`CONTRACT`) and the values
they allow.

Everything else is derived from `CONTRACT` (see `pipeline.events.spec`): the normalizer's and the
dead-letter view's allowlists at import, and the JSON Schema files in `schemas/v1` and the room console's
type labels by `python -m pipeline.events.generate` (committed; tests/events/test_spec.py fails when they
drift). `tests/events/test_contract.py` runs every example in `schemas/v1/examples`, and events generated
from the schema files, through the schema and the normalizer.

Adding a type: a member of `EventType`, its entry in `CONTRACT`, `python -m pipeline.events.generate`, and
examples in `schemas/v1/examples/<type>/`. The normalizer checks a type it has no hand-written rule for by
its spec.
"""

from __future__ import annotations

from enum import StrEnum

from pipeline.events.spec import (
    Boolean,
    Choice,
    Contract,
    EventSpec,
    Field,
    Identifier,
    Integer,
    Record,
    Setting,
    SettingChanges,
    Text,
    Url,
    Uuid,
)

SCHEMA_VERSION = 1


class EventType(StrEnum):
    """The types of `CONTRACT`, in its order (tests/events/test_spec.py checks they are the same)."""

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


# Limits. Identifiers over the limit are invalid; free text is cut.
EVENT_MAX_BYTES = 64 * 1024
MAX_FUTURE_SKEW_SECONDS = 300
ID_MAX_CHARS = 64
DISPLAY_NAME_MAX_CHARS = 64
URL_MAX_CHARS = 512
CHAT_TEXT_MAX_CHARS = 2_000
REASON_MAX_CHARS = 500
SETTING_VALUE_MAX_CHARS = 500
#: Integer room settings (max_occupancy) fit PostgreSQL's integer.
SETTING_INT_MAX = 2**31 - 1
ITEM_NAME_MAX_CHARS = 128
CREDITS_MAX = 1_000_000_000
DURATION_MAX_SECONDS = 10 * 365 * 24 * 3600

#: Types a room server might send that are not room logs: refused, counted, never stored.
PRIVATE_TYPE_NAMES = ("chat.whisper", "chat.direct_message", "chat.private_message")
_PRIVATE_MARKERS = ("recipient", "recipient_id", "to", "whisper_to", "direct_to")
_LEAVE_HOW = ("quit", "disconnect", "kicked")
_PERMISSION_CHANGES = ("owner_transferred", "moderator_added", "moderator_removed")
_ROOM_PRIVACY = ("public", "private")

#: Envelope fields, in the order the schema lists them; anything else at the top level is dropped, counted.
ENVELOPE_FIELD_NAMES = ("event_id", "type", "schema_version", "room_id", "occurred_at", "actor", "data")

# --- the user object ----------------------------------------------------------------------------------------
AVATAR = Record(
    (
        Field("avatar_id", Identifier()),
        Field(
            "url",
            Url(URL_MAX_CHARS),
            description=f"An https:// URL of at most {URL_MAX_CHARS} characters (longer is refused).",
        ),
    ),
    "The user's avatar. null fields are the same as absent.",
    def_name="avatar",
)
USER = Record(
    (
        Field("user_id", Identifier(), required=True),
        Field(
            "display_name",
            Text(DISPLAY_NAME_MAX_CHARS),
            description=f"Free text: cut to {DISPLAY_NAME_MAX_CHARS} characters, not refused; NUL replaced "
            "by U+FFFD. null is the same as absent.",
        ),
        Field("avatar", AVATAR),
    ),
    "A user as shown in the room.",
    undeclared_note=" (e-mail, IP address, real name and the like are dropped this way).",
    def_name="user",
)

# --- the types ----------------------------------------------------------------------------------------------
_REASON = Field(
    "reason",
    Text(REASON_MAX_CHARS, masked=True, limit_setting="reason_max_chars"),
    required=True,
    column="body",
    description=f"Why, as the moderator wrote it (may be empty). Free text: cut to {REASON_MAX_CHARS} "
    "characters, not refused; NUL replaced by U+FFFD.",
)
_MODERATED = Field(
    "target", USER, required=True, column="target_id", description="The user the action is about."
)
_DURATION = Field(
    "duration_seconds",
    Integer(1, DURATION_MAX_SECONDS),
    null_kept=True,
    description=f"How long it lasts, in seconds (1 to {DURATION_MAX_SECONDS}, i.e. ten years); null or "
    "absent: until lifted.",
)
_NO_DURATION = " This action carries no duration."


def _moderation(event_type: EventType, label: str, rank: int, summary: str, *, timed: bool) -> EventSpec:
    fields = (_MODERATED, _REASON, _DURATION) if timed else (_MODERATED, _REASON)
    return EventSpec(event_type, label, rank, summary + ("" if timed else _NO_DURATION), fields)


_SETTING = "The setting's previous and new value; `new` is required, `old` may be absent or null (unknown)."
_SETTING_TEXT = f"{_SETTING} Text values are cut to {SETTING_VALUE_MAX_CHARS} characters, not refused."
_RETENTION = "The new value decides how long the room's logs are kept."
_SETTING_STR = Text(SETTING_VALUE_MAX_CHARS)
SETTINGS = SettingChanges(
    (
        Setting("name", _SETTING_STR, _SETTING_TEXT),
        Setting("description", _SETTING_STR, _SETTING_TEXT),
        Setting("topic", _SETTING_STR, _SETTING_TEXT),
        Setting("privacy", _SETTING_STR, f"Who may enter. {_RETENTION}", new=Choice(_ROOM_PRIVACY)),
        Setting("max_occupancy", Integer(1, SETTING_INT_MAX), f"{_SETTING} {_RETENTION}"),
        Setting("language", _SETTING_STR, _SETTING_TEXT),
        Setting("rating", _SETTING_STR, _SETTING_TEXT),
        Setting("password_protected", Boolean(), _SETTING),
        Setting("voice_enabled", Boolean(), _SETTING),
    ),
    "Changed settings by name. Settings not listed here are dropped, never stored; at least one listed "
    "setting must be present (otherwise invalid_value).",
)

CONTRACT = Contract(
    SCHEMA_VERSION,
    (
        EventSpec(
            EventType.CHAT_MESSAGE,
            "Chat",
            10,
            "A message said to the whole room. In `text`, e-mail addresses, payment-card numbers and IP "
            "addresses (v4 and v6) are replaced by [email removed], [card number removed] and [ip removed]; "
            "text longer "
            f"than {CHAT_TEXT_MAX_CHARS} characters is cut (payload.text_truncated = true), not refused. A "
            "message addressed to one user (recipient, recipient_id, to, whisper_to or direct_to present) is "
            "a private message: refused with reason private_message and never kept.",
            (
                Field(
                    "text",
                    Text(
                        CHAT_TEXT_MAX_CHARS,
                        masked=True,
                        min_chars=1,
                        limit_setting="chat_text_max_chars",
                        truncated_flag="text_truncated",
                    ),
                    required=True,
                    column="body",
                    description="What was said: at least one character.",
                ),
                Field("reply_to", Uuid(), description="event_id of the message this answers."),
            ),
            private_markers=_PRIVATE_MARKERS,
        ),
        EventSpec(
            EventType.USER_ENTERED,
            "Entered",
            20,
            "A user entered the room (the actor). No fields of its own; `data` may be absent or null.",
        ),
        EventSpec(
            EventType.USER_LEFT,
            "Left",
            30,
            "A user left the room (the actor).",
            (
                Field(
                    "how",
                    Choice(_LEAVE_HOW),
                    required=True,
                    description="quit: left on purpose; disconnect: lost the connection; kicked: removed by "
                    "a moderator (see moderation.kick).",
                ),
            ),
        ),
        _moderation(EventType.MOD_KICK, "Kick", 70, "A moderator removed a user from the room.", timed=False),
        _moderation(EventType.MOD_BAN, "Ban", 80, "A moderator banned a user from the room.", timed=True),
        _moderation(EventType.MOD_UNBAN, "Unban", 90, "A moderator lifted a user's ban.", timed=False),
        _moderation(EventType.MOD_MUTE, "Mute", 50, "A moderator muted a user.", timed=True),
        _moderation(EventType.MOD_UNMUTE, "Unmute", 60, "A moderator lifted a user's mute.", timed=False),
        _moderation(EventType.MOD_WARN, "Warn", 40, "A moderator warned a user.", timed=False),
        EventSpec(
            EventType.ROOM_SETTINGS_CHANGED,
            "Settings",
            110,
            "Room settings changed, by the actor or (actor null/absent) by the platform.",
            (Field("changes", SETTINGS, required=True),),
            actor_optional=True,
        ),
        EventSpec(
            EventType.ROOM_PERMISSIONS_CHANGED,
            "Permissions",
            120,
            "Room permissions changed, by the actor or (actor null/absent) by the platform.",
            (
                Field(
                    "change",
                    Choice(_PERMISSION_CHANGES),
                    required=True,
                    description="owner_transferred: target is the new owner; moderator_added / "
                    "moderator_removed: target gained / lost moderator rights.",
                ),
                Field(
                    "target",
                    USER,
                    required=True,
                    column="target_id",
                    description="The user whose permissions changed.",
                ),
            ),
            actor_optional=True,
        ),
        EventSpec(
            EventType.GIFT_SENT,
            "Gift",
            100,
            "The actor sent a virtual gift to another user in the room.",
            (
                Field(
                    "recipient", USER, required=True, column="target_id", description="Who received the gift."
                ),
                Field(
                    "item",
                    Record(
                        (
                            Field("item_id", Identifier(), required=True),
                            Field(
                                "name",
                                Text(ITEM_NAME_MAX_CHARS),
                                description=f"Free text: cut to {ITEM_NAME_MAX_CHARS} characters, not "
                                "refused. null is the same as absent.",
                            ),
                        ),
                        "The gift.",
                    ),
                    required=True,
                ),
                Field(
                    "credits",
                    Integer(0, CREDITS_MAX),
                    required=True,
                    description=f"Price in platform credits, 0 to {CREDITS_MAX}.",
                ),
            ),
            undeclared_note=" (payment details are dropped this way).",
        ),
    ),
    USER,
)

# --- derived: the names the rest of the package imports -----------------------------------------------------
PRIVATE_TYPES = frozenset(PRIVATE_TYPE_NAMES)
#: A chat.message carrying any of these is addressed to one person: a whisper in disguise.
PRIVATE_MARKERS = frozenset(CONTRACT[EventType.CHAT_MESSAGE].private_markers)
MODERATION_TYPES = frozenset(t for t in EventType if t.startswith("moderation."))
#: Moderation actions that carry a duration (null: until lifted).
TIMED_MODERATION = frozenset(t for t in MODERATION_TYPES if CONTRACT[t].field("duration_seconds"))
#: Types whose actor may be absent (the platform itself changed the room).
ACTOR_OPTIONAL = frozenset(e.type for e in CONTRACT if e.actor_optional)

LEAVE_HOW = frozenset(_LEAVE_HOW)
PERMISSION_CHANGES = frozenset(_PERMISSION_CHANGES)
ROOM_PRIVACY = frozenset(_ROOM_PRIVACY)
#: Room settings that may be logged, with the JSON types their values may take (None: null allowed).
ROOM_SETTINGS: dict[str, tuple[type, ...]] = {s.name: (s.python_type,) for s in SETTINGS.settings}

ENVELOPE_FIELDS = frozenset(ENVELOPE_FIELD_NAMES)
USER_FIELDS = USER.field_names
AVATAR_FIELDS = AVATAR.field_names
