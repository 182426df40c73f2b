-- roomlogs 0020: which incarnation of the witness topic acknowledged each daily head.
--
-- A head was recorded as published to a topic by name only, so a witness that lost its history (Tansu
-- restarted empty under a kept database, the topic deleted and recreated, a new cluster) still counted
-- every head as witnessed. Each publication now also records the broker's id of the topic (Apache Kafka and
-- Tansu give one per incarnation); the sealing run compares it with the topic it finds and republishes the
-- signed heads to a new one (pipeline/sealing/witness.py). Rows from before (and brokers that give no id)
-- carry the nil UUID: the sealing run fills in the id of the topic it finds when that topic's log is at
-- least as long as the heads recorded (the same topic, as far as can be told).
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

ALTER TABLE seal_head_publications
    ADD COLUMN topic_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
ALTER TABLE seal_head_publications DROP CONSTRAINT seal_head_publications_pkey;
ALTER TABLE seal_head_publications ADD PRIMARY KEY (head_id, topic, topic_id);
