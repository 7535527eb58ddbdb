-- record_procedure: the procedure just installed, with its checksum and the
-- version of the crate that installed it (an older build never replaces it).
INSERT INTO {{schema}}._duroxide_procedures (name, checksum, crate_version)
VALUES ('{{name}}', pg_catalog.decode('{{checksum}}', 'hex'), '{{crate_version}}')
ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum,
                                 crate_version = EXCLUDED.crate_version,
                                 installed_at = pg_catalog.now();
