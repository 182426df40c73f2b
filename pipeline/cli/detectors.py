"""`roomlogs detectors`: what the detectors run with, and operators' changes to it, without a restart.

    roomlogs detectors show [--class CLASS | --room ROOM] [--json]
    roomlogs detectors set DETECTOR (--class CLASS | --room ROOM) [--param NAME=VALUE ...]
                           [--enable | --disable] --by NAME --reason TEXT [--json]
    roomlogs detectors reset DETECTOR (--class CLASS | --room ROOM) --by NAME --reason TEXT [--json]
    roomlogs detectors history [--limit N] [--json]

`show`: every detector's parameters for a retention class's rooms (the built-in defaults, then the class's
setting) or one room (then the room's, over its class's: --class names the room's class when it is not
the default), and where each value comes from. `set` merges --param NAME=VALUE pairs (whole numbers, checked
against each parameter's range) into the class's or room's setting and may enable or disable the detector
there; `reset` removes that setting. Each change is appended, with --by and --reason, to
`detector_setting_changes` in its transaction (`history` lists them, newest first). Workers read the
settings again within ROOMLOGS_DETECTOR_SETTINGS_TTL_SECONDS; alerts already stored stay as they are.

Reads ROOMLOGS_POSTGRES_DSN and ROOMLOGS_POSTGRES_SCHEMA (the schema's owner writes the settings).
Exit 0 done, 2 an error (an unknown detector or parameter, a value out of range).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson

from pipeline.cli.tables import print_table
from pipeline.detectors import params as P
from pipeline.detectors.engine import Detectors
from pipeline.errors import ConfigurationError
from pipeline.settings import Settings
from pipeline.storage import db, detector_settings

__all__ = ["COMMANDS", "add_commands"]


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "detectors",
        help="show and change the detectors' parameters per retention class or room (audited)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="detectors_command")
    show = sub.add_parser("show", help="every detector's parameters for a class's rooms or one room")
    _scope(show, required=False)
    show.add_argument("--json", action="store_true")
    put = sub.add_parser("set", help="change a detector's parameters for a class or a room")
    put.add_argument("detector", choices=P.DETECTORS)
    _scope(put, required=True)
    put.add_argument("--param", "-p", dest="params", action="append", default=[], metavar="NAME=VALUE")
    on = put.add_mutually_exclusive_group()
    on.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    on.add_argument("--disable", dest="enabled", action="store_const", const=False)
    _audit(put)
    put.add_argument("--json", action="store_true")
    reset = sub.add_parser("reset", help="remove a class's or room's setting of a detector")
    reset.add_argument("detector", choices=P.DETECTORS)
    _scope(reset, required=True)
    _audit(reset)
    reset.add_argument("--json", action="store_true")
    hist = sub.add_parser("history", help="changes of the settings, newest first")
    hist.add_argument("--limit", type=int, default=50)
    hist.add_argument("--json", action="store_true")


def _scope(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--class", dest="retention_class", help="a retention class (its rooms' defaults)")
    p.add_argument("--room", help="one room (over its class's settings)")
    p.set_defaults(scope_required=required)


def _audit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", required=True, help="who makes the change (recorded)")
    p.add_argument("--reason", required=True, help="why (recorded)")


def _where(args: argparse.Namespace) -> tuple[str, str]:
    if args.room and args.scope_required and args.retention_class:
        raise ConfigurationError("give --class or --room, not both")
    if args.room:
        return "room", args.room
    if args.retention_class:
        return "class", args.retention_class
    raise ConfigurationError("give --class CLASS or --room ROOM")


def _pairs(items: list[str], detector: str) -> dict[str, int]:
    raw: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigurationError(f"{item!r}: parameters are NAME=VALUE")
        try:
            raw[name] = int(value)
        except ValueError:
            raw[name] = value
    try:
        return P.check_params(detector, raw)
    except (ValueError, TypeError) as e:
        raise ConfigurationError(str(e)) from None


async def _run(settings: Settings, args: argparse.Namespace) -> Any:
    conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
    try:
        command = args.detectors_command or "show"
        if command == "set":
            scope, scope_id = _where(args)
            params = _pairs(args.params, args.detector)
            if not params and args.enabled is None:
                raise ConfigurationError("nothing to set: give --param NAME=VALUE, --enable or --disable")
            o = await detector_settings.set_override(
                conn, scope, scope_id, args.detector, enabled=args.enabled, params=params,
                changed_by=args.by, reason=args.reason,
            )  # fmt: skip
            return {"set": {"scope": scope, "scope_id": scope_id, "detector": o.detector,
                            "enabled": o.enabled, "params": dict(o.params)}}  # fmt: skip
        if command == "reset":
            scope, scope_id = _where(args)
            done = await detector_settings.reset(
                conn, scope, scope_id, args.detector, changed_by=args.by, reason=args.reason
            )
            return {"reset": done, "scope": scope, "scope_id": scope_id, "detector": args.detector}
        if command == "history":
            return [
                {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(r).items()}
                for r in await detector_settings.changes(conn, args.limit)
            ]
        return await _show(conn, settings, args)
    finally:
        await conn.close()


async def _show(conn: Any, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    cls = getattr(args, "retention_class", None) or settings.default_retention_class
    room = getattr(args, "room", None) or ""
    detectors = Detectors()
    await detectors.refresh(conn, force=True)
    out: dict[str, Any] = {"retention_class": cls, "room_id": room or None, "detectors": {}}
    overrides = {(o.detector, o.scope, o.scope_id): o for o in await detector_settings.load(conn)}
    for name in P.DETECTORS:
        eff = detectors.effective(name, cls, room)
        source = {k: "built-in" for k in eff.params}
        for k in P.CLASS_DEFAULTS.get(cls, {}).get(name, {}):
            source[k] = f"built-in for {cls}"
        for scope, scope_id in (("class", cls), ("room", room)):
            o = overrides.get((name, scope, scope_id))
            if o is not None:
                for k in o.params:
                    source[k] = f"{scope} {scope_id} (by {o.updated_by})"
        out["detectors"][name] = {"enabled": eff.enabled, "params": dict(eff.params), "from": source}
    return out


def detectors_command(settings: Settings, args: argparse.Namespace) -> int:
    result = asyncio.run(_run(settings, args))
    if getattr(args, "json", False):
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    elif isinstance(result, list):
        _print_history(result)
    elif "set" in result:
        o = result["set"]
        params = ", ".join(f"{k}={v}" for k, v in o["params"].items()) or "no parameter"
        on = {True: "enabled", False: "disabled", None: "on or off as inherited"}[o["enabled"]]
        print(f"{o['detector']} for {o['scope']} {o['scope_id']}: {params}; {on} (recorded; workers use it "
              f"within {settings.detector_settings_ttl_seconds:g} s)")  # fmt: skip
    elif "reset" in result:
        where = f"{result['detector']} for {result['scope']} {result['scope_id']}"
        print(
            f"{where}: setting removed (recorded); its rooms fall back to the settings above it"
            if result["reset"]
            else f"{where}: no setting to remove, nothing changed"
        )
    else:
        print(
            f"retention class {result['retention_class']}"
            + (f", room {result['room_id']}" if result["room_id"] else "")
        )
        for name, d in result["detectors"].items():
            params = ", ".join(f"{k}={v} ({d['from'][k]})" for k, v in d["params"].items())
            print(f"  {name:<17} {'on ' if d['enabled'] else 'off'}  {params}")
    return 0


def _print_history(changes: list[dict[str, Any]]) -> None:
    if not changes:
        print("no change of the detectors' settings recorded")
        return

    def setting(enabled: bool | None, params: Any) -> str:
        if enabled is None and params is None:
            return "-"
        if isinstance(params, str):
            params = orjson.loads(params)
        shown = ", ".join(f"{k}={v}" for k, v in (params or {}).items())
        state = {True: "on", False: "off", None: ""}[enabled]
        return " ".join(x for x in (state, shown) if x) or "(empty)"

    print_table(
        ("changed at (UTC)", "by", "action", "scope", "detector", "before", "after", "reason"),
        [
            (
                str(c["changed_at"])[:19].replace("T", " "),
                str(c["changed_by"]),
                str(c["action"]),
                f"{c['scope']} {c['scope_id']}",
                str(c["detector"]),
                setting(c["enabled_before"], c["params_before"]),
                setting(c["enabled_after"], c["params_after"]),
                str(c["reason"]),
            )
            for c in changes
        ],
    )


COMMANDS = {"detectors": detectors_command}
