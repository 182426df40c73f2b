-- roomlogs 0023: `roomlogs api end-sessions` also closes sign-ins with tokens issued before it.
--
-- A database restored from a backup forgets the sign-ins used since (used_sign_ins, migration 0019): a token
-- used after the backup could open a second console session within its lifetime. Ending every session
-- (pipeline/api/queries/sessions.py, end_all_sessions) now also sets sign_in_floor: api_open_session() and
-- api_open_oidc_session() refuse a token issued (`iat`) before it, or with no `iat`, as already used. Used
-- after a restore, or when the token key leaked, it leaves no token from before able to open a session.
-- The two functions are 0019's, with that one check added.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

CREATE TABLE sign_in_floor (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    -- tokens issued before this open no session
    not_before timestamptz NOT NULL
);
REVOKE ALL ON sign_in_floor FROM PUBLIC;

-- Refuse (unique_violation, as a sign-in used already) a token issued before the floor, or with no iat once
-- there is a floor.
CREATE FUNCTION roomlogs_sign_in_after_floor(p_claims jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    floor timestamptz := (SELECT not_before FROM sign_in_floor);
BEGIN
    IF floor IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(p_claims->'iat') IS DISTINCT FROM 'number'
       OR to_timestamp((p_claims->>'iat')::double precision) < floor THEN
        RAISE EXCEPTION 'this sign-in was issued before every session was signed out; sign in again'
            USING ERRCODE = 'unique_violation';
    END IF;
END $$;
REVOKE ALL ON FUNCTION roomlogs_sign_in_after_floor(jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION api_open_session(p_token text, p_session_hash bytea, p_ttl_seconds integer)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    who     record;
    trust   token_trust%ROWTYPE;
    claims  jsonb;
    until   timestamptz;
BEGIN
    SELECT * INTO who FROM verified_token_identity(p_token);
    IF who.identity_type = 'service' THEN
        PERFORM roomlogs_refuse('services use bearer tokens; console sessions are for people');
    END IF;
    SELECT * INTO trust FROM token_trust;
    claims := roomlogs_jwt_claims(p_token);  -- verified above: a JWT with a numeric exp
    PERFORM roomlogs_sign_in_after_floor(claims);
    PERFORM roomlogs_use_sign_in(
        CASE WHEN jsonb_typeof(claims->'jti') = 'string'
             THEN 'jti:' || coalesce(claims->>'iss', '') || ':' || (claims->>'jti')
             ELSE 'sha256:' || encode(sha256(convert_to(p_token, 'UTF8')), 'hex') END,
        to_timestamp((claims->>'exp')::double precision + trust.leeway_seconds));
    INSERT INTO console_sessions (session_hash, subject, identity_type, expires_at)
    VALUES (p_session_hash, who.subject, who.identity_type,
            clock_timestamp() + make_interval(secs => least(greatest(p_ttl_seconds, 1), trust.session_max_seconds)))
    RETURNING expires_at INTO until;
    RETURN until;
END $$;

CREATE OR REPLACE FUNCTION api_open_oidc_session(p_id_token text, p_session_hash bytea, p_ttl_seconds integer)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    who     record;
    trust   token_trust_oidc%ROWTYPE;
    longest integer;
    until   timestamptz;
BEGIN
    SELECT * INTO who FROM verified_id_token(p_id_token);
    SELECT * INTO trust FROM token_trust_oidc;
    PERFORM roomlogs_sign_in_after_floor(roomlogs_jwt_claims(p_id_token));
    -- one authorization request, one session, however often its code is exchanged
    PERFORM roomlogs_use_sign_in('nonce:' || trust.issuer || ':' || who.nonce,
                                 to_timestamp(who.expires) + interval '1 day');
    IF who.jti IS NOT NULL THEN
        PERFORM roomlogs_use_sign_in('jti:' || trust.issuer || ':' || who.jti, to_timestamp(who.expires));
    END IF;
    SELECT coalesce((SELECT session_max_seconds FROM token_trust), 28800) INTO longest;
    INSERT INTO console_sessions (session_hash, subject, identity_type, expires_at)
    VALUES (p_session_hash, who.subject, who.identity_type,
            clock_timestamp() + make_interval(secs => least(greatest(p_ttl_seconds, 1), longest)))
    RETURNING expires_at INTO until;
    RETURN until;
END $$;
