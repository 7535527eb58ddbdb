# wal_flushes: the server's WAL flushes so far (`pg_stat_wal.wal_sync`;
# from PostgreSQL 18, which moved the WAL's I/O counts, `pg_stat_io`'s
# `fsyncs` of the WAL). Zero on a server with fsync off. Needs DATABASE_URL.
wal_flushes() {
  local sql="SELECT wal_sync FROM pg_catalog.pg_stat_wal"
  if [[ "$(psql -qXAt -v ON_ERROR_STOP=1 "$DATABASE_URL" -c \
        "SELECT current_setting('server_version_num')::integer >= 180000")" == t ]]; then
    sql="SELECT coalesce(sum(fsyncs), 0) FROM pg_catalog.pg_stat_io WHERE object = 'wal'"
  fi
  psql -qXAt -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$sql"
}
