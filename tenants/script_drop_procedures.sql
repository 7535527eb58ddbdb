-- Every overload of the procedures below, and of those recorded as installed,
-- is dropped first: a changed signature or result type cannot be replaced
-- in place.
DO $drop$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = '{{schema}}'::regnamespace
                AND (p.proname = ANY (ARRAY[{{names}}]::text[])
                     OR p.proname IN (SELECT d.name FROM {{schema}}._duroxide_procedures d))
    LOOP
        EXECUTE 'DROP FUNCTION ' || f::text;
    END LOOP;
END
$drop$;
DELETE FROM {{schema}}._duroxide_procedures;
