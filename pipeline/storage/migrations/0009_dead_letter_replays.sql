-- roomlogs 0009: replaying dead letters once their producer or the contract is fixed, exactly once, audited.
--
-- * dead_letters.dead_letter_id: a number to name one dead letter by (`roomlogs dead-letters show 42`). From
--   a sequence rather than an identity column, so every PostgreSQL that runs roomlogs can add it to a
--   partitioned table; day partitions made later take the same default (LIKE ... INCLUDING DEFAULTS).
-- * dead_letter_replays: one row per dead letter per `roomlogs dead-letters replay`: who, when, which letter
--   (its id and its source topic/partition/offset), what came of it. Append-only. A replay writes the
--   event through the ingest writer and this row in one transaction. At most one row per source record
--   says the event is in the logs (`stored`, or `duplicate`: it already was), so a record is replayed
--   once, however many dead letters name it and however often the command runs; dead_letters itself is
--   never updated.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

CREATE SEQUENCE dead_letter_ids AS bigint;
ALTER TABLE dead_letters ADD COLUMN dead_letter_id bigint NOT NULL DEFAULT nextval('dead_letter_ids');
CREATE INDEX dead_letters_id ON dead_letters (dead_letter_id);

CREATE TABLE dead_letter_replays (
    replay_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- one run of the command: the letters replayed together
    run_id         uuid        NOT NULL,
    replayed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    replayed_by    text        NOT NULL CHECK (length(btrim(replayed_by)) BETWEEN 1 AND 200),
    dead_letter_id bigint      NOT NULL,
    src_topic      text        NOT NULL,
    src_partition  integer     NOT NULL,
    src_offset     bigint      NOT NULL,
    -- the dead letter's reason code
    reason         text        NOT NULL,
    -- stored: the event is in the logs now; duplicate: it was already (same content);
    -- already_replayed: an earlier replay stored it; still_invalid: the contract still refuses it (detail
    -- says why); expired: older than its room's retention; deleted: an authorized deletion covers it;
    -- conflicting_duplicate: its event id is stored with other content; rejected: PostgreSQL refused the
    -- row; not_in_kafka: the topic no longer holds the record (its retention passed)
    outcome        text        NOT NULL CHECK (outcome IN (
                       'stored', 'duplicate', 'already_replayed', 'still_invalid', 'expired', 'deleted',
                       'conflicting_duplicate', 'rejected', 'not_in_kafka')),
    -- the event id, when the record parsed far enough to have one
    event_id       uuid,
    detail         text        NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX dead_letter_replays_once ON dead_letter_replays (src_topic, src_partition, src_offset)
    WHERE outcome IN ('stored', 'duplicate');
CREATE INDEX dead_letter_replays_letter ON dead_letter_replays (dead_letter_id);

CREATE TRIGGER dead_letter_replays_no_update BEFORE UPDATE ON dead_letter_replays
    FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER dead_letter_replays_no_delete BEFORE DELETE ON dead_letter_replays
    FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();
CREATE TRIGGER dead_letter_replays_no_truncate BEFORE TRUNCATE ON dead_letter_replays
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_record_delete();

REVOKE ALL ON dead_letter_replays FROM PUBLIC;

DO $$
DECLARE
    worker_role text := current_schema() || '_worker';
BEGIN
    -- the worker's COPY into dead_letters draws ids; a replay may run on the worker's role (it writes logs
    -- the way ingest does) and appends its record
    EXECUTE format('GRANT USAGE ON SEQUENCE dead_letter_ids TO %I', worker_role);
    EXECUTE format('GRANT SELECT, INSERT ON dead_letter_replays TO %I', worker_role);
END $$;
