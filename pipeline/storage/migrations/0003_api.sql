-- roomlogs 0003: the query API's side of the database.
--
-- * access_audit: one row per read (and per refused read, per deletion); append-only for everyone
--   (triggers), and the API role may only INSERT into it.
-- * deletion_requests: the ledger of authorized deletions; written only by the two SECURITY DEFINER
--   functions below, which are the only way the API can delete room logs.
-- * <schema>_api: the role the API connects as. Roles are cluster-wide while this schema is not, so the
--   role is named after the schema and every grant names this schema's objects only. It may read the
--   logs and room permissions, append audit rows and call the deletion functions; nothing more.
-- * no text-search index: searches are bounded to one room's time range (see the end of this file).
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

CREATE TABLE access_audit (
    audit_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id    uuid        NOT NULL,
    -- who: the token's subject and what kind of identity it is
    subject       text        NOT NULL,
    identity_type text        NOT NULL CHECK (identity_type IN ('user', 'staff', 'service')),
    -- why access was granted (NULL when it was refused)
    basis         text        CHECK (basis IN ('owner', 'moderator', 'room_roles', 'staff', 'service')),
    -- the ticket or case id a staff member stated
    staff_reason  text,
    action        text        NOT NULL,
    room_id       text,
    -- the user a moderation history or an erasure is about
    user_id       text,
    filters       jsonb       NOT NULL DEFAULT '{}',
    row_count     bigint,
    -- ok: answered; denied: refused; started/finished/aborted: a streamed export or live tail
    outcome       text        NOT NULL CHECK (outcome IN ('ok', 'denied', 'started', 'finished', 'aborted')),
    detail        text
);
CREATE INDEX access_audit_room_at ON access_audit (room_id, at) WHERE room_id IS NOT NULL;
CREATE INDEX access_audit_subject_at ON access_audit (subject, at);
CREATE INDEX access_audit_request ON access_audit (request_id);

CREATE FUNCTION forbid_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the access audit is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER access_audit_no_update BEFORE UPDATE ON access_audit
    FOR EACH ROW EXECUTE FUNCTION forbid_audit_change();
CREATE TRIGGER access_audit_no_delete BEFORE DELETE ON access_audit
    FOR EACH ROW EXECUTE FUNCTION forbid_audit_change();
CREATE TRIGGER access_audit_no_truncate BEFORE TRUNCATE ON access_audit
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_audit_change();

CREATE TABLE deletion_requests (
    request_id    uuid        PRIMARY KEY,
    requested_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind          text        NOT NULL CHECK (kind IN ('room_logs', 'user_chat_erasure')),
    room_id       text,
    user_id       text,
    requested_by  text        NOT NULL,
    identity_type text        NOT NULL CHECK (identity_type IN ('user', 'staff')),
    basis         text        NOT NULL CHECK (basis IN ('owner', 'staff')),
    -- ticket or case id (staff), or the owner's own words
    reason        text        NOT NULL,
    rows_deleted  bigint      NOT NULL,
    CHECK ((kind = 'room_logs') = (room_id IS NOT NULL)),
    CHECK ((kind = 'user_chat_erasure') = (user_id IS NOT NULL))
);
CREATE INDEX deletion_requests_room ON deletion_requests (room_id) WHERE room_id IS NOT NULL;
CREATE INDEX deletion_requests_user ON deletion_requests (user_id) WHERE user_id IS NOT NULL;

CREATE TRIGGER deletion_requests_no_update BEFORE UPDATE ON deletion_requests
    FOR EACH ROW EXECUTE FUNCTION forbid_audit_change();
CREATE TRIGGER deletion_requests_no_delete BEFORE DELETE ON deletion_requests
    FOR EACH ROW EXECUTE FUNCTION forbid_audit_change();

-- Deletion of a whole room's logs: its owner, or support staff with a ticket. The function re-checks
-- ownership itself (defence in depth: the API checked already), deletes under the authorized_deletion
-- setting the events trigger asks for, switches it off again, and records the request with its row count.
CREATE FUNCTION api_delete_room_logs(
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
    -- A legal hold outranks an owner's or staff's deletion: the room's logs stay until it is released.
    -- (SQLSTATE 55006 object_in_use: the API answers 409 legal_hold.)
    PERFORM 1 FROM legal_holds WHERE room_id = p_room_id AND released_at IS NULL FOR SHARE;
    IF FOUND THEN
        RAISE EXCEPTION 'room % is under legal hold', p_room_id USING ERRCODE = 'object_in_use';
    END IF;
    PERFORM set_config('roomlogs.authorized_deletion', 'on', true);
    DELETE FROM events WHERE room_id = p_room_id;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    -- rows preserved by a hold since released, waiting for their retention: deleted with the room
    DELETE FROM held_events WHERE room_id = p_room_id;
    PERFORM set_config('roomlogs.authorized_deletion', 'off', true);
    INSERT INTO deletion_requests
        (request_id, kind, room_id, requested_by, identity_type, basis, reason, rows_deleted)
    VALUES (p_request_id, 'room_logs', p_room_id, p_requested_by, p_identity_type, p_basis, p_reason, deleted);
    RETURN deleted;
END $$;

-- Erasure of one user's chat text (an erasure request): support staff only. Logs are never edited, so
-- erasure deletes that user's chat.message rows in every room.
CREATE FUNCTION api_erase_user_chat(
    p_request_id uuid, p_user_id text, p_requested_by text, p_identity_type text, p_reason text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    deleted bigint;
BEGIN
    IF p_identity_type <> 'staff' OR coalesce(p_reason, '') = '' THEN
        RAISE EXCEPTION 'erasure needs a staff identity and a ticket or case id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('roomlogs.authorized_deletion', 'on', true);
    -- Rooms under legal hold keep the user's messages until the hold is released (the hold outranks the
    -- erasure request; rows_deleted says what was erased).
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
REVOKE ALL ON access_audit, deletion_requests FROM PUBLIC;

-- The API's role: created once per cluster, granted on this schema's objects only.
DO $$
DECLARE
    api_role text := current_schema() || '_api';
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = api_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION '
                           'NOBYPASSRLS', api_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database of this cluster created it a moment ago
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), api_role);
    EXECUTE format('GRANT SELECT ON events, rooms, room_moderators, retention_classes, deletion_requests TO %I',
                   api_role);
    EXECUTE format('GRANT INSERT ON access_audit TO %I', api_role);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON access_audit, deletion_requests, events FROM %I',
                   api_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION api_delete_room_logs(uuid, text, text, text, text, text), '
                   'api_erase_user_chat(uuid, text, text, text, text) TO %I', api_role);
END $$;

-- Chat text search has no index of its own: every search is bounded to one room and a time range, which
-- events_room_time narrows to a few thousand rows at most. A trigram GIN index on body served the same
-- searches no faster in the benchmark (p99 15-25 ms either way at 1,000 events per room-month) and cut
-- ingest COPY throughput from 56k to 32k events/s.
