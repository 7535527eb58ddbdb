-- drop_functions: drops every overload of the procedures about to be
-- (re)installed ({{names}}: a changed signature or result type cannot be
-- replaced in place) and of those recorded but no longer embedded (retired),
-- and forgets the retired ones. The schema's functions are found through
-- their dependency on the schema (see save_grants.sql); a new schema has
-- none, and costs one index probe.
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
                     OR p.proname IN (SELECT d.name FROM {{schema}}._duroxide_procedures d
                                       WHERE d.name <> ALL (ARRAY[{{embedded}}]::text[])))
    LOOP
        EXECUTE 'DROP FUNCTION ' || f::text;
    END LOOP;
END
$drop$;
DELETE FROM {{schema}}._duroxide_procedures WHERE name <> ALL (ARRAY[{{embedded}}]::text[]);
