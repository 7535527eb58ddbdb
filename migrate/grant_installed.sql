-- grant_installed: for every procedure just installed ({{names}}): EXECUTE
-- revoked from PUBLIC (PostgreSQL grants it on every new function), then
-- granted to the roles save_grants.sql found. Only the owner and those
-- roles may call a procedure; every one is SECURITY DEFINER.
-- One REVOKE and at most one GRANT. A statement that names a function
-- looks up every function of that name in the database (one per tenant),
-- and each catalog change makes the next lookup start afresh: one statement
-- per procedure cost O(tenants) each, most of a new tenant's provisioning
-- on a server with a thousand. When the schema holds no function but those
-- just installed (a new tenant), the statements name the schema instead
-- and look nothing up by name.
DO $grant$
DECLARE
    installed text[] := ARRAY[{{names}}]::text[];
    executors text;
    targets text;
    others boolean;
BEGIN
    SELECT pg_catalog.string_agg(r::regrole::text, ', ')
      INTO executors
      FROM pg_catalog.unnest(COALESCE(NULLIF(pg_catalog.current_setting('duroxide_postgres.executors', true), ''), '{}')::oid[]) r;
    SELECT pg_catalog.string_agg(p.oid::regprocedure::text, ', ')
                FILTER (WHERE p.proname = ANY (installed)),
           pg_catalog.bool_or(p.proname <> ALL (installed))
      INTO targets, others
      FROM pg_catalog.pg_depend o
      JOIN pg_catalog.pg_proc p ON p.oid = o.objid
     WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
       AND o.refobjid = '{{schema}}'::regnamespace
       AND o.classid = 'pg_catalog.pg_proc'::regclass;
    IF targets IS NULL THEN
        RETURN;
    END IF;
    IF NOT others THEN
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;
        IF executors IS NOT NULL THEN
            EXECUTE 'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {{schema}} TO ' || executors;
        END IF;
        RETURN;
    END IF;
    EXECUTE 'REVOKE ALL ON FUNCTION ' || targets || ' FROM PUBLIC';
    IF executors IS NOT NULL THEN
        EXECUTE 'GRANT EXECUTE ON FUNCTION ' || targets || ' TO ' || executors;
    END IF;
END
$grant$;
