-- grant_runtime: the statements that give role $2 what a runtime provider
-- in SQL mode $3 ('procedures' or 'inline') needs on schema $1, and nothing
-- more, in order: USAGE on the schema; in procedure mode, for every
-- function $4 names, EXECUTE revoked from PUBLIC and granted to the role;
-- in inline mode, SELECT, INSERT, UPDATE and DELETE on the tables $5 names
-- and SELECT on the bookkeeping tables $6 (what MigrationMode::Verify reads).
WITH functions AS (
    SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname,
                             pg_catalog.pg_get_function_identity_arguments(p.oid)) AS signature
      FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = $1::text
       AND p.proname = ANY ($4::text[])
       AND $3::text = 'procedures'
), tables AS (
    SELECT c.relname::text AS name, c.relname = ANY ($6::text[]) AS bookkeeping
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1::text
       AND c.relkind IN ('r', 'p')
       AND (c.relname = ANY ($5::text[]) OR c.relname = ANY ($6::text[]))
       AND $3::text = 'inline'
)
SELECT s.statement FROM (
    SELECT 0 AS step, ''::text AS name,
           pg_catalog.format('GRANT USAGE ON SCHEMA %I TO %I', $1::text, $2::text) AS statement
    UNION ALL
    SELECT 1, f.signature, pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.signature)
      FROM functions f
    UNION ALL
    SELECT 2, f.signature, pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f.signature, $2::text)
      FROM functions f
    UNION ALL
    SELECT 3, t.name,
           pg_catalog.format(CASE WHEN t.bookkeeping
                                  THEN 'GRANT SELECT ON TABLE %I.%I TO %I'
                                  ELSE 'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I.%I TO %I' END,
                             $1::text, t.name, $2::text)
      FROM tables t
) s
ORDER BY s.step, s.name
