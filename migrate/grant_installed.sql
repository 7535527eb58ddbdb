-- grant_installed: for every procedure just installed ({{names}}): EXECUTE
-- revoked from PUBLIC (PostgreSQL grants it on every new function), then
-- granted to exactly the roles save_grants.sql found holding it on the
-- procedure's previous version; a procedure new to the schema (none
-- recorded and installed before) goes to the roles that held EXECUTE on
-- every one recorded (a runtime role given them all by `grant`). A
-- reinstall never widens a grant: a role given some procedures only (a
-- monitoring role's schema_state()) gains none of the others. Only the
-- owner and those roles may call a procedure; every one is SECURITY DEFINER.
-- One REVOKE listing the installed functions, and one GRANT per distinct
-- set of roles (one when a runtime role holds them all), each listing its
-- functions. Naming a function looks up every function of that name in the
-- database, which is one function since procedure names carry the
-- schema's suffix. The schema-wide form (`ON ALL FUNCTIONS IN SCHEMA`)
-- would instead read the whole of pg_proc, which has no index on the
-- namespace: every tenant already on the server, on every new tenant's
-- install.
DO $grant$
DECLARE
    installed text[] := ARRAY[{{names}}]::text[];
    saved jsonb := COALESCE(NULLIF(pg_catalog.current_setting('duroxide_postgres.executors', true), ''), '{}')::jsonb;
    everywhere jsonb;
    targets text;
    grantees record;
BEGIN
    -- The roles in every recorded procedure's list.
    SELECT COALESCE(pg_catalog.jsonb_agg(e.grantee), '[]'::jsonb)
      INTO everywhere
      FROM (SELECT g.grantee
              FROM pg_catalog.jsonb_each(saved) s,
                   pg_catalog.jsonb_array_elements(s.value) g (grantee)
             GROUP BY g.grantee
            HAVING pg_catalog.count(*) = (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(saved))) e;
    FOR grantees IN
        SELECT pg_catalog.string_agg(t.target, ', ') AS targets, t.roles
          FROM (SELECT p.oid::regprocedure::text AS target,
                       (SELECT pg_catalog.string_agg(r.oid::oid::regrole::text, ', ' ORDER BY r.oid::oid)
                          FROM pg_catalog.jsonb_array_elements_text(
                                 COALESCE(saved -> pg_catalog.left(p.proname, -pg_catalog.length('{{suffix}}')),
                                          everywhere)) r (oid)) AS roles
                  FROM pg_catalog.pg_depend o
                  JOIN pg_catalog.pg_proc p ON p.oid = o.objid
                 WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
                   AND o.refobjid = '{{schema}}'::regnamespace
                   AND o.classid = 'pg_catalog.pg_proc'::regclass
                   AND p.proname = ANY (installed)) t
         GROUP BY t.roles
    LOOP
        targets := pg_catalog.concat_ws(', ', targets, grantees.targets);
        IF grantees.roles IS NOT NULL THEN
            EXECUTE 'GRANT EXECUTE ON FUNCTION ' || grantees.targets || ' TO ' || grantees.roles;
        END IF;
    END LOOP;
    IF targets IS NOT NULL THEN
        EXECUTE 'REVOKE ALL ON FUNCTION ' || targets || ' FROM PUBLIC';
    END IF;
END
$grant$;
