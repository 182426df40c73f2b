"""What a seal says, byte for byte: the signed statements of room-day seals and daily heads.

A **room-day seal** states that room R's events of UTC day D were exactly `tree_size` leaves with tree head
`root` (pipeline/evidence/leaves.py, merkle.py), between `first_at` and `last_at`, stored under the
retention classes counted in `classes`, sealed at `sealed_at`; `seq` numbers the room's seals from 1 and
`prev` is the SHA-256 of the room's previous seal statement (null for its first): a chain per room, so a
seal cannot be removed or replaced without breaking the next one.

A **daily head** states that the room-day seals of day D are exactly `tree_size` seals whose statements'
SHA-256, in room order, have tree head `root`; `prev` chains the daily heads. Every daily head is also
published to a Kafka topic of its own (the witness), so a copy outside the database shows a history that
was rewritten there, even by someone holding the database and the signing key.

A statement is canonical JSON (sorted keys, no whitespace, hashes in lowercase hex, times as
`YYYY-MM-DDTHH:MM:SS.ffffffZ`); its signature is Ed25519 over exactly those bytes (pipeline/evidence/keys.py).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson

__all__ = ["DayLeaves", "Leaf", "daily_head", "room_day_seal", "statement_hash", "time_text"]

VERSION = 1


def time_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def statement_hash(statement: bytes) -> bytes:
    return hashlib.sha256(statement).digest()


def _canonical(fields: Mapping[str, Any]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def room_day_seal(
    *,
    room_id: str,
    day: date,
    seq: int,
    tree_size: int,
    root: bytes,
    first_at: datetime,
    last_at: datetime,
    classes: Mapping[str, int],
    sealed_at: datetime,
    prev: bytes | None,
    key_id: str,
) -> bytes:
    return _canonical(
        {
            "v": VERSION,
            "kind": "room_day",
            "room_id": room_id,
            "day": day.isoformat(),
            "seq": seq,
            "tree_size": tree_size,
            "root": root.hex(),
            "first_at": time_text(first_at),
            "last_at": time_text(last_at),
            "classes": dict(classes),
            "sealed_at": time_text(sealed_at),
            "prev": None if prev is None else prev.hex(),
            "key_id": key_id,
        }
    )


def daily_head(
    *, day: date, seq: int, tree_size: int, root: bytes, sealed_at: datetime, prev: bytes | None, key_id: str
) -> bytes:
    return _canonical(
        {
            "v": VERSION,
            "kind": "daily_head",
            "day": day.isoformat(),
            "seq": seq,
            "tree_size": tree_size,
            "root": root.hex(),
            "sealed_at": time_text(sealed_at),
            "prev": None if prev is None else prev.hex(),
            "key_id": key_id,
        }
    )


@dataclass(frozen=True, slots=True)
class Leaf:
    """One sealed leaf as the seal keeps it: which event, its hash, its retention class."""

    event_id: uuid.UUID
    hash: bytes
    retention_class: str


#: One leaf in a seal's `leaves`: the event id (16 bytes), its leaf hash (32) and the index of its
#: retention class in the seal's `classes` (1).
_LEAF_BYTES = 49


@dataclass(frozen=True, slots=True)
class DayLeaves:
    """A room-day's leaves as a seal keeps them, so that `verify` can name each row changed, missing or
    added, and attribute what is missing to retention or to an audited deletion."""

    leaves: tuple[Leaf, ...]

    def encode(self) -> tuple[bytes, list[str]]:
        classes = sorted({leaf.retention_class for leaf in self.leaves})
        index = {c: i for i, c in enumerate(classes)}
        blob = b"".join(
            leaf.event_id.bytes + leaf.hash + bytes([index[leaf.retention_class]]) for leaf in self.leaves
        )
        return blob, classes

    @classmethod
    def decode(cls, blob: bytes, classes: Sequence[str]) -> DayLeaves:
        if len(blob) % _LEAF_BYTES:
            raise ValueError(f"a seal's leaves are {_LEAF_BYTES}-byte records, not {len(blob)} bytes")
        return cls(
            tuple(
                Leaf(
                    uuid.UUID(bytes=blob[i : i + 16]),
                    blob[i + 16 : i + 48],
                    classes[blob[i + 48]],
                )
                for i in range(0, len(blob), _LEAF_BYTES)
            )
        )
