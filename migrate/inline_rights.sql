-- inline_rights: whether the connecting role may run inline SQL on the
-- schema: all four DML rights on its instances table, what `grant --inline`
-- gives on every table (a role with EXECUTE only holds none).
-- has_table_privilege is true when any one of several listed rights is
-- held, hence one call per right.
SELECT pg_catalog.has_table_privilege('{{schema}}.instances', 'SELECT')
   AND pg_catalog.has_table_privilege('{{schema}}.instances', 'INSERT')
   AND pg_catalog.has_table_privilege('{{schema}}.instances', 'UPDATE')
   AND pg_catalog.has_table_privilege('{{schema}}.instances', 'DELETE') AS inline_rights
