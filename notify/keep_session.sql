-- duroxide-postgres: LISTEN connection starts
-- The listening connection's first statement, on every connection it makes
-- (so pg_stat_activity names it from the start). Reads the
-- session's process id (the notifications this connection sends come back
-- to it with that id) and turns the server's idle_session_timeout
-- (PostgreSQL 14 and later) off for this session, which is idle by design.
SELECT pg_catalog.pg_backend_pid(),
       CASE WHEN pg_catalog.current_setting('idle_session_timeout', true) IS NOT NULL
            THEN pg_catalog.set_config('idle_session_timeout', '0', false) END
