-- record_migration: the migration just applied, with its checksum and how
-- long it took (since migration_start).
INSERT INTO {{schema}}._duroxide_migrations (version, name, checksum, execution_ms)
VALUES ({{version}}, '{{name}}', pg_catalog.decode('{{checksum}}', 'hex'),
        (extract(epoch FROM pg_catalog.clock_timestamp()
                 - pg_catalog.current_setting('duroxide_postgres.migration_started')::timestamptz)::numeric * 1000::numeric)::bigint);
