"""`roomlogs dead-letters`: what the pipeline set aside, and replaying it once its producer is fixed.

    roomlogs dead-letters list [--reason R] [--since T] [--until T] [--limit N] [--json]
    roomlogs dead-letters show REF [--json]
    roomlogs dead-letters replay (REF ... | --reason R [--since T] [--until T]) [--limit N] --by NAME [--json]

REF is a dead letter's id (the first column of `list`) or the Kafka record it came from,
`topic/partition/offset`. T is an ISO date or time (UTC unless it has an offset); `--since` is inclusive,
`--until` exclusive.

`replay` reads each original record back from Kafka (dead letters keep no raw bytes), checks it is the one
set aside (the SHA-256 and size the letter kept), normalizes it with the current contract and writes it the
way ingest does; each letter's outcome is recorded with `--by` in `dead_letter_replays`, and a record whose
event is in the logs is never replayed again (pipeline/ingest/replay.py). Exit codes: 0 done (for `replay`:
every letter's event is in the logs), 1 some letter's event is not (still invalid, expired, no longer in
Kafka, another record at its coordinates, no fingerprint to check it by: the outcome says), 2 an error.

Reads ROOMLOGS_POSTGRES_DSN and ROOMLOGS_POSTGRES_SCHEMA; `replay` also the ROOMLOGS_KAFKA_* connection
settings, the normalizer's limits (ROOMLOGS_MAX_EVENT_BYTES, ROOMLOGS_CHAT_TEXT_MAX_CHARS,
ROOMLOGS_REASON_MAX_CHARS, ROOMLOGS_MAX_FUTURE_SKEW_SECONDS) and the room-class rule
(ROOMLOGS_DEFAULT_RETENTION_CLASS, ROOMLOGS_BUSY_ROOM_MIN_OCCUPANCY), as the worker does.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import asyncpg
import orjson

from pipeline.cli.tables import print_table
from pipeline.errors import RoomlogsError
from pipeline.events.reasons import Reason
from pipeline.ingest.replay import replay
from pipeline.settings import Settings
from pipeline.storage import db, replays
from pipeline.storage.dead_letters import Source, StoredDeadLetter, find, parse_reference

__all__ = ["COMMANDS", "add_commands"]

_DETAIL_COLUMN_CHARS = 60


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "dead-letters",
        help="list, show and replay dead letters (what was set aside, with its reason)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="dead_letters_command", required=True)
    lst = sub.add_parser("list", help="dead letters, newest first")
    _filters(lst, limit=50)
    lst.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    show = sub.add_parser("show", help="one dead letter: what was kept of it, and its replays")
    show.add_argument("reference", metavar="REF", help="an id, or topic/partition/offset")
    show.add_argument("--json", action="store_true")
    rep = sub.add_parser(
        "replay", help="re-read dead letters' records from Kafka and ingest them with the current contract"
    )
    rep.add_argument("references", nargs="*", metavar="REF", help="ids, or topic/partition/offset")
    _filters(rep, limit=1000)
    rep.add_argument("--by", required=True, help="who replays them (recorded with each outcome)")
    rep.add_argument("--json", action="store_true", help="one JSON line per letter")


def _filters(p: argparse.ArgumentParser, *, limit: int) -> None:
    p.add_argument("--reason", choices=[r.value for r in Reason], help="only this reason code")
    p.add_argument("--since", type=_moment, help="received at or after (ISO date or time, UTC by default)")
    p.add_argument("--until", type=_moment, help="received before")
    p.add_argument("--limit", type=_positive, default=limit, help=f"at most this many (default {limit})")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(text), time.min)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


# --- commands -------------------------------------------------------------------------------------------
def dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    handler: dict[str, Callable[[Settings, argparse.Namespace, asyncpg.Connection], Awaitable[int]]] = {
        "list": _list,
        "show": _show,
        "replay": _replay,
    }
    command = handler[args.dead_letters_command]
    return _with_connection(settings, lambda conn: command(settings, args, conn))


async def _list(settings: Settings, args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    letters = await find(conn, reason=args.reason, since=args.since, until=args.until, limit=args.limit)
    done = _in_logs(await replays.of_letters(conn, letters))
    if args.json:
        for d in letters:
            print(_dumps({**_letter_json(d), "replayed": done.get(str(d.source))}))
        return 0
    if not letters:
        print("no dead letters" + (" match" if args.reason or args.since or args.until else ""))
        return 0
    header = ("id", "received (UTC)", "reason", "source", "replayed", "detail")
    rows = [
        (
            str(d.dead_letter_id),
            f"{d.received_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            d.reason,
            str(d.source),
            done.get(str(d.source), "-"),
            _cut(d.detail),
        )
        for d in letters
    ]
    print_table(header, rows)
    return 0


async def _show(settings: Settings, args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    (letter,) = await _resolve(conn, [args.reference], limit=1)
    history = await replays.of_letters(conn, [letter])
    if args.json:
        print(_dumps({**_letter_json(letter), "replays": [_replay_json(r) for r in history]}))
        return 0
    print(f"dead letter {letter.dead_letter_id}")
    print(f"received    {letter.received_at.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f} UTC")
    print(f"reason      {letter.reason}")
    print(f"detail      {letter.detail}")
    print(f"source      {letter.source}  (replay reads it there while the topic keeps it)")
    if letter.raw_sha256 is not None:
        print(f"received    {letter.raw_bytes} bytes, SHA-256 {letter.raw_sha256.hex()}")
    elif letter.raw_bytes is not None:
        print(f"received    {letter.raw_bytes} bytes (nothing else kept)")
    if letter.content is None:
        print("content     nothing could be kept (not JSON, too large, or a private message)")
    else:
        print("content     (the contract's allowlisted view; text masked)")
        for line in orjson.dumps(letter.content, option=orjson.OPT_INDENT_2).decode().splitlines():
            print(f"  {line}")
    for r in history:
        event = f" (event {r.event_id})" if r.event_id else ""
        print(
            f"replayed    {r.replayed_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC by {r.replayed_by}: "
            f"{r.outcome}{event}{': ' + r.detail if r.detail else ''}"
        )
    if not history:
        print("replayed    never")
    return 0


async def _replay(settings: Settings, args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    if not args.references and not (args.reason or args.since or args.until):
        raise RoomlogsError(
            "name the dead letters to replay: ids, topic/partition/offset, or --reason/--since"
        )
    if args.references:
        letters = await _resolve(conn, args.references, limit=args.limit)
        letters = [d for d in letters if _matches(d, args)]
    else:
        letters = await find(
            conn, reason=args.reason, since=args.since, until=args.until, limit=args.limit, newest_first=False
        )
    if not letters:
        print("no dead letters to replay")
        return 0
    results = await replay(settings, conn, letters, replayed_by=args.by, now=datetime.now(UTC))
    for r in results:
        if args.json:
            print(
                _dumps(
                    {
                        "dead_letter_id": r.letter.dead_letter_id,
                        "source": str(r.letter.source),
                        "outcome": r.outcome.value,
                        "event_id": r.event_id,
                        "detail": r.detail,
                    }
                )
            )
        else:
            event = f" (event {r.event_id})" if r.event_id else ""
            print(f"{r.letter.dead_letter_id} {r.letter.source}: {r.outcome.value}{event}: {r.detail}")
    ok = sum(1 for r in results if r.outcome.in_the_logs)
    if not args.json:
        print(f"{ok} of {len(results)} in the logs; recorded as replayed by {args.by.strip()}")
    return 0 if ok == len(results) else 1


# --- helpers --------------------------------------------------------------------------------------------
async def _resolve(
    conn: asyncpg.Connection, references: Sequence[str], *, limit: int
) -> list[StoredDeadLetter]:
    """The dead letters these references name, oldest first; RoomlogsError naming any that matches none."""
    ids: list[int] = []
    sources: list[Source] = []
    for text in references:
        try:
            ref = parse_reference(text)
        except ValueError as e:
            raise RoomlogsError(str(e)) from None
        if isinstance(ref, int):
            ids.append(ref)
        else:
            sources.append(ref)
    found = []
    if ids:
        found += await find(conn, ids=ids, limit=len(ids), newest_first=False)
    if sources:
        found += await find(conn, sources=sources, limit=max(limit, len(sources)), newest_first=False)
    missing = [str(i) for i in ids if i not in {d.dead_letter_id for d in found}]
    missing += [str(s) for s in sources if s not in {d.source for d in found}]
    if missing:
        raise RoomlogsError(
            f"no dead letter {', '.join(missing)} (dropped by retention after "
            "ROOMLOGS_DEAD_LETTER_RETENTION_DAYS, or never there)"
        )
    unique = {d.dead_letter_id: d for d in found}
    return sorted(unique.values(), key=lambda d: (d.received_at, d.dead_letter_id))[:limit]


def _matches(d: StoredDeadLetter, args: argparse.Namespace) -> bool:
    return (
        (args.reason is None or d.reason == args.reason)
        and (args.since is None or d.received_at >= args.since)
        and (args.until is None or d.received_at < args.until)
    )


def _in_logs(history: Sequence[replays.Replay]) -> dict[str, str]:
    """Source -> outcome of the replay that put its event in the logs."""
    good = (replays.Outcome.STORED.value, replays.Outcome.DUPLICATE.value)
    return {
        f"{r.src_topic}/{r.src_partition}/{r.src_offset}": r.outcome for r in history if r.outcome in good
    }


def _letter_json(d: StoredDeadLetter) -> dict[str, Any]:
    return {
        "dead_letter_id": d.dead_letter_id,
        "received_at": d.received_at,
        "reason": d.reason,
        "detail": d.detail,
        "source": str(d.source),
        "content": d.content,
        "raw_sha256": d.raw_sha256.hex() if d.raw_sha256 is not None else None,
        "raw_bytes": d.raw_bytes,
    }


def _replay_json(r: replays.Replay) -> dict[str, Any]:
    return {
        "replay_id": r.replay_id,
        "run_id": str(r.run_id),
        "replayed_at": r.replayed_at,
        "replayed_by": r.replayed_by,
        "dead_letter_id": r.dead_letter_id,
        "outcome": r.outcome,
        "event_id": r.event_id,
        "detail": r.detail,
    }


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_COLUMN_CHARS else text[: _DETAIL_COLUMN_CHARS - 1] + "…"


def _with_connection(settings: Settings, body: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    async def run() -> int:
        conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
        try:
            if await conn.fetchval("SELECT to_regclass('dead_letter_replays') IS NULL"):
                raise RoomlogsError(
                    f"schema {settings.postgres_schema!r} lacks the dead-letter replay table: "
                    "run `roomlogs migrate`"
                )
            return await body(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


COMMANDS = {"dead-letters": dead_letters}
