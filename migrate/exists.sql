-- exists: whether the schema holds both bookkeeping tables, and what the
-- connecting role may do with them: read them directly (SELECT on both),
-- take the schema's DDL lock (lock.sql: UPDATE on _duroxide_migrations),
-- or only read them through the schema_state() function (a runtime role
-- with EXECUTE only; can_call_legacy_state: only the function of that name
-- a build before the per-schema procedure suffix installed, on a schema
-- this build has not migrated yet). The privilege checks on a missing
-- object are NULL. Also the database's encoding, which must hold any text
-- a payload carries (src/migrate/state.rs, Access::probe). And whether its
-- _duroxide_migrations is another provider's (`foreign_bookkeeping`: without the
-- `checksum` and `execution_ms` columns every release of this crate wrote;
-- duroxide-pg keeps a table of that name), which no call may touch. And
-- the schema's owner, and whether it holds every right of the connecting
-- role (owner_trusted.sql; both NULL when the schema is missing): a role
-- that may migrate the schema refuses one whose owner does not
-- (src/migrate.rs, migrate_status).
SELECT m.oid IS NOT NULL AND p.oid IS NOT NULL AS migrated, current_user::text AS role,
       m.oid IS NOT NULL
       AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = m.oid AND NOT a.attisdropped
               AND ((a.attname = 'checksum'
                     AND a.atttypid = 'pg_catalog.bytea'::pg_catalog.regtype)
                    OR a.attname = 'execution_ms')) <> 2 AS foreign_bookkeeping,
       pg_catalog.current_setting('server_encoding') AS encoding,
       COALESCE(pg_catalog.has_table_privilege(m.oid, 'SELECT')
                AND pg_catalog.has_table_privilege(p.oid, 'SELECT'), false) AS can_read,
       COALESCE(pg_catalog.has_table_privilege(m.oid, 'UPDATE'), false) AS can_lock,
       COALESCE(pg_catalog.has_function_privilege(s.oid, 'EXECUTE'), false) AS can_call_state,
       COALESCE(s.oid IS NULL
                AND pg_catalog.has_function_privilege(pg_catalog.to_regprocedure('{{schema}}.schema_state()'),
                                                      'EXECUTE'), false) AS can_call_legacy_state,
       pg_catalog.pg_get_userbyid(o.nspowner)::text AS schema_owner,
       CASE WHEN o.nspowner IS NOT NULL THEN {{owner_trusted}} END AS owner_trusted
  FROM (SELECT (SELECT n.nspowner FROM pg_catalog.pg_namespace n
                 WHERE n.oid = pg_catalog.to_regnamespace('{{schema}}')) AS nspowner) o,
       (SELECT pg_catalog.to_regclass('{{schema}}._duroxide_migrations') AS oid) m,
       (SELECT pg_catalog.to_regclass('{{schema}}._duroxide_procedures') AS oid) p,
       (SELECT pg_catalog.to_regprocedure('{{schema}}.schema_state{{suffix}}()') AS oid) s
