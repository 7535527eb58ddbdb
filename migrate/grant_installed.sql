-- grant_installed: for every procedure just installed ({{names}}): EXECUTE
-- revoked from PUBLIC (PostgreSQL grants it on every new function), then
-- granted to the roles save_grants.sql found. Only the owner and those
-- roles may call a procedure; every one is SECURITY DEFINER.
-- One REVOKE and at most one GRANT, each listing the installed functions.
-- Naming a function looks up every function of that name in the database,
-- which is one function since procedure names carry the schema's suffix.
-- The schema-wide form (`ON ALL FUNCTIONS IN SCHEMA`) would instead read
-- the whole of pg_proc, which has no index on the namespace: every tenant
-- already on the server, on every new tenant's install.
DO $grant$
DECLARE
    installed text[] := ARRAY[{{names}}]::text[];
    executors text;
    targets text;
BEGIN
    SELECT pg_catalog.string_agg(r::regrole::text, ', ')
      INTO executors
      FROM pg_catalog.unnest(COALESCE(NULLIF(pg_catalog.current_setting('duroxide_postgres.executors', true), ''), '{}')::oid[]) r;
    SELECT pg_catalog.string_agg(p.oid::regprocedure::text, ', ')
      INTO targets
      FROM pg_catalog.pg_depend o
      JOIN pg_catalog.pg_proc p ON p.oid = o.objid
     WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
       AND o.refobjid = '{{schema}}'::regnamespace
       AND o.classid = 'pg_catalog.pg_proc'::regclass
       AND p.proname = ANY (installed);
    IF targets IS NULL THEN
        RETURN;
    END IF;
    EXECUTE 'REVOKE ALL ON FUNCTION ' || targets || ' FROM PUBLIC';
    IF executors IS NOT NULL THEN
        EXECUTE 'GRANT EXECUTE ON FUNCTION ' || targets || ' TO ' || executors;
    END IF;
END
$grant$;
