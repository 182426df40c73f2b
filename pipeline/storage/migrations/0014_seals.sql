-- roomlogs 0014: sealed, signed room-days (pipeline/evidence, pipeline/sealing).
--
-- * seal_keys: the public keys seals are signed with (Ed25519, raw 32 bytes), by key id. A key rotated
--   out stays: the seals it signed keep verifying.
-- * seals: one per (room, UTC day) once the day is closed: the signed statement (room, day, tree size and
--   head, first and last event time, rows per retention class, when, the previous seal of the room) and
--   its signature. Append-only, kept after retention and deletions dropped the rows they speak of.
-- * seal_leaves: per seal, its leaves (event id, leaf hash, retention class) so that `roomlogs verify`
--   can name each row changed, missing or added. Removed by maintenance once every row it speaks of is
--   past the longest retention (the seal itself stays).
-- * seal_heads: one per day of seals: the tree head over that day's room seals, chained and signed; also
--   published to the witness topic (seal_head_publications records where).
-- * deleted_events: each event row an authorized deletion removed (AFTER DELETE trigger on events: the only
--   DELETE there is), with the deleting transaction's id, which deletion_requests.txid names: `verify`
--   tells rows an audited request deleted from rows that vanished.
--
-- Only the owner (the sealing service, as the retention service) writes seals; the worker's and the API's
-- roles read them. Runs inside the roomlogs schema (search_path is set by the migration runner).

CREATE TABLE seal_keys (
    key_id     text        PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    algorithm  text        NOT NULL CHECK (algorithm = 'ed25519'),
    public_key bytea       NOT NULL CHECK (length(public_key) = 32),
    added_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE seals (
    seal_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id        text        NOT NULL,
    day            date        NOT NULL,
    seq            integer     NOT NULL CHECK (seq >= 1),
    tree_size      integer     NOT NULL CHECK (tree_size >= 1),
    root           bytea       NOT NULL CHECK (length(root) = 32),
    statement      bytea       NOT NULL,
    statement_hash bytea       NOT NULL UNIQUE CHECK (length(statement_hash) = 32),
    key_id         text        NOT NULL REFERENCES seal_keys (key_id),
    signature      bytea       NOT NULL,
    sealed_at      timestamptz NOT NULL,
    UNIQUE (room_id, seq),
    UNIQUE (room_id, day)
);
CREATE INDEX seals_day ON seals (day, room_id);

CREATE TABLE seal_leaves (
    seal_id bigint PRIMARY KEY REFERENCES seals (seal_id),
    day     date   NOT NULL,
    -- per leaf: event id (16 bytes), leaf hash (32), index into `classes` (1)
    leaves  bytea  NOT NULL,
    classes text[] NOT NULL
);
CREATE INDEX seal_leaves_day ON seal_leaves (day);

CREATE TABLE seal_heads (
    head_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    day            date        NOT NULL UNIQUE,
    seq            integer     NOT NULL UNIQUE CHECK (seq >= 1),
    -- 0: a day with no events (its head still chains)
    tree_size      integer     NOT NULL CHECK (tree_size >= 0),
    root           bytea       NOT NULL CHECK (length(root) = 32),
    statement      bytea       NOT NULL,
    statement_hash bytea       NOT NULL UNIQUE CHECK (length(statement_hash) = 32),
    key_id         text        NOT NULL REFERENCES seal_keys (key_id),
    signature      bytea       NOT NULL,
    sealed_at      timestamptz NOT NULL
);

CREATE TABLE seal_head_publications (
    head_id      bigint      NOT NULL REFERENCES seal_heads (head_id),
    topic        text        NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (head_id, topic)
);

CREATE TABLE deleted_events (
    txid        bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    room_id     text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deleted_events_event ON deleted_events (event_id);

ALTER TABLE deletion_requests ADD COLUMN txid bigint;
ALTER TABLE deletion_requests ALTER COLUMN txid SET DEFAULT txid_current();

CREATE FUNCTION record_deleted_event() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO deleted_events (txid, event_id, room_id, occurred_at)
    VALUES (txid_current(), OLD.event_id, OLD.room_id, OLD.occurred_at);
    RETURN OLD;
END $$;
REVOKE ALL ON FUNCTION record_deleted_event() FROM PUBLIC;
CREATE TRIGGER events_record_deleted AFTER DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION record_deleted_event();

CREATE TRIGGER seal_keys_no_update BEFORE UPDATE ON seal_keys FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER seal_keys_no_delete BEFORE DELETE ON seal_keys FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();
CREATE TRIGGER seals_no_update BEFORE UPDATE ON seals FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER seals_no_delete BEFORE DELETE ON seals FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();
CREATE TRIGGER seals_no_truncate BEFORE TRUNCATE ON seals FOR EACH STATEMENT EXECUTE FUNCTION forbid_record_delete();
CREATE TRIGGER seal_leaves_no_update BEFORE UPDATE ON seal_leaves FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER seal_heads_no_update BEFORE UPDATE ON seal_heads FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER seal_heads_no_delete BEFORE DELETE ON seal_heads FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();
CREATE TRIGGER seal_heads_no_truncate BEFORE TRUNCATE ON seal_heads
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_record_delete();
CREATE TRIGGER deleted_events_no_update BEFORE UPDATE ON deleted_events
    FOR EACH ROW EXECUTE FUNCTION forbid_log_update();
CREATE TRIGGER deleted_events_no_delete BEFORE DELETE ON deleted_events
    FOR EACH ROW EXECUTE FUNCTION forbid_record_delete();

-- a replayed dead letter whose day is sealed is refused as ingest refuses it
ALTER TABLE dead_letter_replays DROP CONSTRAINT dead_letter_replays_outcome_check;
ALTER TABLE dead_letter_replays ADD CONSTRAINT dead_letter_replays_outcome_check CHECK (outcome IN (
    'stored', 'duplicate', 'already_replayed', 'still_invalid', 'expired', 'deleted',
    'conflicting_duplicate', 'rejected', 'not_in_kafka', 'source_changed', 'no_fingerprint', 'day_sealed'));

REVOKE ALL ON seal_keys, seals, seal_leaves, seal_heads, seal_head_publications, deleted_events FROM PUBLIC;

DO $$
DECLARE
    worker_role text := current_schema() || '_worker';
    api_role    text := current_schema() || '_api';
BEGIN
    EXECUTE format('GRANT SELECT ON seal_keys, seals, seal_leaves, seal_heads, seal_head_publications, '
                   'deleted_events TO %I, %I', worker_role, api_role);
END $$;
