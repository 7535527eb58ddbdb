-- has_table: whether schema $1 holds table $2.
SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL
