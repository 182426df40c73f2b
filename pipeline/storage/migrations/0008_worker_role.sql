-- roomlogs 0008: the ingest worker's own database role, <schema>_worker: it writes logs, never edits them.
--
-- * <schema>_worker: the role `roomlogs worker` connects as. Like <schema>_api (0003) it is cluster-wide and
--   named after the schema, and every grant names this schema's objects only. It may append log rows and
--   dead letters and read them back (a copy of a stored event is compared with the stored row), keep its own
--   state (event-id registry, rooms and moderator grants, offsets of record, the dead-letter outbox), read
--   what it must honour (retention classes, authorized deletions, the ledger of dropped days, legal holds)
--   and make day partitions through create_log_partition(). It has no UPDATE, DELETE or TRUNCATE on any
--   log table, owns nothing, and cannot read the access audit or call the API's deletion functions.
-- * create_log_partition(): a SECURITY DEFINER function making one day partition (or one class's table)
--   the way pipeline/storage/partitions.py did: CREATE TABLE, then ATTACH PARTITION (SHARE UPDATE EXCLUSIVE
--   on the parent, so ingest never waits for it). ATTACH needs the parent's owner, and an owner can disable
--   the guard triggers, TRUNCATE or DROP the logs; so the owner does it, inside a function that builds
--   every name and bound itself from a known retention class and a day.
-- * Retention drops stay with the owner of the log tables. DETACH PARTITION ... CONCURRENTLY (which never
--   blocks ingest) needs the parent's owner and cannot run inside a function, so no function can lend it
--   to the worker. A worker on this role makes partitions ahead and prunes its event-id registry; drops,
--   legal holds' rows and the ledger are `roomlogs retention enforce --apply` run as the owner (see
--   deploy/README.md). A worker connecting as the owner keeps doing both, as before.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

-- p_table 'events' with a class and no day: the class's table events_<class> (RANGE by day) under events;
-- 'events' with a class and a day: events_<class>_pYYYYMMDD; 'dead_letters' with a day: dead_letters_pYYYYMMDD.
-- Returns true when made. An existing table of that name raises duplicate_table (42P07): the caller looks at
-- whether it is attached (made by someone else meanwhile) or detached (retention is dropping that day).
-- The caller's lock_timeout applies (set it before calling).
CREATE FUNCTION create_log_partition(p_table text, p_class text, p_day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    parent text;
    child  text;
    bounds text;
    sub    text := '';
BEGIN
    IF p_table = 'events' THEN
        IF p_class IS NULL OR p_class !~ '^[a-z][a-z0-9_]{0,30}$'
           OR NOT EXISTS (SELECT 1 FROM retention_classes WHERE name = p_class) THEN
            RAISE EXCEPTION 'no retention class %', coalesce(quote_literal(p_class), 'NULL')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF p_day IS NULL THEN
            parent := 'events';
            child := 'events_' || p_class;
            bounds := format('FOR VALUES IN (%L)', p_class);
            sub := ' PARTITION BY RANGE (occurred_at)';
        ELSE
            parent := 'events_' || p_class;
            child := format('events_%s_p%s', p_class, to_char(p_day, 'YYYYMMDD'));
        END IF;
    ELSIF p_table = 'dead_letters' AND p_class IS NULL AND p_day IS NOT NULL THEN
        parent := 'dead_letters';
        child := 'dead_letters_p' || to_char(p_day, 'YYYYMMDD');
    ELSE
        RAISE EXCEPTION 'no partition of % for class % and day %', p_table, p_class, p_day
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_day IS NOT NULL THEN
        -- event times before 2000 are refused by the contract; ahead: at most a year (premake makes days)
        IF p_day < date '2000-01-01' OR p_day > current_date + 366 THEN
            RAISE EXCEPTION 'day % is outside the days roomlogs partitions', p_day
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        bounds := format('FOR VALUES FROM (%L) TO (%L)', p_day::text || ' 00:00:00+00',
                         (p_day + 1)::text || ' 00:00:00+00');
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)%s', child, parent, sub);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I %s', parent, child, bounds);
    RETURN true;
END $$;

REVOKE ALL ON FUNCTION create_log_partition(text, text, date) FROM PUBLIC;

DO $$
DECLARE
    worker_role text := current_schema() || '_worker';
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = worker_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION '
                           'NOBYPASSRLS', worker_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database of this cluster created it a moment ago
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), worker_role);
    -- the logs: appended (binary COPY, INSERT ... ON CONFLICT DO NOTHING) and read back, never changed
    EXECUTE format('GRANT SELECT, INSERT ON events, dead_letters TO %I', worker_role);
    EXECUTE format('GRANT SELECT ON held_events, stored_events TO %I', worker_role);
    -- its own state
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON event_ids TO %I', worker_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON dead_letter_outbox TO %I', worker_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON rooms, room_moderator_grants, ingest_offsets TO %I',
                   worker_role);
    EXECUTE format('GRANT SELECT ON room_moderators TO %I', worker_role);
    -- what it honours and reports
    EXECUTE format('GRANT SELECT ON retention_classes, deletion_requests, deletion_ledger, legal_holds, '
                   'maintenance_runs, retention_detaching, schema_migrations TO %I', worker_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION create_log_partition(text, text, date) TO %I', worker_role);
    -- belt and braces: nothing granted to PUBLIC on the logs or the audit reaches it either
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON events, dead_letters, held_events, deletion_ledger, '
                   'deletion_requests, legal_holds, access_audit FROM %I', worker_role);
END $$;
