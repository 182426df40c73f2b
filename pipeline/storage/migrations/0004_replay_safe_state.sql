-- roomlogs 0004: state that holds under replays, duplicates and out-of-order events.
--
-- * event_ids: one row per event id ever stored, whatever retention class or timestamp its copies carry
--   (the events key includes both, so it cannot see such duplicates). A later copy is compared with the
--   stored row: the same content is a duplicate, other content is dead-lettered (conflicting_duplicate),
--   never silently dropped nor stored twice.
-- * rooms / room_moderator_grants: every piece of room state carries the version of the event that set it,
--   (event time, then event id), and only a newer event moves it; a revoked moderator stays as a row with
--   active = false so that an older grant arriving later cannot bring it back.
-- * dead_letters keep the contract's allowlisted view of what was received, never the raw bytes.
-- * dead_letter_outbox: dead letters waiting to be mirrored to the dead-letter topic (at least once).
-- * deletion_requests.seq and a lock shared with ingest: a deletion takes effect for ingest at once.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

-- 1. One row per event id ---------------------------------------------------------------------------------
CREATE TABLE event_ids (
    event_id    uuid        PRIMARY KEY,
    -- event time of the copy that was stored: where to find it, and what the registry is pruned by
    -- (after the longest retention)
    occurred_at timestamptz NOT NULL
);
-- pruning only; BRIN costs next to nothing on insert (ids arrive roughly in event-time order)
CREATE INDEX event_ids_occurred_at ON event_ids USING brin (occurred_at);

INSERT INTO event_ids (event_id, occurred_at)
SELECT DISTINCT ON (event_id) event_id, occurred_at
  FROM stored_events
 ORDER BY event_id, ingested_at;

-- 2. Versioned room state --------------------------------------------------------------------------------
-- Versions are (event time, event id); rows written before this migration take their last change time.
ALTER TABLE rooms
    ADD COLUMN privacy_version_at     timestamptz,
    ADD COLUMN privacy_version_id     uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    ADD COLUMN occupancy_version_at   timestamptz,
    ADD COLUMN occupancy_version_id   uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    ADD COLUMN owner_version_at       timestamptz,
    ADD COLUMN owner_version_id       uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
UPDATE rooms SET privacy_version_at = CASE WHEN privacy IS NOT NULL THEN updated_at END,
                 occupancy_version_at = CASE WHEN max_occupancy IS NOT NULL THEN updated_at END,
                 owner_version_at = CASE WHEN owner_id IS NOT NULL THEN updated_at END;

-- Moderators: one row per (room, user) ever granted, with the version of its last change. The API reads
-- the view room_moderators (active grants only), as before.
ALTER TABLE room_moderators RENAME TO room_moderator_grants;
ALTER TABLE room_moderator_grants RENAME CONSTRAINT room_moderators_pkey TO room_moderator_grants_pkey;
ALTER TABLE room_moderator_grants
    ADD COLUMN active       boolean     NOT NULL DEFAULT true,
    ADD COLUMN version_at   timestamptz,
    -- on equal event times a removal outranks a grant (never re-grant on a tie)
    ADD COLUMN version_rank smallint    NOT NULL DEFAULT 0 CHECK (version_rank IN (0, 1)),
    ADD COLUMN version_id   uuid        NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
UPDATE room_moderator_grants SET version_at = since;
-- '-infinity': a grant written by hand (or through the view) is older than any event
ALTER TABLE room_moderator_grants ALTER COLUMN version_at SET NOT NULL,
                                  ALTER COLUMN version_at SET DEFAULT '-infinity';
CREATE INDEX room_moderator_grants_user ON room_moderator_grants (user_id) WHERE active;

CREATE VIEW room_moderators AS
    SELECT room_id, user_id, since FROM room_moderator_grants WHERE active;

-- 3. Dead letters without raw bytes ------------------------------------------------------------------------
-- `content`: what could be parsed, with the contract's allowlist applied and personal data masked;
-- `raw_sha256` / `raw_bytes`: a fingerprint of the record as received, so a producer can match it.
ALTER TABLE dead_letters
    ADD COLUMN content    jsonb,
    ADD COLUMN raw_sha256 bytea,
    ADD COLUMN raw_bytes  integer;
ALTER TABLE dead_letters DISABLE TRIGGER dead_letters_no_update;
UPDATE dead_letters SET raw_sha256 = sha256(raw), raw_bytes = length(raw) WHERE raw IS NOT NULL;
ALTER TABLE dead_letters ENABLE TRIGGER dead_letters_no_update;
ALTER TABLE dead_letters DROP COLUMN raw;

-- 4. Dead letters waiting for the dead-letter topic ---------------------------------------------------------
-- Written in the batch's transaction; a row is deleted once the broker acknowledged its message.
CREATE TABLE dead_letter_outbox (
    outbox_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- message key: "<src_topic>/<src_partition>/<src_offset>"
    message_key bytea       NOT NULL,
    value       bytea       NOT NULL,
    -- [[name, value], ...] as text
    headers     jsonb       NOT NULL
);

-- 5. Deletions take effect for ingest at once ---------------------------------------------------------------
-- seq orders deletion requests; every ingest transaction takes the deletion lock shared and re-reads the
-- requests when max(seq) moved, every deletion takes it exclusive: no ingest transaction can straddle one.
ALTER TABLE deletion_requests ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX deletion_requests_seq ON deletion_requests (seq);

CREATE OR REPLACE FUNCTION api_delete_room_logs(
    p_request_id uuid, p_room_id text, p_requested_by text, p_identity_type text, p_basis text, p_reason text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    deleted bigint;
BEGIN
    IF p_basis = 'owner' THEN
        IF NOT EXISTS (SELECT 1 FROM rooms WHERE room_id = p_room_id AND owner_id = p_requested_by) THEN
            RAISE EXCEPTION 'only the room''s current owner may delete its logs'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSIF p_basis = 'staff' THEN
        IF p_identity_type <> 'staff' OR coalesce(p_reason, '') = '' THEN
            RAISE EXCEPTION 'staff deletions need a staff identity and a ticket or case id'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSE
        RAISE EXCEPTION 'deletion basis % is not allowed', p_basis USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM 1 FROM legal_holds WHERE room_id = p_room_id AND released_at IS NULL FOR SHARE;
    IF FOUND THEN
        RAISE EXCEPTION 'room % is under legal hold', p_room_id USING ERRCODE = 'object_in_use';
    END IF;
    -- wait for ingest transactions in flight; later ones see this request before they write
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':roomlogs.deletions', 0));
    PERFORM set_config('roomlogs.authorized_deletion', 'on', true);
    DELETE FROM events WHERE room_id = p_room_id;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    DELETE FROM held_events WHERE room_id = p_room_id;
    PERFORM set_config('roomlogs.authorized_deletion', 'off', true);
    INSERT INTO deletion_requests
        (request_id, kind, room_id, requested_by, identity_type, basis, reason, rows_deleted)
    VALUES (p_request_id, 'room_logs', p_room_id, p_requested_by, p_identity_type, p_basis, p_reason, deleted);
    RETURN deleted;
END $$;

CREATE OR REPLACE FUNCTION api_erase_user_chat(
    p_request_id uuid, p_user_id text, p_requested_by text, p_identity_type text, p_reason text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    deleted bigint;
BEGIN
    IF p_identity_type <> 'staff' OR coalesce(p_reason, '') = '' THEN
        RAISE EXCEPTION 'erasure needs a staff identity and a ticket or case id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':roomlogs.deletions', 0));
    PERFORM set_config('roomlogs.authorized_deletion', 'on', true);
    DELETE FROM events
     WHERE actor_id = p_user_id AND event_type = 'chat.message'
       AND room_id NOT IN (SELECT room_id FROM legal_holds WHERE released_at IS NULL);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('roomlogs.authorized_deletion', 'off', true);
    INSERT INTO deletion_requests
        (request_id, kind, user_id, requested_by, identity_type, basis, reason, rows_deleted)
    VALUES (p_request_id, 'user_chat_erasure', p_user_id, p_requested_by, p_identity_type, 'staff', p_reason,
            deleted);
    RETURN deleted;
END $$;

REVOKE ALL ON FUNCTION api_delete_room_logs(uuid, text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION api_erase_user_chat(uuid, text, text, text, text) FROM PUBLIC;

DO $$
DECLARE
    api_role text := current_schema() || '_api';
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = api_role) THEN
        EXECUTE format('GRANT SELECT ON room_moderators TO %I', api_role);
    END IF;
END $$;
