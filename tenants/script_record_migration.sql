INSERT INTO {{schema}}._duroxide_migrations (version, name, checksum, execution_ms)
VALUES ({{version}}, '{{name}}', decode('{{checksum}}', 'hex'), 0);
