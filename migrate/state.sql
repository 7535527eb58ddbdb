-- state: the applied migrations; the recorded procedures with whether each
-- function still exists under the schema's own name for it (NAME{{suffix}};
-- one dropped by hand counts as missing) and the crate version that
-- installed it (read through to_jsonb, so a schema whose bookkeeping
-- predates the column reads as NULL); and, as 'legacy' rows, the functions
-- still holding a recorded procedure's plain NAME, as builds before the
-- per-schema suffix installed them (processes of such a build may still
-- call them during a rolling upgrade). The schema's functions are found
-- through their dependency on the schema (one index probe), not by name: an
-- index search by name meets every tenant's function of that name.
WITH functions AS (
    SELECT f.proname::text AS name
      FROM pg_catalog.pg_depend o
      JOIN pg_catalog.pg_proc f ON f.oid = o.objid
     WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
       AND o.refobjid = '{{schema}}'::regnamespace
       AND o.classid = 'pg_catalog.pg_proc'::regclass
)
SELECT 'migration' AS kind, m.version, m.name, m.checksum, true AS present,
       NULL::text AS crate_version
  FROM {{schema}}._duroxide_migrations m
UNION ALL
SELECT 'procedure', NULL::bigint, d.name, d.checksum,
       d.name || '{{suffix}}' IN (SELECT f.name FROM functions f),
       pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'crate_version'
  FROM {{schema}}._duroxide_procedures d
UNION ALL
SELECT DISTINCT 'legacy', NULL::bigint, d.name, NULL::bytea, true, NULL::text
  FROM {{schema}}._duroxide_procedures d
  JOIN functions f ON f.name = d.name
 ORDER BY 1, 2, 3
