-- roomlogs 0021: a deletions topic that lost its records (a broker started empty, the topic deleted and
-- recreated, another cluster) gets this database's deletion requests again.
--
-- The deletions topic is what re-applies a deletion after PostgreSQL is restored from a backup taken before
-- it (migration 0013); an emptied topic silently took that away. A starting worker reads the whole topic
-- anyway (pipeline/ingest/deletion_log.py); it now hands the request ids it found to
-- requeue_deletion_requests(), which queues every request of deletion_requests the topic lacks (originals
-- and re-applied ones alike) that is not queued already, sealed with this database's key, for the relay.
-- The message is made again from the request's row: `held_rooms` of an erasure are the rooms whose legal
-- hold was in force at its `requested_at` (placed before, released after or never), as when it ran.
-- Queuing a request the topic does hold (sent meanwhile) only sends it twice: the topic is compacted by
-- request id and re-applying finds it present.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

-- SECURITY DEFINER functions below capture this search_path (schema first, pg_temp last, nothing else).
SELECT set_config('search_path', format('%I, pg_temp', current_schema()), true);

CREATE FUNCTION requeue_deletion_requests(p_on_topic uuid[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO deletion_outbox (request_id, message, seal)
    SELECT d.request_id, m.message, deletion_seal(m.message)
      FROM deletion_requests d,
           LATERAL (SELECT deletion_message(d, CASE WHEN d.kind = 'user_chat_erasure' THEN
                        (SELECT coalesce(array_agg(DISTINCT l.room_id ORDER BY l.room_id), '{}')
                           FROM legal_holds l
                          WHERE l.placed_at <= d.requested_at
                            AND (l.released_at IS NULL OR l.released_at > d.requested_at))
                    END) AS message) m
     WHERE d.request_id <> ALL (coalesce(p_on_topic, '{}'))
       AND NOT EXISTS (SELECT 1 FROM deletion_outbox o WHERE o.request_id = d.request_id)
     ORDER BY d.seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

REVOKE ALL ON FUNCTION requeue_deletion_requests(uuid[]) FROM PUBLIC;

DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION requeue_deletion_requests(uuid[]) TO %I',
                   current_schema() || '_worker');
END $$;
