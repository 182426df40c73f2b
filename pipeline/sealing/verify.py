"""`roomlogs verify --db`: every stored room-day recomputed against its seal; every difference named.

Who calls it: `roomlogs verify --db [--room R] [--day D] [--witness]` (pipeline/cli/verify.py), and the
tests that tamper with the database as a superuser with the guard triggers off.

What it checks, and what each finding means (`Finding.kind`; `problem` False for what is accounted for):
- each seal: its signature with the public key of its key id (`bad_signature`, `unknown_key`); that its
  columns say what its signed statement says (`seal_altered`); that it chains to the room's previous seal,
  with no seal missing in between (`broken_chain`); that its kept leaves give its signed tree head
  (`leaves_altered`);
- each sealed row, recomputed from what is stored now (in `events`, or in `held_events` under a legal
  hold): the same leaf (fine), another leaf (`changed_row`: its content, time or day was edited), or not
  there: removed by an authorized deletion (`deleted_by_request`, with the request id; not a problem),
  by retention (`dropped_by_retention`, with the ledger entry; not a problem) or by nobody who recorded
  it (`missing_row`); a stored row no seal of its day has (`extra_row`: inserted behind the pipeline's
  back, or moved from another day, which also shows there as missing);
- a closed day with rows but no seal (`seal_missing`);
- each daily head: signature, statement, chain (`head_bad_signature`, `head_altered`, `head_broken_chain`),
  and that its tree is exactly that day's seals (`head_mismatch`: a seal added or removed);
- with the witness's copies of the daily heads (the Kafka topic): each must be the database's head of
  that day (`witness_mismatch`: history rewritten, even if re-signed with the real key); the topic must be
  the one the heads were published to (`witness_new`: a broker started empty, the topic recreated, another
  cluster; the witness lost what it witnessed until the sealing run republishes the heads), and hold each
  head it acknowledged (`witness_missing`); heads published again to a new witness are listed
  (`witness_republished`, not a problem: that witness attests them from then, not from their sealing).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg
import orjson

from pipeline.evidence import merkle
from pipeline.evidence.keys import verify_signature
from pipeline.evidence.leaves import leaf_of
from pipeline.evidence.statements import statement_hash
from pipeline.retention_rules import closed_before
from pipeline.sealing import witness as witnesses
from pipeline.sealing.run import head_leaves
from pipeline.sealing.witness import WitnessLog
from pipeline.storage import seals
from pipeline.storage.seals import StoredHead, StoredSeal

__all__ = ["PROBLEMS", "Finding", "Verification", "verify_db"]

#: Finding kinds that are problems (the command exits 1 when one is found).
PROBLEMS = frozenset(
    {
        "bad_signature",
        "unknown_key",
        "seal_altered",
        "broken_chain",
        "leaves_altered",
        "changed_row",
        "missing_row",
        "extra_row",
        "seal_missing",
        "head_bad_signature",
        "head_altered",
        "head_broken_chain",
        "head_mismatch",
        "witness_mismatch",
        "witness_new",
        "witness_missing",
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    detail: str
    room_id: str | None = None
    day: date | None = None
    event_id: uuid.UUID | None = None

    @property
    def problem(self) -> bool:
        return self.kind in PROBLEMS


@dataclass
class Verification:
    seals: int = 0
    rows: int = 0
    heads: int = 0
    findings: list[Finding] | None = None

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings or [] if f.problem]


async def verify_db(
    conn: asyncpg.Connection,
    *,
    now: datetime,
    late_window_seconds: float,
    room: str | None = None,
    day: date | None = None,
    public_keys: Mapping[str, bytes] | None = None,
    witness: Iterable[tuple[date, bytes]] | None = None,
    witness_log: WitnessLog | None = None,
) -> Verification:
    """Verify what is asked (a room, a day, both, or everything). `public_keys` by key id (default: the
    database's own `seal_keys`; give them from elsewhere to distrust it). `witness`: (day, statement hash)
    of the daily heads as the witness topic has them; `witness_log`: that topic as the broker has it."""
    keys = dict(public_keys) if public_keys is not None else await seals.public_keys(conn)
    out: list[Finding] = []
    all_seals = await seals.seals(conn, room=room)
    by_room: dict[str, list[StoredSeal]] = defaultdict(list)
    for s in all_seals:
        by_room[s.room_id].append(s)
    for room_seals in by_room.values():
        out += _chain(room_seals)
    checked = [s for s in all_seals if day is None or s.day == day]
    result = Verification(seals=len(checked))
    for s in checked:
        out += _seal(s, keys)
    by_day: dict[date, list[StoredSeal]] = defaultdict(list)
    for s in checked:
        by_day[s.day].append(s)
    for d, day_seals in sorted(by_day.items()):
        found, rows = await _rows(conn, d, day_seals, room)
        out += found
        result.rows += rows
    out += await _unsealed(conn, now, late_window_seconds, room, day, {(s.room_id, s.day) for s in all_seals})
    if room is None:
        heads = await seals.heads(conn, day=day)
        result.heads = len(heads)
        out += await _heads(conn, heads, keys)
        if witness is not None:
            witness = list(witness)
            out += await _witness(conn, witness, day)
            if witness_log is not None:
                out += await _incarnation(conn, witness_log, {d for d, _ in witness}, day)
    result.findings = out
    return result


def _statement(raw: bytes) -> dict[str, object]:
    parsed: dict[str, object] = orjson.loads(raw)
    return parsed


def _seal(s: StoredSeal, keys: Mapping[str, bytes]) -> list[Finding]:
    key = keys.get(s.key_id)
    if key is None:
        return [
            Finding("unknown_key", f"seal {s.seq} names key {s.key_id}, which is not known", s.room_id, s.day)
        ]
    out = []
    if not verify_signature(key, s.signature, s.statement):
        why = f"seal {s.seq}: the signature does not verify with key {s.key_id}"
        out.append(Finding("bad_signature", why, s.room_id, s.day))
    st = _statement(s.statement)
    said = (
        st.get("room_id"),
        st.get("day"),
        st.get("seq"),
        st.get("tree_size"),
        st.get("root"),
        st.get("key_id"),
    )
    stored = (s.room_id, s.day.isoformat(), s.seq, s.tree_size, s.root.hex(), s.key_id)
    if said != stored or statement_hash(s.statement) != s.statement_hash:
        why = f"seal {s.seq}: its columns {stored} differ from its signed statement {said}"
        out.append(Finding("seal_altered", why, s.room_id, s.day))
    return out


def _chain(room_seals: list[StoredSeal]) -> list[Finding]:
    out = []
    ordered = sorted(room_seals, key=lambda s: s.seq)
    prev: StoredSeal | None = None
    for s in ordered:
        claimed = _statement(s.statement).get("prev")
        expected_seq = 1 if prev is None else prev.seq + 1
        expected_prev = None if prev is None else prev.statement_hash.hex()
        if s.seq != expected_seq or claimed != expected_prev:
            out.append(
                Finding(
                    "broken_chain",
                    f"seal {s.seq} of day {s.day} does not follow seal {prev.seq if prev else 'none'} "
                    f"(expected seq {expected_seq} and prev {expected_prev}, found seq {s.seq} and prev "
                    f"{claimed})",
                    room_id=s.room_id,
                    day=s.day,
                )
            )
        prev = s
    return out


async def _rows(
    conn: asyncpg.Connection, day: date, day_seals: list[StoredSeal], room: str | None
) -> tuple[list[Finding], int]:
    out: list[Finding] = []
    rows = await seals.stored_rows(conn, day, None if room is None else [room])
    stored: dict[str, dict[uuid.UUID, asyncpg.Record]] = defaultdict(dict)
    for r in rows:
        stored[r["room_id"]][uuid.UUID(str(r["event_id"]))] = r
    dropped = await seals.dropped_by_retention(conn, day)
    missing: list[tuple[StoredSeal, uuid.UUID, str]] = []
    for s in day_seals:
        here = stored.get(s.room_id, {})
        leaves = await seals.leaves_of(conn, s.seal_id)
        if leaves is None:
            if here:
                out.append(
                    Finding("extra_row", f"{len(here)} rows stored past every retention", s.room_id, day)
                )
            continue
        if merkle.root([leaf.hash for leaf in leaves.leaves]) != s.root or len(leaves.leaves) != s.tree_size:
            why = f"seal {s.seq}: its kept leaves do not give its signed tree head"
            out.append(Finding("leaves_altered", why, s.room_id, day))
        sealed_ids = set()
        for leaf in leaves.leaves:
            sealed_ids.add(leaf.event_id)
            row = here.get(leaf.event_id)
            if row is None:
                missing.append((s, leaf.event_id, leaf.retention_class))
            elif leaf_of(row) != leaf.hash:
                why = "the stored row is not the sealed one (its content, time or room was edited)"
                out.append(Finding("changed_row", why, s.room_id, day, leaf.event_id))
        for event_id in sorted(here.keys() - sealed_ids):
            out.append(Finding("extra_row", "a stored row no seal of its day has", s.room_id, day, event_id))
    if missing:
        by_request = await seals.deleted(conn, [event_id for _, event_id, _ in missing])
        for s, event_id, cls in missing:
            if event_id in by_request:
                why = f"deleted by request {by_request[event_id]}"
                out.append(Finding("deleted_by_request", why, s.room_id, day, event_id))
            elif cls in dropped:
                out.append(
                    Finding("dropped_by_retention", f"{cls}: {dropped[cls]}", s.room_id, day, event_id)
                )
            else:
                why = "a sealed row is gone, and no deletion or retention run says why"
                out.append(Finding("missing_row", why, s.room_id, day, event_id))
    sealed_rooms = {s.room_id for s in day_seals}
    for room_id, here in sorted(stored.items()):
        if room_id not in sealed_rooms:
            why = f"{len(here)} stored rows of a room with no seal for a sealed day"
            out.append(Finding("extra_row", why, room_id, day))
    return out, len(rows)


async def _unsealed(
    conn: asyncpg.Connection,
    now: datetime,
    late_window_seconds: float,
    room: str | None,
    day: date | None,
    sealed: set[tuple[str, date]],
) -> list[Finding]:
    """Closed days with rows and no seal, where the day has no head either (a day with a head is handled
    by `_rows`: its unsealed rooms are extra rows)."""
    out = []
    headed = {h.day for h in await seals.heads(conn)}
    for d in await seals.unsealed_days(conn, closed_before(now, late_window_seconds)):
        if (day is not None and d != day) or d in headed:
            continue
        rooms = {r["room_id"] for r in await seals.stored_rows(conn, d, None if room is None else [room])}
        for r in sorted(rooms):
            if (r, d) not in sealed:
                out.append(
                    Finding(
                        "seal_missing",
                        "a closed day with rows and no seal (has sealing run?)",
                        room_id=r,
                        day=d,
                    )
                )
    return out


async def _heads(
    conn: asyncpg.Connection, heads: list[StoredHead], keys: Mapping[str, bytes]
) -> list[Finding]:
    out = []
    everything = await seals.heads(conn)
    by_seq = {h.seq: h for h in everything}
    for h in heads:
        key = keys.get(h.key_id)
        if key is None:  # signed by a key not given (`--key` with an older key only): not a bad signature
            why = f"daily head {h.seq} of {h.day} names key {h.key_id}, which is not known"
            out.append(Finding("unknown_key", why, day=h.day))
        elif not verify_signature(key, h.signature, h.statement):
            out.append(
                Finding(
                    "head_bad_signature",
                    f"daily head {h.seq} of {h.day}: the signature does not verify with key {h.key_id}",
                    day=h.day,
                )
            )
        st = _statement(h.statement)
        said = (st.get("day"), st.get("seq"), st.get("tree_size"), st.get("root"))
        if (
            said != (h.day.isoformat(), h.seq, h.tree_size, h.root.hex())
            or statement_hash(h.statement) != h.statement_hash
        ):
            out.append(
                Finding(
                    "head_altered", f"daily head {h.seq}: its columns differ from its statement", day=h.day
                )
            )
        prev = by_seq.get(h.seq - 1)
        if st.get("prev") != (None if prev is None else prev.statement_hash.hex()) or (
            h.seq > 1 and prev is None
        ):
            out.append(
                Finding(
                    "head_broken_chain", f"daily head {h.seq} does not follow head {h.seq - 1}", day=h.day
                )
            )
        leaves = head_leaves(await seals.seals(conn, day=h.day))
        if merkle.root(leaves) != h.root or len(leaves) != h.tree_size:
            out.append(
                Finding(
                    "head_mismatch",
                    f"the seals of {h.day} are not the {h.tree_size} seals its head signed",
                    day=h.day,
                )
            )
    return out


async def _witness(
    conn: asyncpg.Connection, witness: Iterable[tuple[date, bytes]], day: date | None
) -> list[Finding]:
    out = []
    ours = {h.day: h for h in await seals.heads(conn)}
    for d, digest in witness:
        if day is not None and d != day:
            continue
        mine = ours.get(d)
        if mine is None or mine.statement_hash != digest:
            why = (
                "the database has no head for that day: a head removed, or the database restored from a "
                "backup taken before the day was sealed (the next sealing run seals it again)"
                if mine is None
                else "the day's sealed history is not the one witnessed: rewritten, or sealed again after "
                "the database was restored from a backup taken before it was sealed (README, Evidence)"
            )
            out.append(
                Finding(
                    "witness_mismatch",
                    f"the witness topic holds another head for {d} ({digest.hex()[:16]}...) than the "
                    f"database ({mine.statement_hash.hex()[:16] + '...' if mine else 'none'}): {why}",
                    day=d,
                )
            )
    return out


async def _incarnation(
    conn: asyncpg.Connection, found: WitnessLog, held: set[date], day: date | None
) -> list[Finding]:
    """Whether the witness topic is the one the heads were published to, and holds what it acknowledged."""
    ours = [h for h in await seals.heads(conn) if day is None or h.day == day]
    history = await seals.incarnations(conn, found.topic)
    latest = history[-1] if history else None
    changed = witnesses.judge(latest, found)
    if changed is not None:
        return [
            Finding(
                "witness_new",
                f"{changed}: it does not witness the history before it. The next sealing run (maintenance, "
                f"`roomlogs seals run`) republishes the {len(ours)} signed daily heads to it, which then "
                "attests them from that time on (README, Evidence)",
            )
        ]
    if latest is None:
        return []
    _, holding = witnesses.incarnation(latest, found, None)
    acknowledged = await seals.published(conn, found.topic, holding)
    out = [
        Finding(
            "witness_missing",
            f"the witness topic acknowledged the head of {h.day} and no longer holds it (a record removed "
            "from a topic kept forever)",
            day=h.day,
        )
        for h in ours
        if h.head_id in acknowledged and h.day not in held
    ]
    pubs = await seals.publications(conn, found.topic)
    again = [
        (h, max(at for t, at in pubs[h.head_id] if t in holding))
        for h in ours
        if h.head_id in acknowledged and pubs[h.head_id][0][0] not in holding
    ]
    if again:
        when = max(at for _, at in again)
        out.append(
            Finding(
                "witness_republished",
                f"{len(again)} daily head(s), {again[0][0].day} to {again[-1][0].day}, were published again "
                f"to this witness topic (up to {when:%Y-%m-%d %H:%M:%S} UTC) after the one that first "
                "acknowledged them was lost: it attests them from then, not from their sealing",
            )
        )
    return out
