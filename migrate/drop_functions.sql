-- drop_functions: drops every overload of the procedures about to be
-- (re)installed ({{names}}: a changed signature or result type cannot be
-- replaced in place) and of those recorded but no longer embedded (retired),
-- and forgets the retired ones. The schema's functions are found through
-- their dependency on the schema (see save_grants.sql); a new schema has
-- none, and costs one index probe.
DO $drop$
DECLARE
    targets text;
BEGIN
    -- One DROP for all of them: each name is resolved among every
    -- tenant's functions of that name, and a DROP per function made each
    -- resolution start afresh (2.5x the time with 2,000 tenants).
    SELECT pg_catalog.string_agg(p.oid::regprocedure::text, ', ') INTO targets
      FROM pg_catalog.pg_depend o
      JOIN pg_catalog.pg_proc p ON p.oid = o.objid
     WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
       AND o.refobjid = '{{schema}}'::regnamespace
       AND o.classid = 'pg_catalog.pg_proc'::regclass
       AND (p.proname = ANY (ARRAY[{{names}}]::text[])
            OR p.proname IN (SELECT d.name FROM {{schema}}._duroxide_procedures d
                              WHERE d.name <> ALL (ARRAY[{{embedded}}]::text[])));
    IF targets IS NOT NULL THEN
        EXECUTE 'DROP FUNCTION ' || targets;
    END IF;
END
$drop$;
DELETE FROM {{schema}}._duroxide_procedures WHERE name <> ALL (ARRAY[{{embedded}}]::text[]);
