-- owner_trusted: whether o.nspowner, a schema's owner, already holds every
-- right of the connecting role (pg_has_role ... USAGE: the role itself, a
-- superuser, or a role that has the connecting role's rights through
-- membership), so that nothing installed in the schema gives the owner
-- rights it lacks: the owner may drop or replace any object in its schema
-- (a table read by a SECURITY DEFINER procedure, with a trigger of its
-- own), and would then run code with the installer's rights. For
-- pg_database_owner (PostgreSQL 14 on; public's owner from 15 on) the
-- database's owner, its one implicit member, is asked. A boolean
-- expression, rendered in place of its marker (OWNER_TRUSTED_MARKER in
-- src/schema.rs) in create_schema.sql and exists.sql.
pg_catalog.pg_has_role(
    CASE WHEN pg_catalog.pg_get_userbyid(o.nspowner) = 'pg_database_owner'
         THEN (SELECT d.datdba FROM pg_catalog.pg_database d
                WHERE d.datname = pg_catalog.current_database())
         ELSE o.nspowner END,
    CURRENT_USER, 'USAGE')
