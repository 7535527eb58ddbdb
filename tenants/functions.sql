-- functions: every overload, in schema $1, of the functions named in $2, as
-- a schema-qualified signature for DROP FUNCTION (uninstall_procedures drops
-- them all in one statement: a statement per function would resolve each
-- name among every tenant's functions of that name afresh).
SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname,
              pg_catalog.pg_get_function_identity_arguments(p.oid))
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = $1
   AND p.proname = ANY ($2::text[])
 ORDER BY p.proname
