"""What a sealed room-day's stored events can still prove, as one day of an evidence bundle
(pipeline/evidence/bundle.py, FORMAT).

Pure functions, called by `handlers.evidence` with what it read in one snapshot:

- the events as an export gives them (`exported`: the same fields, through JSON), in leaf order;
- `intact`: whether they are exactly the sealed events (then the whole day is its own proof:
  `pipeline.evidence.bundle.day_bundle`);
- `verified_leaves`: the seal's kept leaves, if they give its tree head (else they prove nothing);
- `proven_day`: some events, each with its leaf index and RFC 9162 inclusion proof from the sealed
  leaves, and the sealed events that are not there (`omitted`) with why. `check` ignores `omitted`
  and `note`: they tell a reader what is missing, the proofs cover what is there.
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from pipeline.api.context import dumps
from pipeline.evidence import merkle
from pipeline.evidence.leaves import leaf_of
from pipeline.evidence.statements import DayLeaves
from pipeline.storage.seals import StoredSeal

__all__ = [
    "REASONS",
    "Omitted",
    "SealedLeaves",
    "exported",
    "intact",
    "leaves_of_events",
    "proven_day",
    "sort_out",
    "verified_leaves",
]

#: Why a sealed event is not in a bundle: words for the day's `note`.
REASONS = {
    "deleted_by_request": "deleted by an audited request",
    "not_stored": "no longer stored",
    "changed": "stored, but not as sealed",
    "not_in_seal": "stored, but not among the sealed events",
}


@dataclass(frozen=True, slots=True)
class Omitted:
    """An event of the room-day that a bundle leaves out, and why (a key of REASONS, and the detail)."""

    event_id: uuid.UUID
    reason: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"event_id": str(self.event_id), "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class SealedLeaves:
    """A seal's leaves in order: which event each is, its hash, and (kept leaves) its retention class."""

    event_ids: tuple[uuid.UUID, ...]
    hashes: tuple[bytes, ...]
    classes: tuple[str, ...] = ()

    def index(self) -> dict[uuid.UUID, int]:
        return {e: i for i, e in enumerate(self.event_ids)}


def exported(rows: Iterable[asyncpg.Record]) -> list[dict[str, Any]]:
    """The rows as an export writes them, read back: what a client holds and computes leaves from."""
    loaded: list[dict[str, Any]] = orjson.loads(dumps([dict(r.items()) for r in rows]))
    return loaded


def leaves_of_events(events: Sequence[Mapping[str, Any]]) -> SealedLeaves:
    return SealedLeaves(tuple(uuid.UUID(e["event_id"]) for e in events), tuple(leaf_of(e) for e in events))


def intact(seal: StoredSeal, events: Sequence[Mapping[str, Any]]) -> bool:
    """Whether `events` (the whole stored day, in leaf order) are exactly what the seal covers."""
    return len(events) == seal.tree_size and merkle.root(leaves_of_events(events).hashes) == seal.root


def verified_leaves(seal: StoredSeal, kept: DayLeaves | None) -> SealedLeaves | None:
    """The seal's kept leaves, when they give its tree head (None: not kept, or not the sealed ones)."""
    if kept is None:
        return None
    leaves = SealedLeaves(
        tuple(leaf.event_id for leaf in kept.leaves),
        tuple(leaf.hash for leaf in kept.leaves),
        tuple(leaf.retention_class for leaf in kept.leaves),
    )
    if len(leaves.hashes) != seal.tree_size or merkle.root(leaves.hashes) != seal.root:
        return None
    return leaves


def sort_out(
    leaves: SealedLeaves, stored: Sequence[Mapping[str, Any]], wanted: Iterable[uuid.UUID]
) -> tuple[list[Mapping[str, Any]], list[Omitted], list[uuid.UUID]]:
    """Of the `wanted` events: the stored ones the sealed leaves prove (in leaf order), the ones left out
    and why (`not_stored` still to be told apart from `deleted_by_request` by the caller), and the ones
    that are neither stored nor sealed."""
    index = leaves.index()
    by_id = {uuid.UUID(e["event_id"]): e for e in stored}
    proven: list[tuple[int, Mapping[str, Any]]] = []
    omitted: list[Omitted] = []
    unknown: list[uuid.UUID] = []
    for event_id in wanted:
        i = index.get(event_id)
        event = by_id.get(event_id)
        if i is None and event is None:
            unknown.append(event_id)
        elif i is None:
            omitted.append(Omitted(event_id, "not_in_seal", REASONS["not_in_seal"] + " (added since)"))
        elif event is None:
            omitted.append(Omitted(event_id, "not_stored", REASONS["not_stored"]))
        elif leaf_of(event) != leaves.hashes[i]:
            omitted.append(Omitted(event_id, "changed", REASONS["changed"] + " (changed since)"))
        else:
            proven.append((i, event))
    proven.sort(key=lambda p: p[0])
    return [e for _, e in proven], omitted, unknown


def proven_day(
    seal: StoredSeal,
    leaves: SealedLeaves,
    events: Sequence[Mapping[str, Any]],
    omitted: Sequence[Omitted],
) -> dict[str, Any]:
    """One day of a bundle: `events` (sealed, unchanged, in leaf order) with their inclusion proofs."""
    index = leaves.index()
    positions = [index[uuid.UUID(e["event_id"])] for e in events]
    paths = merkle.inclusion_proofs(positions, leaves.hashes)
    day: dict[str, Any] = {
        "seal": {
            "statement": seal.statement.decode(),
            "signature": base64.b64encode(seal.signature).decode(),
            "key_id": seal.key_id,
        },
        "whole_day": False,
        "events": [
            {**e, "leaf_index": i, "proof": [p.hex() for p in paths[i]]}
            for e, i in zip(events, positions, strict=True)
        ],
    }
    if omitted:
        counts = Counter(o.reason for o in omitted)
        day["note"] = (
            f"{len(events):,} of the room-day's {seal.tree_size:,} sealed events; left out: "
            + ", ".join(f"{n:,} {REASONS[reason]}" for reason, n in sorted(counts.items()))
        )
        day["omitted"] = [o.as_json() for o in omitted]
    return day
