-- roomlogs 0019: a sign-in opens at most one console session, and console sessions from single sign-on.
--
-- * used_sign_ins: what each opened session was opened with, kept until that token expires. Before, a token
--   from the identity provider kept opening new sessions, also after its session was signed out, for its
--   whole lifetime (a sign-in link found in a browser's history signed its finder in). Now
--   api_open_session() records the token's id (its `jti`, or the SHA-256 of the token when it has none)
--   and a second use is refused (unique_violation, 23505). Sign-in links and `roomlogs api token` mint a
--   jti.
-- * token_trust_oidc / token_trust_oidc_keys: an OpenID Connect provider's ID tokens, verified here like
--   bearer tokens (migration 0010): the provider's RSA signing keys by key id, its issuer, the API's client
--   id (the ID token's audience) and which claim makes a user support staff. Only the schema's owner writes
--   them (`roomlogs api trust-key` fetches the provider's JWKS). api_open_oidc_session() opens a session on
--   an ID token and records its nonce (one authorization request, one session: a replayed authorization
--   code gives a new ID token with the same nonce) and its jti.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

CREATE TABLE used_sign_ins (
    sign_in_id text        PRIMARY KEY CHECK (length(sign_in_id) BETWEEN 1 AND 1024),
    -- the token's exp (plus the leeway): after it the token is refused anyway, and the row is forgotten
    used_until timestamptz NOT NULL
);
CREATE INDEX used_sign_ins_until ON used_sign_ins (used_until);
REVOKE ALL ON used_sign_ins FROM PUBLIC;

CREATE TABLE token_trust_oidc (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    issuer         text    NOT NULL CHECK (issuer <> ''),
    client_id      text    NOT NULL CHECK (client_id <> ''),
    -- a user is support staff when this claim is the value, or a list holding it ('' claim: never)
    staff_claim    text    NOT NULL DEFAULT '',
    staff_value    text    NOT NULL DEFAULT '',
    leeway_seconds double precision NOT NULL DEFAULT 30 CHECK (leeway_seconds BETWEEN 0 AND 600),
    installed_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    installed_by   text    NOT NULL DEFAULT current_user
);
CREATE TABLE token_trust_oidc_keys (
    kid       text    PRIMARY KEY CHECK (length(kid) BETWEEN 1 AND 256),
    algorithm text    NOT NULL CHECK (algorithm IN ('RS256', 'RS384', 'RS512')),
    rsa_n     numeric NOT NULL,
    rsa_e     numeric NOT NULL,
    rsa_bytes integer NOT NULL
);
REVOKE ALL ON token_trust_oidc, token_trust_oidc_keys FROM PUBLIC;

-- Record a sign-in as used (unique_violation when it already opened a session); forget expired ones.
CREATE FUNCTION roomlogs_use_sign_in(p_id text, p_until timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM used_sign_ins WHERE used_until < clock_timestamp();
    BEGIN
        INSERT INTO used_sign_ins (sign_in_id, used_until) VALUES (p_id, p_until);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'this sign-in has already opened a session; sign in again' USING ERRCODE = 'unique_violation';
    END;
END $$;

CREATE FUNCTION roomlogs_jwt_claims(p_token text) RETURNS jsonb LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT convert_from(roomlogs_b64url(split_part(p_token, '.', 2)), 'UTF8')::jsonb
$$;

-- --- development tokens: the same session opening as 0010, once per token --------------------------------------
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

-- --- single sign-on: an OpenID Connect ID token ----------------------------------------------------------------
-- The identity an ID token proves (invalid_authorization_specification when none; object_not_in_prerequisite_state
-- when no provider or no key of that id is installed: run `roomlogs api trust-key`).
CREATE FUNCTION verified_id_token(p_token text)
RETURNS TABLE (subject text, identity_type text, nonce text, jti text, expires double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    trust  token_trust_oidc%ROWTYPE;
    k      token_trust_oidc_keys%ROWTYPE;
    parts  text[];
    header jsonb;
    claims jsonb;
    sig    bytea;
    now_s  double precision := extract(epoch FROM clock_timestamp());
    sub    text;
    staff  boolean := false;
    said   jsonb;
BEGIN
    SELECT * INTO trust FROM token_trust_oidc;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the database trusts no single sign-on provider: run `roomlogs api trust-key` as the '
                        'schema''s owner' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF p_token IS NULL OR length(p_token) > 16384
       OR p_token !~ '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' THEN
        PERFORM roomlogs_unproven('the ID token is not a JWT');
    END IF;
    parts := string_to_array(p_token, '.');
    BEGIN
        header := convert_from(roomlogs_b64url(parts[1]), 'UTF8')::jsonb;
        claims := convert_from(roomlogs_b64url(parts[2]), 'UTF8')::jsonb;
        sig := roomlogs_b64url(parts[3]);
    EXCEPTION WHEN data_exception OR invalid_parameter_value OR character_not_in_repertoire
                   OR untranslatable_character THEN
        PERFORM roomlogs_unproven('the ID token is not a JWT');
    END;
    IF jsonb_typeof(header) IS DISTINCT FROM 'object' OR jsonb_typeof(claims) IS DISTINCT FROM 'object' THEN
        PERFORM roomlogs_unproven('the ID token is not a JWT');
    END IF;
    SELECT * INTO k FROM token_trust_oidc_keys WHERE kid = header->>'kid';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the database does not know the provider''s key %: run `roomlogs api trust-key` again '
                        '(the provider has rotated its keys)', header->>'kid'
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF header->>'alg' IS DISTINCT FROM k.algorithm
       OR NOT roomlogs_rsa_verify(k.rsa_n, k.rsa_e, k.rsa_bytes, sig,
                                  convert_to(parts[1] || '.' || parts[2], 'UTF8'), k.algorithm) THEN
        PERFORM roomlogs_unproven('the ID token''s signature does not verify');
    END IF;
    IF jsonb_typeof(claims->'exp') IS DISTINCT FROM 'number'
       OR now_s > (claims->>'exp')::double precision + trust.leeway_seconds THEN
        PERFORM roomlogs_unproven('the ID token has expired (or has no exp)');
    END IF;
    IF claims->>'iss' IS DISTINCT FROM trust.issuer THEN
        PERFORM roomlogs_unproven('the ID token has another issuer');
    END IF;
    IF NOT ((jsonb_typeof(claims->'aud') = 'string' AND claims->>'aud' = trust.client_id)
            OR (jsonb_typeof(claims->'aud') = 'array' AND claims->'aud' ? trust.client_id)) THEN
        PERFORM roomlogs_unproven('the ID token is for another client');
    END IF;
    IF jsonb_typeof(claims->'nonce') IS DISTINCT FROM 'string' THEN
        PERFORM roomlogs_unproven('the ID token has no nonce');
    END IF;
    sub := CASE WHEN jsonb_typeof(claims->'sub') = 'string' THEN claims->>'sub' END;
    IF sub IS NULL OR length(sub) NOT BETWEEN 1 AND 64 OR sub ~ '[\x01-\x1f\x7f]' THEN
        PERFORM roomlogs_unproven('sub must be 1..64 printable characters');
    END IF;
    IF trust.staff_claim <> '' THEN
        said := claims->trust.staff_claim;
        staff := (jsonb_typeof(said) = 'string' AND said #>> '{}' = trust.staff_value)
                 OR (jsonb_typeof(said) = 'array' AND said ? trust.staff_value);
    END IF;
    RETURN QUERY SELECT sub, CASE WHEN staff THEN 'staff' ELSE 'user' END, claims->>'nonce',
                        CASE WHEN jsonb_typeof(claims->'jti') = 'string' THEN claims->>'jti' END,
                        (claims->>'exp')::double precision + trust.leeway_seconds;
END $$;

CREATE FUNCTION api_open_oidc_session(p_id_token text, p_session_hash bytea, p_ttl_seconds integer)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    who     record;
    trust   token_trust_oidc%ROWTYPE;
    longest integer;
    until   timestamptz;
BEGIN
    SELECT * INTO who FROM verified_id_token(p_id_token);
    SELECT * INTO trust FROM token_trust_oidc;
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

REVOKE ALL ON FUNCTION roomlogs_use_sign_in(text, timestamptz), verified_id_token(text),
                       api_open_oidc_session(text, bytea, integer) FROM PUBLIC;

DO $$
DECLARE
    api_role text := current_schema() || '_api';
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION api_open_oidc_session(text, bytea, integer) TO %I', api_role);
END $$;
