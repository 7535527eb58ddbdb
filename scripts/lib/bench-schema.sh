# Shared by the pgbench scripts (scripts/*-bench.sh); source it, do not run it.
#
# * Puts psql and pgbench on PATH (Debian keeps them in
#   /usr/lib/postgresql/*/bin) and fails when pgbench is missing.
# * `fresh_bench_schema`: runs the main job (`cargo run --release --example
#   job_pipeline`, the working tree's build) on a fresh `job_pipeline`
#   schema, so the schema is what a new tenant's is after its first work
#   (tables never analyzed, the working tree's procedures), and turns
#   autovacuum off on its tables, so nothing changes the picture mid-run.
# * `drop_bench_schema`: drops it (for an EXIT trap).
# * `autovacuum_off SCHEMA`: the same autovacuum setting for another schema.
#
# Expects DATABASE_URL; sets `schema` and `fn`, the suffix of every
# procedure's name in it (`__` and eight hex digits of the SHA-256 of the
# schema's name; SchemaName::procedure_suffix), so a call reads
# `$schema.fetch_work_item$fn(...)`.

for dir in /usr/lib/postgresql/*/bin; do
  [[ -d $dir ]] && PATH="$PATH:$dir"
done
command -v pgbench >/dev/null || { echo "pgbench not found" >&2; exit 1; }

export PGOPTIONS='-c client_min_messages=warning'
schema=job_pipeline
fn="__$(printf %s "$schema" | sha256sum | cut -c1-8)"

# autovacuum_off SCHEMA: turns autovacuum off on SCHEMA's tables.
autovacuum_off() {
  psql -qX "$DATABASE_URL" >/dev/null <<SQL
DO \$\$
DECLARE r record;
BEGIN
  FOR r IN SELECT relname FROM pg_class
            WHERE relnamespace = '$1'::regnamespace AND relkind = 'r' LOOP
    EXECUTE format('ALTER TABLE $1.%I SET (autovacuum_enabled = false)', r.relname);
  END LOOP;
END
\$\$;
SQL
}

fresh_bench_schema() {
  psql -qX "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null
  cargo run -q --release --example job_pipeline >/dev/null
  autovacuum_off "$schema"
}

drop_bench_schema() {
  psql -qX "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
}
