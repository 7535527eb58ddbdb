#!/usr/bin/env bash
# The load scenario alone and with a session holding a snapshot, for one or
# more builds of the load tool, on fresh throwaway servers.
#
#   scripts/held-snapshot-bench.sh [--durable] [--rounds N] [--seconds S] [--modes M] LOAD_BIN...
#
# * LOAD_BIN: a release build of `examples/load` (for example
#   target/release/examples/load, and the same built at another revision
#   with its own CARGO_TARGET_DIR).
# * For each round, each build and each mode (default procedures,inline),
#   in that order: a fresh server (scripts/pg-throwaway.sh, fast unless
#   --durable), the load scenario at 4:4 with notifications on for S seconds
#   (default 30) alone, then again on the same server while a `psql` session
#   holds a snapshot (`BEGIN ISOLATION LEVEL REPEATABLE READ`, one read,
#   then idle in transaction) taken just before the run.
# * Prints the load tool's result row of each run, prefixed with the round,
#   the build and whether the snapshot was held.
#
# Needs psql (postgresql-client) on PATH or in /usr/lib/postgresql/*/bin.
set -euo pipefail

durable=()
rounds=3
seconds=30
modes=procedures,inline
bins=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --durable) durable=(--durable); shift ;;
    --rounds) rounds="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[[ ${#bins[@]} -gt 0 ]] || { echo "usage: held-snapshot-bench.sh [--durable] [--rounds N] [--seconds S] [--modes M] LOAD_BIN..." >&2; exit 2; }
cd "$(dirname "$0")/.."
command -v psql >/dev/null || PATH="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1):$PATH"

holder=""
server_dir=""
stop() {
  if [[ -n "$holder" ]]; then kill -- "-$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true; holder=""; fi
  if [[ -n "$server_dir" ]]; then scripts/pg-throwaway.sh stop "$server_dir" 2>/dev/null || true; server_dir=""; fi
}
trap stop EXIT

run() { # LABEL BIN MODE
  local row
  row=$(DATABASE_URL="$url" "$2" --modes "$3" --concurrency 4:4 --notifications on \
          --duration "$seconds" --scenario load 2>/dev/null | grep -E "^\| $3 " || true)
  echo "$1 $row"
}

for ((round = 1; round <= rounds; round++)); do
  for bin in "${bins[@]}"; do
    for mode in ${modes//,/ }; do
      eval "$(scripts/pg-throwaway.sh --owner-pid $$ "${durable[@]}" 2>/dev/null)"
      url="$DATABASE_URL"
      server_dir="$PGTHROWAWAY_DIR"
      run "round $round $bin alone " "$bin" "$mode"
      setsid bash -c "{ echo 'BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_catalog.pg_class;'; sleep $((seconds + 120)); } | psql -qX '$url' >/dev/null" &
      holder=$!
      # The snapshot is taken before the run starts.
      until [[ "$(psql -qXAt "$url" -c "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'")" -ge 1 ]]; do
        sleep 0.1
      done
      run "round $round $bin held  " "$bin" "$mode"
      stop
    done
  done
done
