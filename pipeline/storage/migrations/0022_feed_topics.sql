-- roomlogs 0022: which incarnation of each topic the workers relay to (the alerts, dead-letter and deletions
-- topics), so that a topic deleted and recreated, or a broker started empty under a kept database, is said.
--
-- * feed_topics: per topic, the broker's topic id the workers last saw (Apache Kafka and Tansu give one per
--   incarnation of a topic) and when. The ingest service's topic watch (pipeline/ingest/watch.py) compares
--   it with the topic's id now: another id means what was relayed before is not on the topic. Alerts and
--   dead letters are not sent again (their tables are the record); the deletion requests are queued again
--   (migration 0021), since a restore from a backup needs them there.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

CREATE TABLE feed_topics (
    topic    text        PRIMARY KEY,
    topic_id uuid        NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON feed_topics FROM PUBLIC;

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON feed_topics TO %I', current_schema() || '_worker');
END $$;
