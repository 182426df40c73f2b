"""A newcomer's first hour, in the README's order: `roomlogs demo`, then `roomlogs up` on the same work
directory (twice), with operator commands run from another shell that has no ROOMLOGS_* exports.

The embedded Tansu broker is memory-only (every `up` starts with an empty topic) while the embedded
PostgreSQL keeps its data in `.roomlogs/postgres`, so each `up` meets a database that already holds an
earlier run's rows and offsets of record. What the user must see anyway: the traffic `up` publishes is
stored from its first record on, the room of the printed sign-in link keeps receiving events, and
`roomlogs status` finds the running stack by itself (`.roomlogs/stack.json`), ignoring one that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import jwt
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.cli import stackfile
from pipeline.settings import Settings
from pipeline.stack import free_port

NOTICE = "using the embedded stack of `roomlogs up` (.roomlogs/stack.json)"
#: Records at the start of each partition that must be stored: the traffic is stored from its first record.
FIRST_RECORDS = 20
UP_READY_SECONDS = 300.0
LIVE_SECONDS = 90.0


def roomlogs(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`roomlogs ARGS` from `cwd` with exactly the ROOMLOGS_* variables in `env` (none of this process's).
    Past `timeout` it gets Ctrl-C (so that `demo` stops what it started) and the test fails."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("ROOMLOGS_")}
    command = [sys.executable, "-m", "pipeline.cli", *args]
    with subprocess.Popen(
        command,
        env={**clean, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)
            try:
                out, err = child.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                child.kill()
                out, err = child.communicate()
            pytest.fail(
                f"`roomlogs {' '.join(args)}` did not finish in {timeout:g} s:\n{(out + err)[-3000:]}"
            )
    return subprocess.CompletedProcess(command, child.returncode, out, err)


@contextlib.contextmanager
def nothing_left_behind(work: Path) -> Iterator[None]:
    """Fails the test when a process started under `work` (a broker, PostgreSQL, a worker, ...) outlives the
    commands that started it, and ends such processes either way."""
    try:
        yield
    finally:
        left = [p for p in psutil.process_iter() if p.pid != os.getpid() and _under(p, work)]
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
    assert not left, f"still running after `demo` and `up` stopped: {left}"


def _under(process: psutil.Process, work: Path) -> bool:
    try:
        return str(work) in process.cwd() or any(str(work) in arg for arg in process.cmdline())
    except psutil.Error:
        return False


# --- the Quick start, in order --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_then_up_twice_ingests_this_runs_traffic_and_commands_find_the_stack(tmp_path: Path) -> None:
    with nothing_left_behind(tmp_path):
        _first_hour(tmp_path)


def _first_hour(tmp_path: Path) -> None:
    demo = roomlogs("demo", "--events", "2000", "--no-progress", cwd=tmp_path, timeout=400)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert re.search(r"^export ROOMLOGS_POSTGRES_DSN=\S+$", demo.stdout, re.MULTILINE), demo.stdout[-3000:]
    assert not (tmp_path / ".roomlogs" / "stack.json").exists(), "demo must remove its stack.json"

    for run in ("first", "second"):
        began = datetime.now(UTC)
        with running_up(tmp_path) as printed:
            for name in ("ROOMLOGS_KAFKA_BOOTSTRAP", "ROOMLOGS_POSTGRES_DSN"):
                assert f"export {name}=" in printed["output"], printed["output"][-3000:]
            asyncio.run(_check_live(printed, began, run))
            status = roomlogs("status", cwd=tmp_path)
            assert status.returncode == 0, status.stderr[-3000:]
            assert NOTICE in status.stderr.splitlines(), status.stderr[-3000:]
            assert "events topic roomlogs.events" in status.stdout, status.stdout
        assert not (tmp_path / ".roomlogs" / "stack.json").exists(), f"{run} `up` must remove its stack.json"


@contextlib.contextmanager
def running_up(cwd: Path) -> Iterator[dict[str, str]]:
    """`roomlogs up` (no ROOMLOGS_* set) until it has printed everything; what it printed, by key, and the
    whole output as "output". Stopped with Ctrl-C (SIGINT) afterwards: it must exit 0."""
    out_path = cwd / f"up-{time.monotonic_ns()}.out"
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("ROOMLOGS_")}
    with open(out_path, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "up"], env=clean, cwd=cwd, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + UP_READY_SECONDS
        while "(written to" not in (output := out_path.read_text()):
            assert up.poll() is None, f"`roomlogs up` exited {up.returncode}:\n{output[-3000:]}"
            assert time.monotonic() < deadline, (
                f"`roomlogs up` not ready in {UP_READY_SECONDS:g} s:\n{output[-3000:]}"
            )
            time.sleep(0.5)
        printed = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+)\s{2,}(\S.*)$", output, re.MULTILINE)}
        yield {**printed, "output": output}
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            up.wait(120)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
    assert up.returncode == 0, out_path.read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_while_up_starts_stops_everything_and_says_only_that(tmp_path: Path) -> None:
    """Ctrl-C before the sign-in link is printed: `up` stops what it started at once (not after its wait
    for a room to link to), exits 0, and does not report the interrupted wait as a failure."""
    with nothing_left_behind(tmp_path):
        out_path = tmp_path / "up.out"
        up = _spawn_up(tmp_path, out_path)
        try:
            deadline = time.monotonic() + UP_READY_SECONDS
            while "created topics" not in out_path.read_text():  # the worker and the console are next
                assert up.poll() is None and time.monotonic() < deadline, out_path.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(3)
            os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: the whole foreground job gets it
            up.wait(90)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
        output = out_path.read_text()
        assert up.returncode == 0, output[-3000:]
        assert output.splitlines()[-1] == "stopping ...", output[-3000:]
        assert "Traceback" not in output and "no room of this run" not in output, output[-3000:]
        assert not (tmp_path / ".roomlogs" / "stack.json").exists()


def _spawn_up(cwd: Path, out_path: Path) -> subprocess.Popen[bytes]:
    """`roomlogs up` (no ROOMLOGS_* set) as a terminal's foreground job: its own process group."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("ROOMLOGS_")}
    with open(out_path, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "up"], env=clean, cwd=cwd, stdout=out, stderr=out,
            process_group=0,
        )  # fmt: skip


def _start_up(cwd: Path, out_path: Path) -> subprocess.Popen[bytes]:
    """`_spawn_up`, once it has printed it all."""
    up = _spawn_up(cwd, out_path)
    deadline = time.monotonic() + UP_READY_SECONDS
    while "(written to" not in out_path.read_text():
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            pytest.fail(f"`roomlogs up` not ready:\n{out_path.read_text()[-3000:]}")
        time.sleep(0.5)
    return up


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["terminal-closed", "sigterm"])
def test_closing_the_terminal_of_up_stops_everything_as_ctrl_c_does(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """The terminal or ssh session that runs `up` closes (SIGHUP to its job), or a service manager stops it:
    it stopped only itself, leaving the broker, PostgreSQL and the worker running, and the next `up` failed
    on PostgreSQL's lock file. Now it stops what it started, as on Ctrl-C."""
    with nothing_left_behind(tmp_path):
        out_path = tmp_path / "up.out"
        up = _start_up(tmp_path, out_path)
        try:
            os.killpg(up.pid, sig)
            up.wait(120)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
        output = out_path.read_text()
        assert up.returncode == 0, output[-3000:]
        assert output.splitlines()[-1] == "stopping ...", output[-3000:]
        assert not (tmp_path / ".roomlogs" / "stack.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_next_up_stops_what_an_up_killed_outright_left_running(tmp_path: Path) -> None:
    """`up` killed outright (kill -9: nothing can stop its children) leaves its broker, PostgreSQL, worker,
    API and traffic running. Found from outside: the next `up` named PostgreSQL alone, and once that was
    stopped the old worker, API and traffic ran on (the worker retrying its dead database). Now the next
    `up` finds them through stack.json (each pid with its start time), says so in one line, stops them all,
    and starts on the same data."""
    with nothing_left_behind(tmp_path):
        up = _start_up(tmp_path, tmp_path / "up.out")
        recorded = json.loads((tmp_path / ".roomlogs" / "stack.json").read_text())["processes"]
        assert {p["name"] for p in recorded} == {"tansu", "postgres", "worker", "api", "traffic"}
        up.kill()
        up.wait()
        left = [psutil.Process(p["pid"]) for p in recorded]
        assert all(p.is_running() for p in left)
        again = _start_up(tmp_path, tmp_path / "up-again.out")
        output = (tmp_path / "up-again.out").read_text()
        (line,) = [x for x in output.splitlines() if "was left running when it was killed" in x]
        for p in recorded:
            assert f"{p['name']} (pid {p['pid']})" in line, line
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left)
        os.killpg(again.pid, signal.SIGINT)
        assert again.wait(120) == 0, (tmp_path / "up-again.out").read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_postgresql_left_running_by_a_killed_up_is_named_with_how_to_stop_it(tmp_path: Path) -> None:
    """`up` killed outright before it wrote stack.json (or with that file gone) leaves its PostgreSQL
    running on the work directory, and nothing records it. The next `up` says so in one line, with the pid
    to stop, instead of PostgreSQL's lock-file error; and once that server is stopped, `up` starts again on
    the same data."""
    with nothing_left_behind(tmp_path):
        up = _start_up(tmp_path, tmp_path / "up.out")
        up.kill()
        up.wait()
        (tmp_path / ".roomlogs" / "stack.json").unlink()
        pidfile = tmp_path / ".roomlogs" / "postgres" / "data" / "postmaster.pid"
        left_pid = int(pidfile.read_text().splitlines()[0])
        assert psutil.pid_exists(left_pid)
        try:
            again = roomlogs("up", cwd=tmp_path, timeout=180)

            assert again.returncode == 2, again.stdout + again.stderr
            (line,) = [x for x in again.stderr.splitlines() if x.startswith("roomlogs up:")]
            assert f"a PostgreSQL server already runs on {pidfile.parent} (pid {left_pid}" in line, line
            assert f"`kill -INT {left_pid}`" in line, line
            assert "Traceback" not in again.stderr
        finally:  # what the killed `up` left: the server as its line says, the rest as an operator would
            os.kill(left_pid, signal.SIGINT)
            _, alive = psutil.wait_procs([psutil.Process(left_pid)], timeout=60)
            assert not alive, "the command the line gives stops the server"
            for process in psutil.process_iter():
                if process.pid != os.getpid() and _under(process, tmp_path):
                    with contextlib.suppress(psutil.Error):
                        process.kill()
        up = _start_up(tmp_path, tmp_path / "up-again.out")
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(120) == 0, (tmp_path / "up-again.out").read_text()[-3000:]


async def _check_live(printed: dict[str, str], began: datetime, run: str) -> None:
    """This run's traffic is stored from the first record of every partition it writes to, rows keep
    arriving, and the sign-in link's room receives some of them."""
    linked_at = datetime.now(UTC)
    room = re.fullmatch(r"\S+, owner of (\S+) \(.*\)", printed["sign_in_as"])
    assert room, printed["sign_in_as"]
    ends = await _end_offsets(printed["kafka_bootstrap"], printed["events_topic"])
    busy = sorted(p for p, end in ends.items() if end >= FIRST_RECORDS)
    assert busy, f"the {run} `up` published no traffic: {ends}"
    conn = await asyncpg.connect(
        printed["postgres_dsn"], server_settings={"search_path": printed["postgres_schema"]}
    )
    try:
        since_start = "SELECT count(*) FROM events WHERE ingested_at >= $1"
        before = await conn.fetchval(since_start, began)
        deadline = time.monotonic() + LIVE_SECONDS
        while True:
            first = {
                r["src_partition"]: r["first"]
                for r in await conn.fetch(
                    """SELECT src_partition, min(src_offset) AS first FROM events
                        WHERE ingested_at >= $1 GROUP BY 1""",
                    began,
                )
            }
            missing = [p for p in busy if first.get(p, FIRST_RECORDS) >= FIRST_RECORDS]
            in_room = await conn.fetchval(
                "SELECT count(*) FROM events WHERE room_id = $1 AND ingested_at >= $2",
                room.group(1),
                linked_at,
            )
            after = await conn.fetchval(since_start, began)
            if not missing and in_room > 0 and after > before:
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        offsets = [
            dict(r) for r in await conn.fetch("SELECT partition, next_offset FROM ingest_offsets ORDER BY 1")
        ]
    finally:
        await conn.close()
    assert not missing, (
        f"the {run} `up`: partitions {missing} of the events topic (end offsets {ends}) have none of this "
        f"run's first {FIRST_RECORDS} records stored (lowest offset stored this run: {first}); "
        f"offsets of record: {offsets}"
    )
    assert after > before, f"the {run} `up`: no rows stored while its traffic runs"
    assert in_room > 0, (
        f"the {run} `up`: the sign-in room {room.group(1)} received nothing in {LIVE_SECONDS:g} s"
    )


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items()}


# --- finding the stack ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _ready_worker(partitions: list[int]) -> Iterator[str]:
    """An HTTP server answering /readyz as a ready worker holding `partitions`; its base URL."""
    body = json.dumps({"status": "ok", "paused": False, "partitions": partitions}).encode()

    class Readyz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def listening() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def _write(path: Path, env: dict[str, str], pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": "up", "pid": pid, "env": env}))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_running_stack_is_found_and_explicit_settings_win(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    with listening() as port:
        env = {
            "ROOMLOGS_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "ROOMLOGS_POSTGRES_DSN": "postgresql://x@h/db",
        }
        _write(path, env, os.getpid())
        found = stackfile.discovered_env({}, path)
        assert found is not None and found.env == env
        assert found.notice == f"using the embedded stack of `roomlogs up` ({path})"
        for explicit in ("ROOMLOGS_KAFKA_BOOTSTRAP", "ROOMLOGS_POSTGRES_DSN"):
            assert stackfile.discovered_env({explicit: "set"}, path) is None


def test_a_stack_that_is_gone_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    with listening() as port:  # its `up` was killed; something still answers on the port
        _write(path, {"ROOMLOGS_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}, _dead_pid())
        assert stackfile.discovered_env({}, path) is None
    # its pid was reused by another process, but its broker is gone
    _write(path, {"ROOMLOGS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}, os.getpid())
    assert stackfile.discovered_env({}, path) is None
    path.write_text("{not json")
    assert stackfile.discovered_env({}, path) is None


def test_a_stack_whose_writers_pid_another_process_took_is_gone(tmp_path: Path) -> None:
    """An outside tester: `up` killed outright (its broker still answering), its pid now another live
    process's; the next `up` said "`roomlogs up` (pid N) already runs". The file records when its writer
    started, and a pid that started at another time is not its writer."""
    path = tmp_path / "stack.json"
    with listening() as port:
        env = {"ROOMLOGS_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
        _write(path, env, os.getpid())
        document = json.loads(path.read_text())
        assert stackfile.running(path) is not None  # a file of the old shape (no start time): as before
        document["started"] = psutil.Process().create_time()
        path.write_text(json.dumps(document))
        assert stackfile.running(path) is not None  # this process wrote it, and runs
        document["started"] -= 30.0  # its writer started earlier: this process only has its pid now
        path.write_text(json.dumps(document))
        assert stackfile.running(path) is None
        assert stackfile.discovered_env({}, path) is None


def test_the_stack_names_its_signing_key_for_other_shells(tmp_path: Path) -> None:
    """`roomlogs seals run` from another shell signs with the key the stack's worker seals with."""
    key = str(tmp_path / ".roomlogs" / "seal-key.pem")
    settings = Settings().replace(kafka_bootstrap="127.0.0.1:1", seal_key_file=key)
    assert stackfile.stack_env(settings)["ROOMLOGS_SEAL_KEY_FILE"] == key
    assert f"export ROOMLOGS_SEAL_KEY_FILE={key}" in stackfile.export_lines(stackfile.stack_env(settings))
    assert "ROOMLOGS_SEAL_KEY_FILE" not in stackfile.stack_env(Settings())


def test_another_sign_in_link_for_the_console_of_up_from_another_shell(tmp_path: Path) -> None:
    """The link `up` prints opens one session; `roomlogs api sign-in-link` run here makes the next one,
    signed with the stack's key for the port its API serves on (kept in stack.json as `api_env`)."""
    key = "k" * 64
    api_env = {
        "ROOMLOGS_API_JWT_KEY": key,
        "ROOMLOGS_API_JWT_ALGORITHM": "HS256",
        "ROOMLOGS_API_HOST": "127.0.0.1",
        "ROOMLOGS_API_PORT": "45678",
    }
    path = tmp_path / ".roomlogs" / "stack.json"
    with listening() as port:
        settings = Settings().replace(kafka_bootstrap=f"127.0.0.1:{port}")
        stackfile.write(path, {}, settings, command="up", api_env=api_env)
        done = roomlogs("api", "sign-in-link", "--sub", "user-7", "--room", "room-1", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert NOTICE in done.stderr.splitlines()
        link = done.stdout.strip()
        assert link.startswith("http://127.0.0.1:45678/console/sign-in?next=/console/rooms/room-1/#token=")
        claims = jwt.decode(link.split("#token=")[1], key, algorithms=["HS256"])
        assert claims["sub"] == "user-7"
        # your own API's key wins: the stack's is not used
        done = roomlogs(
            "api",
            "sign-in-link",
            "--sub",
            "user-7",
            cwd=tmp_path,
            env={"ROOMLOGS_API_JWT_KEY": "m" * 64, "ROOMLOGS_API_JWT_ALGORITHM": "HS256"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        jwt.decode(done.stdout.strip().split("#token=")[1], "m" * 64, algorithms=["HS256"])
        assert ":45678/" not in done.stdout
    # the stack gone and no key of yours: one line saying so (it named `api token` and RS256 before)
    done = roomlogs("api", "sign-in-link", "--sub", "user-7", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("roomlogs api: no key to sign with: no `roomlogs up` with a console runs"), line


@pytest.mark.parametrize("command", ["up", "demo"])
def test_a_second_stack_on_a_running_one_is_one_line_and_starts_nothing(tmp_path: Path, command: str) -> None:
    work = tmp_path / ".roomlogs"
    with listening() as port:  # the running stack's broker
        _write(work / "stack.json", {"ROOMLOGS_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}, os.getpid())
        done = roomlogs(command, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"roomlogs {command}: `roomlogs up` (pid {os.getpid()}) already runs on .roomlogs; use that one "
        "(commands run here find it), stop it first (Ctrl-C), or give --work-dir another directory"
    ]
    assert sorted(p.name for p in work.iterdir()) == ["stack.json"]  # no broker, PostgreSQL or key started


async def test_status_uses_the_stack_of_this_directory(
    ingest_settings: Settings, postgres_dsn: str, tmp_path: Path
) -> None:
    """`roomlogs simulate` and `roomlogs status` with no exports, in a directory whose `.roomlogs/stack.json`
    names a running stack (the session's broker and PostgreSQL, written by this process as `up` writes it)."""
    stackfile.write(tmp_path / ".roomlogs" / "stack.json", {}, ingest_settings, command="up")
    for command in (["simulate", "--events", "20", "--no-progress"], ["status"]):
        done = roomlogs(*command, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert NOTICE in done.stderr.splitlines(), done.stderr
    assert f"events topic {ingest_settings.events_topic}" in done.stdout, done.stdout
    assert "total lag: 20 records" in done.stdout, done.stdout  # what simulate published, not yet ingested
    assert done.stderr.splitlines() == [NOTICE], done.stderr  # no log lines of its Kafka clients
    # without --worker, the stack's own worker fills the paused and worker columns
    with _ready_worker(partitions=[0, 1]) as url:
        stackfile.write(
            tmp_path / ".roomlogs" / "stack.json",
            {"metrics_url": f"{url}/metrics"},
            ingest_settings,
            command="up",
        )
        done = roomlogs("status", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line[:1].isdigit()]
    assert rows and all(row[-2:] == ["no", url] for row in rows if row[0] in ("0", "1")), done.stdout
    # a setting given explicitly wins over the file's
    typo = ingest_settings.postgres_schema + "_typo"
    done = roomlogs("status", cwd=tmp_path, env={"ROOMLOGS_POSTGRES_SCHEMA": typo})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1].startswith(f"roomlogs status: ROOMLOGS_POSTGRES_SCHEMA={typo!r}")
    # with a DSN of its own, the command does not look for a stack
    done = roomlogs("status", cwd=tmp_path, env={"ROOMLOGS_POSTGRES_DSN": postgres_dsn})
    assert NOTICE not in done.stderr


async def test_seals_of_a_stack_with_nothing_sealed_yet_say_why(ingest_settings: Settings) -> None:
    """On the first day of `up` nothing is sealed: `seals list` and `seals heads` say why on stderr, and
    print nothing on stdout (one line per seal or head)."""
    env = ingest_settings.to_env()
    for command in (["seals", "list"], ["seals", "list", "--room", "room-42"], ["seals", "heads"]):
        done = await asyncio.to_thread(roomlogs, *command, cwd=Path.cwd(), env=env)
        assert done.returncode == 0 and done.stdout == "", done.stderr[-3000:]
        [said] = done.stderr.splitlines()
        assert said.startswith("# no ") and "sealed once it has closed" in said, said
        assert ("room-42" in said) == ("room-42" in command), said
