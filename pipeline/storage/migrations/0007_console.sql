-- roomlogs 0007: the room console's side of the database.
--
-- * console_sessions: sign-in sessions of the web console (a token from the identity provider exchanged
--   for an HttpOnly cookie). Only a SHA-256 of the cookie value is stored, never the value itself.
-- * api_room_access_log(): the access audit of one room, for its owner (or support staff with a ticket):
--   who read the room's logs, when and why. The API role still cannot SELECT access_audit; this function
--   re-checks the basis itself (like api_delete_room_logs) and returns one room's rows only.
-- * api_room_retention_state(): whether a room is under legal hold and when maintenance last ran, without
--   granting the API role the legal_holds or maintenance_runs tables.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

CREATE TABLE console_sessions (
    session_hash  bytea       PRIMARY KEY CHECK (length(session_hash) = 32),
    subject       text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 64),
    identity_type text        NOT NULL CHECK (identity_type IN ('user', 'staff')),
    -- the ticket or case id support staff stated in the console; sent with every request they make
    staff_reason  text        CHECK (staff_reason IS NULL OR length(staff_reason) BETWEEN 1 AND 64),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at    timestamptz NOT NULL,
    -- set by sign-out; a session with ended_at is refused like an expired one
    ended_at      timestamptz,
    CHECK (expires_at > created_at),
    CHECK (staff_reason IS NULL OR identity_type = 'staff')
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

CREATE FUNCTION api_room_access_log(
    p_room_id text, p_requested_by text, p_identity_type text, p_basis text, p_reason text,
    p_before_at timestamptz, p_before_id bigint, p_limit integer
) RETURNS TABLE (
    audit_id bigint, at timestamptz, subject text, identity_type text, basis text, staff_reason text,
    action text, outcome text, row_count bigint, detail text
) LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF p_basis = 'owner' THEN
        IF NOT EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = p_room_id AND r.owner_id = p_requested_by) THEN
            RAISE EXCEPTION 'only the room''s current owner may read its access log'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSIF p_basis = 'staff' THEN
        IF p_identity_type <> 'staff' OR coalesce(p_reason, '') = '' THEN
            RAISE EXCEPTION 'staff need a staff identity and a ticket or case id'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSE
        RAISE EXCEPTION 'basis % may not read access logs', p_basis USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        SELECT a.audit_id, a.at, a.subject, a.identity_type, a.basis, a.staff_reason, a.action, a.outcome,
               a.row_count, a.detail
          FROM access_audit a
         WHERE a.room_id = p_room_id
           AND (p_before_at IS NULL OR (a.at, a.audit_id) < (p_before_at, p_before_id))
         ORDER BY a.at DESC, a.audit_id DESC
         LIMIT least(greatest(p_limit, 1), 500);
END $$;

CREATE FUNCTION api_room_retention_state(p_room_id text)
RETURNS TABLE (held boolean, last_maintenance_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM legal_holds h WHERE h.room_id = p_room_id AND h.released_at IS NULL),
           greatest((SELECT max(m.started_at) FROM maintenance_runs m WHERE m.outcome = 'ok'),
                    (SELECT max(m.started_at) FROM maintenance_runs m WHERE m.outcome = 'partial'))
$$;

REVOKE ALL ON FUNCTION api_room_access_log(text, text, text, text, text, timestamptz, bigint, integer)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION api_room_retention_state(text) FROM PUBLIC;
REVOKE ALL ON console_sessions FROM PUBLIC;

DO $$
DECLARE
    api_role text := current_schema() || '_api';
BEGIN
    -- 0003 created the role; sessions are the console's own state, so the role keeps them whole
    -- (expired rows are deleted at sign-in), while logs and the audit stay read-only / append-only.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO %I', api_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION '
                   'api_room_access_log(text, text, text, text, text, timestamptz, bigint, integer), '
                   'api_room_retention_state(text) TO %I', api_role);
END $$;
