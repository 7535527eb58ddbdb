#!/usr/bin/env bash
# A large tenant, and what its gauge reads cost.
#
#   DATABASE_URL=postgres://... scripts/large-tenant.sh fill SCHEMA [INSTANCES] [EVENTS]
#   DATABASE_URL=postgres://... scripts/large-tenant.sh time SCHEMA [CALLS]
#
# fill: migrates SCHEMA with the CLI (`DUROXIDE_POSTGRES_CLI`, default
#   target/release/duroxide-postgres), then writes INSTANCES completed
#   instances (200,000 by default), one execution each, and EVENTS history
#   rows of 300 bytes (2,000,000 by default, spread evenly), then
#   `VACUUM ANALYZE`. The rows are written by hand, not by a runtime: a
#   schema whose executions count their events (`event_count`, migration
#   0006) gets the counts filled in too.
# time: calls `get_system_metrics` and `get_queue_depths` CALLS times (3 by
#   default) from one session and prints each call's time in ms
#   (`clock_timestamp()` around the call, on the server).
set -euo pipefail
: "${DATABASE_URL:?DATABASE_URL must name the server}"
command=${1:?fill or time}
schema=${2:?schema}
[[ $schema =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "schema: lower-case letters, digits, _" >&2; exit 2; }
cli=${DUROXIDE_POSTGRES_CLI:-target/release/duroxide-postgres}

case $command in
fill)
    instances=${3:-200000}
    events=${4:-2000000}
    "$cli" migrate --schema "$schema" >/dev/null
    per=$(( (events + instances - 1) / instances ))
    has_count=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM information_schema.columns
        WHERE table_schema = '$schema' AND table_name = 'executions' AND column_name = 'event_count'")
    psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 <<SQL
INSERT INTO "$schema".instances (instance_id, orchestration_name, orchestration_version,
                                 current_execution_id, created_at_ms, updated_at_ms)
SELECT 'i' || g, 'Big', '1.0.0', 1, 0, 0 FROM generate_series(1, $instances) g;
INSERT INTO "$schema".executions (instance_id, execution_id, status, output, started_at_ms, completed_at_ms)
SELECT 'i' || g, 1, 'Completed', '"done"', 0, 0 FROM generate_series(1, $instances) g;
INSERT INTO "$schema".history (instance_id, execution_id, event_id, event_type, event_data, created_at_ms)
SELECT 'i' || g, 1, e, 'ActivityCompleted', repeat('x', 300), 0
  FROM generate_series(1, $instances) g, generate_series(1, $per) e
 WHERE (g - 1) * $per + e <= $events;
SQL
    if [[ $has_count == 1 ]]; then
        psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "UPDATE \"$schema\".executions e
            SET event_count = (SELECT count(*) FROM \"$schema\".history h
                                WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id)"
    fi
    psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -c "VACUUM ANALYZE \"$schema\".instances, \"$schema\".executions, \"$schema\".history"
    ;;
time)
    calls=${3:-3}
    # The procedures' names carry the schema's suffix.
    name() {
        psql "$DATABASE_URL" -Atc "SELECT p.proname FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = '$schema' AND p.proname LIKE '$1%' ORDER BY length(p.proname) DESC LIMIT 1"
    }
    metrics=$(name get_system_metrics)
    depths=$(name get_queue_depths)
    psql "$DATABASE_URL" -At -v ON_ERROR_STOP=1 <<SQL
DO \$\$
DECLARE t0 timestamptz; m record; d record;
BEGIN
  FOR i IN 1..$calls LOOP
    t0 := clock_timestamp();
    SELECT * INTO m FROM "$schema"."$metrics"();
    RAISE NOTICE 'get_system_metrics % ms (% instances, % executions, % events)',
      round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1),
      m.total_instances, m.total_executions, m.total_events;
    t0 := clock_timestamp();
    SELECT * INTO d FROM "$schema"."$depths"();
    RAISE NOTICE 'get_queue_depths % ms', round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1);
  END LOOP;
END
\$\$;
SQL
    ;;
*) echo "fill or time" >&2; exit 2 ;;
esac
