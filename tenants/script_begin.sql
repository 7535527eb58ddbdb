-- Install script of duroxide-postgres {{crate_version}} for schema {{schema}}:
-- {{contents}}.
-- Run it as one transaction (psql -1 -f FILE, or as written): it takes the
-- schema's DDL lock as a starting provider would, and records every
-- migration and procedure with its checksum, so providers see the schema as
-- current and apply nothing themselves. search_path is pinned for the
-- transaction, as for migrate: nothing planted on the session's path runs.
BEGIN;
SET LOCAL search_path = pg_catalog, pg_temp;
