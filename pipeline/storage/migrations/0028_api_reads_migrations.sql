-- roomlogs 0028: the API's role may read schema_migrations, so that `roomlogs api serve` refuses to start on
-- a schema `roomlogs migrate` has not brought up to date (one line naming the migrations it lacks), as every
-- other command does, instead of serving and failing request by request on what is missing. The table holds
-- migration numbers, names and checksums: nothing of the logs. A schema without this migration is behind by
-- definition, and the API, unable to read the table, says so all the same (pipeline/api/app.py, open_pool).
--
-- Runs inside the roomlogs schema (search_path is set by the migration runner).

DO $$
BEGIN
    EXECUTE format('GRANT SELECT ON schema_migrations TO %I', current_schema() || '_api');
END $$;
