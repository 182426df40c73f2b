-- roomlogs 0018: the access log a room's owner reads in the console, filtered where it is read.
--
-- api_room_access_log() (0007) gains four filters, each NULL for "any": who read (p_subject), what they did
-- (p_action, the audit's action), how it ended (p_outcome), and one reader left out (p_exclude_subject: the
-- console folds the owner's own reads away by default). Paging stays (at, audit_id) newest first, so a
-- filtered page is as cheap as an unfiltered one on access_audit_room_at. The basis checks are unchanged.

SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

DROP FUNCTION api_room_access_log(text, text, text, text, text, timestamptz, bigint, integer);

CREATE FUNCTION api_room_access_log(
    p_room_id text, p_requested_by text, p_identity_type text, p_basis text, p_reason text,
    p_before_at timestamptz, p_before_id bigint, p_limit integer,
    p_subject text, p_action text, p_outcome text, p_exclude_subject text
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
           AND (p_subject IS NULL OR a.subject = p_subject)
           AND (p_action IS NULL OR a.action = p_action)
           AND (p_outcome IS NULL OR a.outcome = p_outcome)
           AND (p_exclude_subject IS NULL OR a.subject <> p_exclude_subject)
         ORDER BY a.at DESC, a.audit_id DESC
         LIMIT least(greatest(p_limit, 1), 500);
END $$;

REVOKE ALL ON FUNCTION api_room_access_log(text, text, text, text, text, timestamptz, bigint, integer,
                                           text, text, text, text) FROM PUBLIC;

DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION api_room_access_log(text, text, text, text, text, timestamptz, '
                   'bigint, integer, text, text, text, text) TO %I', current_schema() || '_api');
END $$;
