-- roomlogs 0027: bearer tokens signed with ES256 (ECDSA on P-256) are verified by the database too.
--
-- The deletion functions and the opening of console sessions verify the caller's bearer token themselves
-- (migration 0010), with the key `roomlogs api trust-key` installs in token_trust. Until now that key could be
-- an HMAC secret (HS*) or an RSA public key (RS*) only: an identity provider signing access tokens with a
-- P-256 key (ES256, common among managed providers) left deletions and token sign-in refused. token_trust now
-- keeps a P-256 point too (ec_x, ec_y), and verified_token_identity() is 0010's with the signature checked by
-- roomlogs_p256_verify() (migration 0025: the point must be on the curve, r and s in [1, n-1], the signature
-- the JWS's 64 bytes r || s) when the key is ES256. The token's alg must still be the key's. ES384/ES512,
-- PS* and EdDSA stay refused by `trust-key` (no arithmetic for them here).
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

ALTER TABLE token_trust
    DROP CONSTRAINT token_trust_algorithm_check,
    ADD COLUMN ec_x numeric,
    ADD COLUMN ec_y numeric,
    ADD CONSTRAINT token_trust_algorithm_check CHECK (algorithm IN ('HS256', 'HS384', 'HS512', 'RS256', 'RS384',
                                                                   'RS512', 'ES256')),
    ADD CONSTRAINT token_trust_ec_check CHECK ((algorithm = 'ES256') = (ec_x IS NOT NULL AND ec_y IS NOT NULL));

-- 0010's, with an ES256 key's signature checked on P-256 (and a NULL from any check taken as not verified)
CREATE OR REPLACE FUNCTION verified_token_identity(p_token text) RETURNS TABLE (subject text, identity_type text)
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
    ELSIF trust.algorithm = 'ES256' THEN
        ok := roomlogs_p256_verify(trust.ec_x, trust.ec_y, sig, signed);
    ELSE
        ok := roomlogs_rsa_verify(trust.rsa_n, trust.rsa_e, trust.rsa_bytes, sig, signed, trust.algorithm);
    END IF;
    IF ok IS NOT TRUE THEN
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

REVOKE ALL ON FUNCTION verified_token_identity(text) FROM PUBLIC;
