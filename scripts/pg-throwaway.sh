#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster and print its DATABASE_URL.
#
#   scripts/pg-throwaway.sh [--owner-pid PID] [--port PORT] [--conf 'name=value']... [--durable]
#
# * Installs PostgreSQL from Debian packages when no server binaries are found
#   (needs root; runs `apt-get update` first).
# * initdb and postgres refuse to run as root: as root, the cluster is created
#   and run by the `postgres` user in a directory it owns.
# * Listens on 127.0.0.1 only, on PORT or a free port between 20000 and 60000.
# * Tuned for tests (fsync off) unless --durable is given; pg_stat_statements
#   is preloaded so the load tool can count statements, tracking top-level
#   statements only and no planning: the tools read nothing else. For a
#   diagnosis of what runs inside procedures, pass
#   --conf pg_stat_statements.track=all.
# * With --owner-pid, a watchdog stops the cluster and deletes its directory
#   when that process exits.
#
# Prints `DATABASE_URL=postgres://...` and `PGTHROWAWAY_DIR=...` on stdout;
# everything else goes to stderr.
set -euo pipefail

owner_pid=""
port=""
durable=0
extra_conf=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --owner-pid) owner_pid="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --conf) extra_conf+=("-c" "$2"); shift 2 ;;
    --durable) durable=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "pg-throwaway: unknown argument $1" >&2; exit 2 ;;
  esac
done

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

bin="$(find_bin)"
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "pg-throwaway: PostgreSQL server binaries not found; install them with: sudo apt-get install -y postgresql" >&2
    exit 1
  fi
  echo "pg-throwaway: installing PostgreSQL from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bin="$(find_bin)"
fi

as_owner=()
dir="$(mktemp -d "${TMPDIR:-/tmp}/duroxide-pg.XXXXXX")"
if [[ "$(id -u)" -eq 0 ]]; then
  chown postgres:postgres "$dir"
  as_owner=(runuser -u postgres --)
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z "$port" ]]; then
  for _ in $(seq 1 50); do
    candidate=$(( 20000 + RANDOM % 40000 ))
    if port_free "$candidate"; then port="$candidate"; break; fi
  done
  [[ -n "$port" ]] || { echo "pg-throwaway: no free port found" >&2; exit 1; }
fi

"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }

conf=(-c "listen_addresses=127.0.0.1" -c "port=$port" -c "unix_socket_directories=$dir"
      -c "max_connections=500" -c "shared_buffers=256MB"
      -c "shared_preload_libraries=pg_stat_statements" -c "pg_stat_statements.track=top"
      -c "pg_stat_statements.track_planning=off")
if [[ "$durable" -eq 0 ]]; then
  conf+=(-c "fsync=off" -c "synchronous_commit=off" -c "full_page_writes=off")
fi
conf+=("${extra_conf[@]}")

"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "${conf[*]}" start >&2 \
  || { cat "$dir/server.log" >&2; exit 1; }

if [[ -n "$owner_pid" ]]; then
  # /proc, not `kill -0`: the watchdog may run as another user than the owner.
  setsid bash -c "while [ -d /proc/$owner_pid ]; do sleep 1; done
    ${as_owner[*]} '$bin/pg_ctl' -D '$dir/data' -m immediate stop >/dev/null 2>&1
    rm -rf '$dir'" </dev/null >/dev/null 2>&1 &
fi

echo "DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
echo "PGTHROWAWAY_DIR=$dir"
