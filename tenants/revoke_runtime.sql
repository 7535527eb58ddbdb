-- revoke_runtime: the statements that take from role $2 every right it
-- holds on schema $1 and the objects in it (functions, tables, sequences),
-- whether grant_runtime gave them or not.
SELECT pg_catalog.format(s.template, $1::text, $2::text)
  FROM (VALUES (1, 'REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM %I'),
               (2, 'REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I'),
               (3, 'REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I'),
               (4, 'REVOKE ALL ON SCHEMA %I FROM %I')) AS s (step, template)
 ORDER BY s.step
