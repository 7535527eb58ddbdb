-- duroxide-postgres: LISTEN connection announces itself
-- Takes the presence key ($1, $2), shared, for the session, if no session
-- holds it exclusively (never waits: any role may take a key, and waiting
-- would let one stop this connection from listening); whether it was taken.
SELECT pg_catalog.pg_try_advisory_lock_shared($1, $2)
