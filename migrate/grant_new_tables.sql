-- grant_new_tables: the tables this run's migrations created ({{tables}})
-- go to the roles that write the schema's tables already. A role other
-- than the owner holding SELECT, INSERT, UPDATE and DELETE on `instances`
-- is an inline runtime role (what `grant --inline` gives); it gets the same
-- four rights on each new table, in the migration's transaction, so an
-- upgrade that adds a table does not leave an inline runtime without the
-- rights its next statement needs. Nobody else gets anything (PUBLIC, a
-- procedure-mode role, a role that only reads). Sent only when a schema
-- migrated before creates a table: a new tenant has no such role yet.
DO $grant$
DECLARE
    writers text;
BEGIN
    SELECT pg_catalog.string_agg(w.grantee::regrole::text, ', ' ORDER BY w.grantee)
      INTO writers
      FROM (SELECT a.grantee
              FROM pg_catalog.pg_class c,
                   pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = '{{schema}}.instances'::regclass
               AND a.grantee <> 0::oid
               AND a.grantee <> c.relowner
               AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')
             GROUP BY a.grantee
            HAVING pg_catalog.count(DISTINCT a.privilege_type) = 4) w;
    IF writers IS NOT NULL THEN
        EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {{tables}} TO ' || writers;
    END IF;
END
$grant$;
