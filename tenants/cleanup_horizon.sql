-- cleanup_horizon: what holds back the cleanup of dead rows in this
-- database the longest, or no row when nothing does: the oldest snapshot
-- (xmin) among the database's other sessions, its prepared transactions,
-- the replication slots and the standbys' feedback. A queue deletes every
-- message it delivers, and while one of these holds a snapshot older than
-- those deletions neither vacuum nor an index scan can drop them, so every
-- fetch of every tenant walks further over them (docs/operations.md, "Long
-- transactions"). Its age is counted in transactions begun since the
-- snapshot and, where the server records it, in time since its
-- transaction (or the prepared transaction) began. pg_stat_activity shows
-- every session's snapshot to any role, but another role's session's state
-- and start times only to members of that role, pg_read_all_stats and
-- superusers: for the others, state and held_ms are NULL.
WITH db AS (
    SELECT d.oid, d.datname FROM pg_catalog.pg_database d
     WHERE d.datname = pg_catalog.current_database()
), holders AS (
    SELECT 'session'::text AS kind, a.pid::text AS holder, a.usename::text AS role,
           a.application_name::text AS application, a.state::text AS state,
           a.backend_xmin AS xmin, a.xact_start AS since
      FROM pg_catalog.pg_stat_activity a
      JOIN db ON db.oid = a.datid
     WHERE a.backend_xmin IS NOT NULL
       AND a.pid <> pg_catalog.pg_backend_pid()
    UNION ALL
    SELECT 'prepared transaction', p.gid, p.owner::text, NULL, 'prepared',
           p.transaction, p.prepared
      FROM pg_catalog.pg_prepared_xacts p
      JOIN db ON db.datname = p.database
    UNION ALL
    SELECT 'replication slot', s.slot_name::text, NULL, NULL,
           CASE WHEN s.active THEN 'active' ELSE 'inactive' END, s.xmin, NULL
      FROM pg_catalog.pg_replication_slots s
     WHERE s.xmin IS NOT NULL
    UNION ALL
    SELECT 'standby', r.pid::text, r.usename::text, r.application_name::text,
           r.state::text, r.backend_xmin, NULL
      FROM pg_catalog.pg_stat_replication r
     WHERE r.backend_xmin IS NOT NULL
)
SELECT h.kind, h.holder, h.role, h.application, h.state,
       pg_catalog.age(h.xmin)::bigint AS transactions_behind,
       (extract(epoch FROM (pg_catalog.clock_timestamp() - h.since)) * 1000)::bigint AS held_ms
  FROM holders h
 ORDER BY pg_catalog.age(h.xmin) DESC, h.since NULLS LAST
 LIMIT 1
