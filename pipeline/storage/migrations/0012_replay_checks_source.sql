-- roomlogs 0012: a dead-letter replay checks that the record it reads back from Kafka is the one set aside.
--
-- Dead letters keep no raw bytes, only the SHA-256 and size of what was received (`raw_sha256`,
-- `raw_bytes`). A replay reads the record back by its coordinates and compares; two new outcomes say why
-- nothing was stored:
-- * source_changed: the record now at those coordinates is another one (its SHA-256 or size differ): the
--   topic was deleted and recreated, or the coordinates moved.
-- * no_fingerprint: the dead letter kept no SHA-256 (a private message keeps only its size; dead letters the
--   writer made before this release kept none), so the record read back cannot be shown to be it.
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

ALTER TABLE dead_letter_replays DROP CONSTRAINT dead_letter_replays_outcome_check;
ALTER TABLE dead_letter_replays ADD CONSTRAINT dead_letter_replays_outcome_check CHECK (outcome IN (
    'stored', 'duplicate', 'already_replayed', 'still_invalid', 'expired', 'deleted',
    'conflicting_duplicate', 'rejected', 'not_in_kafka', 'source_changed', 'no_fingerprint'));
