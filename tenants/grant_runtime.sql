-- grant_runtime: the statements that give role $2 what a runtime provider
-- in SQL mode $3 ('procedures' or 'inline') needs on schema $1, and nothing
-- more, in order: USAGE on the schema; in procedure mode, EXECUTE revoked
-- from PUBLIC and granted to the role on every function $4 names; in inline
-- mode, SELECT, INSERT, UPDATE and DELETE on the tables $5 names and SELECT
-- on the bookkeeping tables $6 (what MigrationMode::Verify reads).
-- When every function in the schema is one $4 names (the usual case), the
-- procedure-mode rights are two schema-wide statements: a statement naming
-- one function resolves its name among every schema's functions of that
-- name, so on a server of 2,000 tenants the 68 statements took about
-- 315 ms against 49 ms for the two (docs/benchmarks.md, "A crowded
-- server"). A schema holding functions of its own gets one statement per
-- function of ours, so those stay out of the role's reach.
WITH ours AS (
    SELECT p.oid, n.nspname, p.proname, p.proname = ANY ($4::text[]) AS named
      FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = $1::text
       AND $3::text = 'procedures'
), schema_wide AS (
    SELECT EXISTS (SELECT 1 FROM ours) AND pg_catalog.bool_and(o.named) AS yes
      FROM ours o
), functions AS (
    SELECT pg_catalog.format('%I.%I(%s)', o.nspname, o.proname,
                             pg_catalog.pg_get_function_identity_arguments(o.oid)) AS signature
      FROM ours o
     WHERE o.named
       AND NOT (SELECT w.yes FROM schema_wide w)
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
    SELECT 1, '', pg_catalog.format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM PUBLIC', $1::text)
      FROM schema_wide w WHERE w.yes
    UNION ALL
    SELECT 2, '', pg_catalog.format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO %I', $1::text, $2::text)
      FROM schema_wide w WHERE w.yes
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
