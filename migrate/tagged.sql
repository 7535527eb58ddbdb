-- tagged: one schema's part of a read that covers many schemas in one
-- statement (migrate/many.rs): a single-schema query (exists.sql,
-- state.sql, tenants/queue_stats.sql, without a final semicolon) goes in
-- the parentheses below, and every row it returns is tagged with the
-- schema's name. The parts of a batch are joined with union_all.sql.
SELECT '{{schema_name}}'::text AS schema, part.*
  FROM (
{{part}}
       ) part
