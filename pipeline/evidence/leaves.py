"""The canonical encoding of a stored event, and the order of a room-day's leaves.

A leaf is one stored event, encoded as the UTF-8 JSON array

    [event_id, occurred_at, room_id, type, schema_version, actor_id, target_id, body, payload]

with `event_id` the lowercase hyphenated UUID, `occurred_at` in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`
(always six fractional digits), `actor_id`, `target_id` and `body` as strings or null, `payload` the
stored JSON object, and no whitespace, object keys sorted (orjson's OPT_SORT_KEYS: by code point). A
room-day's leaves are its events in (occurred_at, event_id) order; the tree over them is RFC 9162's
(pipeline/evidence/merkle.py). Everything that decides what an event says is in the leaf; where it was
stored (retention class, Kafka coordinates, when it was ingested) is not, so retention and replays do not
change it.

Who uses it: the sealing run and `roomlogs verify --db` (from stored rows), the API's exports and
`roomlogs verify FILE` (from exported events: the same fields, `type` as exported). schemas/README.md
documents the same encoding for verifiers in other languages.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.evidence.merkle import leaf_hash

__all__ = ["LEAF_FIELDS", "leaf_data", "leaf_of", "order_key"]

#: The fields a leaf is made of, in its order (`type` is the stored `event_type`).
LEAF_FIELDS = (
    "event_id",
    "occurred_at",
    "room_id",
    "type",
    "schema_version",
    "actor_id",
    "target_id",
    "body",
    "payload",
)


def _moment(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        raise ValueError(f"occurred_at {value!r} has no time zone")
    return moment.astimezone(UTC)


def leaf_data(event: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an event: a stored row (`event_type`) or an exported event (`type`)."""
    moment = _moment(event["occurred_at"])
    payload = event["payload"]
    if isinstance(payload, (bytes, str)):
        payload = orjson.loads(payload)
    return orjson.dumps(
        [
            str(uuid.UUID(str(event["event_id"]))),
            moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            event["room_id"],
            event["type"] if "type" in event else event["event_type"],
            int(event["schema_version"]),
            event["actor_id"],
            event["target_id"],
            event["body"],
            payload,
        ],
        option=orjson.OPT_SORT_KEYS,
    )


def leaf_of(event: Mapping[str, Any]) -> bytes:
    """The leaf hash of an event (RFC 9162: SHA-256 of 0x00 and its canonical bytes)."""
    return leaf_hash(leaf_data(event))


def order_key(event: Mapping[str, Any]) -> tuple[datetime, uuid.UUID]:
    """Where an event stands among its room-day's leaves."""
    return _moment(event["occurred_at"]), uuid.UUID(str(event["event_id"]))
