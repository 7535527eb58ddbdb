-- grant_runtime: the statements that give role $2 what a runtime provider
-- in SQL mode $3 ('procedures' or 'inline') needs on schema $1, and nothing
-- more, in order: USAGE on the schema; in procedure mode, EXECUTE revoked
-- from PUBLIC and granted to the role on the functions $4 names, one
-- statement each listing them all; in inline mode, SELECT, INSERT, UPDATE
-- and DELETE on the tables $5 names and SELECT on the bookkeeping tables $6
-- (what MigrationMode::Verify reads).
-- Every object is found by name through the catalogs' name indexes, and
-- named in the statements: the schema-wide forms (`ON ALL FUNCTIONS IN
-- SCHEMA`) read the whole of pg_proc, every tenant's functions, on every
-- call. Functions of the schema's own that $4 does not name stay out of
-- the role's reach.
WITH ns AS (
    SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $1::text
), functions AS (
    SELECT pg_catalog.string_agg(
               pg_catalog.format('%I.%I(%s)', $1::text, p.proname,
                                 pg_catalog.pg_get_function_identity_arguments(p.oid)),
               ', ' ORDER BY p.proname, p.oid) AS signatures
      FROM pg_catalog.pg_proc p
      JOIN ns ON ns.oid = p.pronamespace
     WHERE p.proname = ANY ($4::text[])
       AND $3::text = 'procedures'
), tables AS (
    SELECT c.relname::text AS name, c.relname = ANY ($6::text[]) AS bookkeeping
      FROM pg_catalog.pg_class c
      JOIN ns ON ns.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND (c.relname = ANY ($5::text[]) OR c.relname = ANY ($6::text[]))
       AND $3::text = 'inline'
)
SELECT s.statement FROM (
    SELECT 0 AS step, ''::text AS name,
           pg_catalog.format('GRANT USAGE ON SCHEMA %I TO %I', $1::text, $2::text) AS statement
    UNION ALL
    SELECT 1, '', 'REVOKE ALL ON FUNCTION ' || f.signatures || ' FROM PUBLIC'
      FROM functions f WHERE f.signatures IS NOT NULL
    UNION ALL
    SELECT 2, '', 'GRANT EXECUTE ON FUNCTION ' || f.signatures
                  || pg_catalog.format(' TO %I', $2::text)
      FROM functions f WHERE f.signatures IS NOT NULL
    UNION ALL
    SELECT 3, t.name,
           pg_catalog.format(CASE WHEN t.bookkeeping
                                  THEN 'GRANT SELECT ON TABLE %I.%I TO %I'
                                  ELSE 'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I.%I TO %I' END,
                             $1::text, t.name, $2::text)
      FROM tables t
) s
ORDER BY s.step, s.name
