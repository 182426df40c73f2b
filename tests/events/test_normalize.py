"""What the Normalizer promises the people in a room and the operators of the pipeline.

Nothing it returns can make PostgreSQL refuse a row (NUL, lone surrogates, NaN); personal data in chat text is
masked; fields the contract does not declare are dropped and counted, never stored; free text is cut, not
refused; private messages are refused without keeping their content; anything else it refuses carries a
stable reason code, never another exception (the ingest worker catches only `Invalid`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.events.normalize import (
    ACTOR_ID,
    BODY,
    CARD_MASK,
    EMAIL_MASK,
    IP_MASK,
    OCCURRED_AT,
    PAYLOAD,
    TARGET_ID,
    Normalizer,
)
from pipeline.events.reasons import Invalid, Reason

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def event(etype: str = "chat.message", data: Any = None, **envelope: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "0196F0A2-7C1E-7B3A-9C41-2F5D8E6A1B20",
        "type": etype,
        "schema_version": 1,
        "room_id": "lobby-7",
        "occurred_at": "2026-11-24T11:58:03.250Z",
        "actor": {"user_id": "u-48213", "display_name": "Alice"},
        "data": {"text": "hello"} if data is None else data,
    }
    doc.update(envelope)
    return doc


def chat(text: str, **envelope: Any) -> dict[str, Any]:
    return event(data={"text": text}, **envelope)


def stored(doc: dict[str, Any] | bytes, normalizer: Normalizer | None = None) -> tuple[Any, ...]:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return (normalizer or Normalizer()).normalize(raw, NOW)


def refused(doc: dict[str, Any] | bytes | None) -> Invalid:
    raw = doc if doc is None or isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(Invalid) as caught:
        Normalizer().normalize(raw, NOW)
    return caught.value


def payload(ev: tuple[Any, ...]) -> dict[str, Any]:
    return orjson.loads(ev[PAYLOAD])


# --- what PostgreSQL would refuse never reaches it ----------------------------------------------------------
def test_nul_in_chat_text_and_names_is_replaced() -> None:
    doc = chat("before\x00after", actor={"user_id": "u-1", "display_name": "Al\x00ice"})

    ev = stored(doc)

    assert ev[BODY] == "before\ufffdafter"
    assert payload(ev)["actor"]["display_name"] == "Al\ufffdice"


def test_lone_surrogate_is_replaced() -> None:
    raw = json.dumps(chat("half an emoji: \ud83d!", actor={"user_id": "u-1", "display_name": "\udc00x"}))
    assert "\\ud83d" in raw  # the escape a room server in JavaScript or Java can send

    ev = stored(raw.encode())

    assert ev[BODY] == "half an emoji: \ufffd!"
    assert payload(ev)["actor"]["display_name"] == "\ufffdx"
    ev[BODY].encode("utf-8")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_credits_are_refused(token: str) -> None:
    doc = event("gift.sent", {"recipient": {"user_id": "u-2"}, "item": {"item_id": "rose"}, "credits": 25})
    raw = json.dumps(doc).replace('"credits": 25', f'"credits": {token}').encode()

    assert refused(raw).reason == Reason.INVALID_VALUE


def test_nan_in_an_undeclared_field_is_dropped_not_stored() -> None:
    raw = json.dumps(chat("hi", score=1)).replace('"score": 1', '"score": NaN').encode()

    ev = stored(raw)

    assert b"NaN" not in ev[PAYLOAD]


# --- personal data in chat text -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "body", "kind"),
    [
        ("write to alice.smith+rooms@mail.example.com please", f"write to {EMAIL_MASK} please", "email"),
        ("card 4111 1111 1111 1111 thanks", f"card {CARD_MASK} thanks", "card"),
        ("5500-0000-0000-0004", CARD_MASK, "card"),
        ("my ip is 203.0.113.9 ok", f"my ip is {IP_MASK} ok", "ip"),
    ],
)
def test_personal_data_in_chat_text_is_masked_and_counted(text: str, body: str, kind: str) -> None:
    normalizer = Normalizer()

    ev = stored(chat(text), normalizer)

    assert ev[BODY] == body
    assert +normalizer.masked == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567890123 shipped",
        "room 42 at 8.30",
        "version 1.2.3",
        "999.1.1.1 is not an address",
        "me @ home",
    ],
)
def test_numbers_that_are_not_personal_data_are_kept(text: str) -> None:
    normalizer = Normalizer()

    assert stored(chat(text), normalizer)[BODY] == text
    assert +normalizer.masked == {}


@pytest.mark.parametrize(
    ("text", "leaked", "body"),
    [
        ("my IP is 192.168.1.20.", "192.168.1.20", f"my IP is {IP_MASK}."),
        ("4111 1111 1111 1111 123", "4111 1111 1111 1111", f"{CARD_MASK} 123"),
        ("connect to 2001:db8::8a2e:370:7334", "2001:db8", f"connect to {IP_MASK}"),
    ],
    ids=["ip-ending-a-sentence", "card-then-security-code", "ipv6"],
)
def test_personal_data_is_masked_wherever_it_stands(text: str, leaked: str, body: str) -> None:
    ev = stored(chat(text))

    assert leaked not in ev[BODY]
    assert ev[BODY] == body


def test_code_in_chat_is_not_taken_for_an_ip_address() -> None:
    text = "use std::vector<int> v2;"

    assert stored(chat(text))[BODY] == text


def test_personal_data_in_a_moderation_reason_is_masked_too() -> None:
    """A moderator's reason is free text like chat: an address quoted in it is masked the same way."""
    doc = event("moderation.warn", {"target": {"user_id": "u-2"}, "reason": "posted bob@mail.example"})

    assert stored(doc)[BODY] == "posted [email removed]"


# --- undeclared fields --------------------------------------------------------------------------------------
SECRETS = ["bob@mail.example", "198.51.100.4", "Robert Example", "4111111111111111", "Visa"]


def test_undeclared_fields_are_dropped_and_counted_at_every_level() -> None:
    doc = event(
        "gift.sent",
        {
            "recipient": {"user_id": "u-2", "email": "bob@mail.example"},
            "item": {"item_id": "rose", "sku": "Visa"},
            "credits": 25,
            "payment": {"card": "4111111111111111", "method": "Visa"},
        },
        actor={
            "user_id": "u-1",
            "real_name": "Robert Example",
            "avatar": {"avatar_id": "a", "ip": "198.51.100.4"},
        },
        email="bob@mail.example",
        ip="198.51.100.4",
    )
    normalizer = Normalizer()

    ev = stored(doc, normalizer)

    assert not [s for s in SECRETS if s.encode() in ev[PAYLOAD]]
    assert payload(ev) == {
        "actor": {"user_id": "u-1", "avatar": {"avatar_id": "a"}},
        "recipient": {"user_id": "u-2"},
        "item": {"item_id": "rose"},
        "credits": 25,
    }
    # top level: email, ip; actor: real_name; avatar: ip; recipient: email; item: sku; data: payment
    assert normalizer.dropped_fields == {"gift.sent": 7}


def test_unknown_room_settings_are_dropped_and_counted() -> None:
    changes = {"privacy": {"old": "public", "new": "private"}, "owner_email": {"new": "bob@mail.example"}}
    normalizer = Normalizer()

    ev = stored(event("room.settings_changed", {"changes": changes}, actor=None), normalizer)

    assert payload(ev) == {"changes": {"privacy": {"old": "public", "new": "private"}}}
    assert ev[ACTOR_ID] is None
    assert normalizer.dropped_fields == {"room.settings_changed": 1}


# --- free text is cut, not refused --------------------------------------------------------------------------
def test_long_chat_text_is_truncated_and_flagged() -> None:
    ev = stored(chat("x" * 2_500))

    assert ev[BODY] == "x" * 2_000
    assert payload(ev)["text_truncated"] is True


def test_chat_text_at_the_limit_is_not_flagged() -> None:
    ev = stored(chat("x" * 2_000))

    assert ev[BODY] == "x" * 2_000
    assert "text_truncated" not in payload(ev)


def test_long_names_and_reasons_are_cut() -> None:
    doc = event(
        "moderation.kick", {"target": {"user_id": "u-2", "display_name": "n" * 100}, "reason": "r" * 900}
    )

    ev = stored(doc)

    assert ev[BODY] == "r" * 500
    assert ev[TARGET_ID] == "u-2"
    assert payload(ev)["target"]["display_name"] == "n" * 64


def test_an_identifier_is_refused_not_cut() -> None:
    assert refused(event(room_id="r" * 65)).reason == Reason.INVALID_VALUE


# --- private messages ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "doc",
    [
        chat("meet me at 8", type="chat.whisper"),
        chat("meet me at 8", type="chat.direct_message", schema_version=2),
        event(data={"text": "meet me at 8", "to": "u-2"}),
        event(data={"text": "meet me at 8", "recipient_id": None}),
    ],
    ids=["whisper", "direct-message-any-version", "chat-message-to-one-user", "recipient-key-even-null"],
)
def test_private_messages_are_refused_without_their_content(doc: dict[str, Any]) -> None:
    invalid = refused(doc)

    assert invalid.reason == Reason.PRIVATE_MESSAGE
    assert "meet me" not in invalid.detail


# --- envelope -----------------------------------------------------------------------------------------------
def test_oversize_record_is_refused() -> None:
    limit = Normalizer().max_event_bytes
    envelope = json.dumps(chat("TEXT"))
    at_limit = envelope.replace("TEXT", "x" * (limit - len(envelope) + len("TEXT")))
    assert len(at_limit) == limit

    assert stored(at_limit.encode())[BODY] == "x" * 2_000
    assert refused((at_limit + " ").encode()).reason == Reason.OVERSIZE


def test_timestamp_more_than_five_minutes_ahead_is_refused() -> None:
    ahead = NOW + timedelta(minutes=5)

    assert stored(chat("hi", occurred_at=ahead.isoformat()))[OCCURRED_AT] == ahead
    invalid = refused(chat("hi", occurred_at=(ahead + timedelta(seconds=1)).isoformat()))
    assert invalid.reason == Reason.TIMESTAMP_IN_FUTURE


@pytest.mark.parametrize(
    "text", ["2026-11-24T11:58:03", "2026-11-24", "1999-12-31T23:59:59Z", "2026-02-30T10:00:00Z", "yesterday"]
)
def test_timestamp_without_offset_or_not_a_date_is_invalid(text: str) -> None:
    assert refused(chat("hi", occurred_at=text)).reason == Reason.INVALID_TIMESTAMP


def test_timestamp_with_offset_is_stored_in_utc() -> None:
    ev = stored(chat("hi", occurred_at="2026-11-24T12:58:03.250+01:00"))

    assert ev[OCCURRED_AT] == datetime(2026, 11, 24, 11, 58, 3, 250_000, tzinfo=UTC)
    assert ev[OCCURRED_AT].tzinfo is UTC


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, Reason.NOT_AN_OBJECT),
        (b'[{"type": "chat.message"}]', Reason.NOT_AN_OBJECT),
        (b'"chat.message"', Reason.NOT_AN_OBJECT),
        (b'{"type": "chat.message",}', Reason.INVALID_JSON),
        (b'{"type": "chat.message", "text": "\xff"}', Reason.INVALID_JSON),
    ],
    ids=["tombstone", "array", "string", "trailing-comma", "not-utf8"],
)
def test_what_is_not_a_json_object_is_refused(raw: bytes | None, reason: Reason) -> None:
    assert refused(raw).reason == reason


def test_a_schema_registry_record_is_read_as_its_json() -> None:
    # Confluent's wire format (a JVM room server's schema-registry JSON serializer): 0, schema id, JSON
    raw = json.dumps(chat("hello")).encode()
    framed = b"\x00" + (42).to_bytes(4, "big") + raw
    assert stored(framed) == stored(raw)
    # Avro or Protobuf after the header, or a header alone: refused, saying what it is
    for payload in (b"\x02\x0ahello", b"", b"[1, 2]"):
        caught = refused(b"\x00" + (42).to_bytes(4, "big") + payload)
        assert caught.reason == Reason.INVALID_JSON
        assert "schema-registry record (schema id 42)" in caught.detail
    assert refused(b"\x00").reason == Reason.INVALID_JSON


# --- odd inputs: a reason, never a crash (the worker only catches Invalid) ----------------------------------
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9999-12-31T23:59:59-01:00", Reason.TIMESTAMP_IN_FUTURE),
        ("0001-01-01T00:00:00+01:00", Reason.INVALID_TIMESTAMP),
    ],
)
def test_timestamp_at_the_edge_of_the_calendar_is_refused(text: str, reason: Reason) -> None:
    assert refused(chat("hi", occurred_at=text)).reason == reason


@pytest.mark.parametrize(
    "doc",
    [
        event("user.left", {"how": ["quit"]}),
        event("room.permissions_changed", {"change": {"to": "owner"}, "target": {"user_id": "u-2"}}),
    ],
    ids=["user.left-how", "room.permissions_changed-change"],
)
def test_an_array_or_object_where_a_code_is_expected_is_refused(doc: dict[str, Any]) -> None:
    assert refused(doc).reason == Reason.INVALID_VALUE


# Each of these once raised something other than Invalid, which stopped the worker on every restart.
def test_a_number_of_more_digits_than_python_converts_is_invalid_json() -> None:
    raw = json.dumps(chat("hi")).replace('"data"', '"n": ' + "7" * 5000 + ', "data"').encode()

    caught = refused(raw)

    assert caught.reason == Reason.INVALID_JSON
    assert "4300 digits" in caught.detail


def test_a_lone_surrogate_beside_deep_nesting_is_replaced_and_stored() -> None:
    nested = "[" * 600 + "]" * 600
    raw = json.dumps(chat("deep \ud800")).replace('"data"', f'"extra": {nested}, "data"').encode()

    assert stored(raw)[BODY] == "deep \ufffd"


def test_a_deeply_nested_schema_version_is_an_unsupported_version() -> None:
    raw = json.dumps(chat("hi")).replace(
        '"schema_version": 1', '"schema_version": ' + "[" * 1010 + "]" * 1010
    )

    caught = refused(raw.encode())

    assert (caught.reason, caught.detail) == (
        Reason.UNSUPPORTED_VERSION,
        "schema_version: an array (supported: the number 1)",
    )


@pytest.mark.parametrize(
    ("version", "shown"),
    [('"1"', "the string '1'"), ("2", "2"), ("1.5", "1.5"), ("true", "true"), ("{}", "an object")],
)
def test_an_unsupported_version_is_shown_as_sent(version: str, shown: str) -> None:
    """Found from outside: the string "1" was shown unquoted, "schema_version: 1 (supported: 1)"."""
    raw = json.dumps(chat("hi")).replace('"schema_version": 1', f'"schema_version": {version}')

    caught = refused(raw.encode())

    assert (caught.reason, caught.detail) == (
        Reason.UNSUPPORTED_VERSION,
        f"schema_version: {shown} (supported: the number 1)",
    )


@pytest.mark.parametrize(
    "doc",
    [
        chat("hi", room_id="room-\ud800"),
        chat("hi", actor={"user_id": "u-\udbff"}),
        chat("hi", actor={"user_id": "u-1", "avatar": {"avatar_id": "a-\ud800"}}),
        event(
            "gift.sent", {"recipient": {"user_id": "u-2"}, "item": {"item_id": "rose\udc00"}, "credits": 5}
        ),
        event("moderation.kick", {"target": {"user_id": "u-\ud800"}}),
    ],
    ids=["room_id", "actor", "avatar_id", "item_id", "target"],
)
def test_a_lone_surrogate_in_an_identifier_is_refused_not_replaced(doc: dict[str, Any]) -> None:
    # Replaced, "room-\ud800" and "room-\udbff" would both become "room-\ufffd": two rooms, one owner's logs.
    caught = refused(doc)

    assert caught.reason == Reason.INVALID_VALUE
    assert "lone surrogate" in caught.detail
    # the same document with the surrogate in the chat text instead is stored, cleaned
    assert stored(chat("hi \ud800"))[BODY] == "hi \ufffd"


def test_a_schema_registry_record_with_a_byte_order_mark_is_named_as_such() -> None:
    raw = b"\x00" + (42).to_bytes(4, "big") + b"\xef\xbb\xbf" + json.dumps(chat("hi")).encode()

    caught = refused(raw)

    assert caught.reason == Reason.INVALID_JSON
    assert "BOM" in caught.detail


_SENTINEL = "@@value@@"
_PLACES = ("type", "schema_version", "event_id", "room_id", "occurred_at", "actor", "data", "extra")
_PLACES_IN = {"actor": ("user_id", "display_name", "avatar"), "data": ("text", "reply_to", "target")}


def _scalar_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            ["null", "true", "false", "NaN", "-Infinity", "1e400", "-0.0", '"\\ud800"', '"a\\udfff\\u0000"']
        ),
        st.integers().map(str),
        st.integers(1, 6000).map(lambda n: "9" * n),  # beyond int64, and beyond Python's 4,300 digits
        st.text(max_size=20).map(json.dumps),
        st.floats().map(lambda f: json.dumps(f)),
    )


def _json_texts() -> st.SearchStrategy[str]:
    tree = st.recursive(
        _scalar_texts(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
            st.lists(
                st.tuples(st.sampled_from(['"a"', '"\\udc00"', '"text"', '"user_id"']), inner), max_size=3
            ).map(lambda kvs: "{" + ",".join(f"{k}:{v}" for k, v in kvs) + "}"),
        ),
        max_leaves=8,
    )
    deep = st.tuples(st.integers(1, 1100), st.sampled_from("[{"), tree).map(
        lambda t: ("[" * t[0] + t[2] + "]" * t[0]) if t[1] == "[" else ('{"a":' * t[0] + t[2] + "}" * t[0])
    )
    return st.one_of(tree, deep)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    place=st.sampled_from(_PLACES),
    inner=st.sampled_from(("", "user_id", "display_name", "avatar", "text", "reply_to", "target")),
    value=_json_texts(),
)
def test_any_json_anywhere_is_stored_clean_or_refused_with_a_reason(
    place: str, inner: str, value: str
) -> None:
    """Whatever a producer puts in any field: a row PostgreSQL accepts, or `Invalid` (never another error)."""
    doc = chat("hello")
    if inner and place in _PLACES_IN and inner in _PLACES_IN[place]:
        doc[place] = {**doc[place], inner: _SENTINEL}
    else:
        doc[place] = _SENTINEL
    raw = json.dumps(doc).replace(json.dumps(_SENTINEL), value).encode()
    try:
        ev = Normalizer().normalize(raw, NOW)
    except Invalid as e:
        assert e.reason in set(Reason) and e.detail
        return
    for column in ev[:-1]:
        if isinstance(column, str):
            assert "\x00" not in column
            column.encode("utf-8")  # no lone surrogate: PostgreSQL text would refuse it
