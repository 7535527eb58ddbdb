-- drop_functions: drops every overload of the procedures about to be
-- (re)installed ({{names}}, each NAME{{suffix}}: a changed signature or
-- result type cannot be replaced in place) and of those recorded but no
-- longer embedded (retired: under both their suffixed and their plain
-- name), and forgets the retired ones. A function under an embedded
-- procedure's plain name (installed by a build before the per-schema
-- suffix) stays: processes of that build may still call it during a
-- rolling upgrade (tenants::drop_legacy_procedures drops it). The schema's
-- functions are found through their dependency on the schema (see
-- save_grants.sql); a new schema has none, and costs one index probe.
DO $drop$
DECLARE
    targets text;
BEGIN
    -- One DROP for all of them: a DROP per function resolved each name
    -- among every function of that name afresh.
    SELECT pg_catalog.string_agg(p.oid::regprocedure::text, ', ') INTO targets
      FROM pg_catalog.pg_depend o
      JOIN pg_catalog.pg_proc p ON p.oid = o.objid
     WHERE o.refclassid = 'pg_catalog.pg_namespace'::regclass
       AND o.refobjid = '{{schema}}'::regnamespace
       AND o.classid = 'pg_catalog.pg_proc'::regclass
       AND (p.proname = ANY (ARRAY[{{names}}]::text[])
            OR p.proname IN (SELECT r.name
                               FROM {{schema}}._duroxide_procedures d,
                                    LATERAL (VALUES (d.name), (d.name || '{{suffix}}')) r (name)
                              WHERE d.name <> ALL (ARRAY[{{embedded}}]::text[])));
    IF targets IS NOT NULL THEN
        EXECUTE 'DROP FUNCTION ' || targets;
    END IF;
END
$drop$;
DELETE FROM {{schema}}._duroxide_procedures WHERE name <> ALL (ARRAY[{{embedded}}]::text[]);
