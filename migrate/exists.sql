-- exists: whether the schema holds both bookkeeping tables.
SELECT pg_catalog.to_regclass('{{schema}}._duroxide_migrations') IS NOT NULL
   AND pg_catalog.to_regclass('{{schema}}._duroxide_procedures') IS NOT NULL AS migrated;
