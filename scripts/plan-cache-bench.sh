#!/usr/bin/env bash
# What PostgreSQL's plan cache costs the fetch procedures on a tenant schema
# that was never analyzed, with and without their generic-plan pin.
#
#   DATABASE_URL=postgres://... scripts/plan-cache-bench.sh [ROUNDS] [SECONDS]
#
# * Runs the main job (`cargo run --release --example job_pipeline`) on a
#   fresh `job_pipeline` schema, so the schema is what a new tenant's is
#   after its first work: tables never analyzed. Autovacuum is then turned
#   off on its tables, so an ANALYZE cannot change the picture mid-run.
# * Each round times, with pgbench (one connection, prepared statements, the
#   session's plan_cache_mode left at the server default), an empty
#   fetch_work_item and an empty fetch_orchestration_item twice: as
#   installed (`pinned`: the procedures' `SET plan_cache_mode =
#   force_generic_plan`) and with that pin reset (`auto`). The schema is
#   dropped at the end.
# * Prints one line per round and variant: average latency per call in ms,
#   a loopback round trip (`SELECT 1`) included.
#
# Needs psql and pgbench (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
rounds=${1:-3}
seconds=${2:-2}
cd "$(dirname "$0")/.."

# shellcheck source=lib/bench-schema.sh
source scripts/lib/bench-schema.sh

# Arguments by name, so a parameter added with a default does not stale the
# calls; ALTER FUNCTION by name alone (each is the only one of its name).
fw="SELECT * FROM $schema.fetch_work_item$fn(p_lock_timeout_ms => 30000, p_tag_mode => 'any', \
p_tags => '{}', p_owner_id => 'bench', p_session_lock_ms => 30000, p_next_due => true, \
p_floor_ms => NULL, p_next_floor_margin_ms => NULL);"
fo="SELECT * FROM $schema.fetch_orchestration_item$fn(p_lock_timeout_ms => 30000, p_filter => false, \
p_min_major => NULL, p_min_minor => NULL, p_min_patch => NULL, p_max_major => NULL, \
p_max_minor => NULL, p_max_patch => NULL, p_next_due => true, p_settle_ms => 10, \
p_orphan_retention_ms => 3600000, p_max_history_bytes => 268435456, p_floor_ms => NULL, \
p_next_floor_margin_ms => NULL);"
signature_fw="$schema.fetch_work_item$fn"
signature_fo="$schema.fetch_orchestration_item$fn"

trap drop_bench_schema EXIT
fresh_bench_schema

pin() {
  psql -qX "$DATABASE_URL" -c "ALTER FUNCTION $signature_fw $1" -c "ALTER FUNCTION $signature_fo $1" >/dev/null
}

latency() {
  local script
  script=$(mktemp)
  echo "$1" >"$script"
  PGOPTIONS= pgbench -n -M prepared -c 1 -T "$seconds" -f "$script" "$DATABASE_URL" 2>/dev/null \
    | awk '/latency average/ {print $4}'
  rm -f "$script"
}

for round in $(seq 1 "$rounds"); do
  for variant in pinned auto; do
    if [[ $variant == pinned ]]; then
      pin "SET plan_cache_mode = force_generic_plan"
    else
      pin "RESET plan_cache_mode"
    fi
    echo "round $round  $variant  select_1=$(latency 'SELECT 1;')  fetch_work_item=$(latency "$fw")  fetch_orchestration_item=$(latency "$fo")"
  done
done
