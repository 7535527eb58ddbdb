-- revoke_runtime: the statements that take from role $2 every right it
-- holds on schema $1 and the objects in it (functions, procedures and
-- aggregates; tables, views and sequences), whether grant_runtime gave
-- them or not: one statement per kind, listing the objects.
-- The objects are found through pg_depend's index on what they depend on
-- (every function and relation depends on its schema): the schema-wide
-- forms (`ON ALL TABLES IN SCHEMA`) read the whole of pg_proc and pg_class,
-- every tenant's objects, on every call.
WITH ns AS (
    SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $1::text
), members AS (
    SELECT d.classid, d.objid
      FROM pg_catalog.pg_depend d
      JOIN ns ON ns.oid = d.refobjid
     WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
       AND d.refobjsubid = 0
       AND d.deptype = 'n'
), lists AS (
    SELECT 1 AS step, 'ROUTINE' AS kind,
           pg_catalog.string_agg(
               pg_catalog.format('%I.%I(%s)', $1::text, p.proname,
                                 pg_catalog.pg_get_function_identity_arguments(p.oid)),
               ', ' ORDER BY p.proname, p.oid) AS objects
      FROM members m
      JOIN pg_catalog.pg_proc p ON p.oid = m.objid
     WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
    UNION ALL
    SELECT CASE WHEN c.relkind = 'S' THEN 3 ELSE 2 END,
           CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
           pg_catalog.string_agg(pg_catalog.format('%I.%I', $1::text, c.relname),
                                 ', ' ORDER BY c.relname)
      FROM members m
      JOIN pg_catalog.pg_class c ON c.oid = m.objid
     WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
     GROUP BY c.relkind = 'S'
)
SELECT s.statement FROM (
    SELECT l.step, pg_catalog.format('REVOKE ALL ON %s %s FROM %I', l.kind, l.objects, $2::text) AS statement
      FROM lists l WHERE l.objects IS NOT NULL
    UNION ALL
    SELECT 4, pg_catalog.format('REVOKE ALL ON SCHEMA %I FROM %I', $1::text, $2::text)
) s
ORDER BY s.step
