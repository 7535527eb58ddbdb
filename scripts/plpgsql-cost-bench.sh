#!/usr/bin/env bash
# What a plpgsql wrapper costs per call, against a plain SQL function and the
# bare statement, for one representative write (renew_orchestration_item_lock:
# one UPDATE of the lease row in a CTE, as the working tree ships it).
#
#   DATABASE_URL=postgres://... scripts/plpgsql-cost-bench.sh [ROUNDS] [SECONDS]
#
# Installs the working tree's migrations and procedures in schema
# `plpgsql_cost`, plus two copies of the procedure's statement: a `LANGUAGE
# sql` function with the procedure's SET clauses (search_path and
# plan_cache_mode, as the crate would need for a writing function) and one
# without (which PostgreSQL still does not inline: it is not a SELECT).
# One lease row is renewed over and over (HOT updates). Each round is one
# pgbench run (one connection, prepared statements) drawing the four forms at
# random, so they share the machine; prints per form the average latency per
# call in ms.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL (scripts/pg-throwaway.sh prints one)}"
rounds=${1:-3}
seconds=${2:-10}
cd "$(dirname "$0")/.."

for dir in /usr/lib/postgresql/*/bin; do
  [[ -d $dir ]] && PATH="$PATH:$dir"
done
command -v pgbench >/dev/null || { echo "pgbench not found" >&2; exit 1; }
export PGOPTIONS='-c client_min_messages=warning'

s=plpgsql_cost
now_ms="(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
work=$(mktemp -d)
q() { psql -qXAt -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
trap 'q "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

q "DROP SCHEMA IF EXISTS $s CASCADE; CREATE SCHEMA $s" >/dev/null
for f in migrations/*.sql procedures/*.sql; do
  sed -e "s/{{schema}}/\"$s\"/g" -e "s/{{now_ms}}/$now_ms/g" -e "s/{{channel}}/$s/g" "$f" \
    | psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" >/dev/null
done

statement="WITH renewed AS (
        UPDATE $s.instance_locks l
           SET locked_until_ms = n.now_ms + \$2
          FROM (SELECT $now_ms AS now_ms) n
         WHERE l.lock_token = \$1
           AND l.locked_until_ms > n.now_ms
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM renewed)"
psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" >/dev/null <<SQL
CREATE FUNCTION $s.renew_sql_pinned(text, bigint) RETURNS SETOF boolean LANGUAGE sql
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS \$f\$ $statement \$f\$;
CREATE FUNCTION $s.renew_sql(text, bigint) RETURNS SETOF boolean LANGUAGE sql
AS \$f\$ $statement \$f\$;
INSERT INTO $s.instance_locks VALUES ('bench', 'bench-token', 9000000000000, 0);
SQL

printf 'SELECT * FROM %s.renew_orchestration_item_lock(:t, 30000);\n' "$s" >"$work/plpgsql.sql"
printf 'SELECT * FROM %s.renew_sql_pinned(:t, 30000);\n' "$s" >"$work/sql_pinned.sql"
printf 'SELECT * FROM %s.renew_sql(:t, 30000);\n' "$s" >"$work/sql.sql"
# The bare statement, parameters as the inline mode binds them.
sed -e 's/\$1/:t/; s/\$2/30000::bigint/' <<<"$statement;" >"$work/statement.sql"

printf '%-5s %12s %12s %12s %12s  (ms per call)\n' round plpgsql sql_pinned sql statement
for round in $(seq 1 "$rounds"); do
  out=$(pgbench -n -M prepared -c 1 -T "$seconds" -D t=bench-token \
          -f "$work/plpgsql.sql" -f "$work/sql_pinned.sql" -f "$work/sql.sql" -f "$work/statement.sql" \
          "$DATABASE_URL" 2>&1) || { echo "$out" >&2; exit 1; }
  lat=$(awk '/^SQL script [0-9]+:/ { n++ } /latency average/ && n > 0 { print $5 }' <<<"$out" | tr '\n' ' ')
  printf '%-5s %12s %12s %12s %12s\n' "$round" $lat
done
