-- lock: serializes DDL on the schema (migrations, procedure installation,
-- a tenant's drop or uninstall) until the transaction ends. A table lock on
-- the schema's own bookkeeping needs rights on the schema: UPDATE, DELETE
-- or TRUNCATE on the table (and USAGE on the schema to name it), unlike an
-- advisory key, which any role can take. SHARE ROW EXCLUSIVE conflicts with
-- itself but not with plain reads, so inspections never wait for it.
LOCK TABLE {{schema}}._duroxide_migrations IN SHARE ROW EXCLUSIVE MODE;
