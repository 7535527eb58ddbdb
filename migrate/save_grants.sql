-- save_grants: before procedures are dropped to be reinstalled, the roles
-- (other than their owners) holding EXECUTE on any function the schema's
-- bookkeeping records, as an oid[] in a transaction-local setting that
-- grant_installed.sql reads: a reinstall keeps the runtime roles' grants
-- and extends them to procedures a new build adds.
SELECT pg_catalog.set_config('duroxide_postgres.executors',
         COALESCE((SELECT pg_catalog.array_agg(DISTINCT a.grantee)
                     FROM pg_catalog.pg_proc f,
                          pg_catalog.aclexplode(f.proacl) a
                    WHERE f.pronamespace = '{{schema}}'::regnamespace
                      AND f.proname IN (SELECT d.name FROM {{schema}}._duroxide_procedures d)
                      AND a.privilege_type = 'EXECUTE'
                      AND a.grantee <> 0::oid
                      AND a.grantee <> f.proowner), '{}'::oid[])::text,
         true);
