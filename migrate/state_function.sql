-- state_function: the rows of state.sql, through the schema's
-- schema_state() function, for a role that may not read the bookkeeping.
SELECT kind, version, name, checksum, present, crate_version FROM {{schema}}.schema_state{{suffix}}();
