#!/usr/bin/env bash
# One orchestration's provider calls with a git revision's SQL against the
# working tree's, in the same pgbench runs: time per orchestration and WAL
# flushes (scripts/lib/wal.sh) per orchestration.
#
#   DATABASE_URL=postgres://... scripts/claims-ab-bench.sh [BASE_REV] [ROUNDS] [SECONDS]
#
# * Installs BASE_REV's (default main) schema in `claims_base` and the
#   working tree's in `claims_cur`, each with its build's own `print-sql`
#   (scripts/lib/ab.sh builds BASE_REV's command under target/ab/). Each
#   call names its arguments, so the two builds may declare different ones.
# * One pgbench transaction script is one orchestration with one activity,
#   the calls a runtime makes in procedure mode (a build whose claims take
#   the client's token gets one, as the provider sends it): enqueue the start, fetch
#   the instance, ack the turn (history, one activity), fetch the activity,
#   ack it (its completion), fetch the instance, ack the last turn
#   (Completed). Seven calls, each its own transaction. One client, so a
#   durable commit is one WAL flush (nothing to group it with).
# * Each round runs base then current for SECONDS each and prints, per
#   variant, orchestrations/s, ms per orchestration and wal_sync per
#   orchestration (the server's counter, read around the run: run it on a
#   server nobody else uses; on a server with fsync off, wal_sync stays 0).
#
# Needs git, cargo, psql and pgbench (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
base=${1:-main}
rounds=${2:-3}
seconds=${3:-10}
cd "$(dirname "$0")/.."

# shellcheck source=lib/ab.sh
source scripts/lib/ab.sh

ab_pair claims "$base"

declare -A AB_ARGS
# call SCHEMA PROCEDURE [name=value]...: the call with these arguments.
call() {
  local schema=$1 procedure=$2 kv
  shift 2
  AB_ARGS=()
  for kv in "$@"; do AB_ARGS[${kv%%=*}]=${kv#*=}; done
  ab_call "$schema" "$procedure"
}
fetch_turn=(p_lock_timeout_ms=30000 p_filter=false p_min_major=NULL p_min_minor=NULL
  p_min_patch=NULL p_max_major=NULL p_max_minor=NULL p_max_patch=NULL p_next_due=false
  p_settle_ms=0 p_orphan_retention_ms=3600000 p_max_history_bytes=268435456
  p_floor_ms=NULL p_next_floor_margin_ms=NULL p_max_batch_bytes=268435456
  p_claim_token="'c-' || :client_id || '-' || :n")
# An ack's arguments with nothing in them but the lease's token.
ack_turn=(p_lock_token=:t p_execution_id=1 p_name="'Orch'" p_version="'1.0.0'"
  p_parent_instance=NULL p_status=NULL p_output=NULL p_pinned_major=NULL
  p_pinned_minor=NULL p_pinned_patch=NULL p_custom_status_set=false p_custom_status=NULL)
for a in p_event_ids p_event_types p_event_data p_kv_ops p_kv_keys p_kv_values p_kv_updated_ms \
         p_worker_items p_worker_instances p_worker_executions p_worker_activities \
         p_worker_sessions p_worker_tags p_orch_instances p_orch_kinds p_orch_items \
         p_orch_visible_ms p_cancel_instances p_cancel_executions p_cancel_activities; do
  ack_turn+=("$a='{}'")
done

script() {  # schema
  local s=$1 enqueue fetch first fetch_work ack_work last
  enqueue=$(call "$s" enqueue_orchestrator_item p_instance_id="'o-' || :client_id || '-' || :n" \
    p_item_kind="'StartOrchestration'" p_work_item="'{}'" p_delay_ms=0)
  fetch=$(call "$s" fetch_orchestration_item "${fetch_turn[@]}")
  first=$(call "$s" ack_orchestration_item "${ack_turn[@]}" p_event_ids="'{1,2}'" \
    p_event_types="'{OrchestrationStarted,ActivityScheduled}'" p_event_data="'{\"{}\",\"{}\"}'" \
    p_worker_items="'{\"{}\"}'" p_worker_instances="ARRAY[:i]" p_worker_executions="'{1}'" \
    p_worker_activities="'{1}'" p_worker_sessions="'{NULL}'" p_worker_tags="'{NULL}'")
  fetch_work=$(call "$s" fetch_work_item p_lock_timeout_ms=30000 p_tag_mode="'any'" p_tags="'{}'" \
    p_owner_id="'bench'" p_session_lock_ms=30000 p_next_due=false p_floor_ms=NULL \
    p_next_floor_margin_ms=NULL p_history_bytes=NULL p_claim_token="'w-' || :client_id || '-' || :n")
  ack_work=$(call "$s" ack_work_item p_lock_token=:w p_instance_id=:i \
    p_item_kind="'ActivityCompleted'" p_work_item="'{}'")
  last=$(call "$s" ack_orchestration_item "${ack_turn[@]}" p_event_ids="'{3,4}'" \
    p_event_types="'{ActivityCompleted,OrchestrationCompleted}'" p_event_data="'{\"{}\",\"{}\"}'" \
    p_status="'Completed'" p_output="'\"done\"'")
  cat <<SQL
\\set n random(1, 2000000000)
SELECT * FROM $enqueue;
SELECT lock_token AS t, instance_id AS i FROM $fetch \\gset
SELECT $first;
SELECT lock_token AS w FROM $fetch_work \\gset
SELECT * FROM $ack_work;
SELECT lock_token AS t FROM $fetch \\gset
SELECT $last;
SQL
}
script claims_base >"$work/base.sql"
script claims_cur >"$work/cur.sql"

ab_rounds orch "$rounds" "$seconds" 1
