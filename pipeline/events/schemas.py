"""The contract as JSON Schema (draft 2020-12), built from its spec: the files published in `schemas/v1`.

`schema_files(CONTRACT)` gives every file derived from the spec (the envelope, `event.schema.json` and one
schema per type) as JSON text; `python -m pipeline.events.generate` writes them and
tests/events/test_spec.py fails when the committed files differ. `dead-letter.schema.json` describes the
dead-letter record, not an event, and is written by hand.

Free text has no `maxLength` (it is cut, never refused); identifiers and URLs do (they are refused).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.events.contract import (
    ENVELOPE_FIELD_NAMES,
    EVENT_MAX_BYTES,
    ID_MAX_CHARS,
    MAX_FUTURE_SKEW_SECONDS,
    PRIVATE_TYPE_NAMES,
)
from pipeline.events.identifiers import FORBIDDEN_ECMA
from pipeline.events.spec import (
    UNDECLARED,
    Boolean,
    Choice,
    Contract,
    EventSpec,
    Field,
    Identifier,
    Integer,
    Kind,
    Record,
    Setting,
    SettingChanges,
    Text,
    Url,
    Uuid,
)

__all__ = ["BASE_URI", "render", "schema_files"]

BASE_URI = "https://roomlogs.example/schemas/v1/"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
_ENVELOPE = "envelope.schema.json"
_NULL = {"type": "null"}
_UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_TIMESTAMP_PATTERN = (
    "^[2-9][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    "(?:\\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)


def render(schema: dict[str, Any]) -> str:
    """A schema file's text: two-space indent, ASCII, a final newline."""
    return json.dumps(schema, indent=2) + "\n"


def schema_files(contract: Contract) -> dict[str, str]:
    """File name -> text of every schema derived from `contract`."""
    files = {_ENVELOPE: envelope_schema(contract), "event.schema.json": event_schema(contract)}
    for spec in contract:
        files[f"{spec.type}.schema.json"] = type_schema(spec, contract.version)
    return {name: render(schema) for name, schema in files.items()}


# --- the files ----------------------------------------------------------------------------------------------
def envelope_schema(contract: Contract) -> dict[str, Any]:
    private = _listed(PRIVATE_TYPE_NAMES, ", ")
    optional = [e.type for e in contract if e.actor_optional]
    described = {
        "event_id": {
            "$ref": "#/$defs/uuid",
            "description": "Unique id of this event, chosen by the room server (UUIDv7 recommended). The "
            "same event sent twice (same event_id and occurred_at) is stored once.",
        },
        "type": {
            "description": "Event type. Unknown types are refused (unknown_type); private-message types "
            f"({private}) are refused (private_message) and their content is never kept.",
            "enum": list(contract.types),
        },
        "schema_version": {
            "description": "Version of this contract. The worker refuses any other value "
            "(unsupported_version).",
            "type": "integer",
            "const": contract.version,
        },
        "room_id": {"$ref": "#/$defs/identifier", "description": "The room the event happened in."},
        "occurred_at": {"$ref": "#/$defs/timestamp", "description": "When the event happened in the room."},
        "actor": {
            "description": f"Who did it. Required, except for {_listed(optional, ' and ')}, where null or "
            "absent means the platform itself.",
            "anyOf": [{"$ref": "#/$defs/user"}, _NULL],
        },
        "data": {
            "description": "Type-specific fields; see the type's schema. null is the same as {}.",
            "type": ["object", "null"],
        },
    }
    defs: dict[str, Any] = {
        "uuid": {
            "description": "A UUID in the 8-4-4-4-12 hex form, either case (stored lower-case).",
            "type": "string",
            "format": "uuid",
            "minLength": 36,
            "maxLength": 36,
            "pattern": _UUID_PATTERN,
        },
        "timestamp": {
            "description": "An RFC 3339 date-time with seconds and a UTC offset (Z or +hh:mm / -hh:mm), "
            "upper-case T and Z, optional fraction of a second; no leap second (:60). Not before "
            "2000-01-01T00:00:00Z. The worker also refuses a time more than "
            f"{MAX_FUTURE_SKEW_SECONDS // 60} minutes ahead of its own clock (timestamp_in_future), which a "
            "schema cannot express.",
            "type": "string",
            "format": "date-time",
            "pattern": _TIMESTAMP_PATTERN,
            "examples": ["2026-11-24T11:58:03.250Z", "2026-11-24T12:58:03+01:00"],
        },
        "identifier": {
            "description": f"An opaque id: 1 to {ID_MAX_CHARS} characters, no control characters "
            "(U+0000-U+001F, U+007F). Never truncated: a longer id is refused (invalid_value).",
            "type": "string",
            "minLength": 1,
            "maxLength": ID_MAX_CHARS,
            "not": {"pattern": f"[{FORBIDDEN_ECMA}]"},
        },
    }
    for record in _shared_records(contract.user):
        defs[record.def_name or ""] = _record(record, "#/$defs/")
    return {
        "$schema": DRAFT,
        "$id": BASE_URI + _ENVELOPE,
        "title": f"Room-log event envelope, schema_version {contract.version}",
        "description": f"Every event a room server publishes is one JSON object (UTF-8, at most "
        f"{EVENT_MAX_BYTES} bytes) with this envelope. Each event type has its own schema "
        f"(<type>.schema.json) that adds its `data`; event.schema.json accepts any of them. {UNDECLARED} "
        "Private messages "
        f"({private}) are not room logs and are refused with reason private_message.",
        "type": "object",
        "required": ["event_id", "type", "schema_version", "room_id", "occurred_at"],
        "properties": {name: described[name] for name in ENVELOPE_FIELD_NAMES},
        "if": {"required": ["type"], "properties": {"type": {"enum": optional}}},
        "else": {"required": ["actor"], "properties": {"actor": {"$ref": "#/$defs/user"}}},
        "additionalProperties": True,
        "$defs": defs,
    }


def event_schema(contract: Contract) -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "$id": BASE_URI + "event.schema.json",
        "title": f"Any room-log event, schema_version {contract.version}",
        "description": "Exactly one of the per-type schemas, chosen by `type`. Validate with this when you "
        "do not know the type in advance.",
        "$ref": _ENVELOPE,
        "oneOf": [{"$ref": f"{spec.type}.schema.json"} for spec in contract],
    }


def type_schema(spec: EventSpec, version: int) -> dict[str, Any]:
    user = {"$ref": f"{_ENVELOPE}#/$defs/user"}
    actor: dict[str, Any] = user
    if spec.actor_optional:
        actor = {"description": "Who changed it; null or absent: the platform.", "anyOf": [user, _NULL]}
    data_ref = {"$ref": "#/$defs/data"}
    required = [] if spec.actor_optional else ["actor"]
    if spec.data_required:
        required.append("data")
    summary = f"{spec.summary} {UNDECLARED}{spec.undeclared_note}"
    data = _object(spec.fields, summary, f"{_ENVELOPE}#/$defs/", refused=spec.private_markers)
    return {
        "$schema": DRAFT,
        "$id": f"{BASE_URI}{spec.type}.schema.json",
        "title": f"{spec.type} event, schema_version {version}",
        "$ref": _ENVELOPE,
        "properties": {
            "type": {"const": spec.type},
            "actor": actor,
            "data": data_ref if spec.data_required else {"anyOf": [data_ref, _NULL]},
        },
        "required": required,
        "$defs": {"data": data},
    }


# --- fields -------------------------------------------------------------------------------------------------
def _shared_records(user: Record) -> list[Record]:
    """The records published as `$defs` of the envelope: the user and what it holds (its avatar)."""
    found = [user]
    for field in user.fields:
        if isinstance(field.kind, Record) and field.kind.def_name:
            found.append(field.kind)
    return found


def _record(record: Record, defs: str) -> dict[str, Any]:
    return _object(record.fields, f"{record.description} {UNDECLARED}{record.undeclared_note}", defs)


def _object(
    fields: tuple[Field, ...], description: str, defs: str, refused: tuple[str, ...] = ()
) -> dict[str, Any]:
    """An object with declared fields; `refused`: names it may not carry at all (`false` schemas)."""
    out: dict[str, Any] = {"description": description, "type": "object"}
    required = [f.name for f in fields if f.required]
    if required:
        out["required"] = required
    if fields or refused:
        out["properties"] = {f.name: _field(f, defs) for f in fields} | dict.fromkeys(refused, False)
    out["additionalProperties"] = True
    return out


def _field(field: Field, defs: str) -> dict[str, Any]:
    """A field's schema. A field that is not required may be null (the same as absent, or kept)."""
    kind, nullable, described = field.kind, not field.required, field.description
    if isinstance(kind, Record) and kind.def_name:
        ref = {"$ref": defs + kind.def_name}
        return _with_description(ref, described) if not nullable else _any_of(ref, described)
    if isinstance(kind, Record):
        return _record(kind, defs)  # its description is the record's own
    if isinstance(kind, SettingChanges):
        return _changes(kind)
    if isinstance(kind, Identifier | Uuid):
        ref = {"$ref": defs + ("identifier" if isinstance(kind, Identifier) else "uuid")}
        return _with_description(ref, described) if not nullable else _any_of(ref, described)
    return _described(described, _scalar(kind, nullable))


def _scalar(kind: Kind, nullable: bool) -> dict[str, Any]:
    """Text, a URL, a choice, an integer or a boolean; a nullable integer as anyOf (its range stays plain)."""
    if isinstance(kind, Choice):
        return {"enum": [*kind.values, None] if nullable else list(kind.values)}
    if isinstance(kind, Integer):
        ranged = {"type": "integer", "minimum": kind.minimum, "maximum": kind.maximum}
        return {"anyOf": [ranged, _NULL]} if nullable else ranged
    json_type = "boolean" if isinstance(kind, Boolean) else "string"
    out: dict[str, Any] = {"type": [json_type, "null"] if nullable else json_type}
    if isinstance(kind, Text) and kind.min_chars:
        out["minLength"] = kind.min_chars
    if isinstance(kind, Url):
        out["maxLength"] = kind.max_chars
        out["pattern"] = "^" + kind.scheme
    return out


def _changes(kind: SettingChanges) -> dict[str, Any]:
    return {
        "description": kind.description,
        "type": "object",
        "properties": {s.name: _setting(s) for s in kind.settings},
        "anyOf": [{"required": [s.name]} for s in kind.settings],
        "additionalProperties": True,
    }


def _setting(setting: Setting) -> dict[str, Any]:
    old = _scalar(setting.old, nullable=True)
    new = _scalar(setting.new, nullable=True) if setting.new else old
    return {
        "description": setting.description,
        "type": "object",
        "required": ["new"],
        "properties": {"old": old, "new": new},
        "additionalProperties": True,
    }


def _described(description: str | None, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, **schema} if description else schema


def _with_description(ref: dict[str, Any], description: str | None) -> dict[str, Any]:
    return {**ref, "description": description} if description else ref


def _any_of(ref: dict[str, Any], description: str | None) -> dict[str, Any]:
    return _described(description, {"anyOf": [ref, _NULL]})


def _listed(names: list[str] | tuple[str, ...], last: str) -> str:
    """a, b and c (or a, b, c with last=", ")."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + last + names[-1]
