-- grant_installed: for every procedure just installed ({{names}}): EXECUTE
-- revoked from PUBLIC (PostgreSQL grants it on every new function), then
-- granted to the roles save_grants.sql found. Only the owner and those
-- roles may call a procedure; every one is SECURITY DEFINER.
DO $grant$
DECLARE
    f regprocedure;
    r oid;
BEGIN
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = '{{schema}}'::regnamespace
                AND p.proname = ANY (ARRAY[{{names}}]::text[])
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        FOREACH r IN ARRAY COALESCE(NULLIF(pg_catalog.current_setting('duroxide_postgres.executors', true), ''), '{}')::oid[]
        LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', f, r::regrole);
        END LOOP;
    END LOOP;
END
$grant$;
