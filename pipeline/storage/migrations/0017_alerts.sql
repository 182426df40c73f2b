-- roomlogs 0017: alerts (unusual activity flagged by the detectors), their outbox and the detectors' settings.
-- Written by the worker's detectors (pipeline/detectors, through pipeline/storage/alerts.py), read by the API.
--
-- * alerts: one row per (room, detector, subject, window_key): `subject` is what the alert is about (a user
--   id, a text hash, "sender>recipient", '' for the whole room), `window_key` the start of the fixed
--   bucket of the detector's window length that holds the start of the first window found over the
--   threshold (pipeline/detectors/windows.py). The key is a function of the stored rows only, so a replay,
--   a crash, a rebalance or another batching finds the same keys, and INSERT ... ON CONFLICT DO NOTHING
--   keeps the first. `users`: the users involved; `counts`: what was counted against which threshold;
--   `event_ids`: the events of the window (the evidence). `alert_id` is md5 of the key: the same alert has
--   the same id on every run.
-- * Partitioned like `events`: LIST by retention class (alerts_<class>), then RANGE by `day`, the UTC day of
--   window_key (alerts_<class>_pYYYYMMDD). create_log_partition() makes a class's and a day's alert tables
--   with its `events` partition; the writer makes one for a day with no events (a bucket starting the day
--   before); retention detaches and drops them with the day of events (pipeline/retention/enforce.py).
-- * Deletions and erasures: an authorized DELETE on `events` deletes every alert that cites a deleted row
--   (event_ids overlap): an erased user's chat no longer stands behind a flood or spam alert naming them,
--   and a room's deleted logs take their alerts. TRUNCATE on `events` empties `alerts`.
-- * alert_outbox: each stored alert queued, by a trigger in the inserting transaction, for the alerts topic
--   (pipeline/ingest/alert_relay.py): the topic gets exactly the committed alerts, at least once.
-- * detector_settings: operators' overrides of the built-in defaults, per retention class or per room
--   (`roomlogs detectors set/show/reset`); workers read them with a short cache, no restart needed. Each
--   change is appended to detector_setting_changes (who, when, why, before and after).
--
-- Roles: the API reads alerts; the worker inserts and reads alerts (never updates or deletes them), reads
-- detector_settings, clears the outbox it relays, and reads hour counts of the rollups through
-- detector_hour_counts() (no privilege on the rollup tables themselves).
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

CREATE TABLE alerts (
    retention_class text        NOT NULL,
    -- UTC day of window_key
    day             date        NOT NULL,
    room_id         text        NOT NULL,
    detector        text        NOT NULL,
    subject         text        NOT NULL,
    window_key      timestamptz NOT NULL,
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    users           text[]      NOT NULL,
    counts          jsonb       NOT NULL,
    event_ids       uuid[]      NOT NULL,
    raised_at       timestamptz NOT NULL DEFAULT now(),
    alert_id        uuid        NOT NULL,
    PRIMARY KEY (room_id, detector, subject, window_key, retention_class, day),
    CHECK (window_end > window_start)
) PARTITION BY LIST (retention_class);
-- a room's alerts by time (the API's list, the console's badges)
CREATE INDEX alerts_room_time ON alerts (room_id, window_start);
-- alerts naming a user (a user's record in a room)
CREATE INDEX alerts_users ON alerts USING gin (users);

CREATE TABLE alert_outbox (
    outbox_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    uuid   NOT NULL,
    message_key bytea  NOT NULL,
    value       bytea  NOT NULL
);

CREATE TABLE detector_settings (
    -- 'class': a retention class's default; 'room': one room's override (over its class's)
    scope       text        NOT NULL CHECK (scope IN ('class', 'room')),
    scope_id    text        NOT NULL,
    detector    text        NOT NULL,
    enabled     boolean,
    -- the parameters set here (the rest: the class's, then the built-in default)
    params      jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL,
    PRIMARY KEY (detector, scope, scope_id)
);

-- Every `roomlogs detectors set` and `reset`, appended in the transaction that makes the change: who, when,
-- why, and the setting before and after (NULL: none).
CREATE TABLE detector_setting_changes (
    change_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    changed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_by     text        NOT NULL,
    reason         text        NOT NULL,
    action         text        NOT NULL CHECK (action IN ('set', 'reset')),
    scope          text        NOT NULL,
    scope_id       text        NOT NULL,
    detector       text        NOT NULL,
    enabled_before boolean,
    params_before  jsonb,
    enabled_after  boolean,
    params_after   jsonb
);

-- Make the alert tables of a class (p_day NULL) or of a class's day when missing; never fails on a table
-- someone else made meanwhile.
CREATE FUNCTION make_alert_partitions(p_class text, p_day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    parent text;
    child  text;
BEGIN
    IF p_class IS NULL OR p_class !~ '^[a-z][a-z0-9_]{0,30}$' THEN
        RAISE EXCEPTION 'no alerts for retention class %', coalesce(quote_literal(p_class), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_day IS NOT NULL AND (p_day < date '2000-01-01' OR p_day > current_date + 366) THEN
        RAISE EXCEPTION 'day % is outside the days roomlogs partitions', p_day
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    parent := 'alerts_' || p_class;
    IF to_regclass(quote_ident(parent)) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I (LIKE alerts INCLUDING DEFAULTS INCLUDING CONSTRAINTS) '
                           'PARTITION BY RANGE (day)', parent);
            EXECUTE format('ALTER TABLE alerts ATTACH PARTITION %I FOR VALUES IN (%L)', parent, p_class);
        EXCEPTION WHEN duplicate_table OR duplicate_object OR unique_violation THEN
            NULL;  -- made by another transaction a moment ago
        END;
    END IF;
    IF p_day IS NULL THEN
        RETURN;
    END IF;
    child := format('%s_p%s', parent, to_char(p_day, 'YYYYMMDD'));
    IF to_regclass(quote_ident(child)) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', child, parent);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, child,
                           p_day, p_day + 1);
        EXCEPTION WHEN duplicate_table OR duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END $$;

-- 0016's function, same contract, now also making the class's or the day's alert tables.
CREATE OR REPLACE FUNCTION create_log_partition(p_table text, p_class text, p_day date) RETURNS boolean
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
    IF p_table = 'events' THEN
        PERFORM make_rollup_partitions(p_class, p_day);
        PERFORM make_alert_partitions(p_class, p_day);
    END IF;
    RETURN true;
END $$;

-- AFTER INSERT ON alerts, FOR EACH STATEMENT: queue what the statement stored (`raised`) for the topic.
CREATE FUNCTION alerts_queue_raised() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO alert_outbox (alert_id, message_key, value)
    SELECT alert_id, convert_to(room_id, 'UTF8'),
           convert_to(jsonb_build_object(
               'alert_id', alert_id, 'room_id', room_id, 'retention_class', retention_class,
               'detector', detector, 'subject', subject, 'window_key', window_key,
               'window_start', window_start, 'window_end', window_end, 'users', to_jsonb(users),
               'counts', counts, 'event_ids', to_jsonb(event_ids), 'raised_at', raised_at)::text, 'UTF8')
      FROM raised
     ORDER BY window_start, alert_id;
    RETURN NULL;
END $$;

-- AFTER DELETE ON events, FOR EACH STATEMENT: alerts citing a deleted row go with it.
CREATE FUNCTION alerts_take_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM alerts a
     USING (SELECT room_id, array_agg(event_id) AS ids,
                   min((occurred_at AT TIME ZONE 'UTC')::date) - 2 AS first_day,
                   max((occurred_at AT TIME ZONE 'UTC')::date) AS last_day
              FROM gone GROUP BY room_id) g
     WHERE a.room_id = g.room_id AND a.day BETWEEN g.first_day AND g.last_day AND a.event_ids && g.ids;
    RETURN NULL;
END $$;

-- For the detectors (the worker's role reads no rollups): per (room, lo, hi), the room's events of `p_types`
-- in the UTC hours that [lo, hi) overlaps, from room_hours. An upper bound of the rows in [lo, hi), used to
-- skip reading rows that cannot make a window fire, and the raid detector's baseline.
CREATE FUNCTION detector_hour_counts(p_rooms text[], p_from timestamptz[], p_to timestamptz[], p_types text[])
RETURNS TABLE (room_id text, lo timestamptz, hi timestamptz, events bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT c.room_id, c.lo, c.hi,
           (SELECT coalesce(sum(h.events), 0) FROM room_hours h
             WHERE h.room_id = c.room_id AND h.event_type = ANY(p_types)
               AND h.hour >= date_trunc('hour', c.lo, 'UTC') AND h.hour < c.hi)::bigint
      FROM unnest(p_rooms, p_from, p_to) AS c(room_id, lo, hi)
$$;

CREATE FUNCTION alerts_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    TRUNCATE alerts, alert_outbox;
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION make_alert_partitions(text, date), alerts_queue_raised(), alerts_take_deleted(),
                       alerts_truncated(), detector_hour_counts(text[], timestamptz[], timestamptz[], text[])
    FROM PUBLIC;

CREATE TRIGGER alerts_queue AFTER INSERT ON alerts REFERENCING NEW TABLE AS raised
    FOR EACH STATEMENT EXECUTE FUNCTION alerts_queue_raised();
CREATE TRIGGER events_alerts_delete AFTER DELETE ON events REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION alerts_take_deleted();
CREATE TRIGGER events_alerts_truncate AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION alerts_truncated();

-- The alert tables of every class and day `events` has (none of them holds an alert yet).
DO $$
BEGIN
    PERFORM make_alert_partitions(substr(c.relname, 8), NULL)
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'events'::regclass AND c.relkind = 'p';
    PERFORM make_alert_partitions(substring(c.relname FROM '^events_(.*)_p[0-9]{8}$'),
                                  to_date(right(c.relname, 8), 'YYYYMMDD'))
       FROM pg_inherits ci
       JOIN pg_inherits i ON i.inhparent = ci.inhrelid
       JOIN pg_class c ON c.oid = i.inhrelid
      WHERE ci.inhparent = 'events'::regclass AND NOT i.inhdetachpending AND c.relkind = 'r'
        AND c.relname ~ '^events_[a-z][a-z0-9_]{0,30}_p[0-9]{8}$';
END $$;

DO $$
DECLARE
    worker_role text := current_schema() || '_worker';
    api_role    text := current_schema() || '_api';
BEGIN
    EXECUTE format('GRANT SELECT ON alerts, detector_settings, detector_setting_changes TO %I', api_role);
    -- alerts are appended (INSERT ... ON CONFLICT DO NOTHING) and read back, never changed
    EXECUTE format('GRANT SELECT, INSERT ON alerts TO %I', worker_role);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON alerts FROM %I', worker_role);
    EXECUTE format('GRANT SELECT ON detector_settings TO %I', worker_role);
    -- the relay claims (FOR UPDATE SKIP LOCKED needs UPDATE) and clears the outbox
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON alert_outbox TO %I', worker_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION make_alert_partitions(text, date), '
                   'detector_hour_counts(text[], timestamptz[], timestamptz[], text[]) TO %I', worker_role);
END $$;
