-- record_procedure: the procedure just installed, with its checksum.
INSERT INTO {{schema}}._duroxide_procedures (name, checksum)
VALUES ('{{name}}', pg_catalog.decode('{{checksum}}', 'hex'))
ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, installed_at = pg_catalog.now();
