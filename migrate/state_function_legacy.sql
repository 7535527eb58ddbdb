-- state_function_legacy: the rows of state.sql through the schema_state()
-- a build before the per-schema procedure suffix installed, for a role that
-- may not read the bookkeeping, on a schema this build has not migrated yet
-- (its procedures then read as stale: the records are the older build's).
SELECT kind, version, name, checksum, present, crate_version FROM {{schema}}.schema_state();
