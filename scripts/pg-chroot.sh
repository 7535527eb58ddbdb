#!/usr/bin/env bash
# Start a throwaway PostgreSQL server of another major version, from a newer
# Debian release, on a Debian 12 host, and print its DATABASE_URL; or stop
# one.
#
#   scripts/pg-chroot.sh VERSION [--durable]     VERSION: 17 (Debian 13) or 18 (Debian 14)
#   scripts/pg-chroot.sh VERSION stop NAME
#
# CI runs the suite on Debian 12's PostgreSQL 15. To run it on 17 as well:
#
#   scripts/pg-chroot.sh 17 > /tmp/pg17.env
#   set -a; . /tmp/pg17.env; set +a
#   cargo test -- --test-threads 24
#   scripts/pg-chroot.sh 17 stop "$PG_CHROOT_NAME"
#
# * Needs root (debootstrap, chroot, mounts) and Debian's package mirror.
# * The first run for a version builds a minimal tree of that release with
#   its PostgreSQL in $PG_CHROOT_ROOT (default /srv/debian-pgVERSION; about
#   300 MB, a few minutes); later runs reuse it. /proc and /dev are mounted
#   into it.
# * The server runs inside the tree as its `postgres` user, on a Unix socket
#   in the tree's /run/NAME (mode 0700: root on the host reaches it; the URL
#   names it from the host side), with the settings of
#   scripts/pg-throwaway.sh (fsync off unless --durable).
# * The tree gets its own de_DE.UTF-8 locale (the host's are not in it), for
#   the test that needs the server to answer in another language.
#
# Prints `DATABASE_URL=...` and `PG_CHROOT_NAME=...` on stdout; the rest goes
# to stderr.
set -euo pipefail

version="${1:?usage: $0 VERSION [--durable] | $0 VERSION stop NAME}"
shift
case "$version" in
  17) release=trixie ;;
  18) release=forky ;;
  *) echo "pg-chroot: no Debian release known for PostgreSQL $version" >&2; exit 1 ;;
esac
root="${PG_CHROOT_ROOT:-/srv/debian-pg$version}"
bin="/usr/lib/postgresql/$version/bin"

in_tree() { chroot "$root" su postgres -s /bin/sh -c "$1"; }

if [[ "${1:-}" == stop ]]; then
  name="${2:?usage: $0 VERSION stop NAME}"
  in_tree "$bin/pg_ctl -D /var/$name/data -m fast stop" >&2 || true
  rm -rf "${root:?}/var/$name" "${root:?}/run/$name"
  exit 0
fi

durable=0
[[ "${1:-}" == --durable ]] && durable=1

[[ "$(id -u)" -eq 0 ]] || { echo "pg-chroot: needs root" >&2; exit 1; }

if [[ ! -x "$root$bin/postgres" ]]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq >&2 && apt-get install -y -qq debootstrap >&2
  fi
  mkdir -p "$root"
  # Debian 12's debootstrap predates Debian 14: its script for unstable
  # (sid) builds a tree of forky as well.
  debootstrap --variant=minbase --include="postgresql-$version,locales" "$release" "$root" \
    http://deb.debian.org/debian /usr/share/debootstrap/scripts/sid >&2
fi
# A locale other than English, for the test that needs the server to answer
# in another language (the host's locales are not in the tree).
[[ -d "$root/usr/lib/locale/de_DE.utf8" ]] \
  || chroot "$root" localedef --no-archive -i de_DE -f UTF-8 de_DE.UTF-8 >&2
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"

name="pg$version-$$-$RANDOM"
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

echo "pg-chroot: stop it with: $0 $version stop $name" >&2
echo "DATABASE_URL=postgres://postgres@localhost:5432/postgres?host=$root/run/$name"
echo "PG_CHROOT_NAME=$name"
