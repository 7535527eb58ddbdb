-- has_table: whether schema $1 holds table $2.
SELECT pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1::text, $2::text)) IS NOT NULL
