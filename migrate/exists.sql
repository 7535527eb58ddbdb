-- exists: whether the schema holds both bookkeeping tables.
SELECT to_regclass('{{schema}}._duroxide_migrations') IS NOT NULL
   AND to_regclass('{{schema}}._duroxide_procedures') IS NOT NULL AS migrated;
