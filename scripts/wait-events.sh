#!/usr/bin/env bash
# Samples what a role's backends are doing while something else (the load
# tool, a test) runs against the same server: every INTERVAL_MS for SECONDS,
# one row per client backend of ROLE, then a table of how many samples found
# a backend in each state and wait event, busiest first.
#
#   DATABASE_URL=postgres://... scripts/wait-events.sh [SECONDS] [INTERVAL_MS] [ROLE]
#
# * ROLE defaults to the URL's own role (`current_user`); the sampling
#   session itself is left out.
# * `active / CPU` is a backend running a statement and waiting for nothing
#   (on a CPU or in the kernel's run queue); `Lock / ...` are heavyweight
#   lock waits (`transactionid` and `tuple`: row locks held by another
#   transaction; `advisory`: advisory keys); `LWLock / WALWrite` and
#   `IO / WALSync` are commits waiting for (or doing) a WAL flush on a
#   durable server; `Client / ClientRead` with state `idle in transaction` is
#   a transaction waiting for its client's next statement.
# * The counts are samples, not time: with N samples, a count of N means one
#   backend spent the whole window in that state.
# * It runs in one session as one statement (a DO block that clears the
#   statistics snapshot before each sample), so it sends one statement, not
#   one per sample.
#
# Needs psql (postgresql-client) on PATH or in /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
seconds=${1:-10}
interval_ms=${2:-10}
role=${3:-}

for dir in /usr/lib/postgresql/*/bin; do
  [[ -d $dir ]] && PATH="$PATH:$dir"
done
command -v psql >/dev/null || { echo "psql not found" >&2; exit 1; }
[[ $seconds =~ ^[0-9]+$ && $interval_ms =~ ^[0-9]+$ && $interval_ms -gt 0 ]] ||
  { echo "SECONDS and INTERVAL_MS are whole numbers" >&2; exit 1; }

psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -v role="$role" \
  -v samples="$((seconds * 1000 / interval_ms))" -v pause="$interval_ms" <<'SQL'
\pset footer off
CREATE TEMP TABLE wait_samples (sample int, state text, wait text);
SELECT coalesce(nullif(:'role', ''), current_user::text) AS sampled_role \gset
SELECT set_config('wait.role', :'sampled_role', false),
       set_config('wait.samples', :'samples', false),
       set_config('wait.pause', :'pause', false) \g /dev/null
DO $$
DECLARE
  n int := 0;
BEGIN
  WHILE n < current_setting('wait.samples')::int LOOP
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    INSERT INTO wait_samples
    SELECT n, a.state,
           CASE WHEN a.state = 'active' AND a.wait_event IS NULL THEN 'CPU'
                ELSE coalesce(a.wait_event_type || ' / ' || a.wait_event, '-') END
           || coalesce(' (' || l.what || ')', '')
      FROM pg_catalog.pg_stat_activity a
      LEFT JOIN LATERAL (
        -- The lock a lock wait is for: an object lock names its catalog
        -- and object (pg_database 0 is the lock every transaction that
        -- sent a NOTIFY holds from before its commit record until after
        -- its flush), a relation lock its table.
        SELECT CASE WHEN w.locktype = 'object'
                    THEN w.classid::regclass::text || ' ' || w.objid::text
                    WHEN w.locktype = 'relation' THEN w.relation::regclass::text
                    ELSE w.mode END AS what
          FROM pg_catalog.pg_locks w
         WHERE w.pid = a.pid AND NOT w.granted AND a.wait_event_type = 'Lock'
         LIMIT 1) l ON true
     WHERE a.backend_type = 'client backend'
       AND a.pid <> pg_catalog.pg_backend_pid()
       AND a.usename = current_setting('wait.role');
    PERFORM pg_catalog.pg_sleep(current_setting('wait.pause')::float8 / 1000);
    n := n + 1;
  END LOOP;
END $$;
\echo role :sampled_role, :samples samples every :pause ms
SELECT state, wait, count(*) AS samples,
       round(count(*)::numeric / :samples, 2) AS backends_on_average
  FROM wait_samples GROUP BY state, wait ORDER BY count(*) DESC;
SQL
