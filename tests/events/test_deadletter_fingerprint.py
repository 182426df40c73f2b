"""Every dead letter keeps one fingerprint of what was received: the SHA-256 and size the contract's `keep`
computes for a refused record are those storage computes for the dead letters the writer makes itself, and
those a replay compares with the record it reads back (pipeline.events.deadletter.fingerprint)."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from pipeline.events.deadletter import PARSE_LIMIT_BYTES, fingerprint, keep
from pipeline.events.reasons import RAW_WITHHELD, Reason

RECORDS = [
    orjson.dumps({"type": "chat.message", "room_id": "r-1", "data": {"text": "hello"}}),
    b'{"type": "chat.message", broken',
    b"\xff\xfe not utf-8",
    b"",
    b"x" * (PARSE_LIMIT_BYTES + 1),
]


@pytest.mark.parametrize("raw", RECORDS, ids=["event", "invalid-json", "not-utf8", "empty", "huge"])
def test_the_writer_and_replay_fingerprint_a_record_as_the_contract_does(raw: bytes) -> None:
    assert Reason.INVALID_VALUE not in RAW_WITHHELD  # (a private message keeps only its size)
    kept = keep(raw, Reason.INVALID_VALUE)
    assert fingerprint(raw) == (kept.raw_sha256, kept.raw_bytes) == (hashlib.sha256(raw).digest(), len(raw))


def test_a_record_without_a_value_has_no_fingerprint() -> None:
    kept = keep(None, Reason.NOT_AN_OBJECT)
    assert fingerprint(None) == (kept.raw_sha256, kept.raw_bytes) == (None, None)
