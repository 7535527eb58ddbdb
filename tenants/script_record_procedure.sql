INSERT INTO {{schema}}._duroxide_procedures (name, checksum, crate_version)
VALUES ('{{name}}', pg_catalog.decode('{{checksum}}', 'hex'), '{{crate_version}}');
