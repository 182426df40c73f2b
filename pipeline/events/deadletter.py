"""What a dead letter may keep of a record the pipeline refused: the contract's allowlist, never raw bytes.

A refused record is exactly the one whose producer is misbehaving, so it is the most likely to carry what
the logs promise never to store (an e-mail address, an IP address, a card number, a real name, a password
in an undeclared field). Called by the ingest stage for every record it dead-letters; it never raises.

What is kept (`content`, stored as jsonb and sent as the dead-letter topic's message value):
- a JSON object: the envelope fields the contract declares, and inside `actor` and `data` the fields the
  contract's spec declares for the record's type (unknown type: none of `data`; `view_rules` derives the
  table once at import); free text is cut to its contract limit, other strings to STRING_MAX_CHARS, and
  e-mail addresses, card numbers and IP addresses in every string are masked; a value of the wrong JSON
  type is replaced by a marker naming its type (`{"_withheld": "object"}`);
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
from pipeline.events.spec import Contract, Field, Kind, Record, SettingChanges, Text

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
_ENVELOPE_SCALARS = c.ENVELOPE_FIELDS - {"actor", "data"}


@dataclass(frozen=True, slots=True)
class _Settings:
    """Room settings: each declared name -> the rules of its {old, new}; other names are undeclared."""

    entries: dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ViewRules:
    """How a dead letter keeps each declared field, derived from a contract's spec by `view_rules`.

    A field's rule is an int (a value; a string is cut at that many characters), a (setting, characters)
    pair (free text whose limit is a setting: `keep`'s keyword of that name, else the characters), a dict
    (an object: its declared fields' rules) or room settings.
    """

    #: per type, the rules of `data`'s declared fields
    data: dict[str, dict[str, Any]]
    #: the rules of a user's fields (`actor`, and users inside `data`)
    user: dict[str, Any]


def view_rules(contract: Contract) -> ViewRules:
    """The dead-letter view of `contract`: the allowlist of each type's `data`, and each field's limit."""
    return ViewRules({spec.type: _fields(spec.fields) for spec in contract}, _fields(contract.user.fields))


def _fields(fields: tuple[Field, ...]) -> dict[str, Any]:
    return {f.name: _rule(f.kind) for f in fields}


def _rule(kind: Kind) -> Any:
    if isinstance(kind, Text):
        return (kind.limit_setting, kind.max_chars) if kind.limit_setting else kind.max_chars
    if isinstance(kind, Record):
        return _fields(kind.fields)
    if isinstance(kind, SettingChanges):
        return _Settings({s.name: {"old": _rule(s.old), "new": _rule(s.old)} for s in kind.settings})
    return STRING_MAX_CHARS  # ids, UUIDs, choices, numbers, booleans, URLs: kept as they came, if scalars


#: The contract's dead-letter view, computed once.
VIEW_RULES = view_rules(c.CONTRACT)


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


def keep(
    raw: bytes | None,
    reason: Reason,
    *,
    chat_text_max_chars: int = c.CHAT_TEXT_MAX_CHARS,
    rules: ViewRules = VIEW_RULES,
) -> Kept:
    """The allowlisted view of a refused record (see the module docstring). Never raises.

    `chat_text_max_chars`: the normalizer's limit (a setting), so a dead letter keeps as much chat text as a
    stored event would. `rules`: another contract's view (tests).
    """
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
        view = _View(rules, {"chat_text_max_chars": chat_text_max_chars}).record(doc)
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
    def __init__(self, rules: ViewRules, limits: dict[str, int]) -> None:
        self.rules = rules
        self.limits = limits
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
                out[key] = self._object(value, self.rules.user, "actor.")
            elif key == "data":
                fields = self.rules.data.get(etype) if type(etype) is str else None
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
            elif type(rule) is int:
                out[key] = self._scalar(item, rule)
            elif type(rule) is tuple:
                setting: str = rule[0]
                max_chars: int = rule[1]
                out[key] = self._scalar(item, self.limits.get(setting, max_chars))
            elif type(rule) is _Settings:
                out[key] = self._changes(item, rule, f"{path}{key}.")
            else:
                out[key] = self._object(item, rule, f"{path}{key}.")
        return out

    def _changes(self, value: Any, settings: _Settings, path: str) -> Any:
        if type(value) is not dict:
            return self._scalar(value, STRING_MAX_CHARS)
        out: dict[str, Any] = {}
        for name, change in value.items():
            rules = settings.entries.get(name) if type(name) is str else None
            if rules is None:
                self._undeclared(name, path)
            else:
                out[name] = self._object(change, rules, f"{path}{name}.")
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
