"""The faults, each hitting a running stream: what is done, when (seeded), and what is measured from when.

Every wait and every choice (which broker, which worker, how long) comes from the run's seeded random
generator, so the same seed replays the same schedule. Each fault leaves a Mark (monitor.py) for the
time to recover: from its start when the survivors should take over, from its end when everyone must
wait it out.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from . import backup, pgwatch
from .group import Worker
from .harness import HarnessError, Run, Scenario


async def leader_kill9(run: Run) -> None:
    """kill -9 of the broker leading a (seeded) partition of the events topic, then its restart."""
    cluster = run.stack.cluster
    leaders = await run.leaders()
    victim = leaders[run.rng.randrange(run.partitions)]
    led = {p for p, node in leaders.items() if node == victim}
    await run.pause(1.0, 3.0)
    await asyncio.to_thread(cluster.kill9, victim)
    run.progress.mark(f"kill -9 of broker {victim}", led, from_start=True)
    run.note(f"killed broker {victim} (-9), leader of partitions {sorted(led)}")
    down = await run.pause(8.0, 12.0)
    started = time.monotonic()
    await asyncio.to_thread(cluster.restart, victim)
    served = time.monotonic() - started
    run.note(
        f"restarted broker {victim} after {down:.1f} s down (it served again {served:.1f} s later); "
        f"leaders now {await run.leaders()}"
    )


async def worker_kill9(run: Run, rounds: int = 5) -> None:
    """kill -9 of a (seeded) worker, restarted after a seeded delay as a supervisor would; five times."""
    group = run.group
    for n in range(1, rounds + 1):
        await run.pause(2.0, 4.0)
        held = await group.assignment()
        victim = run.rng.choice([w for w in group.workers if held[w.name]] or group.workers)
        victim.kill9()
        mark = run.progress.mark(
            f"kill -9 of {victim.name} ({n}/{rounds})", held[victim.name], from_start=True
        )
        # before or after the session timeout: restarted in time it takes its partitions back (static
        # membership); later, the other worker has taken them and the group rebalances when it returns
        delay = await run.pause(0.5, 8.0)
        victim.start()
        recovered = await run.until_recovered(mark, 90.0)
        run.note(
            f"kill -9 {n}: {victim.name} (partitions {sorted(held[victim.name])}), restarted after "
            f"{delay:.1f} s; "
            + (f"its partitions progressed {recovered:.1f} s after the kill" if recovered else "no progress")
        )
        if not await group.wait_assigned(run.partitions, 90.0, members=2):
            run.note(f"kill -9 {n}: the group had not re-formed within 90 s: {await group.assignment()}")


async def _stop_outside_a_transaction(run: Run, victim: Worker, conn: asyncpg.Connection) -> bool:
    """SIGSTOP `victim` at a moment none of its sessions is inside a transaction, so that the other worker
    can take over and write; True when it did. Caught inside one after all, it is let go at once (a stop
    of milliseconds) and tried again."""
    for _ in range(40):
        pids = await pgwatch.backends(conn, victim, run.postgres_port)
        if not await pgwatch.in_transaction(conn, pids):
            victim.sigstop()
            await asyncio.sleep(0.02)  # the signal is delivered; a transaction begun meanwhile shows now
            if not await pgwatch.in_transaction(conn, pids):
                return True
            victim.sigcont()
        await asyncio.sleep(0.05)
    victim.sigstop()
    return False


async def _blocked_seconds(conn: asyncpg.Connection, pids: list[int], seconds: float) -> float:
    """Wait `seconds`; return for about how long other sessions waited on locks `pids` hold."""
    blocked, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if await pgwatch.blocking(conn, pids):
            blocked += 0.5
    return blocked


async def worker_sigstop(run: Run) -> None:
    """SIGSTOP of a worker beyond its session timeout, while the other takes its partitions; then SIGCONT.

    The stop lands between two of its write transactions, so the other worker can take over and write.
    The stopped worker wakes with records it fetched before the stop in hand and writes them before it
    learns that it left the group: the offsets of record (the fence) and the event-id registry must keep
    them from being stored again. The workers' counters show how many records were fenced off.
    """
    group = run.group
    held = await group.assignment()
    victim = run.rng.choice([w for w in group.workers if held[w.name]] or group.workers)
    other = next(w for w in group.workers if w is not victim)
    before = await group.counters()
    timeout = run.settings.kafka_session_timeout_seconds
    conn = await asyncpg.connect(run.stack.postgres.dsn, timeout=10)
    try:
        await run.pause(1.0, 3.0)
        between = await _stop_outside_a_transaction(run, victim, conn)
        run.progress.mark(f"SIGSTOP of {victim.name}", held[victim.name], from_start=True)
        stopped = run.rng.uniform(timeout + 4.0, timeout + 8.0)
        pids = await pgwatch.backends(conn, victim, run.postgres_port)
        blocked = await _blocked_seconds(conn, pids, stopped)
    finally:
        await conn.close()
    taken = await other.partitions(group.http)
    victim.sigcont()
    run.note(
        f"{victim.name} stopped for {stopped:.1f} s (session timeout {timeout:.0f} s) holding "
        f"{sorted(held[victim.name])}, "
        + ("between two transactions" if between else "inside a transaction (no moment between two found)")
        + f"; meanwhile {other.name} held {sorted(taken)}"
    )
    if blocked:
        run.note(f"for ~{blocked:.1f} s of the stop, other sessions waited on locks held by {victim.name}")
    await asyncio.sleep(8.0)  # it writes what it had in hand, finds itself out of the group, rejoins
    after = await group.counters()
    for w in group.workers:
        fenced = after[w.name]["fenced"] - before[w.name]["fenced"]
        duplicates = after[w.name]["duplicates"] - before[w.name]["duplicates"]
        run.note(
            f"{w.name}{' (the stopped one)' if w is victim else ''}: {fenced:.0f} record(s) fenced off as "
            f"already written by another transaction, {duplicates:.0f} copy(ies) caught by the event-id "
            "registry"
        )


async def postgres_stop(run: Run, seconds: float = 20.0) -> None:
    """PostgreSQL stopped (fast shutdown) for 20 s, then started again."""
    postgres = run.stack.postgres
    await run.pause(1.0, 3.0)
    started = time.monotonic()
    await asyncio.to_thread(postgres.stop)
    await asyncio.sleep(min(5.0, seconds))
    run.note(f"PostgreSQL down; workers paused: {await run.group.paused()}")
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    await asyncio.to_thread(postgres.restart)
    run.progress.mark("PostgreSQL back", range(run.partitions), from_start=False)
    run.note(f"PostgreSQL was down {time.monotonic() - started:.1f} s (restart included)")


async def broker_restart_while_paused(run: Run) -> None:
    """PostgreSQL stopped until the workers pause; the group coordinator restarted meanwhile; PostgreSQL
    back."""
    postgres, cluster, group = run.stack.postgres, run.stack.cluster, run.group
    await run.pause(1.0, 3.0)
    await asyncio.to_thread(postgres.stop)
    for _ in range(100):  # until every worker says it paused (at most ~30 s)
        paused = await group.paused()
        if all(paused.values()):
            break
        await asyncio.sleep(0.3)
    victim = await run.coordinator()
    run.note(f"PostgreSQL down; workers paused: {paused}; restarting broker {victim} (the group coordinator)")
    started = time.monotonic()
    await asyncio.to_thread(cluster.restart, victim)
    run.note(f"broker {victim} restarted (served again after {time.monotonic() - started:.1f} s)")
    await run.pause(1.0, 3.0)
    await asyncio.to_thread(postgres.restart)
    run.progress.mark("PostgreSQL back after the broker restart", range(run.partitions), from_start=False)


async def _offsets_now(run: Run, what: str) -> dict[int, int]:
    """The offsets of record as they stand now (a sample begun after this call)."""
    offsets = await run.progress.sample_after(time.monotonic())
    if offsets is None:
        raise HarnessError(f"could not read the offsets of record {what}")
    return offsets


async def _until_reached(
    run: Run, since: float, offsets: dict[int, int], timeout_seconds: float
) -> float | None:
    """Wait until every partition stands at or past `offsets`; the seconds from `since` (None: not within)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        reached = run.progress.reached(since, offsets)
        if reached is not None:
            return reached
        await asyncio.sleep(0.2)
    return None


async def postgres_restore(run: Run) -> None:
    """A pg_dump of the scenario's schema mid-stream; the stream goes on a seeded 3-8 s (the publishers
    never stop); both workers stopped (SIGTERM), the schema restored from the dump, the workers started
    again. The group's offsets committed to Kafka are then past the restored offsets of record: each worker
    must find the database behind (an `offset_changes` row per partition) and read again, from the
    restored offsets, what the database lacks."""
    settings, group, progress = run.settings, run.group, run.progress
    dsn, schema = settings.postgres_dsn.get(), settings.postgres_schema
    dump = run.work_dir / "schema.dump"
    await run.pause(1.0, 3.0)
    started = time.monotonic()
    await backup.dump_schema(dsn, schema, dump)
    run.note(f"pg_dump of schema {schema}: {time.monotonic() - started:.1f} s, {dump.stat().st_size:,} bytes")
    went_on = await run.pause(3.0, 8.0)
    started = time.monotonic()
    for name, code in (await group.stop()).items():
        if code not in (0, None):
            run.problem(f"{name} exited with code {code} on SIGTERM before the restore (log {run.work_dir})")
    stopped = time.monotonic() - started
    at_stop = await _offsets_now(run, "after the workers stopped")
    started = time.monotonic()
    await backup.restore_schema(dsn, schema, dump)
    restored = await _offsets_now(run, "after the restore")
    lacking = {p: n - restored.get(p, 0) for p, n in sorted(at_stop.items())}
    run.note(
        f"the stream went on {went_on:.1f} s after the dump; workers stopped (SIGTERM) in {stopped:.1f} s, "
        f"schema restored in {time.monotonic() - started:.1f} s: it lacked {sum(lacking.values()):,} "
        f"records the workers had written (per partition {lacking})"
    )
    mark = progress.mark(
        "the workers' restart on the restored database", range(run.partitions), from_start=False
    )
    group.start()
    recovered = await run.until_recovered(mark, 90.0)
    back = await _until_reached(run, mark.at, at_stop, 90.0)
    run.note(
        (
            f"every partition progressed {recovered:.1f} s after the restart"
            if recovered is not None
            else "no progress"
        )
        + "; "
        + (
            f"back where it stood at the stop {back:.1f} s after it"
            if back is not None
            else "not back where it stood at the stop within 90 s"
        )
    )
    reread = await backup.database_behind(dsn, schema, settings.consumer_group, settings.events_topic)
    distinct = sum(reread.distinct.values())
    counters = await group.counters()
    run.note(
        f"database_behind found {reread.findings} time(s), on partitions {sorted(reread.distinct)}: "
        f"{reread.recorded:,} records to read again (sum of reread_records"
        + (f"; {distinct:,} distinct offsets" if distinct != reread.recorded else "")
        + "); copies caught by the event-id registry since the restart: "
        + ", ".join(f"{name} {c['duplicates']:.0f}" for name, c in counters.items())
    )


async def _cut_inside_a_transaction(run: Run, victim: Worker, conn: asyncpg.Connection) -> bool:
    """Cut the link the moment one of `victim`'s sessions is inside a write transaction, so that the cut
    leaves that transaction open on the server; True when it did. A cut that missed (the transaction
    committed first) is healed at once and tried again."""
    namespace = run.namespace
    assert namespace is not None
    for _ in range(10):
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # one round trip per look: cut as soon as one is seen
            if await pgwatch.in_transaction(conn, await pgwatch.backends(conn, victim, run.postgres_port)):
                break
        namespace.cut()
        await asyncio.sleep(0.3)
        if await pgwatch.in_transaction(conn, await pgwatch.backends(conn, victim, run.postgres_port)):
            return True
        namespace.heal()
        await asyncio.sleep(1.0)
    namespace.cut()
    return False


async def worker_netcut(run: Run) -> None:
    """The first worker's network link cut (veth down: every packet dropped, no RST) beyond its session
    timeout, then healed. It runs in a network namespace of its own and reaches the brokers and PostgreSQL
    over that link only. The cut lands while it is inside a write transaction, which the partition leaves
    open on the server with the row locks it took: the other worker must take over regardless."""
    namespace, group = run.namespace, run.group
    assert namespace is not None, "worker-netcut runs its first worker in a network namespace"
    victim, other = group.workers[0], group.workers[1]
    held = await victim.partitions(group.http)
    timeout = run.settings.kafka_session_timeout_seconds
    conn = await asyncpg.connect(run.stack.postgres.dsn, timeout=10)
    try:
        await run.pause(1.0, 3.0)
        open_transaction = await _cut_inside_a_transaction(run, victim, conn)
        run.progress.mark(f"network cut of {victim.name}", held, from_start=True)
        cut_for = run.rng.uniform(timeout + 4.0, timeout + 8.0)
        pids = await pgwatch.backends(conn, victim, run.postgres_port)
        blocked = await _blocked_seconds(conn, pids, cut_for)
        taken = await other.partitions(group.http)
        namespace.heal()
    finally:
        await conn.close()
    run.note(
        f"{victim.name} cut off for {cut_for:.1f} s holding {sorted(held)}, "
        + ("inside an open write transaction" if open_transaction else "outside a transaction (none caught)")
        + f"; meanwhile {other.name} held {sorted(taken)}"
    )
    if blocked:
        run.note(
            f"for ~{blocked:.1f} s of the cut, other sessions waited on locks held by {victim.name}'s open "
            "transaction (PostgreSQL keeps it until the client's TCP connection is known dead)"
        )
    healed = time.monotonic()
    if await group.wait_assigned(run.partitions, 90.0, members=2):
        run.note(
            f"{victim.name} held partitions again {time.monotonic() - healed:.1f} s after the link healed"
        )
    else:
        run.note(f"{victim.name} had no partitions 90 s after the link healed: {await group.assignment()}")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "leader-kill9",
            "kill -9 of a partition leader broker mid-stream, restarted 8-12 s later",
            leader_kill9,
        ),
        Scenario("worker-kill9", "kill -9 of a worker, restarted 0.5-8 s later; five times", worker_kill9),
        Scenario(
            "worker-sigstop",
            "SIGSTOP of a worker for its session timeout + 4-8 s while the other takes over, then SIGCONT",
            worker_sigstop,
        ),
        Scenario("postgres-stop", "PostgreSQL stopped for 20 s", postgres_stop),
        Scenario(
            "broker-restart-paused",
            "PostgreSQL stopped until the workers pause, the group coordinator broker restarted, "
            "PostgreSQL back",
            broker_restart_while_paused,
        ),
        Scenario(
            "postgres-restore",
            "pg_dump of the schema mid-stream; 3-8 s later the workers stopped, the dump restored, the "
            "workers started again",
            postgres_restore,
        ),
        Scenario(
            "worker-netcut",
            "a worker's network link (its own namespace, a veth) cut inside a write transaction for its "
            "session timeout + 4-8 s, then healed",
            worker_netcut,
            needs_netns=True,
        ),
    )
}
