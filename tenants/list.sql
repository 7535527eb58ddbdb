-- list: the schemas that hold duroxide-postgres' migration bookkeeping
-- (the tenants), by name in byte order. No {{schema}}: it reads the catalog.
SELECT n.nspname::text AS schema
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = '_duroxide_migrations'
   AND c.relkind IN ('r', 'p')
 ORDER BY n.nspname COLLATE "C"
