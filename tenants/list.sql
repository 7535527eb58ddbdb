-- list: the schemas that hold duroxide-postgres' migration bookkeeping
-- (the tenants), by name in byte order; with $1, only that schema, if it is
-- one. No {{schema}}: it reads the catalog.
-- The bookkeeping is this crate's when its `_duroxide_migrations` has the
-- columns every release wrote, `checksum` (bytea) and `execution_ms`:
-- another provider, duroxide-pg, keeps a table of the same name (version,
-- name, applied_at), and a schema of its is no tenant of ours.
SELECT n.nspname::text AS schema
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = '_duroxide_migrations'
   AND c.relkind IN ('r', 'p')
   AND ($1::text IS NULL OR n.nspname = $1::text)
   AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = c.oid AND NOT a.attisdropped
           AND ((a.attname = 'checksum' AND a.atttypid = 'pg_catalog.bytea'::pg_catalog.regtype)
                OR a.attname = 'execution_ms')) = 2
 ORDER BY n.nspname COLLATE "C"
