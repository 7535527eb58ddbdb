-- foreign_objects: what a schema holds that duroxide-postgres did not put
-- there (at most 10, by kind and name), so a drop never takes a user's
-- tables or functions with it.
-- $1: the schema; $2: our table names; $3: our function names.
SELECT o.kind, o.name
  FROM (SELECT CASE c.relkind WHEN 'v' THEN 'view'
                              WHEN 'm' THEN 'materialized view'
                              WHEN 'f' THEN 'foreign table'
                              WHEN 'S' THEN 'sequence'
                              WHEN 'c' THEN 'type'
                              ELSE 'table' END AS kind,
               c.relname::text AS name
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
           AND c.relname <> ALL ($2::text[])
           -- identity and serial sequences belong to their column's table
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid = 'pg_catalog.pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
        UNION ALL
        SELECT 'function', p.proname::text
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = $1
           AND p.proname <> ALL ($3::text[])
        UNION ALL
        SELECT 'type', t.typname::text
          FROM pg_catalog.pg_type t
          JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = $1
           AND t.typtype IN ('e', 'd', 'r', 'm')) o
 ORDER BY o.kind, o.name
 LIMIT 10
