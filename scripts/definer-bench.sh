#!/usr/bin/env bash
# What SECURITY DEFINER costs the read procedures, per call.
#
#   DATABASE_URL=postgres://... scripts/definer-bench.sh [ROUNDS] [SECONDS]
#
# The read procedures used to be `LANGUAGE sql STABLE` set-returning
# functions without SECURITY DEFINER or a SET clause, which the planner
# inlines into the calling statement. A runtime role with EXECUTE only needs
# them to run with their owner's rights, and a definer function is never
# inlined (on PostgreSQL before 18, a SQL function that is not inlined also
# plans its body on every call). This script measures four forms of the
# same bodies:
#
#   invoker        LANGUAGE sql, SECURITY INVOKER, no SET clause: inlined
#                  (the old form)
#   definer        LANGUAGE sql, SECURITY DEFINER SET search_path =
#                  pg_catalog, pg_temp
#   definer_noset  LANGUAGE sql, SECURITY DEFINER without SET: the
#                  inlining's share of the cost (unsafe: the caller's
#                  search_path would reach the owner's rights; measured only)
#   plpgsql        as installed: the body as `RETURN QUERY` of a plpgsql
#                  SECURITY DEFINER function with pinned search_path and
#                  generic plans (its plan is cached per connection)
#
# * Runs the main job (`cargo run --release --example job_pipeline`) on a
#   fresh `job_pipeline` schema for its rows (scripts/lib/bench-schema.sh);
#   with DEFINER_BENCH_EXISTING=1, uses the `job_pipeline` schema already
#   there instead (left by any build of the example, say
#   `target/debug/examples/job_pipeline`: the rows are the same, and what is
#   timed is the server).
# * Each round times, with pgbench (one connection, prepared statements,
#   parameters bound as a client binds them), four reads of one of its
#   instances: get_instance_info, read_history (its execution 1),
#   get_kv_value and list_executions, in each form, and `SELECT 1` (the
#   round trip). The schema is dropped at the end.
# * Prints one line per round and form: average latency per call in ms,
#   the loopback round trip included.
#
# Needs psql and pgbench (postgresql-client) on PATH or in
# /usr/lib/postgresql/*/bin.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
rounds=${1:-3}
seconds=${2:-3}
cd "$(dirname "$0")/.."

# shellcheck source=lib/bench-schema.sh
source scripts/lib/bench-schema.sh

functions=(get_instance_info read_history get_kv_value list_executions)

trap drop_bench_schema EXIT
if [[ ${DEFINER_BENCH_EXISTING:-0} != 1 ]]; then
  fresh_bench_schema
fi

instance=$(psql -qAtX "$DATABASE_URL" -c \
  "SELECT h.instance_id FROM $schema.history h GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
key=$(psql -qAtX "$DATABASE_URL" -c \
  "SELECT coalesce((SELECT key FROM $schema.kv_store LIMIT 1), 'none')")

# The LANGUAGE sql twin of each installed (plpgsql) function, `NAME_sql`,
# made from its body.
psql -qX "$DATABASE_URL" >/dev/null <<SQL
DO \$\$
DECLARE f record;
BEGIN
  FOR f IN SELECT p.oid, p.proname, p.prosrc FROM pg_proc p
            WHERE p.pronamespace = '$schema'::regnamespace
              AND p.proname = ANY ('{$(IFS=,; printf '%s' "${functions[*]/%/$fn}")}') LOOP
    EXECUTE format(
      'CREATE OR REPLACE FUNCTION $schema.%I(%s) RETURNS %s LANGUAGE sql STABLE AS %L',
      f.proname || '_sql', pg_get_function_arguments(f.oid),
      pg_get_function_result(f.oid),
      regexp_replace(
        regexp_replace(f.prosrc, '^\s*#variable_conflict use_column\s*BEGIN\s*RETURN QUERY', ''),
        ';?\s*END\s*$', ''));
  END LOOP;
END
\$\$;
SQL

# Sets the LANGUAGE sql twins to `$1` (ALTER FUNCTION clauses).
form() {
  local sql="" f signature
  for f in "${functions[@]}"; do
    signature=$(psql -qAtX "$DATABASE_URL" -c \
      "SELECT '$schema.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
         FROM pg_proc p WHERE p.pronamespace = '$schema'::regnamespace AND p.proname = '${f}${fn}_sql'")
    sql+="ALTER FUNCTION $signature $1;"
  done
  psql -qX "$DATABASE_URL" -c "$sql" >/dev/null
}

# Average latency of `$1` in ms, or `error` when a call failed.
latency() {
  local script out
  script=$(mktemp)
  printf '%s\n' "$1" >"$script"
  if out=$(PGOPTIONS= pgbench -n -M prepared -c 1 -T "$seconds" -D "id=$instance" \
             -D "key=$key" -f "$script" "$DATABASE_URL" 2>&1); then
    awk '/latency average/ {print $4}' <<<"$out"
  else
    echo error
    echo "$1: $out" >&2
  fi
  rm -f "$script"
}

results=$(mktemp)

# One line of a round: each read in form `$1` (functions suffixed `$2`).
calls() {
  local form=$1 suffix=$2 line="" f ms
  declare -A sql=(
    [get_instance_info]="SELECT * FROM $schema.get_instance_info$fn$suffix(:id);"
    [read_history]="SELECT event_data FROM $schema.read_history$fn$suffix(:id, 1);"
    [get_kv_value]="SELECT value FROM $schema.get_kv_value$fn$suffix(:id, :key);"
    [list_executions]="SELECT execution_id FROM $schema.list_executions$fn$suffix(:id);"
  )
  for f in "${functions[@]}"; do
    ms=$(latency "${sql[$f]}")
    echo "$form $f $ms" >>"$results"
    line+=" $f=$ms"
  done
  printf '%-14s%s\n' "$form" "$line"
}

echo "instance $instance: $(psql -qAtX "$DATABASE_URL" -c \
  "SELECT count(*) FROM $schema.history WHERE instance_id = '$instance'") history events"
for round in $(seq 1 "$rounds"); do
  ms=$(latency 'SELECT 1;')
  echo "select_1 - $ms" >>"$results"
  echo "round $round  select_1=$ms"
  form "SECURITY INVOKER RESET search_path"
  echo "round $round  $(calls invoker _sql)"
  form "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
  echo "round $round  $(calls definer _sql)"
  form "SECURITY DEFINER RESET search_path"
  echo "round $round  $(calls definer_noset _sql)"
  echo "round $round  $(calls plpgsql '')"
done

echo "medians over $rounds round(s), ms per call:"
sort -k1,1 -k2,2 -k3,3g "$results" | awk '
  { key = $1 " " $2; v[key, ++n[key]] = $3; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
  END { for (i = 1; i <= k; i++) { key = order[i]; c = n[key];
          m = (c % 2) ? v[key, (c + 1) / 2] : (v[key, c / 2] + v[key, c / 2 + 1]) / 2;
          printf "  %-28s %.3f\n", key, m } }'
rm -f "$results"
