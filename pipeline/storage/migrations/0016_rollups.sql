-- roomlogs 0016: room activity rollups, exact, kept by PostgreSQL from the rows each statement stored.
-- Read through pipeline/storage/rollups.py (the calendar, insights, `days`); nothing else writes them.
--
-- * room_hours: per retention class, UTC hour, room and event type: `events` stored, and `credits` (the
--   gift credits of gift.sent events; 0 for other types).
-- * room_day_actors: per retention class, UTC day, room, event type and actor (events with an actor only):
--   `events`, `credits` (gift credits the actor sent), `hours` (bit h set: at least one such event in UTC
--   hour h, so distinct users entering per hour are exact), the first and last event time, and the
--   display name of the last event (last by event time, then event id: a function of the events, not of
--   their arrival). Chat per user (top chatters), users entering, moderation actions per moderator, gifts
--   per sender; room_day_actors_top answers "a day's top N" from the index alone.
-- * Both are partitioned like `events`: LIST by retention class (room_hours_<class>,
--   room_day_actors_<class>), then RANGE by UTC day (room_hours_<class>_pYYYYMMDD, on `hour`;
--   room_day_actors_<class>_pYYYYMMDD, on `day`). create_log_partition() makes a class's and a day's rollup
--   tables with its `events` table; retention detaches them (CONCURRENTLY, as the day of events) and drops
--   them in the transaction that drops that day of events (pipeline/retention/enforce.py).
--
-- How they stay exact: statement-level AFTER triggers on `events` with transition tables, so PostgreSQL
-- hands them exactly the rows a statement stored. The writer's binary COPY and its INSERT ... ON CONFLICT
-- DO NOTHING (only the rows inserted are in the transition table): replays and duplicates the event-id
-- registry turned away never reach them; a row refused inside a savepoint rolls back with its rollup
-- update; a crash rolls back with the batch. Authorized deletions and erasures (the only DELETE on
-- `events`) subtract what they deleted; TRUNCATE empties them. Upserts go in key order, room_day_actors
-- before room_hours, so two transactions writing the same rooms never deadlock. The functions are SECURITY
-- DEFINER of the tables' owner: the worker's role has no privilege on the rollups, the API's reads them.
--
-- Existing rows are rolled up here, one day partition at a time (a NOTICE after each: `roomlogs migrate`
-- prints them). This transaction holds `events` against writes from its first trigger to its commit, so
-- the rollups match the rows exactly; on a large schema that is minutes (about 2-3 minutes per 10 million
-- rows on two cores): stop the workers or run it at a quiet hour. Ingest that waits resumes on its own.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

CREATE TABLE room_hours (
    retention_class text        NOT NULL,
    -- the UTC hour's start
    hour            timestamptz NOT NULL,
    room_id         text        NOT NULL,
    event_type      text        NOT NULL,
    events          bigint      NOT NULL CHECK (events > 0),
    credits         bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, hour, event_type, retention_class)
) PARTITION BY LIST (retention_class);

CREATE TABLE room_day_actors (
    retention_class text        NOT NULL,
    -- the UTC day
    day             date        NOT NULL,
    room_id         text        NOT NULL,
    event_type      text        NOT NULL,
    actor_id        text        NOT NULL,
    events          bigint      NOT NULL CHECK (events > 0),
    credits         bigint      NOT NULL DEFAULT 0,
    -- bit h (0..23): the actor had at least one such event in UTC hour h of the day
    hours           integer     NOT NULL,
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    last_event_id   uuid        NOT NULL,
    -- payload->'actor'->>'display_name' of the last event (last_at, last_event_id)
    display_name    text,
    PRIMARY KEY (room_id, day, event_type, actor_id, retention_class)
) PARTITION BY LIST (retention_class);
CREATE INDEX room_day_actors_top ON room_day_actors (room_id, day, event_type, events DESC, actor_id);

-- What a stored row contributes to `credits`.
CREATE FUNCTION rollup_credits(p_event_type text, p_payload jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_event_type = 'gift.sent' AND jsonb_typeof(p_payload->'credits') = 'number'
                THEN (p_payload->>'credits')::bigint ELSE 0 END
$$;

-- Make the rollup tables of a class (p_day NULL) or of a class's day when missing; never fails on a table
-- someone else made meanwhile. Called by create_log_partition() and, for a day whose `events` partition was
-- made some other way, by the insert trigger.
CREATE FUNCTION make_rollup_partitions(p_class text, p_day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    rollup  text;
    parent  text;
    child   text;
    bounds  text;
BEGIN
    IF p_class IS NULL OR p_class !~ '^[a-z][a-z0-9_]{0,30}$' THEN
        RAISE EXCEPTION 'no rollups for retention class %', coalesce(quote_literal(p_class), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH rollup IN ARRAY ARRAY['room_hours', 'room_day_actors'] LOOP
        parent := rollup || '_' || p_class;
        IF to_regclass(quote_ident(parent)) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) '
                               'PARTITION BY RANGE (%I)', parent, rollup,
                               CASE rollup WHEN 'room_hours' THEN 'hour' ELSE 'day' END);
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%L)', rollup, parent, p_class);
            EXCEPTION WHEN duplicate_table OR duplicate_object OR unique_violation THEN
                NULL;  -- made by another transaction a moment ago
            END;
        END IF;
        CONTINUE WHEN p_day IS NULL;
        child := format('%s_p%s', parent, to_char(p_day, 'YYYYMMDD'));
        CONTINUE WHEN to_regclass(quote_ident(child)) IS NOT NULL;
        bounds := CASE rollup
            WHEN 'room_hours' THEN format('FOR VALUES FROM (%L) TO (%L)', p_day::text || ' 00:00:00+00',
                                          (p_day + 1)::text || ' 00:00:00+00')
            ELSE format('FOR VALUES FROM (%L) TO (%L)', p_day, p_day + 1) END;
        BEGIN
            -- room_hours rows are updated by every batch of their room and hour; their key never changes, so
            -- with room left on the page an update is HOT (no index entry). room_day_actors's updates change
            -- `events`, which room_day_actors_top indexes: never HOT, no room kept.
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)%s', child, parent,
                           CASE rollup WHEN 'room_hours' THEN ' WITH (fillfactor = 70)' ELSE '' END);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I %s', parent, child, bounds);
        EXCEPTION WHEN duplicate_table OR duplicate_object OR unique_violation THEN
            NULL;
        END;
    END LOOP;
END $$;

-- 0008's function, same contract, now also making the class's or the day's rollup tables (in the same
-- transaction: a day of events never exists without its rollups).
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
    END IF;
    RETURN true;
END $$;

-- AFTER INSERT, FOR EACH STATEMENT: add what the statement stored (`stored`, its transition table).
CREATE FUNCTION rollups_add_stored() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    d record;
BEGIN
    FOR d IN SELECT DISTINCT retention_class AS cls, (occurred_at AT TIME ZONE 'UTC')::date AS day FROM stored
    LOOP
        IF to_regclass(quote_ident(format('room_hours_%s_p%s', d.cls, to_char(d.day, 'YYYYMMDD')))) IS NULL
           OR to_regclass(quote_ident(format('room_day_actors_%s_p%s', d.cls, to_char(d.day, 'YYYYMMDD'))))
              IS NULL THEN
            PERFORM make_rollup_partitions(d.cls, d.day);
        END IF;
    END LOOP;
    INSERT INTO room_day_actors AS a (retention_class, day, room_id, event_type, actor_id, events, credits, hours,
                                      first_at, last_at, last_event_id, display_name)
    SELECT retention_class, (occurred_at AT TIME ZONE 'UTC')::date, room_id, event_type, actor_id, count(*),
           sum(rollup_credits(event_type, payload)),
           bit_or(1 << extract(hour FROM occurred_at AT TIME ZONE 'UTC')::int), min(occurred_at),
           max(occurred_at), (array_agg(event_id ORDER BY occurred_at DESC, event_id DESC))[1],
           (array_agg(payload->'actor'->>'display_name' ORDER BY occurred_at DESC, event_id DESC))[1]
      FROM stored
     WHERE actor_id IS NOT NULL
     GROUP BY room_id, 2, event_type, actor_id, retention_class
     ORDER BY room_id, 2, event_type, actor_id, retention_class
    ON CONFLICT (room_id, day, event_type, actor_id, retention_class) DO UPDATE SET
        events = a.events + excluded.events,
        credits = a.credits + excluded.credits,
        hours = a.hours | excluded.hours,
        first_at = least(a.first_at, excluded.first_at),
        last_at = greatest(a.last_at, excluded.last_at),
        last_event_id = CASE WHEN (excluded.last_at, excluded.last_event_id) > (a.last_at, a.last_event_id)
                             THEN excluded.last_event_id ELSE a.last_event_id END,
        display_name = CASE WHEN (excluded.last_at, excluded.last_event_id) > (a.last_at, a.last_event_id)
                            THEN excluded.display_name ELSE a.display_name END;
    INSERT INTO room_hours AS r (retention_class, hour, room_id, event_type, events, credits)
    SELECT retention_class, date_trunc('hour', occurred_at, 'UTC'), room_id, event_type, count(*),
           sum(rollup_credits(event_type, payload))
      FROM stored
     GROUP BY room_id, 2, event_type, retention_class
     ORDER BY room_id, 2, event_type, retention_class
    ON CONFLICT (room_id, hour, event_type, retention_class) DO UPDATE SET
        events = r.events + excluded.events,
        credits = r.credits + excluded.credits;
    RETURN NULL;
END $$;

-- AFTER DELETE, FOR EACH STATEMENT: take out what the statement deleted (`gone`). Counts are subtracted; a
-- rollup row left at zero is deleted; a room_day_actors row left above zero (a deletion that covered only
-- part of an actor's day) has its hours, times and display name read again from the rows still stored.
-- Deletions are rare and hold the deletions lock, which every ingest transaction shares.
CREATE FUNCTION rollups_take_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- rows the deletion takes to zero go first; the rest are subtracted from
    DELETE FROM room_hours r
     USING (SELECT retention_class, date_trunc('hour', occurred_at, 'UTC') AS hour, room_id, event_type,
                   count(*) AS events
              FROM gone GROUP BY 1, 2, 3, 4) g
     WHERE r.room_id = g.room_id AND r.hour = g.hour AND r.event_type = g.event_type
       AND r.retention_class = g.retention_class AND r.events <= g.events;
    UPDATE room_hours r SET events = r.events - g.events, credits = r.credits - g.credits
      FROM (SELECT retention_class, date_trunc('hour', occurred_at, 'UTC') AS hour, room_id, event_type,
                   count(*) AS events, sum(rollup_credits(event_type, payload)) AS credits
              FROM gone GROUP BY 1, 2, 3, 4) g
     WHERE r.room_id = g.room_id AND r.hour = g.hour AND r.event_type = g.event_type
       AND r.retention_class = g.retention_class AND r.events > g.events;
    DELETE FROM room_day_actors a
     USING (SELECT retention_class, (occurred_at AT TIME ZONE 'UTC')::date AS day, room_id, event_type, actor_id,
                   count(*) AS events
              FROM gone WHERE actor_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5) g
     WHERE a.room_id = g.room_id AND a.day = g.day AND a.event_type = g.event_type AND a.actor_id = g.actor_id
       AND a.retention_class = g.retention_class AND a.events <= g.events;
    UPDATE room_day_actors a SET events = a.events - g.events, credits = a.credits - g.credits
      FROM (SELECT retention_class, (occurred_at AT TIME ZONE 'UTC')::date AS day, room_id, event_type, actor_id,
                   count(*) AS events, sum(rollup_credits(event_type, payload)) AS credits
              FROM gone WHERE actor_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5) g
     WHERE a.room_id = g.room_id AND a.day = g.day AND a.event_type = g.event_type AND a.actor_id = g.actor_id
       AND a.retention_class = g.retention_class AND a.events > g.events;
    -- what is left of a partly deleted actor-day: read from its room-day's rows, one range per room-day
    WITH k AS (
        SELECT DISTINCT g.retention_class, g.day, g.room_id, g.event_type, g.actor_id
          FROM (SELECT retention_class, (occurred_at AT TIME ZONE 'UTC')::date AS day, room_id, event_type,
                       actor_id FROM gone WHERE actor_id IS NOT NULL) g
          JOIN room_day_actors a ON a.room_id = g.room_id AND a.day = g.day AND a.event_type = g.event_type
                                AND a.actor_id = g.actor_id AND a.retention_class = g.retention_class),
    rd AS (SELECT DISTINCT room_id, day FROM k),
    fresh AS (
        SELECT e.retention_class, rd.day, e.room_id, e.event_type, e.actor_id, count(*) AS events,
               sum(rollup_credits(e.event_type, e.payload)) AS credits,
               bit_or(1 << extract(hour FROM e.occurred_at AT TIME ZONE 'UTC')::int) AS hours,
               min(e.occurred_at) AS first_at, max(e.occurred_at) AS last_at,
               (array_agg(e.event_id ORDER BY e.occurred_at DESC, e.event_id DESC))[1] AS last_event_id,
               (array_agg(e.payload->'actor'->>'display_name' ORDER BY e.occurred_at DESC, e.event_id DESC))[1]
                   AS display_name
          FROM rd
          JOIN events e ON e.room_id = rd.room_id AND e.occurred_at >= (rd.day::timestamp AT TIME ZONE 'UTC')
                       AND e.occurred_at < ((rd.day + 1)::timestamp AT TIME ZONE 'UTC')
          JOIN k ON k.room_id = e.room_id AND k.day = rd.day AND k.event_type = e.event_type
                AND k.actor_id = e.actor_id AND k.retention_class = e.retention_class
         GROUP BY 1, 2, 3, 4, 5)
    UPDATE room_day_actors a SET events = f.events, credits = f.credits, hours = f.hours, first_at = f.first_at,
                                 last_at = f.last_at, last_event_id = f.last_event_id, display_name = f.display_name
      FROM fresh f
     WHERE a.room_id = f.room_id AND a.day = f.day AND a.event_type = f.event_type AND a.actor_id = f.actor_id
       AND a.retention_class = f.retention_class;
    RETURN NULL;
END $$;

CREATE FUNCTION rollups_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    TRUNCATE room_hours, room_day_actors;
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION make_rollup_partitions(text, date), rollups_add_stored(), rollups_take_deleted(),
                       rollups_truncated() FROM PUBLIC;

-- Statement-level triggers take `events` (SHARE ROW EXCLUSIVE) until this migration commits: no row is
-- stored between the back-fill below and the triggers taking over.
CREATE TRIGGER events_rollups_insert AFTER INSERT ON events REFERENCING NEW TABLE AS stored
    FOR EACH STATEMENT EXECUTE FUNCTION rollups_add_stored();
CREATE TRIGGER events_rollups_delete AFTER DELETE ON events REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION rollups_take_deleted();
CREATE TRIGGER events_rollups_truncate AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION rollups_truncated();

-- Back-fill: the rollup tables of every class and day `events` has, and the rows stored so far, one day
-- partition at a time, in day order. Days being detached or dropped by retention are left out.
DO $$
DECLARE
    leaf  record;
    done  integer := 0;
    total integer;
    n     bigint;
BEGIN
    PERFORM make_rollup_partitions(substr(c.relname, 8), NULL)
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'events'::regclass AND c.relkind = 'p';
    CREATE TEMP TABLE rollup_backfill ON COMMIT DROP AS
        SELECT c.relname AS leaf, substring(c.relname FROM '^events_(.*)_p[0-9]{8}$') AS cls,
               to_date(right(c.relname, 8), 'YYYYMMDD') AS day
          FROM pg_inherits ci
          JOIN pg_inherits i ON i.inhparent = ci.inhrelid
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE ci.inhparent = 'events'::regclass AND NOT i.inhdetachpending AND c.relkind = 'r'
           AND c.relname ~ '^events_[a-z][a-z0-9_]{0,30}_p[0-9]{8}$';
    SELECT count(*) INTO total FROM rollup_backfill;
    FOR leaf IN SELECT * FROM rollup_backfill ORDER BY day, cls LOOP
        PERFORM make_rollup_partitions(leaf.cls, leaf.day);
        EXECUTE format(
            'INSERT INTO room_day_actors (retention_class, day, room_id, event_type, actor_id, events, credits,
                                          hours, first_at, last_at, last_event_id, display_name)
             SELECT retention_class, (occurred_at AT TIME ZONE ''UTC'')::date, room_id, event_type, actor_id,
                    count(*), sum(rollup_credits(event_type, payload)),
                    bit_or(1 << extract(hour FROM occurred_at AT TIME ZONE ''UTC'')::int), min(occurred_at),
                    max(occurred_at), (array_agg(event_id ORDER BY occurred_at DESC, event_id DESC))[1],
                    (array_agg(payload->''actor''->>''display_name'' ORDER BY occurred_at DESC, event_id DESC))[1]
               FROM %I WHERE actor_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5', leaf.leaf);
        EXECUTE format(
            'INSERT INTO room_hours (retention_class, hour, room_id, event_type, events, credits)
             SELECT retention_class, date_trunc(''hour'', occurred_at, ''UTC''), room_id, event_type, count(*),
                    sum(rollup_credits(event_type, payload))
               FROM %I GROUP BY 1, 2, 3, 4', leaf.leaf);
        GET DIAGNOSTICS n = ROW_COUNT;
        done := done + 1;
        RAISE NOTICE 'rollups: % (% of % days of events rolled up, % room-hours)', leaf.leaf, done, total, n;
    END LOOP;
END $$;

DO $$
BEGIN
    -- the API reads them; the worker's role needs nothing (the triggers' functions are the owner's)
    EXECUTE format('GRANT SELECT ON room_hours, room_day_actors TO %I', current_schema() || '_api');
END $$;
