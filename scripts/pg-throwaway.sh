#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster and print its DATABASE_URL; or stop one.
#
#   scripts/pg-throwaway.sh [--owner-pid PID] [--tcp] [--port PORT] [--conf 'name=value']... [--durable]
#   scripts/pg-throwaway.sh stop DIR
#
# * Finds the server binaries through `pg_config --bindir`, then PATH, then
#   Debian's /usr/lib/postgresql/*/bin (newest). When none is found and this
#   runs as root, installs PostgreSQL from Debian packages (`apt-get update`
#   first).
# * initdb and postgres refuse to run as root: as root, the cluster is created
#   and run by the `postgres` user in a directory it owns.
# * Listens on a Unix socket in its own private directory (mode 0700) and
#   nowhere else: no port to race for, and the trust authentication of a
#   throwaway cluster reaches only its owner. The URL names the directory
#   (`?host=DIR`). With --tcp it also listens on 127.0.0.1, on PORT or a free
#   port between 20000 and 60000 (retried on a clash), for clients that need
#   TCP (TLS, for one).
# * Tuned for tests (fsync off) unless --durable is given; pg_stat_statements
#   is preloaded so the load tool can count statements, tracking top-level
#   statements only and no planning: the tools read nothing else. For a
#   diagnosis of what runs inside procedures, pass
#   --conf pg_stat_statements.track=all.
# * With --owner-pid, a watchdog stops the cluster and deletes its directory
#   when that process exits. Without it the cluster lives until
#   `scripts/pg-throwaway.sh stop DIR`, which the script prints on stderr.
#
# Prints `DATABASE_URL=postgres://...` and `PGTHROWAWAY_DIR=...` on stdout;
# everything else goes to stderr.
set -euo pipefail

owner_pid=""
port=""
tcp=0
durable=0
extra_conf=()
stop_dir=""
if [[ "${1:-}" == "stop" ]]; then
  stop_dir="${2:?usage: pg-throwaway.sh stop DIR}"
  shift 2
fi
while [[ $# -gt 0 ]]; do
  case "$1" in
    --owner-pid) owner_pid="$2"; shift 2 ;;
    --port) port="$2"; tcp=1; shift 2 ;;
    --tcp) tcp=1; shift ;;
    --conf) extra_conf+=("-c" "$2"); shift 2 ;;
    --durable) durable=1; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "pg-throwaway: unknown argument $1" >&2; exit 2 ;;
  esac
done

find_bin() {
  local candidate
  if command -v pg_config >/dev/null 2>&1; then
    candidate="$(pg_config --bindir 2>/dev/null || true)"
    if [[ -n "$candidate" && -x "$candidate/initdb" ]]; then echo "$candidate"; return; fi
  fi
  if command -v initdb >/dev/null 2>&1; then
    candidate="$(dirname "$(command -v initdb)")"
    if [[ -x "$candidate/pg_ctl" ]]; then echo "$candidate"; return; fi
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

run_as_owner_of() { # DIR CMD...: run CMD as the owner of DIR (root cannot run the server)
  local dir="$1"; shift
  if [[ "$(id -u)" -eq 0 && "$(stat -c %U "$dir")" != root ]]; then
    runuser -u "$(stat -c %U "$dir")" -- "$@"
  else
    "$@"
  fi
}

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

if [[ -n "$stop_dir" ]]; then
  [[ -d "$stop_dir/data" ]] || { echo "pg-throwaway: $stop_dir is not a throwaway cluster" >&2; exit 2; }
  run_as_owner_of "$stop_dir" "$bin/pg_ctl" -D "$stop_dir/data" -m fast stop >&2 || true
  rm -rf "$stop_dir"
  exit 0
fi

as_owner=()
dir="$(mktemp -d "${TMPDIR:-/tmp}/duroxide-pg.XXXXXX")"
if [[ "$(id -u)" -eq 0 ]]; then
  chown postgres:postgres "$dir"
  as_owner=(runuser -u postgres --)
fi

chmod 700 "$dir"
"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }

conf=(-c "unix_socket_directories=$dir" -c "unix_socket_permissions=0700"
      -c "max_connections=500" -c "shared_buffers=256MB"
      -c "shared_preload_libraries=pg_stat_statements" -c "pg_stat_statements.track=top"
      -c "pg_stat_statements.track_planning=off")
if [[ "$durable" -eq 0 ]]; then
  conf+=(-c "fsync=off" -c "synchronous_commit=off" -c "full_page_writes=off")
fi
conf+=("${extra_conf[@]}")

start() { # PORT LISTEN_ADDRESSES
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "${conf[*]} -c port=$1 -c listen_addresses='$2'" start >&2
}

if [[ "$tcp" -eq 0 ]]; then
  # Only the socket in the private directory: the port is just its file name.
  port=5432
  start "$port" "" || { cat "$dir/server.log" >&2; exit 1; }
  url="postgres://postgres@localhost:$port/postgres?host=$dir"
else
  started=0
  for _ in 1 2 3 4 5; do
    candidate="${port:-$(( 20000 + RANDOM % 40000 ))}"
    if start "$candidate" "127.0.0.1"; then started=1; port="$candidate"; break; fi
    [[ -z "$port" ]] || break # a port the caller chose: no retry
  done
  [[ "$started" -eq 1 ]] || { cat "$dir/server.log" >&2; exit 1; }
  url="postgres://postgres@127.0.0.1:$port/postgres"
fi

if [[ -n "$owner_pid" ]]; then
  # /proc, not `kill -0`: the watchdog may run as another user than the owner.
  setsid bash -c "while [ -d /proc/$owner_pid ]; do sleep 1; done
    ${as_owner[*]} '$bin/pg_ctl' -D '$dir/data' -m immediate stop >/dev/null 2>&1
    rm -rf '$dir'" </dev/null >/dev/null 2>&1 &
fi

if [[ -z "$owner_pid" ]]; then
  echo "pg-throwaway: stop it with: $0 stop $dir" >&2
fi
echo "DATABASE_URL=$url"
echo "PGTHROWAWAY_DIR=$dir"
