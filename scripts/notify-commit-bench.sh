#!/usr/bin/env bash
# What a NOTIFY in a writing transaction costs its commit on a durable
# server: the same one-row insert committed with and without a pg_notify,
# CLIENTS at a time, in alternating pgbench runs.
#
#   DATABASE_URL=postgres://... scripts/notify-commit-bench.sh [CLIENTS] [ROUNDS] [SECONDS]
#
# * Every transaction that sent a NOTIFY takes one database-wide lock
#   (PostgreSQL's notification queue lock, shown as `Lock / object` in
#   pg_stat_activity) before its commit record and keeps it until its WAL
#   flush is done, so such commits cannot share a flush: they are written
#   and flushed one after another. Commits without a NOTIFY share flushes
#   (group commit). The provider notifies from every enqueue and ack.
# * Three variants: `plain` (no NOTIFY), `notify` (pg_notify in the
#   writing transaction, as the provider does today) and `after` (the
#   insert commits, then pg_notify runs in a transaction of its own on the
#   same connection: it writes no WAL, so it holds the queue lock only
#   briefly and waits for no flush; one more round trip).
# * Prints per variant and round: transactions/s, mean latency and WAL
#   flushes (scripts/lib/wal.sh) per transaction. Run it on a durable
#   server nobody else uses (scripts/pg-throwaway.sh --durable): with fsync
#   off there is no flush to wait for, and other sessions' commits count
#   too.
#
# Needs psql and pgbench (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh --durable prints one)}"
clients=${1:-8}
rounds=${2:-3}
seconds=${3:-5}

for dir in /usr/lib/postgresql/*/bin; do
  [[ -d $dir ]] && PATH="$PATH:$dir"
done
command -v pgbench >/dev/null || { echo "pgbench not found" >&2; exit 1; }
export PGOPTIONS='-c client_min_messages=warning'

work=$(mktemp -d)
trap 'rm -rf "$work"; psql "$DATABASE_URL" -X -q -c "DROP SCHEMA IF EXISTS notify_commit_bench CASCADE" >/dev/null 2>&1 || true' EXIT
psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 <<'SQL'
DROP SCHEMA IF EXISTS notify_commit_bench CASCADE;
CREATE SCHEMA notify_commit_bench;
CREATE TABLE notify_commit_bench.rows (id bigserial PRIMARY KEY, v int NOT NULL);
SQL
cat >"$work/plain.sql" <<'SQL'
INSERT INTO notify_commit_bench.rows (v) VALUES (1);
SQL
cat >"$work/notify.sql" <<'SQL'
INSERT INTO notify_commit_bench.rows (v) VALUES (1);
SELECT pg_catalog.pg_notify('notify_commit_bench', 'x');
SQL
# Each script file runs as one transaction per pgbench "transaction":
# wrap it, so every variant commits once per row.
for f in plain notify; do
  { echo 'BEGIN;'; cat "$work/$f.sql"; echo 'COMMIT;'; } >"$work/$f.tx.sql"
done
{ echo 'BEGIN;'; cat "$work/plain.sql"; echo 'COMMIT;'
  echo "SELECT pg_catalog.pg_notify('notify_commit_bench', 'x');"; } >"$work/after.tx.sql"

# shellcheck source=lib/wal.sh
source scripts/lib/wal.sh
psql "$DATABASE_URL" -X -Atc "SELECT 'server: fsync = ' || current_setting('fsync') || ', synchronous_commit = ' || current_setting('synchronous_commit')"
printf '%-6s %-7s %10s %12s %16s\n' round variant 'tx/s' 'latency ms' 'WAL flushes/tx'
for round in $(seq 1 "$rounds"); do
  # Rotate which variant runs first.
  case $((round % 3)) in
    1) order="plain notify after" ;;
    2) order="notify after plain" ;;
    *) order="after plain notify" ;;
  esac
  for variant in $order; do
    before=$(wal_flushes)
    out=$(pgbench -n -c "$clients" -j "$clients" -T "$seconds" -f "$work/$variant.tx.sql" "$DATABASE_URL" 2>&1)
    after=$(wal_flushes)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    flushes=$(awk -v a="$after" -v b="$before" -v n="$txs" 'BEGIN { if (n > 0) printf "%.2f", (a - b) / n; else print "n/a" }')
    printf '%-6s %-7s %10s %12s %16s\n' "$round" "$variant" "$tps" "$lat" "$flushes"
  done
done
