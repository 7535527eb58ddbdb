-- drop_schema: the tenant and everything in it: tables, rows, functions.
-- Each kind dropped RESTRICT, then the emptied schema, rather than one
-- DROP SCHEMA ... CASCADE: an object of another schema built on the
-- tenant's (a view over its tables, a foreign key to them, a function
-- taking their row type) makes the drop fail (SQLSTATE 2BP01, the object
-- named in the error's detail) instead of going with it. foreign_objects.sql
-- has made sure the schema holds only tables and functions of ours.
SET LOCAL search_path = pg_catalog, pg_temp;
DO $drop$
DECLARE
    v_routines text;
    v_tables   text;
BEGIN
    SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ')
      INTO v_routines
      FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = '{{schema}}'::pg_catalog.regnamespace;
    IF v_routines IS NOT NULL THEN
        EXECUTE 'DROP ROUTINE ' || v_routines || ' RESTRICT';
    END IF;
    SELECT pg_catalog.string_agg(c.oid::pg_catalog.regclass::text, ', ')
      INTO v_tables
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = '{{schema}}'::pg_catalog.regnamespace
       AND c.relkind IN ('r', 'p');
    IF v_tables IS NOT NULL THEN
        EXECUTE 'DROP TABLE ' || v_tables || ' RESTRICT';
    END IF;
    DROP SCHEMA {{schema}} RESTRICT;
END
$drop$;
