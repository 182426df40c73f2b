-- roomlogs 0002: retention enforcement: maintenance runs, legal holds, rows preserved for holds, the
-- deletion ledger, and an audit of retention-class changes. Written by pipeline/retention.

-- One row per maintenance run that held the maintenance lock (dry runs change nothing and are not recorded).
CREATE TABLE maintenance_runs (
    run_id              uuid PRIMARY KEY,
    -- the UTC day the retention policy was evaluated for (the run's clock, passed in by the caller)
    as_of               date        NOT NULL,
    started_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at         timestamptz,
    -- running | ok (nothing left to do) | partial (some partitions deferred or failed; retried next run)
    -- | failed (the run stopped on an error)
    outcome             text        NOT NULL DEFAULT 'running'
                        CHECK (outcome IN ('running', 'ok', 'partial', 'failed')),
    partitions_created  integer     NOT NULL DEFAULT 0,
    partitions_dropped  integer     NOT NULL DEFAULT 0,
    partitions_deferred integer     NOT NULL DEFAULT 0,
    rows_deleted        bigint      NOT NULL DEFAULT 0,
    rows_held           bigint      NOT NULL DEFAULT 0,
    detail              text        NOT NULL DEFAULT ''
);
CREATE INDEX maintenance_runs_outcome_time ON maintenance_runs (outcome, started_at);

-- Legal holds placed by support staff. A room is held while it has at least one hold with released_at NULL.
-- Holds are never deleted: releasing one records who released it and when.
CREATE TABLE legal_holds (
    hold_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id        text        NOT NULL CHECK (length(room_id) BETWEEN 1 AND 200),
    reason         text        NOT NULL CHECK (length(btrim(reason)) BETWEEN 1 AND 1000),
    requested_by   text        NOT NULL CHECK (length(btrim(requested_by)) BETWEEN 1 AND 200),
    placed_at      timestamptz NOT NULL,
    released_at    timestamptz,
    released_by    text CHECK (released_by IS NULL OR length(btrim(released_by)) BETWEEN 1 AND 200),
    release_reason text,
    CHECK ((released_at IS NULL) = (released_by IS NULL)),
    CHECK (released_at IS NULL OR released_at >= placed_at)
);
CREATE INDEX legal_holds_active_room ON legal_holds (room_id) WHERE released_at IS NULL;

CREATE FUNCTION forbid_record_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are a permanent record and cannot be deleted', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER legal_holds_no_delete BEFORE DELETE ON legal_holds
    FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();

-- Rows of held rooms, copied out of an expired day partition in the same transaction that drops it.
-- Not partitioned by day: rows stay while any hold on their room is active, then follow their own
-- retention class again (deleted by maintenance once past it, each deletion written to the ledger).
-- Same columns as `events`, plus when and by which run the row was preserved; same edit/delete guards.
CREATE TABLE held_events (
    event_id        uuid        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    retention_class text        NOT NULL,
    room_id         text        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  smallint    NOT NULL,
    actor_id        text,
    target_id       text,
    body            text,
    payload         jsonb       NOT NULL,
    src_partition   integer     NOT NULL,
    src_offset      bigint      NOT NULL,
    ingested_at     timestamptz NOT NULL,
    preserved_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    preserved_by    uuid        NOT NULL REFERENCES maintenance_runs (run_id),
    PRIMARY KEY (retention_class, occurred_at, event_id)
);
CREATE INDEX held_events_room_time ON held_events (room_id, occurred_at);

CREATE TRIGGER held_events_no_update BEFORE UPDATE ON held_events
    FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER held_events_guard_delete BEFORE DELETE ON held_events
    FOR EACH ROW EXECUTE FUNCTION guard_log_delete();

-- Every log row stored, wherever it sits: the live partitions and the rows preserved for legal holds.
CREATE VIEW stored_events AS
    SELECT event_id, occurred_at, retention_class, room_id, event_type, schema_version, actor_id, target_id,
           body, payload, src_partition, src_offset, ingested_at, false AS held
      FROM events
    UNION ALL
    SELECT event_id, occurred_at, retention_class, room_id, event_type, schema_version, actor_id, target_id,
           body, payload, src_partition, src_offset, ingested_at, true AS held
      FROM held_events;

-- Proof of deletion: one row per dropped day partition (rows counted just before the DROP, in its
-- transaction) and per (class, day) group of preserved rows deleted after their holds were released.
-- Append-only.
CREATE TABLE deletion_ledger (
    entry_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          uuid        NOT NULL REFERENCES maintenance_runs (run_id),
    -- drop_partition: a whole day partition was dropped; purge_held: preserved rows were deleted
    action          text        NOT NULL CHECK (action IN ('drop_partition', 'purge_held')),
    -- events | dead_letters | held_events
    table_name      text        NOT NULL CHECK (table_name IN ('events', 'dead_letters', 'held_events')),
    -- NULL for dead letters (one rule for all of them)
    retention_class text,
    day             date        NOT NULL,
    -- the dropped partition (NULL for purge_held)
    partition_name  text,
    -- rows in the partition at the moment it was dropped (drop_partition), or rows deleted (purge_held)
    row_count       bigint      NOT NULL CHECK (row_count >= 0),
    -- rows of held rooms copied to held_events before the drop (drop_partition only)
    rows_held       bigint      NOT NULL DEFAULT 0 CHECK (rows_held >= 0 AND rows_held <= row_count),
    retention_days  integer     NOT NULL,
    -- the run's policy day: everything before `as_of - retention_days` was expired
    as_of           date        NOT NULL,
    dropped_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX deletion_ledger_day ON deletion_ledger (table_name, retention_class, day);
CREATE INDEX deletion_ledger_run ON deletion_ledger (run_id);

CREATE TRIGGER deletion_ledger_no_update BEFORE UPDATE ON deletion_ledger
    FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER deletion_ledger_no_delete BEFORE DELETE ON deletion_ledger
    FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();

-- Who changed a class's retention, when, from what to what: the ledger's rows make sense only with it.
CREATE TABLE retention_class_changes (
    change_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL REFERENCES retention_classes (name),
    old_days   integer     NOT NULL,
    new_days   integer     NOT NULL,
    changed_by text        NOT NULL CHECK (length(btrim(changed_by)) BETWEEN 1 AND 200),
    reason     text        NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TRIGGER retention_class_changes_no_update BEFORE UPDATE ON retention_class_changes
    FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER retention_class_changes_no_delete BEFORE DELETE ON retention_class_changes
    FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();
