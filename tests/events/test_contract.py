"""The published JSON Schema (`schemas/v1`) and the Normalizer state the same contract.

Room-server teams validate against the schema; the ingest worker enforces the contract with the Normalizer.
If they drift apart, a team can publish events the worker dead-letters, or the worker can store what the
schema calls invalid. So:

- every example in `schemas/v1/examples` goes through both: `valid-*` passes both, `invalid-<reason>-*`
  fails both and the Normalizer gives that reason;
- the schema's enums and limits equal the constants in `pipeline/events/contract.py`;
- events generated from the schema files are accepted by the Normalizer, with every
  undeclared field dropped; after one field is removed or replaced, both accept or both refuse.

The end of the file pins the places where the Normalizer once disagreed with the published contract
(non-RFC 3339 timestamps, integer ranges, integers written 25.0, ...): each pairs what the schema says with
the Normalizer doing the same.
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from pipeline.events import contract as c
from pipeline.events.normalize import ACTOR_ID, EVENT_TYPE, OCCURRED_AT, PAYLOAD, Normalizer
from pipeline.events.reasons import RAW_WITHHELD, Invalid, Reason
from pipeline.storage.batch import DEAD_LETTER_COLUMNS

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "v1"
EXAMPLES = SCHEMAS / "examples"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TYPES = sorted(c.EventType)
#: Reasons no example can show, because a schema cannot state them: byte size, the worker's clock, storage.
REASONS_BEYOND_SCHEMA = {
    Reason.OVERSIZE,
    Reason.TIMESTAMP_IN_FUTURE,
    Reason.STORAGE_REJECTED,
    Reason.CONFLICTING_DUPLICATE,  # a valid event; only the stored copy can tell
    Reason.DAY_SEALED,  # a valid event of a day already sealed; only the seals can tell
    Reason.NORMALIZER_FAILED,  # a bug of the worker, not a property of the record
}


# --- the validator a room-server team would use -------------------------------------------------------------
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:[Zz]|[+-](\d\d):(\d\d))", re.ASCII
)


def _rfc3339_date_time(value: object) -> bool:
    """RFC 3339 section 5.6 `date-time`, calendar included (jsonschema needs an extra package for it)."""
    if not isinstance(value, str):
        return True
    m = _RFC3339.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    off_h, off_m = (int(g or 0) for g in m.groups()[6:])
    try:
        date(year, month, day)
    except ValueError:
        return False
    return hour <= 23 and minute <= 59 and second <= 60 and off_h <= 23 and off_m <= 59


FORMATS = FormatChecker()
FORMATS.checks("date-time")(_rfc3339_date_time)


def _load_schemas() -> dict[str, dict[str, Any]]:
    files = SCHEMAS.glob("*.schema.json")
    return {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in files}


SCHEMA = _load_schemas()
REGISTRY: Registry[Any] = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in SCHEMA.values()
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMA[name], registry=REGISTRY, format_checker=FORMATS)


VALIDATORS = {name: validator(name) for name in SCHEMA}
TIMESTAMP = VALIDATORS["envelope"].evolve(schema=SCHEMA["envelope"]["$defs"]["timestamp"])


def normalize(doc_or_raw: Any, normalizer: Normalizer | None = None) -> tuple[Any, ...]:
    raw = doc_or_raw if isinstance(doc_or_raw, bytes) else json.dumps(doc_or_raw).encode()
    return (normalizer or Normalizer()).normalize(raw, NOW)


def reason_of(doc: Any) -> Reason | None:
    try:
        normalize(doc)
    except Invalid as e:
        return e.reason
    return None


def _chat(**envelope: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "0196f0a2-7c1e-7b3a-9c41-2f5d8e6a1b20",
        "type": "chat.message",
        "schema_version": 1,
        "room_id": "lobby-7",
        "occurred_at": "2026-11-24T11:00:00Z",
        "actor": {"user_id": "u-1"},
        "data": {"text": "hello"},
    }
    doc.update(envelope)
    return doc


# --- examples -----------------------------------------------------------------------------------------------
def _strict_json(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


EVENT_EXAMPLES = sorted(p for p in EXAMPLES.glob("*/*.json") if p.parent.name != "dead-letter")


@pytest.mark.parametrize("path", EVENT_EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_example_gets_the_same_verdict_from_schema_and_normalizer(path: Path) -> None:
    folder = path.parent.name
    verdict, *label = path.stem.split("-")
    schemas = ["envelope", "event"] if folder == "envelope" else [folder, "event"]
    try:
        doc = _strict_json(path.read_text())
    except ValueError:
        schema_errors = {name: ["not JSON"] for name in schemas}
    else:
        schema_errors = {name: [e.message for e in VALIDATORS[name].iter_errors(doc)] for name in schemas}

    if verdict == "valid":
        assert schema_errors == {name: [] for name in schemas}
        event = normalize(path.read_bytes())
        assert event[EVENT_TYPE] == folder
        return
    assert verdict == "invalid", f"{path.name}: name it valid-*.json or invalid-<reason>-*.json"
    expected = Reason(label[0])
    assert all(schema_errors.values()), f"the schema accepts {path.name}: {schema_errors}"
    with pytest.raises(Invalid) as refused:
        normalize(path.read_bytes())
    assert refused.value.reason == expected, refused.value.detail


def test_every_type_has_a_schema_and_two_valid_and_two_invalid_examples() -> None:
    assert set(SCHEMA) == {*TYPES, "envelope", "event", "dead-letter"}
    for t in TYPES:
        names = [p.stem for p in (EXAMPLES / t).glob("*.json")]
        assert sum(n.startswith("valid-") for n in names) >= 2, t
        assert sum(n.startswith("invalid-") for n in names) >= 2, t


def test_examples_show_every_reason_a_schema_can_express() -> None:
    shown = {Reason(p.stem.split("-")[1]) for p in EVENT_EXAMPLES if p.stem.startswith("invalid-")}
    assert shown == set(Reason) - REASONS_BEYOND_SCHEMA


@pytest.mark.parametrize("path", sorted((EXAMPLES / "dead-letter").glob("*.json")), ids=lambda p: p.stem)
def test_dead_letter_example_verdict(path: Path) -> None:
    valid = VALIDATORS["dead-letter"].is_valid(json.loads(path.read_text()))
    assert valid is path.stem.startswith("valid-")


# --- the schema's enums and limits are the contract's -------------------------------------------------------
def _data(t: str) -> dict[str, Any]:
    return SCHEMA[t]["$defs"]["data"]


def test_envelope_lists_the_contract_types_and_version() -> None:
    env = SCHEMA["envelope"]
    assert env["properties"]["type"]["enum"] == list(c.EventType)
    assert c.PRIVATE_TYPES.isdisjoint(env["properties"]["type"]["enum"])
    assert env["properties"]["schema_version"]["const"] == c.SCHEMA_VERSION
    assert set(env["properties"]) == c.ENVELOPE_FIELDS
    assert set(env["if"]["properties"]["type"]["enum"]) == c.ACTOR_OPTIONAL
    for t in TYPES:
        assert SCHEMA[t]["properties"]["type"] == {"const": t}
        assert ("actor" in SCHEMA[t]["required"]) is (t not in c.ACTOR_OPTIONAL)


def test_schema_limits_are_the_contract_limits() -> None:
    defs = SCHEMA["envelope"]["$defs"]
    assert defs["identifier"]["maxLength"] == c.ID_MAX_CHARS
    assert defs["avatar"]["properties"]["url"]["maxLength"] == c.URL_MAX_CHARS
    assert set(defs["user"]["properties"]) == c.USER_FIELDS
    assert set(defs["avatar"]["properties"]) == c.AVATAR_FIELDS
    assert _data("gift.sent")["properties"]["credits"]["maximum"] == c.CREDITS_MAX
    for t in c.MODERATION_TYPES:
        duration = _data(t)["properties"].get("duration_seconds")
        assert (duration is not None) is (t in c.TIMED_MODERATION), t
        if duration is not None:
            assert duration["anyOf"][0]["maximum"] == c.DURATION_MAX_SECONDS


def test_schema_enums_are_the_contract_enums() -> None:
    assert set(_data("user.left")["properties"]["how"]["enum"]) == c.LEAVE_HOW
    assert set(_data("room.permissions_changed")["properties"]["change"]["enum"]) == c.PERMISSION_CHANGES
    settings_schema = _data("room.settings_changed")["properties"]["changes"]["properties"]
    assert set(settings_schema["privacy"]["properties"]["new"]["enum"]) == {*c.ROOM_PRIVACY, None}
    json_type = {str: "string", int: "integer", bool: "boolean"}
    assert set(settings_schema) == set(c.ROOM_SETTINGS)
    for name, kinds in c.ROOM_SETTINGS.items():
        old = settings_schema[name]["properties"]["old"]
        types = old.get("type") or [s["type"] for s in old["anyOf"]]
        assert set(types) == {*(json_type[k] for k in kinds), "null"}, name
    chat = _data("chat.message")["properties"]
    assert {name for name, s in chat.items() if s is False} == c.PRIVATE_MARKERS


def test_dead_letter_schema_is_the_dead_letter_record() -> None:
    dl = SCHEMA["dead-letter"]
    assert {s["const"] for s in dl["$defs"]["reason"]["oneOf"]} == set(Reason)
    assert {dl["if"]["properties"]["reason"]["const"]} == RAW_WITHHELD
    assert tuple(dl["required"]) == DEAD_LETTER_COLUMNS


INTEGER_FIELDS = [("moderation.ban", "duration_seconds"), ("moderation.mute", "duration_seconds")]
INTEGER_FIELDS += [("gift.sent", "credits")]


@pytest.mark.parametrize(("etype", "field"), INTEGER_FIELDS)
def test_integer_ranges_end_where_the_normalizer_ends_them(etype: str, field: str) -> None:
    schema = _data(etype)["properties"][field]
    bounds = schema["anyOf"][0] if "anyOf" in schema else schema
    low, high = bounds["minimum"], bounds["maximum"]
    example = json.loads(min((EXAMPLES / etype).glob("valid-*.json")).read_text())
    for value, inside in [(low - 1, False), (low, True), (high, True), (high + 1, False)]:
        doc = {**example, "data": {**example["data"], field: value}}
        assert VALIDATORS[etype].is_valid(doc) is inside, value
        assert (reason_of(doc) is None) is inside, value


def test_the_validator_checks_formats() -> None:
    """Without a format checker, `format` is only a comment: this suite would pass 2026-02-30."""
    assert TIMESTAMP.is_valid("2026-02-28T10:00:00Z")
    assert not TIMESTAMP.is_valid("2026-02-30T10:00:00Z")
    assert not TIMESTAMP.is_valid("2026-11-24T10:00:00Z\n")  # `$` in a Python pattern allows a final newline


# --- generated events ---------------------------------------------------------------------------------------
# Drawn from the schema files themselves by a small generator for the keywords they use (hypothesis-jsonschema
# 0.23 no longer runs on current Hypothesis). Everything it draws is checked with the real validator first.
def _inline(node: Any, resolver: Any) -> Any:
    """The schema with every $ref replaced by its target, and no annotations."""
    if isinstance(node, list):
        return [_inline(n, resolver) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"$schema", "$id", "$defs", "$ref", "title", "description", "examples"}:
            continue
        if key in {"const", "enum"}:
            out[key] = value
        elif key == "properties":
            out[key] = {name: _inline(s, resolver) for name, s in value.items()}
        else:
            out[key] = _inline(value, resolver)
    if "$ref" not in node:
        return out
    target = resolver.lookup(node["$ref"])
    inlined = _inline(target.contents, target.resolver)
    return _merge(inlined, out) if out else inlined


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Both at once, for drawing: b's properties narrow a's (a type's `actor` narrows the envelope's)."""
    merged = {**a, **b}
    if "properties" in a and "properties" in b:
        merged["properties"] = {**a["properties"], **b["properties"]}
    if "required" in a and "required" in b:
        merged["required"] = sorted({*a["required"], *b["required"]})
    return merged


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def _draw(schema: Any) -> st.SearchStrategy[Any]:
    if schema is True:
        return JSON_VALUES
    if "anyOf" in schema:
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return st.one_of([_draw(_merge(rest, option)) for option in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return st.one_of([_DRAW_TYPE[t](schema) for t in types])


def _draw_string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    pattern = schema.get("pattern")
    if pattern is None:
        strategy = st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength"))
    else:
        strategy = st.from_regex(pattern, fullmatch=pattern.endswith("$"))
    lengths = range(schema.get("minLength", 0), schema.get("maxLength", 10**6) + 1)
    forbidden = schema.get("not", {}).get("pattern")
    return strategy.filter(
        lambda s: (
            len(s) in lengths
            and not (forbidden and re.search(forbidden, s))
            and FORMATS.conforms(s, schema.get("format", ""))
        )
    )


def _draw_object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = {k: v for k, v in schema.get("properties", {}).items() if v is not False}
    required = set(schema.get("required", ()))
    declared = set(schema.get("properties", {}))
    return st.fixed_dictionaries(
        {k: _draw(v) for k, v in properties.items() if k in required},
        optional={
            **{k: _draw(v) for k, v in properties.items() if k not in required},
            "_undeclared": st.dictionaries(
                st.text().filter(lambda k: k not in declared), JSON_VALUES, max_size=3
            ),
        },
    ).map(lambda d: {**{k: v for k, v in d.items() if k != "_undeclared"}, **d.get("_undeclared", {})})


_DRAW_TYPE = {
    "string": _draw_string,
    "object": _draw_object,
    "integer": lambda s: st.integers(s.get("minimum"), s.get("maximum")),
    "boolean": lambda s: st.booleans(),
    "null": lambda s: st.none(),
}
EVENTS = {t: _draw(_inline(SCHEMA[t], REGISTRY.resolver(SCHEMA[t]["$id"]))) for t in TYPES}
#: What a stored payload may hold (besides users, whose keys are contract.USER_FIELDS / AVATAR_FIELDS).
PAYLOAD_KEYS = {"actor", "target", "recipient", "reply_to", "text_truncated", "how", "duration_seconds"}
PAYLOAD_KEYS |= {"changes", "change", "item", "credits"}
ITEM_KEYS = {"item_id", "name"}


def _before_now(doc: dict[str, Any]) -> dict[str, Any]:
    """Move occurred_at into the past (the schema cannot state the clock rule), keeping Feb 29 valid."""
    ts = doc["occurred_at"]
    year = 2020 if calendar.isleap(int(ts[:4])) else 2021
    return {**doc, "occurred_at": f"{year}{ts[4:]}"}


def _assert_only_declared_fields_stored(payload: dict[str, Any]) -> None:
    assert set(payload) <= PAYLOAD_KEYS
    for key in ("actor", "target", "recipient"):
        if key in payload:
            assert set(payload[key]) <= c.USER_FIELDS
            assert set(payload[key].get("avatar", {})) <= c.AVATAR_FIELDS
    if "item" in payload:
        assert set(payload["item"]) <= ITEM_KEYS
    for change in payload.get("changes", {}).values():
        assert set(change) == {"old", "new"}
    assert set(payload.get("changes", {})) <= set(c.ROOM_SETTINGS)


GENERATED = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("etype", TYPES)
@GENERATED
@given(data=st.data())
def test_what_the_schema_accepts_is_stored_without_undeclared_fields(etype: str, data: Any) -> None:
    doc = _before_now(data.draw(EVENTS[etype]))
    assert VALIDATORS[etype].is_valid(doc), list(VALIDATORS[etype].iter_errors(doc))
    raw = json.dumps(doc).encode()
    assume(len(raw) <= Normalizer().max_event_bytes)

    event = normalize(raw)

    assert event[EVENT_TYPE] == etype
    assert event[OCCURRED_AT] == datetime.fromisoformat(doc["occurred_at"])
    assert event[ACTOR_ID] == (doc.get("actor") or {}).get("user_id")
    _assert_only_declared_fields_stored(orjson.loads(event[PAYLOAD]))


REPLACEMENTS = [None, True, 0, -1, 2.5, "", "x", "x" * 65, [], {}, {"user_id": "u-1"}]


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(node, dict):
        return []
    out = []
    for key, value in node.items():
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _mutated(doc: dict[str, Any], path: tuple[str, ...], replacement: Any, remove: bool) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if remove:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return doc


@pytest.mark.parametrize("etype", TYPES)
@GENERATED
@given(data=st.data())
def test_after_one_field_is_removed_or_replaced_schema_and_normalizer_agree(etype: str, data: Any) -> None:
    doc = _before_now(data.draw(EVENTS[etype]))
    path = data.draw(st.sampled_from(_paths(doc)))
    remove = data.draw(st.booleans())
    mutated = _mutated(doc, path, data.draw(st.sampled_from(REPLACEMENTS)), remove)
    errors = list(VALIDATORS[etype].iter_errors(mutated))

    reason = reason_of(mutated)

    if not errors:
        assert reason is None, f"schema accepts, normalizer refuses with {reason}"
        return
    assert reason is not None, f"schema refuses ({errors[0].message}), normalizer accepts"
    missing_new = remove and path[-1] == "new"  # see test_missing_new_value_is_a_missing_field
    if remove and not missing_new and all(e.validator == "required" for e in errors):
        assert reason == Reason.MISSING_FIELD


@GENERATED
@given(
    instant=st.datetimes(  # hypothesis wants naive bounds
        min_value=datetime(2000, 1, 2, tzinfo=UTC).replace(tzinfo=None),
        max_value=(NOW + timedelta(minutes=4)).replace(tzinfo=None),
        timezones=st.just(UTC),
    ),
    offset_minutes=st.integers(-(24 * 60 - 1), 24 * 60 - 1),
    fraction_digits=st.integers(0, 9),
)
def test_every_offset_and_precision_the_schema_allows_gives_the_same_instant(
    instant: datetime, offset_minutes: int, fraction_digits: int
) -> None:
    local = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    fraction = f"{local.microsecond:06d}000"[:fraction_digits]
    offset = local.strftime("%z")
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "")
    text += "Z" if offset_minutes == 0 else f"{offset[:3]}:{offset[3:]}"
    assert TIMESTAMP.is_valid(text), text

    event = normalize(_chat(occurred_at=text))

    assert event[OCCURRED_AT] == instant.replace(microsecond=int(fraction[:6].ljust(6, "0")))


# --- former disagreements: what the schema says, and the Normalizer doing the same -----------------------
NOT_RFC3339 = [
    "2026-11-24T11:00Z",  # no seconds
    "2026-11-24T11Z",  # hour only
    "2026-11-24 11:00:00Z",  # space instead of T
    "20261124T110000Z",  # ISO 8601 basic format
    "2026-W48-2T11:00:00Z",  # ISO week date
    "2026-11-24T11:00:00+0100",  # offset without colon
    "2026-11-24T11:00:00+01",  # offset without minutes
    "2026-11-24T11:00:00,5Z",  # comma fraction
    "2026-11-24T11:00:00.Z",  # empty fraction
    "2026-11-24T11:00:00+00:60",  # offset minute 60
    "2026-11-24T11:00:00+00:00:30",  # offset with seconds
]
OCCUPANCY_OUT_OF_RANGE = [0, -5, 2**31]


def _settings(max_occupancy: Any) -> dict[str, Any]:
    return _chat(type="room.settings_changed", data={"changes": {"max_occupancy": {"new": max_occupancy}}})


def _kick(duration: Any) -> dict[str, Any]:
    data = {"target": {"user_id": "u-2"}, "reason": "spam", "duration_seconds": duration}
    return _chat(type="moderation.kick", data=data)


def _gift(credits: Any, schema_version: Any = 1) -> dict[str, Any]:
    data = {"recipient": {"user_id": "u-2"}, "item": {"item_id": "rose"}, "credits": credits}
    return _chat(type="gift.sent", schema_version=schema_version, data=data)


NO_NEW_VALUE = _chat(type="room.settings_changed", data={"changes": {"name": {"old": "Lobby"}}})
INTEGERS_WITH_FRACTION = [_gift(25.0), _gift(25, schema_version=1.0)]


def test_what_the_schema_says_where_the_normalizer_disagrees() -> None:
    assert not any(VALIDATORS["chat.message"].is_valid(_chat(occurred_at=t)) for t in NOT_RFC3339)
    assert not any(VALIDATORS["room.settings_changed"].is_valid(_settings(v)) for v in OCCUPANCY_OUT_OF_RANGE)
    assert VALIDATORS["moderation.kick"].is_valid(_kick("soon"))  # undeclared there: to be dropped
    assert all(VALIDATORS["gift.sent"].is_valid(doc) for doc in INTEGERS_WITH_FRACTION)
    errors = VALIDATORS["room.settings_changed"].iter_errors(NO_NEW_VALUE)
    assert [e.validator for e in errors] == ["required"]


@pytest.mark.parametrize("text", NOT_RFC3339)
def test_timestamps_that_are_not_rfc3339_are_refused(text: str) -> None:
    assert reason_of(_chat(occurred_at=text)) == Reason.INVALID_TIMESTAMP


@pytest.mark.parametrize("value", OCCUPANCY_OUT_OF_RANGE)
def test_max_occupancy_out_of_range_is_refused(value: int) -> None:
    assert reason_of(_settings(value)) == Reason.INVALID_VALUE


@pytest.mark.parametrize("duration", [3600, "soon"])
def test_duration_on_an_untimed_action_is_dropped_like_any_undeclared_field(duration: Any) -> None:
    normalizer = Normalizer()
    event = normalize(_kick(duration), normalizer)
    assert "duration_seconds" not in orjson.loads(event[PAYLOAD])
    assert normalizer.dropped_fields["moderation"] == 1


@pytest.mark.parametrize("doc", INTEGERS_WITH_FRACTION, ids=["credits", "schema_version"])
def test_an_integer_written_with_a_fraction_is_an_integer(doc: dict[str, Any]) -> None:
    assert reason_of(doc) is None


def test_missing_new_value_is_a_missing_field() -> None:
    assert reason_of(NO_NEW_VALUE) == Reason.MISSING_FIELD


def test_an_event_of_another_version_is_unsupported_whatever_its_type() -> None:
    doc = _chat(type="chat.reaction", schema_version=2, data={"emoji": "+1"})
    assert reason_of(doc) == Reason.UNSUPPORTED_VERSION
