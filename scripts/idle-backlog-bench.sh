#!/usr/bin/env bash
# How long one connection takes to claim a backlog that reached a tenant
# after an idle spell: the fetch procedure of a git revision against the
# working tree's.
#
#   DATABASE_URL=postgres://... scripts/idle-backlog-bench.sh [BASE_REV] [ITEMS] [ROUNDS]
#
# * Installs BASE_REV's (default HEAD) schema in `idle_base` and the working
#   tree's in `idle_cur`, each with its build's own `print-sql`
#   (scripts/lib/ab.sh). Autovacuum is off on both schemas' tables, so no
#   analyze during a run replaces the plans under test (in production one
#   does, once autovacuum reaches the grown table).
# * Each round, for each side: the worker queue is left as autovacuum leaves
#   an idle tenant's (20 activities queued, deleted, then `VACUUM ANALYZE`:
#   zero pages). One session then calls fetch_work_item once on the empty
#   queue (the session plans the procedure's statements and keeps the
#   plans), ITEMS (default 5,000) activities are queued, and the same
#   session claims them one call at a time, each in a transaction of its
#   own (a `DO` loop that commits), until none is left. The calls pass no
#   scan floor (the runtime's calls do, after their first).
# * Prints one line per round and side: the claims' total time and the time
#   per claim, in ms.
#
# Needs git, cargo and psql (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
base=${1:-HEAD}
items=${2:-5000}
rounds=${3:-2}
cd "$(dirname "$0")/.."

# shellcheck source=lib/ab.sh
source scripts/lib/ab.sh

ab_pair idle "$base"
for s in "${ab_sides[@]}"; do autovacuum_off "$s"; done

# A worker's long-polling claim, as a runtime's dispatcher makes it.
declare -A AB_ARGS
declare -A calls
ab_worker_fetch_args
for s in "${ab_sides[@]}"; do calls[$s]=$(ab_call "$s" fetch_work_item); done

queue() {  # SCHEMA N: N visible activities
  ab_sql "INSERT INTO \"$1\".worker_queue (work_item, visible_at_ms, instance_id, execution_id,
         activity_id, created_at_ms)
       SELECT '{}', 0, 'idle-' || g, 1, 1, 0 FROM generate_series(1, $2) g"
}

for round in $(seq 1 "$rounds"); do
  for s in "${ab_sides[@]}"; do
    queue "$s" 20
    ab_sql "DELETE FROM \"$s\".worker_queue"
    ab_sql "VACUUM ANALYZE \"$s\".worker_queue"
    result=$(psql -qXAt -v ON_ERROR_STOP=1 "$DATABASE_URL" 2>&1 <<SQL
SELECT count(*) FROM ${calls[$s]} WHERE lock_token IS NOT NULL;
INSERT INTO "$s".worker_queue (work_item, visible_at_ms, instance_id, execution_id,
       activity_id, created_at_ms)
SELECT '{}', 0, 'idle-' || g, 1, 1, 0 FROM generate_series(1, $items) g;
DO \$\$
DECLARE
    v_claimed bigint := 0;
    v_token   text;
    v_start   timestamptz := pg_catalog.clock_timestamp();
BEGIN
    LOOP
        SELECT lock_token INTO v_token FROM ${calls[$s]};
        EXIT WHEN v_token IS NULL;
        v_claimed := v_claimed + 1;
        COMMIT;
    END LOOP;
    RAISE WARNING '% % %', v_claimed,
        round((extract(epoch FROM pg_catalog.clock_timestamp() - v_start) * 1000)::numeric, 1),
        round((extract(epoch FROM pg_catalog.clock_timestamp() - v_start) * 1000
               / greatest(v_claimed, 1))::numeric, 3);
END
\$\$;
SQL
)
    read -r claimed ms per <<<"$(grep -o 'WARNING: .*' <<<"$result" | cut -d' ' -f2-)"
    [[ $claimed == "$items" ]] || { echo "$s: claimed $claimed of $items: $result" >&2; exit 1; }
    printf 'round %s %-9s %6s claims %10s ms %8s ms/claim\n' "$round" "$s" "$claimed" "$ms" "$per"
    ab_sql "DELETE FROM \"$s\".worker_queue"
  done
done
