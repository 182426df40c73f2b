"""Evidence bundles: exported events with what proves them, and the offline check of one.

A bundle is one JSON document:

    {"format": "roomlogs-evidence/1",
     "days": [{"seal": {"statement": "<the signed statement, as a string>", "signature": "<base64>",
                        "key_id": "..."},
               "whole_day": true,
               "events": [{<the event as the API exports it>, "leaf_index": 0, "proof": ["<hex>"]}, ...]},
              ...]}

Per room-day: the seal (pipeline/evidence/statements.py) and the day's exported events in their sealed
order. `whole_day` true: every event of the room-day is there (no proofs needed: the tree is rebuilt from
them); false: some, each with its leaf index and RFC 9162 inclusion proof. An event's leaf is computed from
its exported fields (pipeline/evidence/leaves.py), so a changed field breaks its proof.

Who uses it: the API builds bundles (`day_bundle`) for `GET /v1/rooms/{room}/evidence`; `roomlogs verify
FILE` checks one with nothing but the public key (`check`), and says what it proves.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.evidence import merkle
from pipeline.evidence.keys import verify_signature
from pipeline.evidence.leaves import leaf_of

__all__ = ["FORMAT", "BundleError", "Proven", "check", "day_bundle"]

FORMAT = "roomlogs-evidence/1"


def day_bundle(
    *,
    statement: bytes,
    signature: bytes,
    key_id: str,
    day_events: Sequence[Mapping[str, Any]],
    exported: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """One room-day of a bundle: `day_events` every event of the room-day in leaf order (what the seal
    covers, as stored now), `exported` those to export (a subset, in leaf order)."""
    leaves = [leaf_of(e) for e in day_events]
    index = {str(e["event_id"]): i for i, e in enumerate(day_events)}
    whole = len(exported) == len(day_events)
    positions = [] if whole else [index[str(e["event_id"])] for e in exported]
    paths = merkle.inclusion_proofs(positions, leaves)
    events = []
    for n, e in enumerate(exported):
        item = dict(e)
        if not whole:
            i = positions[n]
            item["leaf_index"] = i
            item["proof"] = [p.hex() for p in paths[i]]
        events.append(item)
    return {
        "seal": {
            "statement": statement.decode(),
            "signature": base64.b64encode(signature).decode(),
            "key_id": key_id,
        },
        "whole_day": whole,
        "events": events,
    }


class BundleError(ValueError):
    """What a bundle fails on, in words."""


@dataclass(frozen=True, slots=True)
class Proven:
    """What one room-day of a bundle proves."""

    room_id: str
    day: str
    events: int
    tree_size: int
    sealed_at: str
    key_id: str
    whole_day: bool

    def say(self) -> str:
        if self.whole_day:
            return (
                f"these {self.events:,} events are exactly room {self.room_id}'s events of {self.day} as "
                f"sealed at {self.sealed_at} (key {self.key_id})"
            )
        return (
            f"these {self.events:,} events are among room {self.room_id}'s {self.tree_size:,} events of "
            f"{self.day} as sealed at {self.sealed_at} (key {self.key_id})"
        )


def check(bundle: bytes | Mapping[str, Any], public_keys: Mapping[str, bytes]) -> list[Proven]:
    """What the bundle proves, per room-day; BundleError saying the first thing that does not hold.

    Never another exception, whatever the bundle holds: a bundle is evidence someone hands over, and a
    tampered or damaged one must be refused with a reason, not crash the verifier."""
    try:
        return _check(bundle, public_keys)
    except BundleError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError) as e:
        raise BundleError(f"malformed: {type(e).__name__}: {str(e)[:200]}") from None


def _check(bundle: bytes | Mapping[str, Any], public_keys: Mapping[str, bytes]) -> list[Proven]:
    try:
        doc = orjson.loads(bundle) if isinstance(bundle, bytes) else bundle
    except orjson.JSONDecodeError as e:
        raise BundleError(f"not a roomlogs evidence bundle: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"not a roomlogs evidence bundle (format {FORMAT})")
    days = doc.get("days")
    if not isinstance(days, list) or not days:
        raise BundleError("the bundle holds no day")
    return [_check_day(n, d, public_keys) for n, d in enumerate(days, 1)]


def _check_day(n: int, day: Any, public_keys: Mapping[str, bytes]) -> Proven:
    try:
        seal = day["seal"]
        statement = seal["statement"].encode()
        signature = base64.b64decode(seal["signature"], validate=True)
        events = day["events"]
        whole = bool(day["whole_day"])
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"day {n}: malformed ({e!r})") from None
    try:
        st = orjson.loads(statement)
    except orjson.JSONDecodeError:
        raise BundleError(f"day {n}: the seal's statement is not JSON") from None
    if not isinstance(st, dict):
        raise BundleError(f"day {n}: the seal's statement is not a JSON object")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BundleError(f"day {n}: its events are not a list of JSON objects")
    key_id = st.get("key_id")
    key = public_keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        raise BundleError(f"day {n}: sealed with key {key_id}, and no public key given for it")
    if seal.get("key_id") != key_id or not verify_signature(key, signature, statement):
        raise BundleError(f"day {n}: the seal's signature does not verify with key {key_id}")
    room_id, sealed_day, size, root = (
        st["room_id"],
        st["day"],
        int(st["tree_size"]),
        bytes.fromhex(st["root"]),
    )
    for i, event in enumerate(events):
        if event.get("room_id") != room_id or not str(event.get("occurred_at", "")).startswith(sealed_day):
            raise BundleError(f"day {n}: event {i + 1} is not of room {room_id} on {sealed_day}")
    try:
        leaves = [leaf_of(e) for e in events]
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"day {n}: an event lacks what its leaf is made of ({e!r})") from None
    if whole:
        if len(leaves) != size:
            raise BundleError(
                f"day {n}: {len(leaves):,} events, the seal says {size:,} (some were removed or added)"
            )
        if merkle.root(leaves) != root:
            raise BundleError(f"day {n}: the events do not give the sealed tree head (changed, or reordered)")
    else:
        last = -1
        for i, (event, leaf) in enumerate(zip(events, leaves, strict=True)):
            index = event.get("leaf_index")
            proof = event.get("proof")
            if not isinstance(index, int) or not isinstance(proof, list):
                raise BundleError(f"day {n}: event {i + 1} has no leaf index and proof")
            if index <= last:
                raise BundleError(f"day {n}: event {i + 1} is out of its sealed order")
            last = index
            if merkle.root_from_proof(index, size, leaf, [bytes.fromhex(p) for p in proof]) != root:
                raise BundleError(
                    f"day {n}: event {i + 1} ({event.get('event_id')}) is not in the sealed tree (changed, "
                    "or from another day)"
                )
    return Proven(room_id, sealed_day, len(events), size, st["sealed_at"], key_id, whole)
