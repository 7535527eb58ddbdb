-- lock: inside a tenant's drop or procedure uninstall, takes the schema's
-- DDL lock, the one migrations hold, so neither runs beside a migration of
-- the same schema. $1: the schema's lock key (migrate::lock_key).
SELECT pg_advisory_xact_lock(hashtextextended($1, 0))
