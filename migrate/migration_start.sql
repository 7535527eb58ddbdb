-- migration_start: notes when the next migration starts, for its record.
SELECT pg_catalog.set_config('duroxide_postgres.migration_started', pg_catalog.clock_timestamp()::text, true);
