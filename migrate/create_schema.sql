-- create_schema: creates the schema unless it exists, then refuses to
-- create or change anything in it when its owner lacks some right of the
-- connecting role (owner_trusted.sql). The first statement of the
-- bookkeeping, before anything is created in the schema.
-- * CREATE SCHEMA runs only for a missing schema: IF NOT EXISTS checks the
--   right to create schemas in the database first, so an owner given a
--   schema made for it (CREATE SCHEMA ... AUTHORIZATION, no right on the
--   database) could not migrate it. Two processes creating it at once: the
--   loser fails with 42P06 and starts over (src/migrate.rs).
-- * A schema someone else created first, under the name of a tenant not yet
--   provisioned (any role with CREATE on the database can), would otherwise
--   be adopted: its owner could drop or replace the tables and functions
--   this build installs there, or plant its own bookkeeping and tables
--   ahead of them, and read or change that tenant's data.
-- * The procedures run with their owner's rights (SECURITY DEFINER): put by
--   a more privileged role (a superuser, or an admin that is a member of
--   the tenant's owner) into a schema a lesser role owns, they would let
--   that owner, who may replace the tables they read, run code with those
--   rights.
-- Raised as DX007 with the owner's name as its detail
-- (PostgresProviderError::SchemaOwnedByAnother).
DO $create_schema$
DECLARE
    v_owner name;
BEGIN
    IF pg_catalog.to_regnamespace('{{schema}}') IS NULL THEN
        CREATE SCHEMA {{schema}};
    END IF;
    SELECT pg_catalog.pg_get_userbyid(o.nspowner) INTO v_owner
      FROM (SELECT n.nspowner FROM pg_catalog.pg_namespace n
             WHERE n.oid = '{{schema}}'::pg_catalog.regnamespace) o
     WHERE NOT {{owner_trusted}};
    IF v_owner IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'DX007', DETAIL = v_owner,
            MESSAGE = pg_catalog.format('schema %s is owned by role %s, which lacks rights of role %s',
                                        '{{schema}}', v_owner, CURRENT_USER);
    END IF;
END
$create_schema$;
