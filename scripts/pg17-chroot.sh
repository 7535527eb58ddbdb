#!/usr/bin/env bash
# Start a throwaway PostgreSQL 17 server from Debian 13 (trixie) on a
# Debian 12 host, and print its DATABASE_URL; or stop one.
#
#   scripts/pg17-chroot.sh [--durable]
#   scripts/pg17-chroot.sh stop NAME
#
# CI runs the suite on Debian 12's PostgreSQL 15. To run it on 17 as well:
#
#   scripts/pg17-chroot.sh > /tmp/pg17.env
#   set -a; . /tmp/pg17.env; set +a
#   cargo test -- --test-threads 24
#   scripts/pg17-chroot.sh stop "$PG17_NAME"
#
# * Needs root (debootstrap, chroot, mounts) and Debian's package mirror.
# * The first run builds a minimal trixie tree with postgresql-17 in
#   $PG17_ROOT (default /srv/trixie; about 300 MB, a few minutes), later runs
#   reuse it. /proc and /dev are mounted into it.
# * The server runs inside the tree as its `postgres` user, on a Unix socket
#   in the tree's /run/NAME (mode 0700: root on the host reaches it; the URL
#   names it from the host side), with the settings of
#   scripts/pg-throwaway.sh (fsync off unless --durable).
# * Locales the tests generate on the host are not in the tree: the test that
#   needs the server to answer in German says so and fails there.
#
# Prints `DATABASE_URL=...` and `PG17_NAME=...` on stdout; the rest goes to
# stderr.
set -euo pipefail

root="${PG17_ROOT:-/srv/trixie}"
bin=/usr/lib/postgresql/17/bin

in_tree() { chroot "$root" su postgres -s /bin/sh -c "$1"; }

if [[ "${1:-}" == stop ]]; then
  name="${2:?usage: $0 stop NAME}"
  in_tree "$bin/pg_ctl -D /var/$name/data -m fast stop" >&2 || true
  rm -rf "${root:?}/var/$name" "${root:?}/run/$name"
  exit 0
fi

durable=0
[[ "${1:-}" == --durable ]] && durable=1

[[ "$(id -u)" -eq 0 ]] || { echo "pg17-chroot: needs root" >&2; exit 1; }

if [[ ! -x "$root$bin/postgres" ]]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq >&2 && apt-get install -y -qq debootstrap >&2
  fi
  mkdir -p "$root"
  debootstrap --variant=minbase --include=postgresql-17,locales trixie "$root" \
    http://deb.debian.org/debian >&2
fi
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"

name="pg17-$$-$RANDOM"
mkdir -p "$root/var/$name" "$root/run/$name"
chroot "$root" chown postgres:postgres "/var/$name" "/run/$name"
chmod 700 "$root/var/$name" "$root/run/$name"
in_tree "$bin/initdb -D /var/$name/data -U postgres --auth=trust -E UTF8 --no-sync \
  > /var/$name/initdb.log 2>&1" || { cat "$root/var/$name/initdb.log" >&2; exit 1; }

conf="-c unix_socket_directories=/run/$name -c unix_socket_permissions=0700 \
-c listen_addresses='' -c port=5432 -c max_connections=500 -c shared_buffers=256MB \
-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top \
-c pg_stat_statements.track_planning=off"
if [[ "$durable" -eq 0 ]]; then
  conf="$conf -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi
in_tree "$bin/pg_ctl -D /var/$name/data -l /var/$name/server.log -w -t 60 -o \"$conf\" start" >&2 \
  || { cat "$root/var/$name/server.log" >&2; exit 1; }

echo "pg17-chroot: stop it with: $0 stop $name" >&2
echo "DATABASE_URL=postgres://postgres@localhost:5432/postgres?host=$root/run/$name"
echo "PG17_NAME=$name"
