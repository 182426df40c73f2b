-- roomlogs 0025: single sign-on with a provider that signs ID tokens with ES256 (ECDSA on P-256).
--
-- Before, the database verified ID tokens with RSA keys only (migration 0019), so a provider publishing only
-- EC keys could not open a console session: `roomlogs api trust-key` refused it. The database now verifies
-- ES256 itself too, with the same kind of arithmetic as RSA (numeric, in SQL, no extension): FIPS 186-4
-- ECDSA verification on P-256, in Jacobian coordinates with Shamir's trick. The key's point must be on the
-- curve, r and s in [1, n-1], the signature the JWS's 64 bytes (r || s). `token_trust_oidc_keys` keeps
-- either an RSA key (rsa_n, rsa_e, rsa_bytes) or a P-256 point (ec_x, ec_y); verified_id_token() is 0019's
-- with the signature check choosing by the key's algorithm (the token's alg must still be the key's).
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

ALTER TABLE token_trust_oidc_keys
    DROP CONSTRAINT token_trust_oidc_keys_algorithm_check,
    ALTER COLUMN rsa_n DROP NOT NULL,
    ALTER COLUMN rsa_e DROP NOT NULL,
    ALTER COLUMN rsa_bytes DROP NOT NULL,
    ADD COLUMN ec_x numeric,
    ADD COLUMN ec_y numeric,
    ADD CONSTRAINT token_trust_oidc_keys_key_check CHECK (
        (algorithm IN ('RS256', 'RS384', 'RS512') AND rsa_n IS NOT NULL AND rsa_e IS NOT NULL
         AND rsa_bytes IS NOT NULL AND ec_x IS NULL AND ec_y IS NULL)
        OR (algorithm = 'ES256' AND ec_x IS NOT NULL AND ec_y IS NOT NULL
            AND rsa_n IS NULL AND rsa_e IS NULL AND rsa_bytes IS NULL));

-- --- P-256 (FIPS 186-4 D.1.2.3, SEC 2 2.4.2): y^2 = x^3 - 3x + b over GF(p) ------------------------------------
-- A point in Jacobian coordinates is ARRAY[X, Y, Z] (x = X/Z^2, y = Y/Z^3), each in [0, p); Z = 0 is the point
-- at infinity. PostgreSQL's mod() keeps the dividend's sign: every result is brought back into [0, p).

-- 2P (dbl-2001-b, a = -3)
CREATE FUNCTION roomlogs_p256_double(p_x numeric, p_y numeric, p_z numeric) RETURNS numeric[]
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    p     constant numeric := 115792089210356248762697446949407573530086143415290314195533631308867097853951;
    delta numeric;
    gamma numeric;
    beta  numeric;
    alpha numeric;
    x3    numeric;
BEGIN
    IF p_z = 0 OR p_y = 0 THEN
        RETURN ARRAY[0, 1, 0];
    END IF;
    delta := mod(p_z * p_z, p);
    gamma := mod(p_y * p_y, p);
    beta := mod(p_x * gamma, p);
    alpha := mod(3 * (p_x - delta) * (p_x + delta), p);
    x3 := mod(mod(alpha * alpha - 8 * beta, p) + p, p);
    RETURN ARRAY[x3,
                 mod(mod(alpha * (4 * beta - x3) - 8 * mod(gamma * gamma, p), p) + p, p),
                 mod(mod((p_y + p_z) * (p_y + p_z) - gamma - delta, p) + p, p)];
END $$;

-- P + Q, P Jacobian, Q affine (x, y) and not infinity (madd, a = -3; P = Q doubles, P = -Q is infinity)
CREATE FUNCTION roomlogs_p256_add(p_x numeric, p_y numeric, p_z numeric, q_x numeric, q_y numeric)
RETURNS numeric[] LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    p   constant numeric := 115792089210356248762697446949407573530086143415290314195533631308867097853951;
    zz  numeric;
    h   numeric;
    r   numeric;
    hh  numeric;
    hhh numeric;
    v   numeric;
    x3  numeric;
BEGIN
    IF p_z = 0 THEN
        RETURN ARRAY[q_x, q_y, 1];
    END IF;
    zz := mod(p_z * p_z, p);
    h := mod(q_x * zz - p_x, p);                   -- in (-p, p): zero only when congruent to zero
    r := mod(q_y * mod(zz * p_z, p) - p_y, p);
    IF h = 0 THEN
        IF r = 0 THEN
            RETURN roomlogs_p256_double(p_x, p_y, p_z);
        END IF;
        RETURN ARRAY[0, 1, 0];
    END IF;
    hh := mod(h * h, p);
    hhh := mod(h * hh, p);
    v := mod(p_x * hh, p);
    x3 := mod(mod(r * r - hhh - 2 * v, p) + p, p);
    RETURN ARRAY[x3,
                 mod(mod(r * (v - x3) - p_y * hhh, p) + p, p),
                 mod(mod(p_z * h, p) + p, p)];
END $$;

-- ECDSA P-256 with SHA-256 (RFC 7518 3.4: the signature is r || s, 32 bytes each, big-endian)
CREATE FUNCTION roomlogs_p256_verify(p_qx numeric, p_qy numeric, p_sig bytea, p_msg bytea) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    p   constant numeric := 115792089210356248762697446949407573530086143415290314195533631308867097853951;
    n   constant numeric := 115792089210356248762697446949407573529996955224135760342422259061068512044369;
    b   constant numeric := 41058363725152142129326129780047268409114441015993725554835256314039467401291;
    gx  constant numeric := 48439561293906451759052585252797914202762949526041747995844080717082404635286;
    gy  constant numeric := 36134250956749795798585127919587881956611106672985015071877198253568414405109;
    r   numeric;
    s   numeric;
    w   numeric;
    u1  numeric;
    u2  numeric;
    g_bits boolean[] := '{}';
    q_bits boolean[] := '{}';
    gq  numeric[];
    gq_x numeric;
    gq_y numeric;
    acc numeric[] := ARRAY[0, 1, 0];
    zi  numeric;
BEGIN
    IF length(p_sig) <> 64 THEN
        RETURN false;
    END IF;
    -- the key must be a point of the curve (else an invalid-curve key could make forgeries easy)
    IF p_qx < 0 OR p_qx >= p OR p_qy < 0 OR p_qy >= p
       OR mod(p_qy * p_qy, p) <> mod(mod(p_qx * p_qx * p_qx - 3 * p_qx + b, p) + p, p) THEN
        RETURN false;
    END IF;
    r := roomlogs_unsigned(substr(p_sig, 1, 32));
    s := roomlogs_unsigned(substr(p_sig, 33, 32));
    IF r < 1 OR r >= n OR s < 1 OR s >= n THEN
        RETURN false;
    END IF;
    w := roomlogs_modpow(s, n - 2, n);  -- s^-1 (n is prime)
    u1 := mod(roomlogs_unsigned(sha256(p_msg)) * w, n);  -- SHA-256 is as long as n: nothing to cut
    u2 := mod(r * w, n);
    FOR i IN 1 .. 256 LOOP  -- bits, least significant first
        g_bits[i] := mod(u1, 2) = 1;
        q_bits[i] := mod(u2, 2) = 1;
        u1 := div(u1, 2);
        u2 := div(u2, 2);
    END LOOP;
    -- u1 G + u2 Q in one pass (Shamir): G + Q once, in affine coordinates
    gq := roomlogs_p256_add(gx, gy, 1, p_qx, p_qy);
    IF gq[3] <> 0 THEN
        zi := roomlogs_modpow(gq[3], p - 2, p);
        gq_x := mod(gq[1] * mod(zi * zi, p), p);
        gq_y := mod(gq[2] * mod(mod(zi * zi, p) * zi, p), p);
    END IF;
    FOR i IN REVERSE 256 .. 1 LOOP
        acc := roomlogs_p256_double(acc[1], acc[2], acc[3]);
        IF g_bits[i] AND q_bits[i] THEN
            IF gq[3] <> 0 THEN  -- Q = -G: G + Q is infinity, nothing to add
                acc := roomlogs_p256_add(acc[1], acc[2], acc[3], gq_x, gq_y);
            END IF;
        ELSIF g_bits[i] THEN
            acc := roomlogs_p256_add(acc[1], acc[2], acc[3], gx, gy);
        ELSIF q_bits[i] THEN
            acc := roomlogs_p256_add(acc[1], acc[2], acc[3], p_qx, p_qy);
        END IF;
    END LOOP;
    IF acc[3] = 0 THEN
        RETURN false;
    END IF;
    zi := roomlogs_modpow(acc[3], p - 2, p);
    RETURN mod(mod(acc[1] * mod(zi * zi, p), p), n) = r;
END $$;

-- --- 0019's verified_id_token(), with the signature checked by the key's algorithm ---------------------------
CREATE OR REPLACE FUNCTION verified_id_token(p_token text)
RETURNS TABLE (subject text, identity_type text, nonce text, jti text, expires double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    trust  token_trust_oidc%ROWTYPE;
    k      token_trust_oidc_keys%ROWTYPE;
    parts  text[];
    header jsonb;
    claims jsonb;
    sig    bytea;
    signed bytea;
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
    signed := convert_to(parts[1] || '.' || parts[2], 'UTF8');
    -- IS NOT TRUE: a key missing its numbers (NULL) refuses, never lets through
    IF header->>'alg' IS DISTINCT FROM k.algorithm
       OR (CASE WHEN k.algorithm = 'ES256' THEN roomlogs_p256_verify(k.ec_x, k.ec_y, sig, signed)
                ELSE roomlogs_rsa_verify(k.rsa_n, k.rsa_e, k.rsa_bytes, sig, signed, k.algorithm) END) IS NOT TRUE
    THEN
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
