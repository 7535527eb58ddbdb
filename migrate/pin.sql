-- pin: the first statement of every batch migrate.rs sends. Every function
-- and operator the batch names then resolves in pg_catalog, whatever the
-- connection's search_path holds (a hostile `format(text, text)` in a
-- schema on it never runs); `{{schema}}` names are always qualified. Lasts
-- until the (explicit or implicit) transaction ends. The batch waits for
-- locks as long as they last (another process's migration of the schema
-- holds its DDL lock for as long as that takes), whatever lock timeout the
-- connection has (PostgresOptions::connect_options gives one of a second).
-- It also runs to its end whatever statement timeout the connection has
-- (PostgresOptions::statement_timeout, a role's or a database's): a batch
-- cut off rolls back, and every start after it would be cut off at the
-- same point, so a migration longer than the timeout (a backfill on a
-- large tenant) would never finish. The same goes for PostgreSQL 17's
-- transaction_timeout, which ends the whole session: turned off where the
-- server knows it (set_config fails on a name the server does not know,
-- so before 17 it is left alone; the statement returns no row). Tables
-- are created as heap tables whatever default_table_access_method the
-- role or database names (a columnar access method cannot lock a row or
-- update it in place, which the queues do on every call); the tablespace,
-- an operator's choice of disk, is left to default_tablespace.
SET LOCAL search_path = pg_catalog, pg_temp;
SET LOCAL default_table_access_method = heap;
SET LOCAL lock_timeout = 0;
SET LOCAL statement_timeout = 0;
SELECT WHERE CASE WHEN pg_catalog.current_setting('transaction_timeout', true) IS NULL THEN false
                  ELSE pg_catalog.set_config('transaction_timeout', '0', true) IS NULL END;
