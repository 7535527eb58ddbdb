-- runtime_rights: what role $2 holds on schema $1: USAGE, how many of the
-- functions $3 names exist, how many it may execute and how many PUBLIC may
-- execute, and how many of the tables $4 names it may read and write. Also
-- the role running the check (the grantor).
SELECT current_user::text AS grantor,
       pg_catalog.has_schema_privilege($2::text, n.oid, 'USAGE') AS usage,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = n.oid AND p.proname = ANY ($3::text[])) AS functions,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = n.oid AND p.proname = ANY ($3::text[])
           AND pg_catalog.has_function_privilege($2::text, p.oid, 'EXECUTE')) AS executable,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = n.oid AND p.proname = ANY ($3::text[])
           AND (p.proacl IS NULL
                OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(p.proacl) a
                            WHERE a.grantee = 0::oid AND a.privilege_type = 'EXECUTE'))) AS public_executable,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c
         WHERE c.relnamespace = n.oid AND c.relname = ANY ($4::text[])
           AND pg_catalog.has_table_privilege($2::text, c.oid, 'SELECT')) AS readable_tables,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c
         WHERE c.relnamespace = n.oid AND c.relname = ANY ($4::text[])
           AND pg_catalog.has_table_privilege($2::text, c.oid, 'INSERT')) AS writable_tables
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname = $1::text
