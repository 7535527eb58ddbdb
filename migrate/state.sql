-- state: the applied migrations, and the recorded procedures with whether
-- each function still exists (one dropped by hand counts as missing) and
-- the crate version that installed it (read through to_jsonb, so a schema
-- whose bookkeeping predates the column reads as NULL).
SELECT 'migration' AS kind, m.version, m.name, m.checksum, true AS present,
       NULL::text AS crate_version
  FROM {{schema}}._duroxide_migrations m
UNION ALL
SELECT 'procedure', NULL::bigint, d.name, d.checksum,
       EXISTS (SELECT 1 FROM pg_proc f
                WHERE f.pronamespace = '{{schema}}'::regnamespace
                  AND f.proname = d.name),
       pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'crate_version'
  FROM {{schema}}._duroxide_procedures d
 ORDER BY 1, 2, 3;
