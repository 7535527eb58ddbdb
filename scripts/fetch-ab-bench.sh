#!/usr/bin/env bash
# The fetch procedures of a git revision against the working tree's, call
# for call, in the same pgbench runs.
#
#   DATABASE_URL=postgres://... scripts/fetch-ab-bench.sh [BASE_REV] [ROUNDS] [SECONDS]
#
# * Runs the main job (`cargo run --release --example job_pipeline`, the
#   working tree's build) on a fresh `job_pipeline` schema, which installs
#   the working tree's procedures; then installs BASE_REV's (default HEAD)
#   fetch_work_item and fetch_orchestration_item beside them as
#   `*_base`. Autovacuum is off on the schema's tables for the run.
# * For each procedure and queue state (empty; one ready item, so the
#   claim is all there is; four ready items, so more follows), one pgbench
#   run (one connection, prepared statements) draws the base and the current
#   call at random, so both see the same machine. Claims run inside
#   BEGIN ... ROLLBACK, so every call finds the same queue; the table is
#   vacuumed before each run.
# * Prints one line per round, procedure and state: average latency per
#   transaction in ms of the base and the current procedure. The
#   transaction's own round trips are in both; compare within a line.
#
# Needs git, psql and pgbench (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
base=${1:-HEAD}
rounds=${2:-3}
seconds=${3:-3}
cd "$(dirname "$0")/.."

# shellcheck source=lib/bench-schema.sh
source scripts/lib/bench-schema.sh

git rev-parse --verify -q "$base^{commit}" >/dev/null || { echo "unknown revision: $base" >&2; exit 1; }

now_ms="(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
work=$(mktemp -d)
sql() { psql -qX "$DATABASE_URL" -c "$1" >/dev/null; }
cleanup() {
  drop_bench_schema
  rm -rf "$work"
}
trap cleanup EXIT

fresh_bench_schema

for procedure in fetch_work_item fetch_orchestration_item; do
  git show "$base:procedures/$procedure.sql" \
    | sed -e "s/{{schema}}\.$procedure(/{{schema}}.${procedure}_base(/" \
          -e "s/{{schema}}/\"$schema\"/g" \
          -e "s/{{now_ms}}/$now_ms/g" \
    | psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" >/dev/null
done

declare -A args=(
  [fetch_work_item]="30000, 'any', '{}', 'bench', 30000, true"
  [fetch_orchestration_item]="30000, false, NULL, NULL, NULL, NULL, NULL, NULL, true, 10"
)
declare -A table=([fetch_work_item]=worker_queue [fetch_orchestration_item]=orchestrator_queue)

fill() {  # procedure, number of ready items
  local t=${table[$1]}
  sql "DELETE FROM $schema.$t"
  if [[ $1 == fetch_work_item ]]; then
    sql "INSERT INTO $schema.$t (work_item, visible_at_ms, created_at_ms)
         SELECT '{}', 0, 0 FROM generate_series(1, $2)"
  else
    sql "INSERT INTO $schema.$t (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
         SELECT 'bench-' || g, 'StartOrchestration', '{}', 0, 0 FROM generate_series(1, $2) g"
  fi
  sql "VACUUM $schema.$t"
}

compare() {  # procedure
  for variant in base current; do
    local name=$1
    [[ $variant == base ]] && name=${1}_base
    printf 'BEGIN;\nSELECT * FROM %s.%s(%s);\nROLLBACK;\n' "$schema" "$name" "${args[$1]}" >"$work/$variant.sql"
  done
  PGOPTIONS= pgbench -n -M prepared -c 1 -T "$seconds" \
      -f "$work/base.sql@1" -f "$work/current.sql@1" "$DATABASE_URL" 2>/dev/null \
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
