-- roomlogs 0010: the deletion functions check who asks themselves: the API's role alone cannot delete a
-- room's logs (or erase a user's chat) in anyone's name.
--
-- Before, api_delete_room_logs() / api_erase_user_chat() took the requester's id and identity type from
-- the API and re-checked only the room's owner against them: whoever held the API's database credentials
-- could name any owner, or claim to be staff. Now the API passes a proof instead, which the function
-- verifies with what only the schema's owner can read:
--
-- * a bearer token: the identity provider's JWT, exactly as the caller sent it. Its signature is checked
--   here (HS256/384/512 with the shared secret; RS256/384/512 with the provider's public key, modular
--   arithmetic on numeric), then exp/nbf/iss/aud, sub, kind and roles as pipeline/api/auth.py does. The
--   key lives in token_trust, which only the owner reads (`roomlogs api trust-key` installs it);
-- * a console session: the session cookie's value. Only its SHA-256 is stored, and sessions are now
--   opened only by api_open_session(), which verifies the identity provider's token the same way; the
--   API's role may no longer INSERT sessions or change who or what they are for (it may still end them).
--
-- Who then may delete: the room's current owner (rooms.owner_id, written by ingest from the room's own
-- events, never by the API), or a staff identity (the configured role in the token's `roles`) with a
-- stated ticket or case id. What stays trusted, honestly: a token or session the API has seen can be
-- replayed by whoever controls the API process until it expires; with an HMAC key the API could mint
-- tokens itself (the database stops only holders of the API's credentials alone, not of its key). Use an
-- RS* key, so that the API holds no key that signs.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

-- One row: how the identity provider's tokens are verified. Written by `roomlogs api trust-key`.
CREATE TABLE token_trust (
    singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    algorithm           text    NOT NULL CHECK (algorithm IN ('HS256', 'HS384', 'HS512', 'RS256', 'RS384',
                                                              'RS512')),
    -- HS*: the shared secret
    hmac_key            bytea,
    -- RS*: the public key's modulus, exponent and length in bytes
    rsa_n               numeric,
    rsa_e               numeric,
    rsa_bytes           integer,
    issuer              text    NOT NULL DEFAULT '',
    audience            text    NOT NULL DEFAULT '',
    leeway_seconds      double precision NOT NULL DEFAULT 30 CHECK (leeway_seconds BETWEEN 0 AND 600),
    staff_role          text    NOT NULL,
    -- a console session lasts at most this long, whatever the API asks
    session_max_seconds integer NOT NULL CHECK (session_max_seconds > 0),
    installed_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    installed_by        text    NOT NULL DEFAULT current_user,
    CHECK ((algorithm LIKE 'HS%') = (hmac_key IS NOT NULL)),
    CHECK ((algorithm LIKE 'RS%') = (rsa_n IS NOT NULL AND rsa_e IS NOT NULL AND rsa_bytes IS NOT NULL))
);
REVOKE ALL ON token_trust FROM PUBLIC;

-- --- the arithmetic (no extension needed: sha256/384/512 are built in since PostgreSQL 11) -------------------
CREATE FUNCTION roomlogs_b64url(p text) RETURNS bytea LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    IF p !~ '^[A-Za-z0-9_-]*$' THEN
        RAISE EXCEPTION 'not base64url' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN decode(rpad(translate(p, '-_', '+/'), (length(p) + 3) / 4 * 4, '='), 'base64');
END $$;

CREATE FUNCTION roomlogs_digest(p bytea, p_alg text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE right(p_alg, 3) WHEN '256' THEN sha256(p) WHEN '384' THEN sha384(p) ELSE sha512(p) END
$$;

-- RFC 2104
CREATE FUNCTION roomlogs_hmac(p_key bytea, p_msg bytea, p_alg text) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    block integer := CASE right(p_alg, 3) WHEN '256' THEN 64 ELSE 128 END;
    k     bytea := p_key;
    ipad  bytea;
    opad  bytea;
BEGIN
    IF length(k) > block THEN
        k := roomlogs_digest(k, p_alg);
    END IF;
    k := k || decode(repeat('00', block - length(k)), 'hex');
    ipad := k;
    opad := k;
    FOR i IN 0 .. block - 1 LOOP
        ipad := set_byte(ipad, i, get_byte(k, i) # 54);  -- 0x36
        opad := set_byte(opad, i, get_byte(k, i) # 92);  -- 0x5c
    END LOOP;
    RETURN roomlogs_digest(opad || roomlogs_digest(ipad || p_msg, p_alg), p_alg);
END $$;

CREATE FUNCTION roomlogs_unsigned(p bytea) RETURNS numeric LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    n numeric := 0;
BEGIN
    FOR i IN 0 .. length(p) - 1 LOOP
        n := n * 256 + get_byte(p, i);
    END LOOP;
    RETURN n;
END $$;

CREATE FUNCTION roomlogs_modpow(p_base numeric, p_exp numeric, p_mod numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    result numeric := 1;
    b      numeric := mod(p_base, p_mod);
    e      numeric := p_exp;
BEGIN
    WHILE e > 0 LOOP
        IF mod(e, 2) = 1 THEN
            result := mod(result * b, p_mod);
        END IF;
        e := div(e, 2);
        IF e > 0 THEN
            b := mod(b * b, p_mod);
        END IF;
    END LOOP;
    RETURN result;
END $$;

-- RSASSA-PKCS1-v1_5 (RFC 8017 8.2.2): the signature, raised to e mod n, must be EMSA-PKCS1-v1_5 of the message
CREATE FUNCTION roomlogs_rsa_verify(p_n numeric, p_e numeric, p_bytes integer, p_sig bytea, p_msg bytea,
                                    p_alg text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    digest_info bytea := decode(CASE right(p_alg, 3)
                                    WHEN '256' THEN '3031300d060960864801650304020105000420'
                                    WHEN '384' THEN '3041300d060960864801650304020205000430'
                                    ELSE '3051300d060960864801650304020305000440' END, 'hex')
                         || roomlogs_digest(p_msg, p_alg);
    s numeric;
BEGIN
    IF length(p_sig) <> p_bytes OR p_bytes < length(digest_info) + 11 THEN
        RETURN false;
    END IF;
    s := roomlogs_unsigned(p_sig);
    IF s >= p_n THEN
        RETURN false;
    END IF;
    RETURN roomlogs_modpow(s, p_e, p_n) = roomlogs_unsigned(
        decode('0001' || repeat('ff', p_bytes - length(digest_info) - 3) || '00', 'hex') || digest_info);
END $$;

-- --- who a proof says is asking ---------------------------------------------------------------------------
-- a grant refused (insufficient_privilege, 42501): the proven identity may not do this
CREATE FUNCTION roomlogs_refuse(p_why text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', p_why USING ERRCODE = 'insufficient_privilege';
END $$;

-- a proof refused (invalid_authorization_specification, 28000): it shows no identity
CREATE FUNCTION roomlogs_unproven(p_why text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', p_why USING ERRCODE = 'invalid_authorization_specification';
END $$;

-- The identity a bearer token proves (the checks of pipeline/api/auth.py); invalid_authorization_specification
-- when it proves none, object_not_in_prerequisite_state when no key is installed.
CREATE FUNCTION verified_token_identity(p_token text) RETURNS TABLE (subject text, identity_type text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    trust  token_trust%ROWTYPE;
    parts  text[];
    header jsonb;
    claims jsonb;
    sig    bytea;
    signed bytea;
    ok     boolean;
    now_s  numeric := extract(epoch FROM clock_timestamp());
    sub    text;
    kind   text;
    staff  boolean := false;
BEGIN
    SELECT * INTO trust FROM token_trust;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the database has no key to verify identities with: run `roomlogs api trust-key` as '
                        'the schema''s owner' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF p_token IS NULL OR length(p_token) > 8192
       OR p_token !~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' THEN
        PERFORM roomlogs_unproven('the token is not a JWT');
    END IF;
    parts := string_to_array(p_token, '.');
    BEGIN
        header := convert_from(roomlogs_b64url(parts[1]), 'UTF8')::jsonb;
        claims := convert_from(roomlogs_b64url(parts[2]), 'UTF8')::jsonb;
        sig := roomlogs_b64url(parts[3]);
    EXCEPTION WHEN data_exception OR invalid_parameter_value OR character_not_in_repertoire
                   OR untranslatable_character THEN
        PERFORM roomlogs_unproven('the token is not a JWT');
    END;
    IF jsonb_typeof(header) IS DISTINCT FROM 'object' OR jsonb_typeof(claims) IS DISTINCT FROM 'object'
       OR header->>'alg' IS DISTINCT FROM trust.algorithm THEN
        PERFORM roomlogs_unproven(format('tokens must be signed with %s', trust.algorithm));
    END IF;
    signed := convert_to(parts[1] || '.' || parts[2], 'UTF8');
    IF trust.algorithm LIKE 'HS%' THEN
        -- compare digests: how long the comparison takes says nothing about the expected signature
        ok := sha256(roomlogs_hmac(trust.hmac_key, signed, trust.algorithm)) = sha256(sig);
    ELSE
        ok := roomlogs_rsa_verify(trust.rsa_n, trust.rsa_e, trust.rsa_bytes, sig, signed, trust.algorithm);
    END IF;
    IF NOT ok THEN
        PERFORM roomlogs_unproven('the token''s signature does not verify');
    END IF;
    IF jsonb_typeof(claims->'exp') IS DISTINCT FROM 'number'
       OR now_s > (claims->>'exp')::numeric + trust.leeway_seconds::numeric THEN
        PERFORM roomlogs_unproven('the token has expired (or has no exp)');
    END IF;
    IF claims ? 'nbf' AND (jsonb_typeof(claims->'nbf') IS DISTINCT FROM 'number'
                           OR now_s < (claims->>'nbf')::numeric - trust.leeway_seconds::numeric) THEN
        PERFORM roomlogs_unproven('the token is not valid yet');
    END IF;
    IF trust.issuer <> '' AND claims->>'iss' IS DISTINCT FROM trust.issuer THEN
        PERFORM roomlogs_unproven('the token has another issuer');
    END IF;
    IF trust.audience <> '' AND NOT (
        (jsonb_typeof(claims->'aud') = 'string' AND claims->>'aud' = trust.audience)
        OR (jsonb_typeof(claims->'aud') = 'array' AND claims->'aud' ? trust.audience)) THEN
        PERFORM roomlogs_unproven('the token is for another audience');
    END IF;
    sub := CASE WHEN jsonb_typeof(claims->'sub') = 'string' THEN claims->>'sub' END;
    IF sub IS NULL OR length(sub) NOT BETWEEN 1 AND 64 OR sub ~ '[\x01-\x1f\x7f]' THEN
        PERFORM roomlogs_unproven('sub must be 1..64 printable characters');
    END IF;
    kind := coalesce(claims->>'kind', 'user');
    IF kind NOT IN ('user', 'service') THEN
        PERFORM roomlogs_unproven('kind must be user or service');
    END IF;
    IF claims ? 'roles' THEN
        IF jsonb_typeof(claims->'roles') IS DISTINCT FROM 'array' THEN
            PERFORM roomlogs_unproven('roles must be a list of strings');
        END IF;
        staff := kind = 'user' AND claims->'roles' ? trust.staff_role;
    END IF;
    RETURN QUERY SELECT sub, CASE WHEN kind = 'service' THEN 'service' WHEN staff THEN 'staff' ELSE 'user' END;
END $$;

-- The identity a proof shows: 'bearer' (a token, verified above) or 'session' (a console session cookie's
-- value, of a session not ended nor expired; with the case its staff member stated).
CREATE FUNCTION proven_identity(p_proof_kind text, p_proof text)
RETURNS TABLE (subject text, identity_type text, session_reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF p_proof_kind = 'bearer' THEN
        RETURN QUERY SELECT v.subject, v.identity_type, NULL::text FROM verified_token_identity(p_proof) v;
    ELSIF p_proof_kind = 'session' AND p_proof ~ '^[A-Za-z0-9_-]{43}$' THEN
        RETURN QUERY SELECT s.subject, s.identity_type, s.staff_reason FROM console_sessions s
                      WHERE s.session_hash = sha256(roomlogs_b64url(p_proof))
                        AND s.ended_at IS NULL AND s.expires_at > clock_timestamp();
        IF NOT FOUND THEN
            PERFORM roomlogs_unproven('the console session has ended');
        END IF;
    ELSE
        PERFORM roomlogs_unproven('no proof of identity (a bearer token or a console session)');
    END IF;
END $$;

-- --- console sessions: opened only on a verified token ------------------------------------------------------
CREATE FUNCTION api_open_session(p_token text, p_session_hash bytea, p_ttl_seconds integer)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    who     record;
    longest integer;
    until   timestamptz;
BEGIN
    SELECT * INTO who FROM verified_token_identity(p_token);
    IF who.identity_type = 'service' THEN
        PERFORM roomlogs_refuse('services use bearer tokens; console sessions are for people');
    END IF;
    SELECT session_max_seconds INTO longest FROM token_trust;
    INSERT INTO console_sessions (session_hash, subject, identity_type, expires_at)
    VALUES (p_session_hash, who.subject, who.identity_type,
            clock_timestamp() + make_interval(secs => least(greatest(p_ttl_seconds, 1), longest)))
    RETURNING expires_at INTO until;
    RETURN until;
END $$;

CREATE FUNCTION api_set_session_reason(p_session text, p_reason text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM 1 FROM proven_identity('session', p_session);
    UPDATE console_sessions SET staff_reason = p_reason WHERE session_hash = sha256(roomlogs_b64url(p_session));
END $$;

-- --- the deletion functions, now on a proof -----------------------------------------------------------------
DROP FUNCTION api_delete_room_logs(uuid, text, text, text, text, text);
DROP FUNCTION api_erase_user_chat(uuid, text, text, text, text);

CREATE FUNCTION api_delete_room_logs(
    p_request_id uuid, p_room_id text, p_proof_kind text, p_proof text, p_basis text, p_reason text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    who     record;
    deleted bigint;
BEGIN
    SELECT * INTO who FROM proven_identity(p_proof_kind, p_proof);
    IF p_basis = 'owner' THEN
        IF NOT EXISTS (SELECT 1 FROM rooms WHERE room_id = p_room_id AND owner_id = who.subject) THEN
            PERFORM roomlogs_refuse('only the room''s current owner may delete its logs');
        END IF;
    ELSIF p_basis = 'staff' THEN
        IF who.identity_type <> 'staff' OR length(btrim(coalesce(p_reason, ''))) NOT BETWEEN 1 AND 64 THEN
            PERFORM roomlogs_refuse('staff deletions need a staff identity and a ticket or case id');
        END IF;
    ELSE
        PERFORM roomlogs_refuse(format('deletion basis %s is not allowed', p_basis));
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
    VALUES (p_request_id, 'room_logs', p_room_id, who.subject, who.identity_type, p_basis, p_reason, deleted);
    RETURN deleted;
END $$;

CREATE FUNCTION api_erase_user_chat(
    p_request_id uuid, p_user_id text, p_proof_kind text, p_proof text, p_reason text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    who     record;
    deleted bigint;
BEGIN
    SELECT * INTO who FROM proven_identity(p_proof_kind, p_proof);
    IF who.identity_type <> 'staff' OR length(btrim(coalesce(p_reason, ''))) NOT BETWEEN 1 AND 64 THEN
        PERFORM roomlogs_refuse('erasure needs a staff identity and a ticket or case id');
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
    VALUES (p_request_id, 'user_chat_erasure', p_user_id, who.subject, who.identity_type, 'staff', p_reason,
            deleted);
    RETURN deleted;
END $$;

REVOKE ALL ON FUNCTION verified_token_identity(text), proven_identity(text, text),
                       api_open_session(text, bytea, integer), api_set_session_reason(text, text),
                       api_delete_room_logs(uuid, text, text, text, text, text),
                       api_erase_user_chat(uuid, text, text, text, text), roomlogs_refuse(text),
                       roomlogs_unproven(text) FROM PUBLIC;

DO $$
DECLARE
    api_role text := current_schema() || '_api';
BEGIN
    -- sessions are opened and given a case only through the functions above; ending one stays the API's
    EXECUTE format('REVOKE INSERT, UPDATE ON console_sessions FROM %I', api_role);
    EXECUTE format('GRANT UPDATE (ended_at) ON console_sessions TO %I', api_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION api_open_session(text, bytea, integer), '
                   'api_set_session_reason(text, text), api_delete_room_logs(uuid, text, text, text, text, text), '
                   'api_erase_user_chat(uuid, text, text, text, text) TO %I', api_role);
END $$;
