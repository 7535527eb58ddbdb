#!/usr/bin/env bash
# The fetch procedures of a git revision against the working tree's, call
# for call, in the same pgbench runs.
#
#   DATABASE_URL=postgres://... scripts/fetch-ab-bench.sh [BASE_REV] [ROUNDS] [SECONDS]
#
# * Installs BASE_REV's (default HEAD) schema in `fetch_base` and the
#   working tree's in `fetch_cur`, each with its build's own `print-sql`
#   (scripts/lib/ab.sh builds BASE_REV's command under target/ab/), so each
#   side runs its own procedures on its own tables. Each call names its
#   arguments, so the two builds may declare different ones. Autovacuum is
#   off on both schemas' tables for the run; neither is ever analyzed, as a
#   new tenant's are not.
# * For each procedure and queue state (empty; one ready item, so the
#   claim is all there is; four ready items, so more follows), both queues
#   are filled alike and one pgbench run (one connection, prepared
#   statements) draws the base and the current call at random, so both see
#   the same machine. Claims run inside BEGIN ... ROLLBACK, so every call
#   finds the same queue; the tables are vacuumed before each run.
# * Prints one line per round, procedure and state: average latency per
#   transaction in ms of the base and the current procedure. The
#   transaction's own round trips are in both; compare within a line.
#
# Needs git, cargo, psql and pgbench (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
base=${1:-HEAD}
rounds=${2:-3}
seconds=${3:-3}
cd "$(dirname "$0")/.."

# shellcheck source=lib/ab.sh
source scripts/lib/ab.sh

ab_pair fetch "$base"
for s in "${ab_sides[@]}"; do autovacuum_off "$s"; done

# Long-polling calls (next due time asked for), as a runtime's dispatchers
# make them; no scan floor yet.
declare -A AB_ARGS
declare -A calls
ab_worker_fetch_args
for s in fetch_base fetch_cur; do calls[fetch_work_item,$s]=$(ab_call "$s" fetch_work_item); done
AB_ARGS=([p_lock_timeout_ms]=30000 [p_filter]=false [p_min_major]=NULL [p_min_minor]=NULL
  [p_min_patch]=NULL [p_max_major]=NULL [p_max_minor]=NULL [p_max_patch]=NULL [p_next_due]=true
  [p_settle_ms]=10 [p_orphan_retention_ms]=3600000 [p_max_history_bytes]=268435456
  [p_floor_ms]=NULL [p_next_floor_margin_ms]=NULL)
for s in fetch_base fetch_cur; do
  calls[fetch_orchestration_item,$s]=$(ab_call "$s" fetch_orchestration_item)
done
declare -A table=([fetch_work_item]=worker_queue [fetch_orchestration_item]=orchestrator_queue)

fill() {  # procedure, number of ready items
  local t=${table[$1]} s
  for s in fetch_base fetch_cur; do
    ab_sql "DELETE FROM $s.$t"
    if [[ $1 == fetch_work_item ]]; then
      ab_sql "INSERT INTO $s.$t (work_item, visible_at_ms, created_at_ms)
           SELECT '{}', 0, 0 FROM generate_series(1, $2)"
    else
      ab_sql "INSERT INTO $s.instance_claims (instance_id)
           SELECT 'bench-' || g FROM generate_series(1, $2) g ON CONFLICT DO NOTHING"
      ab_sql "INSERT INTO $s.$t (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
           SELECT 'bench-' || g, 'StartOrchestration', '{}', 0, 0 FROM generate_series(1, $2) g"
    fi
    ab_sql "VACUUM $s.$t"
  done
}

compare() {  # procedure
  local variant
  for variant in base cur; do
    printf 'BEGIN;\nSELECT * FROM %s;\nROLLBACK;\n' "${calls[$1,fetch_$variant]}" >"$work/$variant.sql"
  done
  pgbench -n -M prepared -c 1 -T "$seconds" \
      -f "$work/base.sql@1" -f "$work/cur.sql@1" "$DATABASE_URL" 2>/dev/null \
    | awk '/^ - latency average/ {v[++n] = $(NF-1)} END {printf "base=%s  current=%s\n", v[1], v[2]}'
}

for round in $(seq 1 "$rounds"); do
  for procedure in fetch_work_item fetch_orchestration_item; do
    for state in empty one four; do
      case $state in empty) n=0 ;; one) n=1 ;; four) n=4 ;; esac
      fill "$procedure" "$n"
      echo "round $round  $procedure  $state  $(compare "$procedure")"
    done
  done
done
