"""What a dead letter may keep of a record the pipeline refused: the contract's allowlist, never raw bytes.

A refused record is exactly the one whose producer is misbehaving, so it is the most likely to carry what
the logs promise never to store (an e-mail address, an IP address, a card number, a real name, a password
in an undeclared field). Called by the ingest stage for every record it dead-letters; it never raises.

What is kept (`content`, stored as jsonb and sent as the dead-letter topic's message value):
- a JSON object: the envelope fields the contract declares, and inside `actor` and `data` the fields the
  contract declares for the record's type (unknown type: none of `data`); strings are cut to a limit and
  e-mail addresses, card numbers and IP addresses in them are masked; a value of the wrong JSON type is
  replaced by a marker naming its type (`{"_withheld": "object"}`);
- the *names* of undeclared fields (masked and cut too) in `_undeclared_fields`, never their values;
- JSON that is not an object: only its type; bytes that are not JSON (or not UTF-8, or too large to parse):
  nothing (`content` is null).
Always kept: the SHA-256 and length of the record as received, so a producer can find which of its
messages it was, and the source topic/partition/offset (the original is still in Kafka while the topic
retains it). Private messages keep neither content nor fingerprint: only their length.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.events import contract as c
from pipeline.events.normalize import mask_personal_data
from pipeline.events.reasons import RAW_WITHHELD, Reason

#: Records larger than this are not parsed at all (an oversize record is refused before parsing anyway).
PARSE_LIMIT_BYTES = 1024 * 1024
#: Strings kept in a dead letter are cut here (chat text and reasons to their own contract limits).
STRING_MAX_CHARS = 200
#: At most this many undeclared field names are listed, each cut to FIELD_NAME_MAX_CHARS.
UNDECLARED_MAX = 32
FIELD_NAME_MAX_CHARS = 64
#: Details are messages for people; they may quote a declared value, so they are masked and cut too.
DETAIL_MAX_CHARS = 500

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_USER = "user"
_TEXT = "text"
_CHAT_TEXT = "chat_text"
#: What `data` may hold per type: field -> how to keep it ("user", "text", "chat_text", a nested dict of the
#: same, "changes" for room settings, or None for a scalar).
_DATA_FIELDS: dict[str, dict[str, Any]] = {
    c.EventType.CHAT_MESSAGE: {"text": _CHAT_TEXT, "reply_to": None},
    c.EventType.USER_ENTERED: {},
    c.EventType.USER_LEFT: {"how": None},
    c.EventType.ROOM_SETTINGS_CHANGED: {"changes": "changes"},
    c.EventType.ROOM_PERMISSIONS_CHANGED: {"change": None, "target": _USER},
    c.EventType.GIFT_SENT: {
        "recipient": _USER,
        "item": {"item_id": None, "name": _TEXT},
        "credits": None,
    },
}
for _t in c.MODERATION_TYPES:
    _DATA_FIELDS[_t] = {"target": _USER, "reason": _TEXT, "duration_seconds": None}
_USER_FIELDS: dict[str, Any] = {
    "user_id": None,
    "display_name": _TEXT,
    "avatar": {"avatar_id": None, "url": None},
}
_ENVELOPE_SCALARS = c.ENVELOPE_FIELDS - {"actor", "data"}


@dataclass(frozen=True, slots=True)
class Kept:
    """What a dead letter keeps of one record."""

    #: allowlisted view, JSON-encoded (None: nothing could be kept)
    content: bytes | None
    raw_sha256: bytes | None
    raw_bytes: int | None


def fingerprint(raw: bytes | None) -> tuple[bytes | None, int | None]:
    """(SHA-256, size in bytes) of a record's value as received: what every dead letter keeps of it
    (`raw_sha256`, `raw_bytes`), and what a replay checks the record it reads back against. (None, None)
    for a record without one."""
    if raw is None:
        return None, None
    return hashlib.sha256(raw).digest(), len(raw)


def keep(raw: bytes | None, reason: Reason, *, chat_text_max_chars: int = 2_000) -> Kept:
    """The allowlisted view of a refused record (see the module docstring). Never raises."""
    if raw is None:
        return Kept(None, None, None)
    if reason in RAW_WITHHELD:
        return Kept(None, None, len(raw))
    sha256, size = fingerprint(raw)
    if len(raw) > PARSE_LIMIT_BYTES:
        return Kept(None, sha256, size)
    doc = _parse(raw)
    if doc is _UNPARSED:
        return Kept(None, sha256, size)
    try:
        view = _View(chat_text_max_chars).record(doc)
        return Kept(orjson.dumps(view), sha256, size)
    except (
        TypeError,
        ValueError,
        RecursionError,
    ):  # pragma: no cover - belt and braces: never lose the letter
        return Kept(None, sha256, size)


def safe_detail(detail: str) -> str:
    """A reason's detail as it may be stored: masked and cut."""
    return mask_personal_data(detail.replace("\x00", "\ufffd"))[:DETAIL_MAX_CHARS]


_UNPARSED = object()


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _UNPARSED


class _View:
    def __init__(self, chat_text_max_chars: int) -> None:
        self.chat_text_max_chars = chat_text_max_chars
        self.undeclared: list[str] = []
        self.undeclared_total = 0

    def record(self, doc: Any) -> dict[str, Any]:
        if type(doc) is not dict:
            return {"_json_type": _json_type(doc)}
        out: dict[str, Any] = {}
        etype = doc.get("type")
        for key, value in doc.items():
            if key in _ENVELOPE_SCALARS:
                out[key] = self._scalar(value, STRING_MAX_CHARS)
            elif key == "actor":
                out[key] = self._object(value, _USER_FIELDS, "actor.")
            elif key == "data":
                fields = _DATA_FIELDS.get(etype) if type(etype) is str else None
                out[key] = self._object(value, fields or {}, "data.")
            else:
                self._undeclared(key, "")
        if self.undeclared_total:
            out["_undeclared_fields"] = self.undeclared
            if self.undeclared_total > len(self.undeclared):
                out["_undeclared_more"] = self.undeclared_total - len(self.undeclared)
        return out

    def _object(self, value: Any, fields: dict[str, Any], path: str) -> Any:
        if type(value) is not dict:
            return self._scalar(value, STRING_MAX_CHARS)
        out: dict[str, Any] = {}
        for key, item in value.items():
            rule: Any = fields.get(key, _MISSING) if type(key) is str else _MISSING
            if rule is _MISSING:
                self._undeclared(key, path)
            elif rule is None:
                out[key] = self._scalar(item, STRING_MAX_CHARS)
            elif rule == _TEXT:
                out[key] = self._scalar(item, c.SETTING_VALUE_MAX_CHARS)
            elif rule == _CHAT_TEXT:
                out[key] = self._scalar(item, self.chat_text_max_chars)
            elif rule == _USER:
                out[key] = self._object(item, _USER_FIELDS, f"{path}{key}.")
            elif rule == "changes":
                out[key] = self._changes(item, f"{path}{key}.")
            else:
                out[key] = self._object(item, rule, f"{path}{key}.")
        return out

    def _changes(self, value: Any, path: str) -> Any:
        if type(value) is not dict:
            return self._scalar(value, STRING_MAX_CHARS)
        out: dict[str, Any] = {}
        for name, change in value.items():
            if name in c.ROOM_SETTINGS:
                out[name] = self._object(change, {"old": _TEXT, "new": _TEXT}, f"{path}{name}.")
            else:
                self._undeclared(name, path)
        return out

    def _scalar(self, value: Any, max_chars: int) -> Any:
        kind = type(value)
        if kind is str:
            return mask_personal_data(_clean(value[: max_chars + 320]))[:max_chars]
        if kind is bool or value is None:
            return value
        if kind is int:
            return value if _INT_MIN <= value <= _INT_MAX else {"_withheld": "big integer"}
        if kind is float:
            return value if math.isfinite(value) else {"_withheld": "non-finite number"}
        return {"_withheld": _json_type(value)}

    def _undeclared(self, name: Any, path: str) -> None:
        self.undeclared_total += 1
        if len(self.undeclared) < UNDECLARED_MAX:
            text = name if type(name) is str else str(name)
            self.undeclared.append(mask_personal_data(_clean(path + text))[:FIELD_NAME_MAX_CHARS])


_MISSING = object()


def _clean(text: str) -> str:
    """NUL and lone surrogates never reach jsonb."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text


def _json_type(value: Any) -> str:
    if type(value) is dict:
        return "object"
    if type(value) is list:
        return "array"
    if type(value) is str:
        return "string"
    if type(value) is bool:
        return "boolean"
    if value is None:
        return "null"
    return "number"
