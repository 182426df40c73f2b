-- roomlogs 0001: room-log events, dead letters, room state, offsets of record.
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- Retention classes: how long a room's logs are kept. Operators change retention_days at runtime.
CREATE TABLE retention_classes (
    name           text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,30}$'),
    retention_days integer NOT NULL CHECK (retention_days BETWEEN 1 AND 3650),
    description    text NOT NULL DEFAULT '',
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention_classes (name, retention_days, description) VALUES
    ('busy_public', 3,  'public rooms with a large max_occupancy'),
    ('public',      14, 'public rooms, and rooms the pipeline has no settings for yet'),
    ('private',     30, 'private rooms');

-- What the pipeline knows about a room, learned from its own settings and permissions events.
CREATE TABLE rooms (
    room_id         text PRIMARY KEY,
    privacy         text,
    max_occupancy   integer,
    retention_class text NOT NULL REFERENCES retention_classes (name),
    owner_id        text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE room_moderators (
    room_id  text NOT NULL,
    user_id  text NOT NULL,
    since    timestamptz NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- The room logs. LIST by retention class, then RANGE by day (partitions created by storage/partitions.py),
-- so that one class's expired days are dropped whole without touching another class.
CREATE TABLE events (
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
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (retention_class, occurred_at, event_id)
) PARTITION BY LIST (retention_class);

-- Indexes cost ingest throughput (each one roughly halves binary COPY speed), so only what queries need:
-- a room's events in a time range (type, actor and text filters run inside a room's range), a user's
-- moderation history across rooms (target), and what one moderator did (actor, moderation rows only).
CREATE INDEX events_room_time ON events (room_id, occurred_at);
CREATE INDEX events_target_time ON events (target_id, occurred_at) WHERE target_id IS NOT NULL;
CREATE INDEX events_moderator_time ON events (actor_id, occurred_at) WHERE event_type LIKE 'moderation.%';

-- Logs cannot be edited. Deletion is by dropping partitions (retention) or through an authorized request,
-- which sets roomlogs.authorized_deletion for its own transaction.
CREATE FUNCTION forbid_log_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'room logs cannot be edited' USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE FUNCTION guard_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('roomlogs.authorized_deletion', true), '') <> 'on' THEN
        RAISE EXCEPTION 'room logs are deleted only by retention or an authorized request'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER events_guard_delete BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION guard_log_delete();

-- Input that was not stored as a room log, with the reason. Day partitions on received_at.
CREATE TABLE dead_letters (
    received_at   timestamptz NOT NULL,
    reason        text        NOT NULL,
    detail        text        NOT NULL,
    src_topic     text        NOT NULL,
    src_partition integer     NOT NULL,
    src_offset    bigint      NOT NULL,
    -- NULL when keeping the bytes would store what we promise not to (private messages)
    raw           bytea
) PARTITION BY RANGE (received_at);

CREATE INDEX dead_letters_reason_time ON dead_letters (reason, received_at);
CREATE INDEX dead_letters_source ON dead_letters (src_topic, src_partition, src_offset);
CREATE TRIGGER dead_letters_no_update BEFORE UPDATE ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION forbid_log_update();

-- Offsets of record: the next Kafka offset to read, written in the same transaction as the rows.
CREATE TABLE ingest_offsets (
    consumer_group text    NOT NULL,
    topic          text    NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint  NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
