-- duroxide-postgres: LISTEN connection looks for other listeners
-- Whether a backend other than this one holds the presence key ($1, $2),
-- granted, in this database.
SELECT EXISTS (
       SELECT 1 FROM pg_catalog.pg_locks l
        WHERE l.locktype = 'advisory' AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 2
          AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                             WHERE d.datname = pg_catalog.current_database()))
