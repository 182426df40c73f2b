"""The event contract is defined once, in `pipeline/events/contract.py`, and everything else follows it.

- The committed files derived from the spec (the JSON Schemas in `schemas/v1`, the console's type labels)
  are exactly what `python -m pipeline.events.generate` makes of it: any drift fails here.
- The normalizer's hand-written rules (its fast path) and the spec read by the generic rule give the same
  verdict and store the same thing, on every example and on events drawn from the schemas.
- The dead-letter view keeps what the spec declares for the type, cut to the spec's limits.
- Adding a type is one spec entry: a made-up type added to a copy of the contract reaches every derived
  place (allowlist and normalizer, dead-letter view, JSON Schema enum/oneOf, console labels), and the real
  contract does not have it.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from test_contract import EVENTS, FORMATS, GENERATED, REPLACEMENTS, _before_now, _mutated, _paths

from pipeline.events import contract as c
from pipeline.events import generate
from pipeline.events import normalize as n
from pipeline.events.deadletter import VIEW_RULES, keep, view_rules
from pipeline.events.normalize import PAYLOAD, ROOM_CHANGE, TARGET_ID, Normalizer
from pipeline.events.reasons import Invalid, Reason
from pipeline.events.schemas import schema_files
from pipeline.events.spec import Choice, Contract, EventSpec, Field, Text, Uuid

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "schemas" / "v1" / "examples"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


# --- one definition, committed files derived from it --------------------------------------------------------
def test_the_committed_schemas_and_console_labels_are_what_the_spec_generates() -> None:
    assert generate.stale(ROOT) == [], "run: python -m pipeline.events.generate"


def test_the_check_command_finds_a_stale_file_and_the_write_command_fixes_it(tmp_path: Path) -> None:
    shutil.copytree(ROOT / generate.SCHEMA_DIR, tmp_path / generate.SCHEMA_DIR, ignore=_only_schema_files)
    (tmp_path / generate.CONSOLE_JS).parent.mkdir(parents=True)
    shutil.copy(ROOT / generate.CONSOLE_JS, tmp_path / generate.CONSOLE_JS)
    gift = tmp_path / generate.SCHEMA_DIR / "gift.sent.schema.json"
    gift.write_text(gift.read_text().replace("1000000000", "1000"))
    (tmp_path / generate.SCHEMA_DIR / "chat.edited.schema.json").write_text("{}")
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1

    generate.main(["--root", str(tmp_path)])

    assert "1000000000" in gift.read_text()
    assert generate.stale(tmp_path) == [
        f"{generate.SCHEMA_DIR}/chat.edited.schema.json: no type in the spec has this schema "
        "(remove it, or add the type)"
    ]


def _only_schema_files(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "examples"]


def test_event_type_is_the_spec_in_its_order() -> None:
    assert list(c.EventType) == list(c.CONTRACT.types)


def test_every_type_has_a_label_and_a_place_in_the_console() -> None:
    assert len({spec.label for spec in c.CONTRACT}) == len(c.CONTRACT.events)
    assert len({spec.console_rank for spec in c.CONTRACT}) == len(c.CONTRACT.events)


def test_the_hand_written_moderation_rules_fit_every_moderation_type() -> None:
    """The normalizer has two moderation rules (with and without a duration) for six types."""
    for t in c.MODERATION_TYPES:
        expected = n._TIMED_MODERATION_FIELDS if t in c.TIMED_MODERATION else n._MODERATION_FIELDS
        assert c.CONTRACT[t].field_names == expected, t
        assert [f.column for f in c.CONTRACT[t].fields][:2] == ["target_id", "body"], t


# --- the fast path agrees with the spec ---------------------------------------------------------------------
#: Types the generic rule can read (room settings only have their hand-written rule).
SPEC_READABLE = [t for t in c.EventType if t != c.EventType.ROOM_SETTINGS_CHANGED]
FAST = Normalizer()
BY_SPEC = Normalizer(fast_rules=False)


def _outcome(normalizer: Normalizer, raw: bytes) -> Any:
    """The reason code, or what is stored (the payload parsed: its key order is not content)."""
    try:
        event = normalizer.normalize(raw, NOW)
    except Invalid as e:
        return e.reason
    # ROOM_CHANGE: what a permissions change does to the room is the hand-written rule's alone
    return (*event[:PAYLOAD], orjson.loads(event[PAYLOAD]))


def test_the_generic_rule_is_really_used_when_asked_for() -> None:
    for t in SPEC_READABLE:
        assert isinstance(BY_SPEC._type_rules[t], n._SpecRule), t
        assert not isinstance(FAST._type_rules[t], n._SpecRule), t


@pytest.mark.parametrize(
    "path",
    sorted(p for t in SPEC_READABLE for p in (EXAMPLES / t).glob("*.json")),
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_hand_written_rule_and_spec_agree_on_every_example(path: Path) -> None:
    raw = path.read_bytes()
    assert _outcome(FAST, raw) == _outcome(BY_SPEC, raw)


LONG_TEXTS = [
    ("chat.message", {"text": "x" * 1990 + " mail alice@example.com " + "y" * 50}),
    ("chat.message", {"text": "z" * 2000}),
    ("chat.message", {"text": "a\x00b", "reply_to": "0196F0A2-7C1E-7B3A-9C41-2F5D8E6A1B20"}),
    (
        "moderation.warn",
        {"target": {"user_id": "u-2", "display_name": "n" * 90}, "reason": "r" * 498 + " 1.2.3.4"},
    ),
    (
        "gift.sent",
        {"recipient": {"user_id": "u"}, "item": {"item_id": "i", "name": "m" * 200}, "credits": 3.0},
    ),
]


@pytest.mark.parametrize(("etype", "data"), LONG_TEXTS, ids=[t for t, _ in LONG_TEXTS])
def test_hand_written_rule_and_spec_cut_and_mask_alike(etype: str, data: dict[str, Any]) -> None:
    doc = {**json.loads((EXAMPLES / etype / "valid-basic.json").read_text()), "data": data}
    raw = json.dumps(doc).encode()
    assert _outcome(FAST, raw) == _outcome(BY_SPEC, raw)


@pytest.mark.parametrize("etype", SPEC_READABLE)
@GENERATED
@given(data=st.data())
def test_hand_written_rule_and_spec_agree_on_generated_events(etype: str, data: Any) -> None:
    doc = _before_now(data.draw(EVENTS[etype]))
    if data.draw(st.booleans()):
        path = data.draw(st.sampled_from(_paths(doc)))
        doc = _mutated(doc, path, data.draw(st.sampled_from(REPLACEMENTS)), data.draw(st.booleans()))
    raw = json.dumps(doc).encode()
    assert _outcome(FAST, raw) == _outcome(BY_SPEC, raw)


def test_permissions_change_the_room_only_through_the_hand_written_rule() -> None:
    raw = (EXAMPLES / "room.permissions_changed" / "valid-moderator-added.json").read_bytes()
    event = FAST.normalize(raw, NOW)
    assert event[ROOM_CHANGE] == ("permissions", "moderator_added", event[TARGET_ID])


# --- the dead-letter view follows the spec ------------------------------------------------------------------
def _letter(doc: dict[str, Any], rules: Any = VIEW_RULES) -> dict[str, Any]:
    kept = keep(json.dumps(doc).encode(), Reason.INVALID_VALUE, rules=rules)
    assert kept.content is not None
    return dict(orjson.loads(kept.content))


def test_a_dead_letter_keeps_the_fields_the_spec_declares_for_the_type_cut_to_their_limits() -> None:
    kick = json.loads((EXAMPLES / "moderation.kick" / "valid-basic.json").read_text())
    kick["actor"]["display_name"] = "n" * 300
    kick["data"].update(reason="r" * 900 + " bob@mail.example", duration_seconds=60)

    letter = _letter(kick)

    assert letter["actor"]["display_name"] == "n" * c.DISPLAY_NAME_MAX_CHARS
    assert letter["data"]["reason"] == "r" * c.REASON_MAX_CHARS
    assert "duration_seconds" not in letter["data"]  # declared for ban and mute, not for kick
    assert letter["_undeclared_fields"] == ["data.duration_seconds"]
    for t in c.EventType:
        assert set(VIEW_RULES.data[t]) == c.CONTRACT[t].field_names, t


# --- adding a type is one spec entry ------------------------------------------------------------------------
REACTION = EventSpec(
    "chat.reaction",
    "Reaction",
    15,
    "The actor reacted to a message.",
    (
        Field("reply_to", Uuid(), required=True, description="event_id of the message reacted to."),
        Field("emoji", Choice(("+1", "heart", "laugh")), required=True),
        Field("note", Text(40, masked=True), column="body", description="Free text, cut to 40 characters."),
    ),
)
WITH_REACTION: Contract = c.CONTRACT.with_event(REACTION)


def _reaction(**data: Any) -> dict[str, Any]:
    doc = json.loads((EXAMPLES / "chat.message" / "valid-basic.json").read_text())
    return {**doc, "type": "chat.reaction", "data": data}


GOOD = {"reply_to": "0196F0A2-7C1E-7B3A-9C41-2F5D8E6A0001", "emoji": "heart"}


def test_a_new_type_is_not_in_the_real_contract() -> None:
    assert "chat.reaction" not in c.CONTRACT.types
    with pytest.raises(Invalid) as refused:
        Normalizer().normalize(json.dumps(_reaction(**GOOD)).encode(), NOW)
    assert refused.value.reason == Reason.UNKNOWN_TYPE


def test_a_new_type_gets_an_allowlist_and_the_normalizer_checks_it_by_its_spec() -> None:
    assert WITH_REACTION.allowlists()["chat.reaction"] == {"reply_to", "emoji", "note"}
    normalizer = Normalizer(contract=WITH_REACTION)
    doc = _reaction(**GOOD, note="see a@b.example " + "x" * 60, ip="198.51.100.4")

    event = normalizer.normalize(json.dumps(doc).encode(), NOW)

    assert orjson.loads(event[PAYLOAD]) == {
        "actor": doc["actor"],
        "reply_to": GOOD["reply_to"].lower(),
        "emoji": "heart",
    }
    assert event[n.BODY] == ("see [email removed] " + "x" * 60)[:40]
    assert normalizer.dropped_fields == {"chat.reaction": 1}
    for data, reason in [
        ({"reply_to": GOOD["reply_to"]}, Reason.MISSING_FIELD),
        ({**GOOD, "emoji": "shrug"}, Reason.INVALID_VALUE),
        ({**GOOD, "note": 5}, Reason.WRONG_TYPE),
    ]:
        with pytest.raises(Invalid) as refused:
            normalizer.normalize(json.dumps(_reaction(**data)).encode(), NOW)
        assert refused.value.reason == reason, data


def test_a_new_type_gets_a_dead_letter_view() -> None:
    doc = _reaction(**GOOD, note="n" * 100 + " 203.0.113.9", password="hunter2")

    letter = _letter(doc, view_rules(WITH_REACTION))

    assert letter["data"] == {"reply_to": GOOD["reply_to"], "emoji": "heart", "note": "n" * 40}
    assert letter["_undeclared_fields"] == ["data.password"]
    assert _letter(doc)["data"] == {}  # the real contract keeps none of an unknown type's data


def test_a_new_type_gets_its_json_schema_and_a_place_in_the_envelope_enum_and_event_one_of() -> None:
    files = {name: json.loads(text) for name, text in schema_files(WITH_REACTION).items()}

    assert "chat.reaction" in files["envelope.schema.json"]["properties"]["type"]["enum"]
    assert {"$ref": "chat.reaction.schema.json"} in files["event.schema.json"]["oneOf"]
    data = files["chat.reaction.schema.json"]["$defs"]["data"]
    assert data["required"] == ["reply_to", "emoji"]
    assert data["properties"]["emoji"] == {"enum": ["+1", "heart", "laugh"]}
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in files.values()
    )
    event = Draft202012Validator(files["event.schema.json"], registry=registry, format_checker=FORMATS)
    assert event.is_valid(_reaction(**GOOD))
    assert not event.is_valid(_reaction(emoji="heart"))
    assert not event.is_valid(_reaction(**{**GOOD, "emoji": "shrug"}))


def test_a_new_type_gets_a_console_label_in_its_place() -> None:
    generated = generate.console_types(WITH_REACTION)

    rows = [line.strip() for line in generated.splitlines() if line.startswith("  [")]
    assert rows[:2] == ['["chat.message", "Chat"],', '["chat.reaction", "Reaction"],']
    assert '"chat.reaction"' not in (ROOT / generate.CONSOLE_JS).read_text()
