-- lock_timeout: inside a tenant's drop or procedure uninstall, bounds every
-- wait that follows (for the schema's DDL lock and its tables) to 10 s, so
-- a schema busy with a long migration or turn fails the command instead of
-- hanging it.
SET LOCAL lock_timeout = '10s'
