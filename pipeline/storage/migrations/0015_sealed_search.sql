-- roomlogs 0015: trigram search on sealed days (pipeline/storage/search_index.py).
--
-- * pg_trgm (trigram operator classes: a GIN index answers `body ILIKE '%text%'`) and btree_gin (a GIN
--   index may start with `room_id`, so one index scan narrows to the room as well as the text). Both are
--   trusted extensions: the owner running the migrations needs CREATE on the database, no superuser.
-- * Nothing is indexed here. Once a day is sealed (it takes no more rows), maintenance builds, with
--   CREATE INDEX CONCURRENTLY, `<partition>_search` on each of that day's leaf partitions of `events`:
--   GIN (room_id, body gin_trgm_ops) WHERE body IS NOT NULL. The live days never get one (each index
--   slows ingest down), and retention drops it with its partition.
--
-- An extension is one per database, not per schema: they go into `public` (an extension in a roomlogs
-- schema would be dropped, with every other schema's search indexes, by that schema's DROP ... CASCADE).
-- Where a DBA has installed them elsewhere already, IF NOT EXISTS leaves them there and the index builds
-- find them (pg_extension.extnamespace). The API's and the worker's roles need no grant on them: using an
-- index needs no privilege on its operator class.

-- one migration at a time per database may create them (schemas of one database migrate independently)
SELECT pg_advisory_xact_lock(hashtext('roomlogs: extensions'));
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
CREATE EXTENSION IF NOT EXISTS btree_gin SCHEMA public;
