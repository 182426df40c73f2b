-- roomlogs 0013: deleted stays deleted across a restore. Every authorized deletion is also kept outside the
-- database, sealed, on a Kafka topic of its own (ROOMLOGS_DELETIONS_TOPIC); a database restored from a backup
-- taken before a deletion re-applies it before ingest writes again.
--
-- * deletion_outbox: filled by a trigger on deletion_requests, in the deletion's own transaction: the
--   request as canonical JSON (`message`) and its seal. The worker relays it to the topic (at least once;
--   pipeline/ingest/deletion_log.py) and deletes the acknowledged rows. Requests made before this migration
--   are queued too.
-- * The seal: HMAC-SHA256 of the message with a key made here from PostgreSQL's strong randomness
--   (gen_random_uuid() draws from pg_strong_random), in deletion_seal_key, which only the owner reads. Its
--   text is "<key id>:<hex of the HMAC>", the key id being the first 8 bytes of the key's SHA-256 in hex: a
--   record sealed by another database's key (a schema created anew, another deployment on the same topic)
--   is told apart from a forged one. A backup of the schema holds the key, so a restored database verifies
--   what it sealed before.
-- * reapply_deletion_request(message, seal): the only way the worker's role deletes anything. It verifies
--   the seal, so that role can re-apply genuine requests and never forge one; a request already in
--   deletion_requests is left alone; otherwise it deletes what the original covered, in this database, and
--   records the request with its original fields, `reapplied_at` and the rows deleted now.
-- * deletion_requests.reapplied_at: NULL for an original request; when a worker re-applied it from the
--   topic. A re-applied request is not queued again (its record is on the topic already).
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

-- One row: the key that seals deletion requests. Read by the owner's functions below only.
CREATE TABLE deletion_seal_key (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    seal_key   bytea       NOT NULL CHECK (length(seal_key) = 32),
    key_id     text        NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
REVOKE ALL ON deletion_seal_key FROM PUBLIC;

-- two version-4 UUIDs: 244 random bits from pg_strong_random, hashed to 32 bytes
INSERT INTO deletion_seal_key (seal_key, key_id)
SELECT k, encode(substr(sha256(k), 1, 8), 'hex')
  FROM (SELECT sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')) AS k) AS fresh;

ALTER TABLE deletion_requests ADD COLUMN reapplied_at timestamptz;

CREATE TABLE deletion_outbox (
    outbox_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the topic's message key (the topic is compacted by it)
    request_id uuid        NOT NULL,
    -- canonical JSON of the request, exactly as sealed
    message    text        NOT NULL,
    seal       text        NOT NULL
);
REVOKE ALL ON deletion_outbox FROM PUBLIC;

-- The seal of `p_message` with this database's key: "<key id>:<hex of HMAC-SHA256>". Owner only.
CREATE FUNCTION deletion_seal(p_message text) RETURNS text
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT k.key_id || ':' || encode(roomlogs_hmac(k.seal_key, convert_to(p_message, 'UTF8'), 'HS256'), 'hex')
      FROM deletion_seal_key k
$$;

-- The canonical message of a request. `held_rooms` (erasures): the rooms under legal hold when it ran, whose
-- chat it left alone; NULL for a request queued by this migration (not known any more).
CREATE FUNCTION deletion_message(d deletion_requests, p_held_rooms text[]) RETURNS text
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT jsonb_build_object(
        'v', 1,
        'request_id', d.request_id,
        'requested_at', to_char(d.requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'kind', d.kind,
        'room_id', d.room_id,
        'user_id', d.user_id,
        'requested_by', d.requested_by,
        'identity_type', d.identity_type,
        'basis', d.basis,
        'reason', d.reason,
        'rows_deleted', d.rows_deleted,
        'held_rooms', to_jsonb(p_held_rooms))::text
$$;

CREATE FUNCTION queue_deletion_request() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    held    text[];
    message text;
BEGIN
    IF NEW.kind = 'user_chat_erasure' THEN
        SELECT coalesce(array_agg(DISTINCT room_id ORDER BY room_id), '{}') INTO held
          FROM legal_holds WHERE released_at IS NULL;
    END IF;
    message := deletion_message(NEW, held);
    INSERT INTO deletion_outbox (request_id, message, seal) VALUES (NEW.request_id, message, deletion_seal(message));
    RETURN NULL;
END $$;

CREATE TRIGGER deletion_requests_to_outbox AFTER INSERT ON deletion_requests
    FOR EACH ROW WHEN (NEW.reapplied_at IS NULL) EXECUTE FUNCTION queue_deletion_request();

-- the requests made so far, oldest first
INSERT INTO deletion_outbox (request_id, message, seal)
SELECT d.request_id, m.message, deletion_seal(m.message)
  FROM deletion_requests d, LATERAL (SELECT deletion_message(d, NULL) AS message) m
 ORDER BY d.seq;

-- Re-apply a request read back from the deletions topic. Outcomes:
--   reapplied  this database did not have it (restored from a backup taken before it): done now
--   present    it is in deletion_requests already: nothing done
--   other_key  sealed with another database's key (or not sealed at all): nothing done
--   bad_seal   the seal does not verify: forged or altered, nothing done
-- What the original covered, in the rows this database has: every row of the room (events and held_events)
-- that happened, or was stored, at or before the request (the original deleted every row it found); or the
-- user's chat messages alike, outside the rooms it left alone for a legal hold (this database's active holds
-- for a request queued by this migration). A room deletion ignores this database's holds: the original was
-- refused under a hold, so any hold a restored database shows on that room was released before it.
CREATE FUNCTION reapply_deletion_request(p_message text, p_seal text)
RETURNS TABLE (outcome text, deleted_now bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    sealing deletion_seal_key%ROWTYPE;
    m       jsonb;
    rid     uuid;
    until   timestamptz;
    held    text[];
    deleted bigint := 0;
BEGIN
    SELECT * INTO sealing FROM deletion_seal_key;
    IF p_message IS NULL OR p_seal IS NULL OR split_part(p_seal, ':', 1) IS DISTINCT FROM sealing.key_id THEN
        RETURN QUERY SELECT 'other_key'::text, 0::bigint;
        RETURN;
    END IF;
    -- compare digests: how long the comparison takes says nothing about the expected seal
    IF sha256(convert_to(p_seal, 'UTF8')) <> sha256(convert_to(deletion_seal(p_message), 'UTF8')) THEN
        RETURN QUERY SELECT 'bad_seal'::text, 0::bigint;
        RETURN;
    END IF;
    m := p_message::jsonb;
    IF m->>'v' IS DISTINCT FROM '1' THEN
        -- sealed by a newer roomlogs: never ignored, never half understood
        RAISE EXCEPTION 'deletion message version % is not known here: upgrade roomlogs', m->>'v'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    rid := (m->>'request_id')::uuid;
    IF EXISTS (SELECT 1 FROM deletion_requests d WHERE d.request_id = rid) THEN
        RETURN QUERY SELECT 'present'::text, 0::bigint;
        RETURN;
    END IF;
    -- as the deletion functions: wait for ingest transactions in flight; later ones see this request
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':roomlogs.deletions', 0));
    IF EXISTS (SELECT 1 FROM deletion_requests d WHERE d.request_id = rid) THEN
        RETURN QUERY SELECT 'present'::text, 0::bigint;  -- another worker re-applied it meanwhile
        RETURN;
    END IF;
    until := (m->>'requested_at')::timestamptz;
    PERFORM set_config('roomlogs.authorized_deletion', 'on', true);
    IF m->>'kind' = 'room_logs' THEN
        DELETE FROM events e
         WHERE e.room_id = m->>'room_id' AND (e.occurred_at <= until OR e.ingested_at <= until);
        GET DIAGNOSTICS deleted = ROW_COUNT;
        DELETE FROM held_events h
         WHERE h.room_id = m->>'room_id' AND (h.occurred_at <= until OR h.ingested_at <= until);
    ELSE
        IF jsonb_typeof(m->'held_rooms') = 'array' THEN
            held := ARRAY(SELECT jsonb_array_elements_text(m->'held_rooms'));
        ELSE
            held := ARRAY(SELECT l.room_id FROM legal_holds l WHERE l.released_at IS NULL);
        END IF;
        DELETE FROM events e
         WHERE e.actor_id = m->>'user_id' AND e.event_type = 'chat.message'
           AND (e.occurred_at <= until OR e.ingested_at <= until)
           AND e.room_id <> ALL (held);
        GET DIAGNOSTICS deleted = ROW_COUNT;
    END IF;
    PERFORM set_config('roomlogs.authorized_deletion', 'off', true);
    INSERT INTO deletion_requests
        (request_id, requested_at, kind, room_id, user_id, requested_by, identity_type, basis, reason,
         rows_deleted, reapplied_at)
    VALUES (rid, until, m->>'kind', m->>'room_id', m->>'user_id', m->>'requested_by', m->>'identity_type',
            m->>'basis', m->>'reason', deleted, now());
    RETURN QUERY SELECT 'reapplied'::text, deleted;
END $$;

REVOKE ALL ON FUNCTION deletion_seal(text), deletion_message(deletion_requests, text[]),
                       queue_deletion_request(), reapply_deletion_request(text, text) FROM PUBLIC;

DO $$
DECLARE
    worker_role text := current_schema() || '_worker';
BEGIN
    -- the relay reads and clears the outbox; re-applying goes through the function, which checks the seal
    EXECUTE format('GRANT SELECT, DELETE ON deletion_outbox TO %I', worker_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION reapply_deletion_request(text, text) TO %I', worker_role);
END $$;
