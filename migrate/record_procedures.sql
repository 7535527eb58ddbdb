-- record_procedures: the procedures just installed, each with its checksum
-- and the version of the crate that installed it (an older build never
-- replaces them), in one statement: the VALUES list holds one
-- ('name', checksum, 'crate_version') row per procedure.
INSERT INTO {{schema}}._duroxide_procedures (name, checksum, crate_version)
VALUES {{rows}}
ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum,
                                 crate_version = EXCLUDED.crate_version,
                                 installed_at = pg_catalog.now();
