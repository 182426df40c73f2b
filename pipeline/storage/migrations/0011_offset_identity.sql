-- roomlogs 0011: the offsets of record say which log they count in, and every move of them is recorded.
--
-- * ingest_offsets.topic_id: the broker's id of the topic incarnation the offsets count in (Apache Kafka
--   and Tansu give one; NULL where the broker gives none, or for rows written before this migration).
-- * ingest_offsets.last_offset / last_timestamp_ms / last_crc32: the last record written of the partition,
--   so that a worker can tell, where no topic id helps, whether the broker still has the log it read.
-- * offset_changes: append-only, one row each time the offsets of record of a partition move other than by
--   a batch being written: a first read, a new log of the topic read from its beginning, records the
--   broker deleted before any worker read them (counted: how many offsets, the time range), PostgreSQL
--   found behind what the group once committed to Kafka (a restored database), an operator's move
--   (`roomlogs offsets move`). pipeline/ingest/positions.py decides them; pipeline/storage/offsets.py
--   writes them. Kept without retention: a row per incident, not per event.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

ALTER TABLE ingest_offsets
    ADD COLUMN topic_id          uuid,
    ADD COLUMN last_offset       bigint,
    ADD COLUMN last_timestamp_ms bigint,
    ADD COLUMN last_crc32        bigint;

CREATE TABLE offset_changes (
    change_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    changed_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL CHECK (partition >= 0),
    -- first_read: the group's first read of the partition, from the log's start
    -- new_log: the stored offsets counted in another log (another topic id, an offset past the log's end,
    --          or another record at the last offset written); this one is read from its start
    -- deleted_unread: the log starts past the stored offset: the broker deleted records no worker read
    -- database_behind: Kafka holds a committed offset of the group past the stored one (PostgreSQL was
    --          restored from a backup, or lost writes): the records between are read again
    -- moved: an operator moved the offsets (`roomlogs offsets move`)
    kind            text        NOT NULL CHECK (kind IN (
                        'first_read', 'new_log', 'deleted_unread', 'database_behind', 'moved')),
    -- the stored next offset before (NULL: none was stored) and after
    from_offset     bigint,
    to_offset       bigint      NOT NULL CHECK (to_offset >= 0),
    -- offsets jumped over that no worker wrote (deleted unread, or an operator's move forward)
    skipped_records bigint      NOT NULL DEFAULT 0 CHECK (skipped_records >= 0),
    -- offsets to be read again (a new log, the database behind, an operator's move back)
    reread_records  bigint      NOT NULL DEFAULT 0 CHECK (reread_records >= 0),
    -- what was skipped happened after the first and before the second of these (record timestamps)
    skipped_after   timestamptz,
    skipped_before  timestamptz,
    old_topic_id    uuid,
    new_topic_id    uuid,
    -- a worker (`worker <instance>`) or the operator's --by
    changed_by      text        NOT NULL CHECK (length(btrim(changed_by)) BETWEEN 1 AND 200),
    detail          text        NOT NULL
);
CREATE INDEX offset_changes_partition ON offset_changes (consumer_group, topic, partition, change_id);

CREATE TRIGGER offset_changes_no_update BEFORE UPDATE ON offset_changes
    FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER offset_changes_no_delete BEFORE DELETE ON offset_changes
    FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();
CREATE TRIGGER offset_changes_no_truncate BEFORE TRUNCATE ON offset_changes
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_record_delete();

REVOKE ALL ON offset_changes FROM PUBLIC;

DO $$
DECLARE
    worker_role text := current_schema() || '_worker';
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON offset_changes TO %I', worker_role);
END $$;
