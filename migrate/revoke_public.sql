-- revoke_public: a new tenant's procedures lose the EXECUTE PostgreSQL
-- grants PUBLIC on every new function. The list names each procedure with
-- its schema and its argument list, read from its file, so it finds exactly
-- the function just created, whatever else the schema holds. A schema that
-- records no procedure has no runtime role's grants to restore, so this one
-- plain REVOKE does what grant_installed.sql's block does for a reinstall,
-- for less than half its cost (docs/benchmarks.md, "Provisioning").
REVOKE ALL ON FUNCTION {{signatures}} FROM PUBLIC;
