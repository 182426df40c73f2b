"""`roomlogs seals` and `roomlogs verify`: sealed room-days, and checking them.

    roomlogs seals keygen --out FILE          a new Ed25519 signing key (PEM, mode 0600); prints its key id
    roomlogs seals run                        seal every closed day now (ROOMLOGS_SEAL_KEY_FILE, as the
                                              owner), then build the sealed days' chat search indexes
    roomlogs seals list [--room R] [--day D]  seals: room, day, events, tree head, key, when
    roomlogs seals heads [--from-kafka]       the daily heads (from the database, or the witness topic)
    roomlogs seals keys                       the public keys seals are signed with (PEM, by key id)
    roomlogs verify FILE --key PEM [--key PEM ...]
                                              an evidence bundle (GET /v1/rooms/{room}/evidence), offline
    roomlogs verify --db [--room R] [--day D] [--witness] [--key PEM ...]
                                              stored room-days recomputed against their seals

`verify FILE` needs nothing but the bundle and the public key(s): it says what the bundle proves ("these
1,204 events are exactly room R's events of day D as sealed at T") or the first thing that does not hold.
`verify --db` lists every difference (a changed, missing or extra row, a broken chain, a bad signature, a
closed day with no seal) and what is accounted for (rows dropped by retention, or deleted by an audited
request, with its id); `--witness` also compares the daily heads with the witness topic's copies (history
rewritten, even re-signed with the real key). With `--key`, the public keys come from those files instead
of the database's `seal_keys` (to distrust the database). Exit 0 when everything holds, 1 when something
does not, 2 on an error.

Reads ROOMLOGS_POSTGRES_DSN and ROOMLOGS_POSTGRES_SCHEMA; `seals run` also ROOMLOGS_SEAL_KEY_FILE,
ROOMLOGS_SEAL_LATE_WINDOW_SECONDS, ROOMLOGS_SEAL_HEADS_TOPIC and the ROOMLOGS_KAFKA_* connection settings
(to publish the daily heads), `seals heads --from-kafka` and `verify --witness` those too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from pipeline.errors import ConfigurationError
from pipeline.evidence.bundle import BundleError, check
from pipeline.evidence.keys import SealKey, key_id_of, public_key_pem, read_public_key
from pipeline.kafka_client import check_speaks_kafka
from pipeline.sealing import witness
from pipeline.sealing.run import seal_closed_days
from pipeline.sealing.verify import verify_db
from pipeline.settings import Settings
from pipeline.storage import db, seals, search_index

__all__ = ["COMMANDS", "add_commands"]


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "seals",
        help="sealed, signed room-days: make a key, seal closed days, list seals and daily heads",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="seals_command", required=True)
    keygen = sub.add_parser("keygen", help="a new Ed25519 signing key (PEM file, mode 0600)")
    keygen.add_argument("--out", required=True, type=Path)
    sub.add_parser("run", help="seal every closed day now (needs ROOMLOGS_SEAL_KEY_FILE)")
    lst = sub.add_parser("list", help="seals, by room and day")
    lst.add_argument("--room")
    lst.add_argument("--day", type=date.fromisoformat)
    heads = sub.add_parser("heads", help="the daily heads")
    heads.add_argument("--from-kafka", action="store_true", help="the witness topic's copies")
    sub.add_parser("keys", help="the public keys seals are signed with (PEM)")
    v = subparsers.add_parser(
        "verify",
        help="check an evidence bundle offline, or the stored room-days against their seals (--db)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("file", nargs="?", type=Path, help="an evidence bundle (JSON)")
    v.add_argument("--db", action="store_true", help="verify the database instead of a file")
    v.add_argument("--room")
    v.add_argument("--day", type=date.fromisoformat)
    v.add_argument("--witness", action="store_true", help="compare the daily heads with the witness topic")
    v.add_argument("--key", type=Path, action="append", default=[], help="a public key (PEM); repeat")


def seals_command(settings: Settings, args: argparse.Namespace) -> int:
    command = args.seals_command
    if command == "keygen":
        if args.out.exists():
            raise ConfigurationError(f"{args.out} exists: choose another file (keys are never overwritten)")
        key = SealKey.generate(args.out)
        print(f"key id {key.key_id} written to {args.out}; set ROOMLOGS_SEAL_KEY_FILE={args.out}")
        return 0
    return asyncio.run(_seals(settings, args))


#: Why an empty list may be empty, on stderr, so that stdout stays one line per seal (or head).
_NOT_SEALED_YET = (
    "a UTC day is sealed once it has closed (ROOMLOGS_SEAL_LATE_WINDOW_SECONDS after it ends), by the "
    "maintenance of a worker that has ROOMLOGS_SEAL_KEY_FILE, or by `roomlogs seals run`"
)


async def _seals(settings: Settings, args: argparse.Namespace) -> int:
    if args.seals_command == "heads" and args.from_kafka:
        await check_speaks_kafka(settings)
        seen = await witness.read_heads(settings)
        if not seen.log.exists:
            print(f"# the witness topic {settings.seal_heads_topic} does not exist", file=sys.stderr)
        else:
            known = "" if seen.log.topic_id is None else f", topic id {seen.log.topic_id}"
            print(f"# {settings.seal_heads_topic}{known}: {len(seen.heads)} record(s)", file=sys.stderr)
        for w in seen.heads:
            print(f"{w.day}  {w.statement_hash.hex()}  key {w.key_id}  {w.statement.decode()}")
        return 0
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        if args.seals_command == "run":
            if not settings.seal_key_file:
                raise ConfigurationError(
                    "ROOMLOGS_SEAL_KEY_FILE is not set: make a key with `roomlogs seals keygen`"
                )
            key = SealKey.load(settings.seal_key_file)
            async with witness.publisher(settings) as publish:
                report = await seal_closed_days(conn, settings, key, now=datetime.now(UTC), publish=publish)
            days = ", ".join(map(str, report.days)) or "none closed and unsealed"
            print(
                f"sealed {len(report.days)} days ({days}): "
                f"{report.rooms:,} rooms, {report.events:,} events in {report.seconds:.1f} s; "
                f"{report.published} daily heads published to {settings.seal_heads_topic}"
            )
            built = await search_index.build_sealed(conn, today=datetime.now(UTC).date())
            print(
                f"search indexes of sealed days: {len(built.built)} built "
                f"({built.size_bytes / 1e6:,.1f} MB) in {built.seconds:.1f} s"
                + (f"; {len(built.deferred)} deferred to the next run" if built.deferred else "")
                + ("; another session is building them" if built.busy else "")
            )
        elif args.seals_command == "list":
            found = await seals.seals(conn, room=args.room, day=args.day)
            for s in found:
                print(
                    f"{s.room_id}  {s.day}  #{s.seq}  {s.tree_size:>7,} events  root {s.root.hex()[:16]}...  "
                    f"key {s.key_id}  sealed {s.sealed_at:%Y-%m-%d %H:%M:%S}"
                )
            if not found:
                of = " ".join(
                    x for x in (args.room and f"room {args.room}", args.day and f"day {args.day}") if x
                )
                print(f"# no seals{' of ' + of if of else ''}: {_NOT_SEALED_YET}", file=sys.stderr)
        elif args.seals_command == "heads":
            daily = await seals.heads(conn)
            for h in daily:
                print(f"{h.day}  {h.statement_hash.hex()}  #{h.seq}  {h.tree_size:,} rooms  key {h.key_id}")
            if not daily:
                print(f"# no daily heads: {_NOT_SEALED_YET}", file=sys.stderr)
        elif args.seals_command == "keys":
            for key_id, raw in sorted((await seals.public_keys(conn)).items()):
                print(f"# key id {key_id}\n{public_key_pem(raw)}")
    finally:
        await conn.close()
    return 0


def verify_command(settings: Settings, args: argparse.Namespace) -> int:
    keys = {}
    for path in args.key:
        raw = read_public_key(path)
        keys[key_id_of(raw)] = raw
    if args.db == (args.file is not None):
        raise ConfigurationError("give an evidence bundle FILE, or --db (not both)")
    if args.file is not None:
        if not keys:
            raise ConfigurationError(
                "--key: the public key the bundle was sealed with (`roomlogs seals keys`, or the API's "
                "/v1/seal-keys)"
            )
        try:
            proven = check(args.file.read_bytes(), keys)
        except OSError as e:
            raise ConfigurationError(f"{args.file}: {e.strerror}") from None
        except BundleError as e:
            print(f"NOT VERIFIED: {e}")
            return 1
        for p in proven:
            print(p.say())
        return 0
    return asyncio.run(_verify_db(settings, args, keys or None))


async def _verify_db(settings: Settings, args: argparse.Namespace, keys: dict[str, bytes] | None) -> int:
    witnessed = None
    seen = None
    if args.witness:
        seen = await witness.read_heads(settings)
        witnessed = [(w.day, w.statement_hash) for w in seen.heads]
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        result = await verify_db(
            conn,
            now=datetime.now(UTC),
            late_window_seconds=settings.seal_late_window_seconds,
            room=args.room,
            day=args.day,
            public_keys=keys,
            witness=witnessed,
            witness_log=seen.log if seen else None,
        )
    finally:
        await conn.close()
    for f in result.findings or []:
        parts = (f.room_id, str(f.day) if f.day else None, str(f.event_id) if f.event_id else None)
        where = " ".join(x for x in parts if x)
        print(f"{'PROBLEM' if f.problem else 'ok'}  {f.kind:<20} {where}: {f.detail}")
    problems = result.problems
    print(
        f"{result.seals:,} seals, {result.heads:,} daily heads and {result.rows:,} stored rows checked: "
        + (f"{len(problems):,} problems" if problems else "everything holds")
        + ("" if witnessed is None else f" (witness: {len(witnessed)} heads)")
    )
    return 1 if problems else 0


COMMANDS = {"seals": seals_command, "verify": verify_command}
