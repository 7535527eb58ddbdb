#!/usr/bin/env bash
# The completions of one instance's activities acked by several workers at
# once (a fan-out finishing): a git revision's `ack_work_item` against the
# working tree's, in the same pgbench runs: acks/s, latency and WAL flushes
# (scripts/lib/wal.sh) per ack.
#
#   DATABASE_URL=postgres://... scripts/sibling-acks-bench.sh [BASE_REV] [CLIENTS] [ROUNDS] [SECONDS]
#
# * Installs BASE_REV's (default main) schema in `siblings_base` and the
#   working tree's in `siblings_cur` (scripts/lib/ab.sh), starts one
#   instance in each (its claim row exists, as for any started instance)
#   and gives it 200,000 activities, each locked by a worker with a token of
#   its own.
# * CLIENTS pgbench clients (default 4, one per worker slot) ack those
#   activities at random, each ack its own transaction with its completion,
#   as workers finishing siblings of one fan-out do. An ack of a token acked
#   before finds nothing and enqueues nothing, but still locks the claim
#   row and commits; with 200,000 tokens that is a few in a hundred.
# * Each round runs base then current for SECONDS (default 10) each. Run it
#   on a durable server nobody else uses (`scripts/pg-throwaway.sh
#   --durable`): on a server with fsync off every commit is free, wal_sync
#   stays 0 and waiting for a sibling's commit costs next to nothing.
#
# Needs git, cargo, psql and pgbench (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
base=${1:-main}
clients=${2:-4}
rounds=${3:-3}
seconds=${4:-10}
tokens=200000
cd "$(dirname "$0")/.."

# shellcheck source=lib/ab.sh
source scripts/lib/ab.sh

q() { psql -qXAt -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
ab_pair siblings "$base"

declare -A AB_ARGS
for s in "${ab_sides[@]}"; do
  AB_ARGS=([p_instance_id]="'fan'" [p_item_kind]="'StartOrchestration'" [p_work_item]="'{}'"
    [p_delay_ms]=0)
  ab_sql "SELECT * FROM $(ab_call "$s" enqueue_orchestrator_item)"
  ab_sql "INSERT INTO \"$s\".worker_queue (work_item, visible_at_ms, lock_token, locked_until_ms,
            instance_id, execution_id, activity_id, created_at_ms)
          SELECT '{}', 0, 'w-' || g, 9000000000000, 'fan', 1, g, 0
            FROM generate_series(1, $tokens) g"
  ab_sql "VACUUM ANALYZE \"$s\".worker_queue"
  AB_ARGS=([p_lock_token]="'w-' || :k" [p_instance_id]="'fan'"
    [p_item_kind]="'ActivityCompleted'" [p_work_item]="'{}'")
  printf '\\set k random(1, %d)\nSELECT * FROM %s;\n' "$tokens" "$(ab_call "$s" ack_work_item)" \
    >"$work/${s#siblings_}.sql"
done

echo "$clients clients acking one instance's activities; $(q 'SHOW fsync') fsync, $(q 'SHOW synchronous_commit') synchronous_commit"
ab_rounds ack "$rounds" "$seconds" "$clients"
