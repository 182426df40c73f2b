"""Raw Kafka value -> normalized room-log event, or a reason why not.

Called by the ingest worker for every record (hot path: a few microseconds an event) and by the publisher
before it sends. It is built on allowlists: a field the contract does not declare is dropped and counted,
never stored, so a room server that starts sending e-mail or IP addresses cannot leak them into the logs.

What it guarantees about what it returns:
- every string is valid UTF-8 without NUL (PostgreSQL `text` and `jsonb` refuse NUL and lone surrogates);
- every number is a finite int (NaN and floats never reach `jsonb`);
- `occurred_at` is an aware UTC datetime no further than the allowed skew in the future;
- free text is cut to its limit; e-mail addresses, card numbers and IP addresses in chat text are masked.

Its allowlists come from the contract's spec (`pipeline.events.contract.CONTRACT`), computed once at import.
Each type of the contract has a hand-written rule here (the hot path); a type without one (a new type, or a
test's made-up one) is checked by its spec by `_SpecRule`, and tests/events/test_spec.py checks that the
hand-written rules and the spec agree on every example and on events generated from the schemas.

It does not know about retention classes or expiry: the ingest batch decides those with the room's state.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Set
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from pipeline.events import contract as c
from pipeline.events.contract import EventType
from pipeline.events.identifiers import is_identifier
from pipeline.events.reasons import Invalid, Reason
from pipeline.events.spec import (
    Boolean,
    Choice,
    Contract,
    Field,
    Identifier,
    Integer,
    Kind,
    Record,
    SettingChanges,
    Text,
    Url,
    Uuid,
)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MAYBE_PII = re.compile(r"[@\d]")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}")
_MASK_MARGIN_CHARS = 320  # longer than any e-mail address, card number or IP we mask
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Fa-f:])")
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

EMAIL_MASK = "[email removed]"
CARD_MASK = "[card number removed]"
IP_MASK = "[ip removed]"

# The allowlists of `data` the hand-written rules use, from the spec (tests/events/test_spec.py checks that
# every moderation type has one of the two moderation allowlists).
_DATA_FIELDS = c.CONTRACT.allowlists()
_NO_FIELDS = _DATA_FIELDS[EventType.USER_ENTERED]
_CHAT_FIELDS = _DATA_FIELDS[EventType.CHAT_MESSAGE]
_LEFT_FIELDS = _DATA_FIELDS[EventType.USER_LEFT]
_MODERATION_FIELDS = _DATA_FIELDS[EventType.MOD_KICK]
_TIMED_MODERATION_FIELDS = _DATA_FIELDS[EventType.MOD_BAN]
_SETTINGS_FIELDS = _DATA_FIELDS[EventType.ROOM_SETTINGS_CHANGED]
_PERMISSION_FIELDS = _DATA_FIELDS[EventType.ROOM_PERMISSIONS_CHANGED]
_ITEM_FIELDS = c.CONTRACT[EventType.GIFT_SENT].record("item").field_names
_GIFT_FIELDS = _DATA_FIELDS[EventType.GIFT_SENT]

# Positions in the tuple `normalize()` returns (a plain tuple: this is the hot path).
# Final literals: mypy types `ev[ROOM_ID]` as str, `ev[OCCURRED_AT]` as datetime, and so on.
EVENT_ID: Final = 0
OCCURRED_AT: Final = 1
ROOM_ID: Final = 2
EVENT_TYPE: Final = 3
ACTOR_ID: Final = 4
TARGET_ID: Final = 5
BODY: Final = 6
PAYLOAD: Final = 7
ROOM_CHANGE: Final = 8
Normalized = tuple[str, datetime, str, str, str | None, str | None, str | None, bytes, tuple[Any, ...] | None]
#: A type's rule: (data, payload) -> (target_id, body, room_change); fills `payload`, raises `Invalid`.
Rule = Callable[[dict[str, Any], dict[str, Any]], tuple[Any, ...]]


class Normalizer:
    """Stateless apart from its counters; one per worker (not shared between threads).

    `contract`: the types it accepts (tests pass one with a made-up type). `fast_rules=False` checks every
    type by its spec, also those with a hand-written rule (except room settings, which only theirs can):
    tests compare the two that way.
    """

    def __init__(
        self,
        *,
        max_event_bytes: int = c.EVENT_MAX_BYTES,
        chat_text_max_chars: int = c.CHAT_TEXT_MAX_CHARS,
        reason_max_chars: int = c.REASON_MAX_CHARS,
        max_future_skew_seconds: float = c.MAX_FUTURE_SKEW_SECONDS,
        contract: Contract = c.CONTRACT,
        fast_rules: bool = True,
    ) -> None:
        self.max_event_bytes = max_event_bytes
        self.chat_text_max_chars = chat_text_max_chars
        self.reason_max_chars = reason_max_chars
        self.max_future_skew = timedelta(seconds=max_future_skew_seconds)
        #: Undeclared fields dropped, by event type (label values are the bounded set of types).
        self.dropped_fields: Counter[str] = Counter()
        #: Personal data masked inside chat text, by kind ("email", "card", "ip").
        self.masked: Counter[str] = Counter()
        #: Of the record being normalized, the strings its lenient parse changed (lone surrogates replaced):
        #: text keeps them with U+FFFD, an identifier is refused (two ids would become one)
        self._scrubbed: Set[str] = frozenset()
        hand_written: dict[str, Rule] = {
            EventType.CHAT_MESSAGE: self._chat,
            EventType.USER_ENTERED: self._entered,
            EventType.USER_LEFT: self._left,
            EventType.ROOM_SETTINGS_CHANGED: self._settings,
            EventType.ROOM_PERMISSIONS_CHANGED: self._permissions,
            EventType.GIFT_SENT: self._gift,
        }
        for t in c.MODERATION_TYPES:
            hand_written[t] = self._timed_moderation if t in c.TIMED_MODERATION else self._moderation
        self._type_rules: dict[str, Rule] = {}
        for spec in contract:
            rule = hand_written.get(spec.type)
            needs_hand_written = any(isinstance(f.kind, SettingChanges) for f in spec.fields)
            if rule is None or not (fast_rules or needs_hand_written):
                if needs_hand_written:
                    raise ValueError(f"{spec.type}: room settings need a hand-written rule in the normalizer")
                rule = _SpecRule(self, spec.type, spec.fields, spec.private_markers)
            self._type_rules[spec.type] = rule
        self._actor_optional = frozenset(spec.type for spec in contract if spec.actor_optional)

    # ------------------------------------------------------------------------------------------------
    def normalize(self, raw: bytes | None, now: datetime) -> Normalized:
        """Return the normalized event; raise `Invalid` with a reason code and a readable detail."""
        if raw is None:
            raise Invalid(Reason.NOT_AN_OBJECT, "record has no value (tombstone)")
        if len(raw) > self.max_event_bytes:
            raise Invalid(Reason.OVERSIZE, f"{len(raw)} bytes, limit {self.max_event_bytes}")
        if raw and raw[0] == 0:  # no JSON text starts with a NUL byte
            raw = _registry_payload(raw)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc, scrubbed = _lenient_parse(raw)
            if scrubbed and type(doc) is dict:
                self._scrubbed = scrubbed
                try:
                    return self.normalize_obj(doc, now)
                finally:
                    self._scrubbed = frozenset()
        if type(doc) is not dict:
            raise Invalid(Reason.NOT_AN_OBJECT, f"top level is {_json_type(doc)}, expected an object")
        return self.normalize_obj(doc, now)

    def normalize_obj(self, doc: dict[str, Any], now: datetime) -> Normalized:
        etype = doc.get("type")
        if type(etype) is not str:
            raise (
                Invalid(Reason.MISSING_FIELD, "type: required")
                if etype is None
                else Invalid(Reason.WRONG_TYPE, "type: expected a string")
            )
        # Private messages first (their bytes must never be kept, whatever else is wrong), then the version
        # (a newer contract may have types this one lacks), then the type.
        if etype in c.PRIVATE_TYPES:
            raise Invalid(Reason.PRIVATE_MESSAGE, f"{etype} is a private message, not a room log")
        version = doc.get("schema_version")
        if version != c.SCHEMA_VERSION or type(version) not in (int, float):
            if version is None:
                raise Invalid(Reason.MISSING_FIELD, "schema_version: required")
            if type(version) is str:  # quoted: "1" is not 1, and an unquoted 1 would say it is
                shown = f"the string {version[:20]!r}"
            elif type(version) in (int, float, bool):
                shown = orjson.dumps(version).decode() if type(version) is bool else str(version)[:20]
            else:
                shown = _json_type(version)
            raise Invalid(Reason.UNSUPPORTED_VERSION, f"schema_version: {shown} (supported: the number 1)")
        rule = self._type_rules.get(etype)
        if rule is None:
            raise Invalid(Reason.UNKNOWN_TYPE, f"type: {etype[:64]!r} is not a known event type")

        event_id = doc.get("event_id")
        if type(event_id) is not str or not _UUID.fullmatch(event_id):
            _require(event_id, "event_id")
            raise Invalid(Reason.INVALID_VALUE, "event_id: expected a UUID")
        room_id = self._id(doc.get("room_id"), "room_id")
        occurred_at = self._timestamp(doc.get("occurred_at"), now)

        if len(doc) > 7 or not c.ENVELOPE_FIELDS.issuperset(doc):
            self.dropped_fields[etype] += sum(1 for k in doc if k not in c.ENVELOPE_FIELDS)

        payload: dict[str, Any] = {}
        actor = doc.get("actor")
        if actor is None:
            if etype not in self._actor_optional:
                raise Invalid(Reason.MISSING_FIELD, "actor: required")
            actor_id = None
        else:
            actor_id, payload["actor"] = self._user(actor, "actor", etype)
        data = doc.get("data")
        if data is None:
            data = {}
        elif type(data) is not dict:
            raise Invalid(Reason.WRONG_TYPE, "data: expected an object")
        target_id, body, room_change = rule(data, payload)
        return (
            event_id.lower(),
            occurred_at,
            room_id,
            etype,
            actor_id,
            target_id,
            body,
            orjson.dumps(payload),
            room_change,
        )

    # --- per-type rules: (data, payload) -> (target_id, body, room_change) -------------------------------
    def _chat(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        if not c.PRIVATE_MARKERS.isdisjoint(data):
            raise Invalid(Reason.PRIVATE_MESSAGE, "chat.message addressed to one user is a private message")
        text = data.get("text")
        if type(text) is not str:
            _require(text, "data.text")
            raise Invalid(Reason.WRONG_TYPE, "data.text: expected a string")
        if not text:
            raise Invalid(Reason.INVALID_VALUE, "data.text: empty")
        text = self._clean(text)
        limit = self.chat_text_max_chars
        if len(text) > limit:
            # cut before masking (bounded work on a 64 KiB text), with a margin so that personal data
            # straddling the limit is still recognised whole; cut again after the masks are in
            text = text[: limit + _MASK_MARGIN_CHARS]
            payload["text_truncated"] = True
        if _MAYBE_PII.search(text):
            text = self._mask(text)
        if len(text) > limit:
            text = text[:limit]
            payload["text_truncated"] = True
        reply_to = data.get("reply_to")
        if reply_to is not None:
            if type(reply_to) is not str or not _UUID.fullmatch(reply_to):
                raise Invalid(Reason.INVALID_VALUE, "data.reply_to: expected an event UUID")
            payload["reply_to"] = reply_to.lower()
        self._count_extra(data, _CHAT_FIELDS, EventType.CHAT_MESSAGE)
        return None, text, None

    def _entered(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        self._count_extra(data, _NO_FIELDS, EventType.USER_ENTERED)
        return None, None, None

    def _left(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        how = data.get("how")
        if type(how) is not str or how not in c.LEAVE_HOW:
            _require(how, "data.how")
            raise Invalid(Reason.INVALID_VALUE, f"data.how: expected one of {sorted(c.LEAVE_HOW)}")
        payload["how"] = how
        self._count_extra(data, _LEFT_FIELDS, EventType.USER_LEFT)
        return None, None, None

    def _moderation(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        """kick, unban, unmute, warn: a target and a reason (a duration is undeclared here: dropped)."""
        return self._moderation_of(data, payload, timed=False)

    def _timed_moderation(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        """ban, mute: also a duration (null: until lifted)."""
        return self._moderation_of(data, payload, timed=True)

    def _moderation_of(
        self, data: dict[str, Any], payload: dict[str, Any], *, timed: bool
    ) -> tuple[Any, ...]:
        target = data.get("target")
        if target is None:
            raise Invalid(Reason.MISSING_FIELD, "data.target: required")
        target_id, payload["target"] = self._user(target, "data.target", "moderation")
        reason = data.get("reason")
        if type(reason) is not str:
            _require(reason, "data.reason")
            raise Invalid(Reason.WRONG_TYPE, "data.reason: expected a string")
        reason = self._clean(reason)[: self.reason_max_chars + _MASK_MARGIN_CHARS]
        if _MAYBE_PII.search(reason):
            reason = self._mask(reason)
        reason = reason[: self.reason_max_chars]
        allowed = _MODERATION_FIELDS
        if timed and "duration_seconds" in data:
            duration = data["duration_seconds"]
            if duration is not None:
                duration = _whole(duration)
            if data["duration_seconds"] is not None and (
                duration is None or not 0 < duration <= c.DURATION_MAX_SECONDS
            ):
                raise Invalid(
                    Reason.INVALID_VALUE,
                    f"data.duration_seconds: expected null or an integer 1..{c.DURATION_MAX_SECONDS}",
                )
            payload["duration_seconds"] = duration
            allowed = _TIMED_MODERATION_FIELDS
        self._count_extra(data, allowed, "moderation")
        return target_id, reason, None

    def _settings(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        changes = data.get("changes")
        if type(changes) is not dict:
            _require(changes, "data.changes")
            raise Invalid(Reason.WRONG_TYPE, "data.changes: expected an object")
        kept: dict[str, dict[str, Any]] = {}
        # sorted: two copies of one event that list their changes in another order are the same content
        for name, change in sorted(changes.items()):
            kinds = c.ROOM_SETTINGS.get(name)
            if kinds is None:
                self.dropped_fields[EventType.ROOM_SETTINGS_CHANGED] += 1
                continue
            if type(change) is not dict:
                raise Invalid(Reason.WRONG_TYPE, f"data.changes.{name}: expected {{old, new}}")
            if "new" not in change:
                raise Invalid(Reason.MISSING_FIELD, f"data.changes.{name}.new: required")
            kept[name] = {
                "old": self._setting(change.get("old"), kinds, name),
                "new": self._setting(change["new"], kinds, name),
            }
        if not kept:
            raise Invalid(Reason.INVALID_VALUE, "data.changes: no known setting changed")
        privacy = kept.get("privacy", {}).get("new")
        if privacy is not None and privacy not in c.ROOM_PRIVACY:
            raise Invalid(
                Reason.INVALID_VALUE, f"data.changes.privacy: expected one of {sorted(c.ROOM_PRIVACY)}"
            )
        payload["changes"] = kept
        self._count_extra(data, _SETTINGS_FIELDS, EventType.ROOM_SETTINGS_CHANGED)
        room_change = None
        if "privacy" in kept or "max_occupancy" in kept:
            room_change = ("settings", privacy, kept.get("max_occupancy", {}).get("new"))
        return None, None, room_change

    def _permissions(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        change = data.get("change")
        if type(change) is not str or change not in c.PERMISSION_CHANGES:
            _require(change, "data.change")
            raise Invalid(
                Reason.INVALID_VALUE, f"data.change: expected one of {sorted(c.PERMISSION_CHANGES)}"
            )
        target = data.get("target")
        if target is None:
            raise Invalid(Reason.MISSING_FIELD, "data.target: required")
        target_id, payload["target"] = self._user(target, "data.target", EventType.ROOM_PERMISSIONS_CHANGED)
        payload["change"] = change
        self._count_extra(data, _PERMISSION_FIELDS, EventType.ROOM_PERMISSIONS_CHANGED)
        return target_id, None, ("permissions", change, target_id)

    def _gift(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        recipient = data.get("recipient")
        if recipient is None:
            raise Invalid(Reason.MISSING_FIELD, "data.recipient: required")
        target_id, payload["recipient"] = self._user(recipient, "data.recipient", EventType.GIFT_SENT)
        item = data.get("item")
        if type(item) is not dict:
            _require(item, "data.item")
            raise Invalid(Reason.WRONG_TYPE, "data.item: expected an object")
        item_out = {"item_id": self._id(item.get("item_id"), "data.item.item_id")}
        name = item.get("name")
        if name is not None:
            if type(name) is not str:
                raise Invalid(Reason.WRONG_TYPE, "data.item.name: expected a string")
            item_out["name"] = self._clean(name)[: c.ITEM_NAME_MAX_CHARS]
        self._count_extra(item, _ITEM_FIELDS, EventType.GIFT_SENT)
        credits = _whole(data.get("credits"))
        if credits is None or not 0 <= credits <= c.CREDITS_MAX:
            _require(data.get("credits"), "data.credits")
            raise Invalid(Reason.INVALID_VALUE, f"data.credits: expected an integer 0..{c.CREDITS_MAX}")
        payload["item"] = item_out
        payload["credits"] = credits
        self._count_extra(data, _GIFT_FIELDS, EventType.GIFT_SENT)
        return target_id, None, None

    # --- field helpers -----------------------------------------------------------------------------------
    def _id(self, value: Any, path: str, suffix: str = "") -> str:
        ident = _ident(value, path, suffix)
        if self._scrubbed and ident in self._scrubbed:
            raise Invalid(
                Reason.INVALID_VALUE,
                f"{path}{suffix}: has a lone surrogate (no UTF-8 text can hold one); an identifier is kept "
                "exactly or refused",
            )
        return ident

    def _user(self, value: Any, path: str, etype: str) -> tuple[str, dict[str, Any]]:
        if type(value) is not dict:
            raise Invalid(Reason.WRONG_TYPE, f"{path}: expected an object")
        user_id = self._id(value.get("user_id"), path, ".user_id")
        out: dict[str, Any] = {"user_id": user_id}
        name = value.get("display_name")
        if name is not None:
            if type(name) is not str:
                raise Invalid(Reason.WRONG_TYPE, f"{path}.display_name: expected a string")
            if "\x00" in name:
                name = name.replace("\x00", "\ufffd")
            out["display_name"] = name[: c.DISPLAY_NAME_MAX_CHARS]
        avatar = value.get("avatar")
        if avatar is not None:
            if type(avatar) is not dict:
                raise Invalid(Reason.WRONG_TYPE, f"{path}.avatar: expected an object")
            kept = {}
            avatar_id = avatar.get("avatar_id")
            if avatar_id is not None:
                kept["avatar_id"] = self._id(avatar_id, path, ".avatar.avatar_id")
            url = avatar.get("url")
            if url is not None:
                if type(url) is not str or not url.startswith("https://") or len(url) > c.URL_MAX_CHARS:
                    raise Invalid(Reason.INVALID_VALUE, f"{path}.avatar.url: expected an https URL")
                kept["url"] = self._clean(url)
            self._count_extra(avatar, c.AVATAR_FIELDS, etype)
            out["avatar"] = kept
        self._count_extra(value, c.USER_FIELDS, etype)
        return user_id, out

    def _timestamp(self, value: Any, now: datetime) -> datetime:
        if type(value) is not str:
            _require(value, "occurred_at")
            raise Invalid(Reason.WRONG_TYPE, "occurred_at: expected an RFC 3339 string")
        if not _RFC3339.fullmatch(value):
            raise Invalid(Reason.INVALID_TIMESTAMP, f"occurred_at: {value[:40]!r} is not RFC 3339")
        try:
            ts = datetime.fromisoformat(_six_fraction_digits(value) if len(value) > 27 else value)
        except ValueError:
            raise Invalid(Reason.INVALID_TIMESTAMP, f"occurred_at: {value[:40]!r} is not RFC 3339") from None
        if ts.tzinfo is None:
            raise Invalid(Reason.INVALID_TIMESTAMP, "occurred_at: has no UTC offset")
        if ts.tzinfo is not UTC:
            try:
                ts = ts.astimezone(UTC)
            except OverflowError:  # year 1 or 9999 with an offset: off the calendar in UTC
                reason = Reason.TIMESTAMP_IN_FUTURE if ts.year > 2000 else Reason.INVALID_TIMESTAMP
                raise Invalid(reason, f"occurred_at: {value[:40]} is out of range") from None
        if ts < _EARLIEST:
            raise Invalid(Reason.INVALID_TIMESTAMP, f"occurred_at: {value[:40]} is before 2000")
        if ts > now + self.max_future_skew:
            raise Invalid(
                Reason.TIMESTAMP_IN_FUTURE,
                f"occurred_at: {value[:40]} is ahead of the clock ({now:%Y-%m-%dT%H:%M:%SZ})",
            )
        return ts

    def _setting(self, value: Any, kinds: tuple[type, ...], name: str) -> Any:
        if value is None:
            return None
        if int in kinds:
            number = _whole(value)
            if number is None:
                raise Invalid(Reason.WRONG_TYPE, f"data.changes.{name}: expected an integer or null")
            if not 1 <= number <= c.SETTING_INT_MAX:
                raise Invalid(Reason.INVALID_VALUE, f"data.changes.{name}: expected 1..{c.SETTING_INT_MAX}")
            return number
        if type(value) not in kinds:
            raise Invalid(Reason.WRONG_TYPE, f"data.changes.{name}: expected {kinds[0].__name__} or null")
        if type(value) is str:
            return self._clean(value)[: c.SETTING_VALUE_MAX_CHARS]
        return value

    def _clean(self, text: str) -> str:
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")
        return text

    def _mask(self, text: str) -> str:
        return mask_personal_data(text, self.masked)

    def _count_extra(self, obj: dict[str, Any], allowed: frozenset[str], label: str) -> None:
        if not allowed.issuperset(obj):
            self.dropped_fields[label] += sum(1 for k in obj if k not in allowed)


class _SpecRule:
    """A type checked by its spec: each declared field in order, with the reason codes the hand-written
    rules give (absent or null and required: missing_field; a JSON type that cannot be it: wrong_type; a
    value outside the contract: invalid_value). Used for a type without a hand-written rule, and by tests
    that compare the two. Room settings are not among the kinds it reads."""

    __slots__ = ("_allowed", "_fields", "_markers", "_n", "_names", "_type")

    def __init__(
        self, normalizer: Normalizer, event_type: str, fields: tuple[Field, ...], markers: tuple[str, ...]
    ) -> None:
        self._n = normalizer
        self._type = event_type
        self._fields = fields
        self._allowed = frozenset(f.name for f in fields)
        self._markers = frozenset(markers)
        #: each nested record's allowlist, computed once
        self._names: dict[int, frozenset[str]] = {}
        records = [f.kind for f in fields if isinstance(f.kind, Record)]
        while records:
            record = records.pop()
            self._names[id(record)] = record.field_names
            records += [f.kind for f in record.fields if isinstance(f.kind, Record)]
        for f in fields:
            is_user = isinstance(f.kind, Record) and "user_id" in f.kind.field_names
            if f.column == "target_id" and not is_user:
                raise ValueError(f"{event_type}.{f.name}: only a user can be the target")
            if f.column == "body" and not isinstance(f.kind, Text):
                raise ValueError(f"{event_type}.{f.name}: only text can be the body")

    def __call__(self, data: dict[str, Any], payload: dict[str, Any]) -> tuple[Any, ...]:
        if self._markers and not self._markers.isdisjoint(data):
            raise Invalid(Reason.PRIVATE_MESSAGE, f"{self._type} addressed to one user is a private message")
        kept, target_id, body = self._record(self._fields, data, "data.", payload)
        payload.update(kept)
        self._n._count_extra(data, self._allowed, self._type)
        return target_id, body, None

    def _record(
        self, fields: tuple[Field, ...], obj: dict[str, Any], prefix: str, payload: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None, str | None]:
        kept: dict[str, Any] = {}
        target_id = body = None
        for field in fields:
            value = obj.get(field.name)
            if value is None:
                if field.required:
                    raise Invalid(Reason.MISSING_FIELD, f"{prefix}{field.name}: required")
                if field.null_kept and field.name in obj:
                    kept[field.name] = None
                continue
            value = self._value(field.kind, value, prefix + field.name, payload)
            if field.column == "body":
                body = value
                continue
            kept[field.name] = value
            if field.column == "target_id":
                target_id = value["user_id"]
        return kept, target_id, body

    def _value(self, kind: Kind, value: Any, path: str, payload: dict[str, Any]) -> Any:
        if isinstance(kind, Record):
            if type(value) is not dict:
                raise Invalid(Reason.WRONG_TYPE, f"{path}: expected an object")
            kept, _, _ = self._record(kind.fields, value, path + ".", payload)
            self._n._count_extra(value, self._names[id(kind)], self._type)
            return kept
        if isinstance(kind, Identifier):
            return self._n._id(value, path)
        if isinstance(kind, Text):
            return self._text(kind, value, path, payload)
        if isinstance(kind, Uuid):
            if type(value) is not str or not _UUID.fullmatch(value):
                raise Invalid(Reason.INVALID_VALUE, f"{path}: expected an event UUID")
            return value.lower()
        if isinstance(kind, Choice):
            if type(value) is not str or value not in kind.values:
                raise Invalid(Reason.INVALID_VALUE, f"{path}: expected one of {sorted(kind.values)}")
            return value
        if isinstance(kind, Integer):
            number = _whole(value)
            if number is None or not kind.minimum <= number <= kind.maximum:
                expected = f"expected an integer {kind.minimum}..{kind.maximum}"
                raise Invalid(Reason.INVALID_VALUE, f"{path}: {expected}")
            return number
        if isinstance(kind, Boolean):
            if type(value) is not bool:
                raise Invalid(Reason.WRONG_TYPE, f"{path}: expected true or false")
            return value
        if isinstance(kind, Url):
            if type(value) is not str or not value.startswith(kind.scheme) or len(value) > kind.max_chars:
                raise Invalid(Reason.INVALID_VALUE, f"{path}: expected a {kind.scheme} URL")
            return self._n._clean(value)
        raise TypeError(f"{path}: {type(kind).__name__} needs a hand-written rule")  # pragma: no cover

    def _text(self, kind: Text, value: Any, path: str, payload: dict[str, Any]) -> str:
        if type(value) is not str:
            raise Invalid(Reason.WRONG_TYPE, f"{path}: expected a string")
        if len(value) < kind.min_chars:
            raise Invalid(Reason.INVALID_VALUE, f"{path}: at least {kind.min_chars} characters")
        limit: int = getattr(self._n, kind.limit_setting) if kind.limit_setting else kind.max_chars
        text = self._n._clean(value)
        cut = len(text) > limit
        if cut and kind.masked:
            text = text[: limit + _MASK_MARGIN_CHARS]  # bounded masking work; see Normalizer._chat
        if kind.masked and _MAYBE_PII.search(text):
            text = self._n._mask(text)
        if len(text) > limit:
            text = text[:limit]
            cut = True
        if cut and kind.truncated_flag:
            payload[kind.truncated_flag] = True
        return text


# --- module helpers ----------------------------------------------------------------------------------------
def mask_personal_data(text: str, counts: Counter[str] | None = None) -> str:
    """Replace e-mail addresses, card numbers and IP addresses in free text; count them by kind."""
    if not _MAYBE_PII.search(text):
        return text
    if "@" in text:
        text, n = _EMAIL.subn(EMAIL_MASK, text)
        if counts is not None and n:
            counts["email"] += n
    text, n = _CARD.subn(_card_or_keep, text)
    if n and counts is not None:
        counts["card"] += text.count(CARD_MASK)
    text, n = _IPV4.subn(_ip_or_keep, text)
    if ":" in text:
        text, n6 = _IPV6.subn(_ipv6_or_keep, text)
        n += n6
    if n and counts is not None:
        counts["ip"] += text.count(IP_MASK)
    return text


def _six_fraction_digits(value: str) -> str:
    """Python keeps microseconds: cut a longer fraction (RFC 3339 allows any) to six digits."""
    head, dot, rest = value.partition(".")
    if not dot:
        return value
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"


def _whole(value: Any) -> int | None:
    """An integer, also when written 25.0 (JSON Schema counts that as an integer); else None."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def _ident(value: Any, path: str, suffix: str = "") -> str:
    """An identifier: 1..64 printable characters. `path + suffix` names it in errors (joined only then)."""
    if type(value) is not str:
        _require(value, path + suffix)
        raise Invalid(Reason.WRONG_TYPE, f"{path}{suffix}: expected a string")
    if not is_identifier(value):
        raise Invalid(
            Reason.INVALID_VALUE, f"{path}{suffix}: expected 1..{c.ID_MAX_CHARS} characters, no controls"
        )
    return value


def _require(value: Any, path: str) -> None:
    if value is None:
        raise Invalid(Reason.MISSING_FIELD, f"{path}: required")


def _json_type(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return kinds.get(type(value), "a boolean" if type(value) is bool else "null")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_or_keep(m: re.Match[str]) -> str:
    """Mask the longest card number (13-19 digits, Luhn-valid) a digit run starts with.

    A run may go on past the card (its security code typed after it): what follows is kept.
    """
    run = m.group(0)
    digit_ends = [i + 1 for i, ch in enumerate(run) if ch.isdigit()]
    for length in range(min(19, len(digit_ends)), 12, -1):
        end = digit_ends[length - 1]
        if _luhn_ok(re.sub(r"[ -]", "", run[:end])):
            return CARD_MASK + run[end:]
    return run


def _ipv6_or_keep(m: re.Match[str]) -> str:
    if sum(1 for group in m.group(0).split(":") if group) < 3:
        return m.group(0)  # `std::vector`, `1::2`: too short to be an address someone typed out
    try:
        ipaddress.IPv6Address(m.group(0))
    except ValueError:
        return m.group(0)
    return IP_MASK


def _ip_or_keep(m: re.Match[str]) -> str:
    parts = m.group(0).split(".")
    return IP_MASK if all(int(p) <= 255 for p in parts) else m.group(0)


#: Confluent's schema-registry wire format: magic byte 0, a 4-byte schema id, then the serialized payload.
_REGISTRY_HEADER_BYTES = 5


def _registry_payload(raw: bytes) -> bytes:
    """The JSON inside a record in Confluent's schema-registry wire format, as a room server's JVM client
    with a schema-registry JSON serializer sends it (the schema id is not needed: the contract is checked
    here, as for any record); Invalid when what follows the header is not a JSON object (Avro, Protobuf)."""
    payload = raw[_REGISTRY_HEADER_BYTES:].lstrip()
    # (a byte order mark is let through, for the JSON parser to name)
    if len(raw) <= _REGISTRY_HEADER_BYTES or payload.removeprefix(b"\xef\xbb\xbf")[:1] != b"{":
        schema = int.from_bytes(raw[1:_REGISTRY_HEADER_BYTES], "big") if len(raw) >= 5 else None
        raise Invalid(
            Reason.INVALID_JSON,
            "starts with a NUL byte: a schema-registry record (schema id "
            f"{schema if schema is not None else '?'}) whose payload is not a JSON object (Avro or Protobuf "
            "are not read: send JSON, schemas/)",
        )
    return payload


def _lenient_parse(raw: bytes) -> tuple[Any, set[str]]:
    """Second chance for what orjson refuses: lone surrogates (replaced), NaN (left for the field checks).
    Returns the document and the strings whose lone surrogates were replaced (as they now are).

    Anything else Python's parser refuses is `invalid_json` too: besides malformed text, an integer of more
    digits than Python converts (4,300, a ValueError) and nesting deeper than its stack (RecursionError)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(Reason.INVALID_JSON, f"not UTF-8 at byte {e.start}") from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise Invalid(Reason.INVALID_JSON, "not JSON: nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, and integers beyond sys.get_int_max_str_digits()
        raise Invalid(Reason.INVALID_JSON, f"not JSON: {str(e)[:120]}") from None
    scrubbed: set[str] = set()
    return _scrub(doc, scrubbed), scrubbed


def _scrub_text(value: str, scrubbed: set[str]) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
        scrubbed.add(value)
    return value


def _scrub(value: Any, scrubbed: set[str]) -> Any:
    """`value` (a fresh parse) with every lone surrogate in its strings and keys replaced by U+FFFD, in place;
    each string changed is added to `scrubbed`.

    Iterative: a record may nest as deep as the parser allows, and that is deeper than a recursion here
    could go with the normalizer's own frames on the stack."""
    if type(value) is str:
        return _scrub_text(value, scrubbed)
    pending = [value]
    while pending:
        node = pending.pop()
        if type(node) is list:
            for i, item in enumerate(node):
                if type(item) is str:
                    node[i] = _scrub_text(item, scrubbed)
                elif type(item) is list or type(item) is dict:
                    pending.append(item)
        elif type(node) is dict:
            items = list(node.items())
            node.clear()
            for key, item in items:  # in order: of keys equal once scrubbed, the last wins, as in a parse
                if type(item) is str:
                    item = _scrub_text(item, scrubbed)
                elif type(item) is list or type(item) is dict:
                    pending.append(item)
                node[_scrub_text(key, scrubbed)] = item
    return value
