INSERT INTO {{schema}}._duroxide_migrations (version, name, checksum, execution_ms)
VALUES ({{version}}, '{{name}}', pg_catalog.decode('{{checksum}}', 'hex'), 0);
