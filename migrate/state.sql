-- state: the applied migrations, and the recorded procedures with whether
-- each function still exists (one dropped by hand counts as missing) and
-- the crate version that installed it (read through to_jsonb, so a schema
-- whose bookkeeping predates the column reads as NULL). The schema's
-- functions are found through their dependency on the schema (one index
-- probe), not by name: an index search by name meets every tenant's
-- function of that name.
SELECT 'migration' AS kind, m.version, m.name, m.checksum, true AS present,
       NULL::text AS crate_version
  FROM {{schema}}._duroxide_migrations m
UNION ALL
SELECT 'procedure', NULL::bigint, d.name, d.checksum,
       d.name IN (SELECT f.proname::text
                    FROM pg_catalog.pg_depend o
                    JOIN pg_catalog.pg_proc f ON f.oid = o.objid
                   WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
                     AND o.refobjid = '{{schema}}'::regnamespace
                     AND o.classid = 'pg_catalog.pg_proc'::regclass),
       pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'crate_version'
  FROM {{schema}}._duroxide_procedures d
 ORDER BY 1, 2, 3
