-- owner_trusted: whether o.nspowner, a schema's owner, is the connecting
-- role or a role it is a member of, directly or through other roles, as
-- pg_auth_members records it (a superuser is a member of no role it was
-- not granted), counting the database's owner as pg_database_owner's one,
-- implicit, member (PostgreSQL 14 on; public's owner from 15 on). A
-- boolean expression, rendered in place of its marker (OWNER_TRUSTED_MARKER
-- in src/schema.rs) in create_schema.sql and exists.sql.
EXISTS (WITH RECURSIVE mine(oid) AS (
            SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER
            UNION
            SELECT a.roleid FROM pg_catalog.pg_auth_members a JOIN mine m ON a.member = m.oid)
        SELECT FROM mine m
         WHERE m.oid = o.nspowner
            OR (pg_catalog.pg_get_userbyid(o.nspowner) = 'pg_database_owner'
                AND m.oid = (SELECT d.datdba FROM pg_catalog.pg_database d
                              WHERE d.datname = pg_catalog.current_database())))
