-- missing_relations: of the tables and indexes a fully migrated schema
-- holds ($2, names; src/migrate/relations.rs reads them from the
-- migrations), those missing from each schema of $1 (names, unquoted), and
-- the indexes left invalid (a failed CREATE INDEX CONCURRENTLY). One row
-- per schema and relation; no row, nothing missing. pg_class is searched by
-- name within the schema (its index on relname, relnamespace), never read
-- whole.
SELECT s.name AS schema_name, e.name AS relation,
       c.oid IS NOT NULL AS present
  FROM pg_catalog.unnest($1::text[]) AS s(name)
 CROSS JOIN pg_catalog.unnest($2::text[]) AS e(name)
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) s.name
  LEFT JOIN pg_catalog.pg_class c
         ON c.relname OPERATOR(pg_catalog.=) e.name
        AND c.relnamespace OPERATOR(pg_catalog.=) n.oid
  LEFT JOIN pg_catalog.pg_index i ON i.indexrelid OPERATOR(pg_catalog.=) c.oid
 WHERE c.oid IS NULL OR NOT COALESCE(i.indisvalid, true)
 ORDER BY 1, 2
