-- bookkeeping_upgrade: adds the procedure records' crate_version column to a
-- schema whose bookkeeping predates it. Sent after the schema's DDL lock
-- (lock.sql), and an ALTER TABLE only when the column is missing: an
-- ALTER TABLE takes an ACCESS EXCLUSIVE lock on the table whatever it
-- changes, held to the end of the migration's transaction, and every
-- inspection (`health`, `verify`, `status`, a starting provider's check of
-- a current schema) reads these records. Run unconditionally before the
-- lock, it made each of them wait for whole migrations.
DO $upgrade$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid OPERATOR(pg_catalog.=) '{{schema}}._duroxide_procedures'::pg_catalog.regclass
                      AND a.attname OPERATOR(pg_catalog.=) 'crate_version'
                      AND NOT a.attisdropped) THEN
        ALTER TABLE {{schema}}._duroxide_procedures ADD COLUMN crate_version text;
    END IF;
END
$upgrade$;
