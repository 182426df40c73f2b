"""A record the normalizer fails on (a bug of ours, not a refusal) is set aside, never its partition.

Before: any exception other than `Invalid` left the ingest loop, the worker exited, and on every restart it
read the same record and exited again: the partition stopped for good, and the good events after the record
were never stored. Now the record becomes a `normalizer_failed` dead letter (its fingerprint kept for the
replay once fixed, its content not: whether it may be kept was not judged) and its neighbours go on.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.events.normalize import BODY, Normalized, Normalizer
from pipeline.events.reasons import Reason
from pipeline.ingest import prepare
from pipeline.ingest.prepare import normalize_records
from pipeline.publisher.events import chat_message, user

NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


class BuggyNormalizer(Normalizer):
    """The real normalizer, with a bug that raises on chat text containing "boom"."""

    def normalize(self, raw: bytes | None, now: datetime) -> Normalized:
        if raw is not None and b"boom" in raw:
            raise KeyError(f"a bug quoting the record: {raw[-40:]!r}")  # as built-in errors quote values
        return super().normalize(raw, now)


def _chat(text: str) -> bytes:
    at = NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return orjson.dumps(chat_message("room-1", user("u-1"), text, event_id=str(uuid.uuid4()), occurred_at=at))


async def test_a_normalizer_failure_sets_the_record_aside_and_its_neighbours_go_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare, "_FAILURES_LOGGED", set())
    values = [_chat("before"), _chat("boom 1"), _chat("between"), _chat("boom 2"), _chat("after")]
    records: dict[int, Any] = {3: [Record(100 + i, b"room-1", v) for i, v in enumerate(values)]}

    with caplog.at_level(logging.ERROR, logger="roomlogs.ingest"):
        out = await normalize_records("events", records, BuggyNormalizer(), NOW)

    assert [ev[BODY] for _, _, ev in out.events] == ["before", "between", "after"]
    assert out.next_offsets == {3: 105}  # the batch goes past both, as for any dead letter
    assert [(d.reason, d.src_partition, d.src_offset) for d in out.dead_letters] == [
        (Reason.NORMALIZER_FAILED.value, 3, 101),
        (Reason.NORMALIZER_FAILED.value, 3, 103),
    ]
    for letter, raw in zip(out.dead_letters, (values[1], values[3]), strict=True):
        assert "KeyError at " in letter.detail and "roomlogs bug" in letter.detail
        assert (
            "boom" not in letter.detail and "quoting" not in letter.detail
        )  # the message may quote the record
        assert letter.content is None  # not judged, so not kept
        assert (letter.raw_sha256, letter.raw_bytes) == (hashlib.sha256(raw).digest(), len(raw))
    # one traceback for the kind of failure, not one per record
    logged = [r for r in caplog.records if "normalizer failed" in r.getMessage()]
    assert len(logged) == 1 and "Frames:" in logged[0].getMessage()
    assert "boom 1" not in caplog.text and "boom 2" not in caplog.text  # the records' text (not the code's)
