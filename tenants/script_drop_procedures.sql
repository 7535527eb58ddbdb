-- Every overload of the procedures below, and of those recorded as installed,
-- is dropped first: a changed signature or result type cannot be replaced
-- in place. The schema's functions are found through their dependency on
-- the schema (pg_depend's index), not by a scan of every tenant's functions.
DO $drop$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_catalog.pg_depend o
               JOIN pg_catalog.pg_proc p ON p.oid = o.objid
              WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
                AND o.refobjid = '{{schema}}'::regnamespace
                AND o.classid = 'pg_catalog.pg_proc'::regclass
                AND (p.proname = ANY (ARRAY[{{names}}]::text[])
                     OR p.proname IN (SELECT d.name FROM {{schema}}._duroxide_procedures d))
    LOOP
        EXECUTE 'DROP FUNCTION ' || f::text;
    END LOOP;
END
$drop$;
DELETE FROM {{schema}}._duroxide_procedures;
