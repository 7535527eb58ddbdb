-- save_grants: before procedures are dropped to be reinstalled, the roles
-- (other than their owners) holding EXECUTE on any function the schema's
-- bookkeeping records (under its suffixed name or, installed by a build
-- before the per-schema suffix, its plain one), as an oid[] in a transaction-local setting that
-- grant_installed.sql reads: a reinstall keeps the runtime roles' grants
-- and extends them to procedures a new build adds.
-- The schema's functions are found through their dependency on the schema
-- (pg_depend's index on the referenced object): pg_proc has no index on the
-- namespace alone, and scanning it costs a read of every tenant's functions.
SELECT pg_catalog.set_config('duroxide_postgres.executors',
         COALESCE((SELECT pg_catalog.array_agg(DISTINCT a.grantee)
                     FROM pg_catalog.pg_depend o
                     JOIN pg_catalog.pg_proc f ON f.oid = o.objid,
                          pg_catalog.aclexplode(f.proacl) a
                    WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
                      AND o.refobjid = '{{schema}}'::regnamespace
                      AND o.classid = 'pg_catalog.pg_proc'::regclass
                      AND f.proname IN (SELECT r.name
                                          FROM {{schema}}._duroxide_procedures d,
                                               LATERAL (VALUES (d.name), (d.name || '{{suffix}}')) r (name))
                      AND a.privilege_type = 'EXECUTE'
                      AND a.grantee <> 0::oid
                      AND a.grantee <> f.proowner), '{}'::oid[])::text,
         true);
