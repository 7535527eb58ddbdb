-- migration_start: notes when the next migration starts, for its record.
SELECT set_config('duroxide_postgres.migration_started', clock_timestamp()::text, true);
