-- roomlogs 0006: retention takes an expired day partition out of `events` (or `dead_letters`) with
-- ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY, which never blocks ingest's writes, then drops the
-- detached table. Written by pipeline/retention (module `detach`).
--
-- One row per expired partition whose detach a maintenance run has begun and whose drop has not committed
-- yet. Inserted (and committed) before the DETACH starts; deleted in the transaction that drops the table
-- and writes its deletion_ledger row, so a row exists exactly while a detach is unfinished. A row left
-- behind (a crash, a lock timeout between the steps) tells the next run to finish that partition: the
-- table it names may still be attached, "detach pending" (an interrupted DETACH CONCURRENTLY) or detached.
CREATE TABLE retention_detaching (
    partition_name  text        PRIMARY KEY,
    -- events | dead_letters
    table_name      text        NOT NULL CHECK (table_name IN ('events', 'dead_letters')),
    -- the partitioned table it is detached from: events_<class> or dead_letters
    parent          text        NOT NULL,
    -- NULL for dead letters
    retention_class text,
    day             date        NOT NULL,
    -- the retention it had expired under when the detach began (the ledger records it)
    retention_days  integer     NOT NULL,
    -- the run that began the detach, and its policy day
    run_id          uuid        NOT NULL REFERENCES maintenance_runs (run_id),
    as_of           date        NOT NULL,
    began_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
