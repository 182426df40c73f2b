"""`roomlogs partitions` and `roomlogs retention`: the partition lifecycle for operators, cron and support.

    roomlogs partitions [--report-only]          create partitions ahead, then report per table
    roomlogs retention [--as-of D]               show what retention would drop now, drop nothing
    roomlogs retention enforce --apply           drop what has expired now (what the worker does every
                                                 minute; for cron: `roomlogs retention enforce --apply`)
    roomlogs retention enforce --apply --loop    the same every maintenance interval, until stopped: the
                                                 retention service when workers run on their own role
    roomlogs retention check [--as-of D]         is any log older than its retention stored? (exit 1: yes)
    roomlogs retention hold place ROOM --reason TEXT --by WHO
    roomlogs retention hold release HOLD_ID --by WHO [--reason TEXT]
    roomlogs retention hold [list] [--all] [--room ROOM]
    roomlogs retention classes [list]
    roomlogs retention classes set NAME DAYS --by WHO [--reason TEXT]
    roomlogs retention ledger [--run RUN_ID] [--since D] [--limit N]

Nothing is dropped without `--apply`: `roomlogs retention` and `roomlogs retention enforce` alone (or with
`--dry-run`) list what would be dropped and say how to drop it.

Exit codes: 0 done, or nothing to do (or another maintainer was running and did it); 1 something is left
(a partition deferred, `check` found offending logs, or a listing without `--apply` found expired
partitions); 2 an error (printed). The clock is read here, once per command; `--as-of` evaluates the
policy for another day, and is accepted only where nothing is deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime

import asyncpg

from pipeline.cli.tables import print_table
from pipeline.errors import RoomlogsError
from pipeline.evidence.keys import SealKey
from pipeline.retention import (
    RetentionError,
    check_retention,
    list_holds,
    load_classes,
    maintain,
    partition_status,
    place_hold,
    read_ledger,
    release_hold,
    set_retention_days,
)
from pipeline.retention.report import SKIPPED_LOCKED
from pipeline.sealing.run import seal_in_maintenance
from pipeline.sealing.witness import Publisher
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.storage.partitions import PartitionManager

__all__ = ["COMMANDS", "add_commands"]

log = logging.getLogger("roomlogs.retention")

Command = Callable[[Settings, argparse.Namespace], int]


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `partitions` and `retention` to the `roomlogs` sub-command parsers."""
    parts = subparsers.add_parser(
        "partitions",
        help="create partitions ahead and report what is stored",
        description="Create the day partitions ahead of today (ROOMLOGS_PARTITIONS_AHEAD_DAYS) that are "
        "missing, then report each partitioned table: its retention, its day partitions (oldest, newest, "
        "today's, how many ahead) and how many have expired.",
    )
    parts.add_argument("--report-only", action="store_true", help="create nothing, only report")

    ret = subparsers.add_parser(
        "retention",
        help="enforce retention (drop expired partitions), check it, manage legal holds and classes",
        description="Without a sub-command: list what `retention enforce --apply` would drop now.",
    )
    _enforce_args(ret, top=True)
    sub = ret.add_subparsers(dest="retention_command", metavar="{enforce,check,hold,classes,ledger}")
    _enforce_args(
        sub.add_parser("enforce", help="with --apply: drop expired partitions now (without: only list them)")
    )
    check = sub.add_parser(
        "check", help="is any log older than its class's retention still stored? exit 1 if so"
    )
    check.add_argument(
        "--as-of",
        type=_day,
        default=argparse.SUPPRESS,
        help="judge as of this UTC day (YYYY-MM-DD; default today)",
    )

    hold = sub.add_parser("hold", help="legal holds: keep a room's logs past retention")
    hsub = hold.add_subparsers(dest="hold_command")
    hold.set_defaults(hold_command="list", all=False, room=None)  # `retention hold` alone lists them
    place = hsub.add_parser("place", help="put a room on hold")
    place.add_argument("room_id")
    place.add_argument("--reason", required=True, help="why (case number, request)")
    place.add_argument("--by", required=True, dest="by", help="who asked for the hold")
    rel = hsub.add_parser("release", help="release a hold (the room's logs fall back to normal retention)")
    rel.add_argument("hold_id", type=int)
    rel.add_argument("--by", required=True, dest="by", help="who releases it")
    rel.add_argument("--reason", default="", help="why it is released")
    lst = hsub.add_parser("list", help="list holds (active ones unless --all)")
    lst.add_argument("--all", action="store_true", help="include released holds")
    lst.add_argument("--room", default=None, help="only this room")

    classes = sub.add_parser("classes", help="retention classes and their retention in days")
    csub = classes.add_subparsers(dest="classes_command")
    classes.set_defaults(classes_command="list")  # `retention classes` alone lists them
    csub.add_parser("list", help="list the classes")
    cset = csub.add_parser("set", help="change a class's retention (applies from the next maintenance run)")
    cset.add_argument("name")
    cset.add_argument("days", type=int)
    cset.add_argument("--by", required=True, dest="by", help="who changes it")
    cset.add_argument("--reason", default="")

    led = sub.add_parser("ledger", help="the deletion ledger: what retention deleted, when, by which run")
    led.add_argument("--run", type=uuid.UUID, default=None, help="only this run id")
    led.add_argument("--since", type=_day, default=None, help="only days from this UTC day on")
    led.add_argument("--limit", type=int, default=50, help="newest N rows (default 50)")


def _enforce_args(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    # On the sub-command the defaults are suppressed, so `retention --apply enforce` keeps --apply.
    default_flag: object = False if top else argparse.SUPPRESS
    default_day: object = None if top else argparse.SUPPRESS
    p.add_argument(
        "--apply",
        action="store_true",
        default=default_flag,
        help="drop what has expired (without it nothing is dropped: the command lists what would be)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=default_flag,
        help="list what would be dropped, change nothing (what happens without --apply anyway)",
    )
    p.add_argument(
        "--as-of",
        type=_day,
        default=default_day,
        help="list what would be dropped as of this UTC day (YYYY-MM-DD); not with --apply",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        default=default_flag,
        help="with --apply: run again every ROOMLOGS_MAINTENANCE_INTERVAL_SECONDS until SIGTERM or Ctrl-C "
        "(the retention service of a deployment whose workers run on their own role)",
    )


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


# --- commands -------------------------------------------------------------------------------------------
def partitions(settings: Settings, args: argparse.Namespace) -> int:
    async def run(conn: asyncpg.Connection) -> int:
        today = datetime.now(UTC).date()
        if not args.report_only:
            manager = PartitionManager()
            await manager.load(conn)
            made = await manager.premake(
                conn, sorted(await load_classes(conn)), today, settings.partitions_ahead_days
            )
            print(f"created {made} partition(s) for {today} .. +{settings.partitions_ahead_days} days")
        status = await partition_status(
            conn, today=today, dead_letter_retention_days=settings.dead_letter_retention_days
        )
        header = ("table", "class", "keep", "parts", "oldest", "newest", "today", "ahead", "expired")
        rows = [
            (
                s.table,
                s.retention_class or "-",
                f"{s.retention_days}d" if s.retention_days is not None else "none",
                str(s.partitions),
                str(s.oldest or "-"),
                str(s.newest or "-"),
                "yes" if s.has_today else "no",
                str(s.ahead_days),
                str(s.expired),
            )
            for s in status
        ]
        print_table(header, rows)
        if any(s.catchall_rows for s in status):
            print("rows in a DEFAULT (catch-all) partition: see `roomlogs retention check`")
        return 0

    return _with_connection(settings, run)


def retention(settings: Settings, args: argparse.Namespace) -> int:
    command = getattr(args, "retention_command", None) or "enforce"
    handler: dict[str, Command] = {
        "enforce": _enforce,
        "check": _check,
        "hold": _hold,
        "classes": _classes,
        "ledger": _ledger,
    }
    return handler[command](settings, args)


def _enforce(settings: Settings, args: argparse.Namespace) -> int:
    if args.apply and args.dry_run:
        raise RetentionError("--apply drops and --dry-run does not: give one of them")
    if args.loop:
        if not args.apply or args.as_of is not None:
            raise RetentionError("--loop drops what expires by the real clock: give it with --apply alone")
        return asyncio.run(_enforce_loop(settings))
    now = datetime.now(UTC)
    if args.as_of is not None:
        if args.apply:
            raise RetentionError("--as-of is not accepted with --apply (retention deletes by the real clock)")
        now = datetime.combine(args.as_of, now.timetz())

    async def run(conn: asyncpg.Connection) -> int:
        report = await maintain(conn, settings, now=now, dry_run=not args.apply)
        print(report.render())
        if report.drops_left_to is not None:
            raise RetentionError(_not_owner(report.drops_left_to))
        if not args.apply:
            if not (report.would_drop or report.would_purge_held):
                return 0
            print("nothing was dropped; to drop these now: roomlogs retention enforce --apply")
            return 1
        if report.skipped == SKIPPED_LOCKED:
            return 0
        return {"ok": 0, "partial": 1}.get(report.outcome, 2)

    return _with_connection(settings, run)


def _not_owner(owner: str) -> str:
    return (
        f"this role does not own the log tables, so it drops nothing: run it with a DSN of {owner} "
        "(the worker's own role only makes partitions ahead)"
    )


async def _enforce_loop(settings: Settings) -> int:
    """`retention enforce --apply --loop`: one run now, then one every maintenance interval, each on a fresh
    connection (an outage costs the runs it lasts, nothing more). Runs are logged as the worker's are (a run
    that dropped, deferred or failed says what, in ROOMLOGS_LOG_FORMAT); SIGTERM or Ctrl-C stops between
    runs (a run in hand finishes: its steps resume safely anyway)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    interval = settings.maintenance_interval_seconds
    log.info("retention: a run every %g s until stopped", interval)
    key = SealKey.load(settings.seal_key_file) if settings.seal_key_file else None
    if key is not None:
        log.info("retention: also sealing closed days, with key %s", key.key_id)
    witness = Publisher(settings)
    try:
        await _loop(settings, stopping, interval, key, witness)
    finally:
        await witness.close()
    log.info("retention: stopped")
    return 0


async def _loop(
    settings: Settings, stopping: asyncio.Event, interval: float, key: SealKey | None, witness: Publisher
) -> None:
    while not stopping.is_set():
        try:
            conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
        except RoomlogsError as e:
            if not e.retriable:  # a setting to fix: one line, exit 2 (pipeline.cli)
                raise
            log.warning("retention: %s; next try in %g s", e, interval)
        else:
            try:
                report = await maintain(conn, settings, now=datetime.now(UTC))  # logs what it did
            finally:
                await conn.close()
            if report.drops_left_to is not None:
                raise RetentionError(_not_owner(report.drops_left_to))
            if key is not None:
                pool = await db.create_pool(settings.postgres_dsn.get(), settings.postgres_schema, 1)
                try:
                    await seal_in_maintenance(pool, settings, key, witness)
                finally:
                    await pool.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    today = args.as_of or datetime.now(UTC).date()

    async def run(conn: asyncpg.Connection) -> int:
        result = await check_retention(
            conn, today=today, dead_letter_retention_days=settings.dead_letter_retention_days
        )
        print(result.render())
        return 1 if result.overdue else 0

    return _with_connection(settings, run)


def _hold(settings: Settings, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)

    async def run(conn: asyncpg.Connection) -> int:
        if args.hold_command == "place":
            h = await place_hold(conn, args.room_id, reason=args.reason, requested_by=args.by, now=now)
            print(f"hold {h.hold_id} placed on room {h.room_id} at {h.placed_at:%Y-%m-%d %H:%M:%S} UTC")
            print("rows of this room still stored are kept past retention until the hold is released")
        elif args.hold_command == "release":
            h = await release_hold(conn, args.hold_id, released_by=args.by, now=now, reason=args.reason)
            others = await list_holds(conn, room_id=h.room_id)
            print(f"hold {h.hold_id} on room {h.room_id} released")
            if others:
                print(f"room {h.room_id} stays held by hold(s) {', '.join(str(o.hold_id) for o in others)}")
            else:
                print("its logs fall back to normal retention from the next maintenance run")
        else:
            holds = await list_holds(conn, include_released=args.all, room_id=args.room)
            header = ("id", "room", "placed", "by", "released", "reason")
            rows = [
                (
                    str(h.hold_id),
                    h.room_id,
                    f"{h.placed_at:%Y-%m-%d %H:%M}",
                    h.requested_by,
                    f"{h.released_at:%Y-%m-%d %H:%M} by {h.released_by}" if h.released_at else "-",
                    h.reason,
                )
                for h in holds
            ]
            if rows:
                print_table(header, rows)
            else:
                print("no holds")
        return 0

    return _with_connection(settings, run)


def _classes(settings: Settings, args: argparse.Namespace) -> int:
    async def run(conn: asyncpg.Connection) -> int:
        if args.classes_command == "set":
            old, new = await set_retention_days(
                conn, args.name, args.days, changed_by=args.by, reason=args.reason
            )
            print(f"retention class {args.name}: {old} -> {new} days (applies from the next maintenance run)")
            if new < old:
                print(f"rows of {args.name} older than {new} days will be dropped by that run")
            return 0
        classes = await load_classes(conn)
        print_table(
            ("class", "retention", "description"),
            [(c.name, f"{c.retention_days} days", c.description) for c in classes.values()],
        )
        return 0

    return _with_connection(settings, run)


def _ledger(settings: Settings, args: argparse.Namespace) -> int:
    async def run(conn: asyncpg.Connection) -> int:
        entries = await read_ledger(conn, run_id=args.run, since_day=args.since, limit=args.limit)
        if not entries:
            print("the deletion ledger is empty" + (" for that selection" if args.run or args.since else ""))
            return 0
        header = ("when (UTC)", "action", "table", "class", "day", "rows", "held", "keep", "run")
        rows = [
            (
                f"{e.dropped_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                e.action,
                e.partition_name or e.table_name,
                e.retention_class or "-",
                str(e.day),
                str(e.row_count),
                str(e.rows_held),
                f"{e.retention_days}d",
                str(e.run_id)[:8],
            )
            for e in entries
        ]
        print_table(header, rows)
        return 0

    return _with_connection(settings, run)


# --- plumbing -------------------------------------------------------------------------------------------
def _with_connection(settings: Settings, body: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    async def run() -> int:
        conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
        try:
            # the newest retention table (0006): an older schema lacks it, and maybe others
            if await conn.fetchval("SELECT to_regclass('retention_detaching') IS NULL"):
                raise RetentionError(
                    f"schema {settings.postgres_schema!r} lacks the retention tables: run `roomlogs migrate`"
                )
            return await body(conn)
        except asyncpg.IntegrityConstraintViolationError as e:
            # a value the schema refuses (an over-long room id, ...): the user's input, not a crash
            raise RetentionError(f"refused by PostgreSQL: {e}") from e
        finally:
            await conn.close()

    return asyncio.run(run())


COMMANDS: dict[str, Command] = {"partitions": partitions, "retention": retention}
