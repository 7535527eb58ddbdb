#!/usr/bin/env bash
# One orchestration's provider calls with a git revision's SQL against the
# working tree's, in the same pgbench runs: time per orchestration and WAL
# flushes (pg_stat_wal.wal_sync) per orchestration.
#
#   DATABASE_URL=postgres://... scripts/claims-ab-bench.sh [BASE_REV] [ROUNDS] [SECONDS]
#
# * Installs BASE_REV's (default main) migrations and procedures in schema
#   `claims_base` and the working tree's in `claims_cur`, rendered as the
#   crate renders them (no Rust build needed).
# * One pgbench transaction script is one orchestration with one activity,
#   the calls a runtime makes in procedure mode: enqueue the start, fetch
#   the instance, ack the turn (history, one activity), fetch the activity,
#   ack it (its completion), fetch the instance, ack the last turn
#   (Completed). Seven calls, each its own transaction. One client, so a
#   durable commit is one WAL flush (nothing to group it with).
# * Each round runs base then current for SECONDS each and prints, per
#   variant, orchestrations/s, ms per orchestration and wal_sync per
#   orchestration (the server's counter, read around the run: run it on a
#   server nobody else uses; on a server with fsync off, wal_sync stays 0).
#
# Needs git, psql and pgbench (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
base=${1:-main}
rounds=${2:-3}
seconds=${3:-10}
cd "$(dirname "$0")/.."

for dir in /usr/lib/postgresql/*/bin; do
  [[ -d $dir ]] && PATH="$PATH:$dir"
done
command -v pgbench >/dev/null || { echo "pgbench not found" >&2; exit 1; }
export PGOPTIONS='-c client_min_messages=warning'

git rev-parse --verify -q "$base^{commit}" >/dev/null || { echo "unknown revision: $base" >&2; exit 1; }

now_ms="(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
work=$(mktemp -d)
q() { psql -qXAt -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
cleanup() {
  for s in claims_base claims_cur; do q "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

render() {  # schema
  # Plain procedure names ({{suffix}} empty): each schema is installed
  # here, from its revision's files, and called by the calls below.
  sed -e "s/{{schema}}/\"$1\"/g" -e "s/{{now_ms}}/$now_ms/g" -e "s/{{channel}}/$1/g" \
      -e "s/{{suffix}}//g"
}

install() {  # schema, revision ('' = working tree)
  local schema=$1 rev=$2 files f
  q "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null
  for dir in migrations procedures; do
    if [[ -n $rev ]]; then
      files=$(git ls-tree --name-only "$rev" "$dir/" | grep '\.sql$' | sort)
    else
      files=$(ls "$dir"/*.sql | sort)
    fi
    for f in $files; do
      if [[ -n $rev ]]; then git show "$rev:$f"; else cat "$f"; fi \
        | render "$schema" | psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" >/dev/null
    done
  done
}

install claims_base "$base"
install claims_cur ""

script() {  # schema
  local s=$1
  cat <<SQL
\\set n random(1, 2000000000)
SELECT * FROM $s.enqueue_orchestrator_item('o-' || :client_id || '-' || :n, 'StartOrchestration', '{}', 0);
SELECT lock_token AS t, instance_id AS i FROM $s.fetch_orchestration_item(30000, false, NULL, NULL, NULL, NULL, NULL, NULL, false, 0, 3600000, 268435456) \\gset
SELECT $s.ack_orchestration_item(:t, 1, '{1,2}', '{OrchestrationStarted,ActivityScheduled}', '{"{}","{}"}', 'Orch', '1.0.0', NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, '{}', '{}', '{}', '{}', '{"{}"}', ARRAY[:i], '{1}', '{1}', '{NULL}', '{NULL}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT lock_token AS w FROM $s.fetch_work_item(30000, 'any', '{}', 'bench', 30000, false) \\gset
SELECT * FROM $s.ack_work_item(:w, :i, 'ActivityCompleted', '{}');
SELECT lock_token AS t FROM $s.fetch_orchestration_item(30000, false, NULL, NULL, NULL, NULL, NULL, NULL, false, 0, 3600000, 268435456) \\gset
SELECT $s.ack_orchestration_item(:t, 1, '{3,4}', '{ActivityCompleted,OrchestrationCompleted}', '{"{}","{}"}', 'Orch', '1.0.0', NULL, 'Completed', '"done"', NULL, NULL, NULL, false, NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SQL
}
script claims_base >"$work/base.sql"
script claims_cur >"$work/cur.sql"

wal_sync() { q "SELECT wal_sync FROM pg_stat_wal"; }
printf '%-5s %-8s %10s %12s %14s\n' round variant 'orch/s' 'ms/orch' 'wal_sync/orch'
for round in $(seq 1 "$rounds"); do
  for variant in base cur; do
    before=$(wal_sync)
    out=$(pgbench -n -M prepared -c 1 -T "$seconds" -f "$work/$variant.sql" "$DATABASE_URL" 2>&1) \
      || { echo "$out" >&2; exit 1; }
    after=$(wal_sync)
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    awk -v r="$round" -v v="$variant" -v tx="$tx" -v s="$seconds" -v lat="$lat" -v w=$((after - before)) \
      'BEGIN { printf "%-5s %-8s %10.1f %12.3f %14.2f\n", r, v, tx / s, lat, (tx > 0 ? w / tx : 0) }'
  done
done
