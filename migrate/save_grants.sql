-- save_grants: before procedures are dropped to be reinstalled, who may
-- execute each procedure the schema's bookkeeping records, as a JSON object
-- in a transaction-local setting that grant_installed.sql reads: the
-- procedure's recorded name -> the roles (other than their owners, PUBLIC
-- left out) holding EXECUTE on any function of that name, suffixed or (as a
-- build before the per-schema suffix installed it) plain, as an oid array.
-- Every recorded procedure with a function installed has its key, an empty
-- array when no role holds it, so grant_installed.sql tells a procedure
-- nobody else may execute from one new to the schema (no key).
-- The schema's functions are found through their dependency on the schema
-- (pg_depend's index on the referenced object): pg_proc has no index on the
-- namespace alone, and scanning it costs a read of every tenant's functions.
SELECT pg_catalog.set_config('duroxide_postgres.executors',
         COALESCE((SELECT pg_catalog.json_object_agg(g.name, g.grantees)::text
                     FROM (SELECT r.procedure AS name,
                                  COALESCE(pg_catalog.array_agg(DISTINCT a.grantee)
                                             FILTER (WHERE a.grantee IS NOT NULL),
                                           '{}'::oid[]) AS grantees
                             FROM pg_catalog.pg_depend o
                             JOIN pg_catalog.pg_proc f ON f.oid = o.objid
                             JOIN (SELECT d.name, n.name
                                     FROM {{schema}}._duroxide_procedures d,
                                          LATERAL (VALUES (d.name), (d.name || '{{suffix}}')) n (name)) r (procedure, name)
                               ON r.name = f.proname
                             LEFT JOIN LATERAL (SELECT e.grantee
                                                  FROM pg_catalog.aclexplode(f.proacl) e
                                                 WHERE e.privilege_type = 'EXECUTE'
                                                   AND e.grantee <> 0::oid
                                                   AND e.grantee <> f.proowner) a ON true
                            WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
                              AND o.refobjid = '{{schema}}'::regnamespace
                              AND o.classid = 'pg_catalog.pg_proc'::regclass
                            GROUP BY r.procedure) g),
                  '{}'),
         true);
