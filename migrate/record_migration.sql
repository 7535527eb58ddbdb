-- record_migration: the migration just applied, with its checksum and how
-- long it took (since migration_start).
INSERT INTO {{schema}}._duroxide_migrations (version, name, checksum, execution_ms)
VALUES ({{version}}, '{{name}}', decode('{{checksum}}', 'hex'),
        (extract(epoch FROM clock_timestamp()
                 - current_setting('duroxide_postgres.migration_started')::timestamptz) * 1000)::bigint);
