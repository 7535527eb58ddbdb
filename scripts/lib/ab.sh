# Shared by the A/B pgbench scripts (scripts/*-ab-bench.sh); source it, do
# not run it. Each side of a comparison is a whole schema installed by that
# build's own `duroxide-postgres print-sql`, so it gets that build's tables,
# procedures and procedure names, however they were rendered; calls name
# their arguments, so each build gets the argument list it declares.
#
# * `ab_cli REV`: prints the path of REV's `duroxide-postgres` command,
#   building it first: the working tree's for an empty REV, otherwise a copy
#   of REV's files (`git archive`) built under target/ab/ and kept there by
#   commit for the next run. REV must have `print-sql` (the operator command
#   has had it since its first version).
# * `ab_install SCHEMA CLI`: drops SCHEMA and installs CLI's script for it.
# * `ab_pair PREFIX BASE_REV`: both sides of a comparison: BASE_REV's schema
#   installed as PREFIX_base and the working tree's as PREFIX_cur, their
#   names in `ab_sides`; `work`, a scratch directory; both schemas and the
#   directory dropped when the script exits (an EXIT trap).
# * `ab_sql SQL`: runs SQL, stopping on its first error, output discarded.
# * `ab_worker_fetch_args`: sets AB_ARGS to a worker's long-polling claim,
#   as a runtime's dispatcher makes its first (no scan floor yet), with tag
#   filter AB_TAG_MODE (`any` unless set; `default` is duroxide's default
#   filter, untagged items only).
# * `ab_call SCHEMA PROCEDURE`: prints a call of PROCEDURE as SCHEMA has it
#   (its name, with or without the per-schema suffix, read from the
#   catalog), each parameter named and given the value AB_ARGS[parameter]
#   (an associative array the caller declares; values are SQL, psql
#   variables allowed). A parameter with no entry in AB_ARGS stops the run
#   with its name, so a build that adds a parameter is never called with a
#   guessed value, unless the procedure declares a default for it (a
#   parameter added for older callers' sake), which it then gets.
# * `ab_rounds UNIT ROUNDS SECONDS CLIENTS`: ROUNDS rounds, each running
#   `$work/base.sql` then `$work/cur.sql` (pgbench scripts, one UNIT per
#   transaction) for SECONDS with CLIENTS clients, printing per variant
#   UNITs per second, ms per UNIT and WAL flushes per UNIT (the server's
#   count, scripts/lib/wal.sh, read around the run: run it on a server
#   nobody else uses).
#
# Sources scripts/lib/bench-schema.sh (psql and pgbench on PATH,
# `autovacuum_off`). Expects DATABASE_URL and the repository root as the
# working directory.
# shellcheck source=wal.sh
source scripts/lib/wal.sh
# shellcheck source=bench-schema.sh
source scripts/lib/bench-schema.sh

ab_cli() {  # REV ('' = working tree)
  local rev=$1
  if [[ -z $rev ]]; then
    cargo build -q --release --bin duroxide-postgres >&2
    echo "$PWD/target/release/duroxide-postgres"
    return
  fi
  local sha
  sha=$(git rev-parse --verify -q "$rev^{commit}") || { echo "unknown revision: $rev" >&2; exit 1; }
  local root="$PWD/target/ab" bin="$PWD/target/ab/bin/duroxide-postgres-${sha:0:12}"
  if [[ ! -x $bin ]]; then
    local src="$root/src-${sha:0:12}"
    rm -rf "$src" && mkdir -p "$src" "$root/bin"
    git archive "$sha" | tar -x -C "$src"
    echo "building duroxide-postgres at ${sha:0:12} (target/ab/)" >&2
    CARGO_TARGET_DIR="$root/target" cargo build -q --release --bin duroxide-postgres \
      --manifest-path "$src/Cargo.toml" >&2
    cp "$root/target/release/duroxide-postgres" "$bin"
    rm -rf "$src"
  fi
  echo "$bin"
}

ab_install() {  # SCHEMA CLI
  psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS \"$1\" CASCADE" >/dev/null
  "$2" print-sql --schema "$1" | psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" >/dev/null
}

ab_sql() {  # SQL
  psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1" >/dev/null
}

ab_pair() {  # PREFIX BASE_REV
  ab_sides=("$1_base" "$1_cur")
  work=$(mktemp -d)
  trap ab_pair_cleanup EXIT
  ab_install "${ab_sides[0]}" "$(ab_cli "$2")"
  ab_install "${ab_sides[1]}" "$(ab_cli '')"
}

ab_pair_cleanup() {
  local s
  for s in "${ab_sides[@]}"; do
    psql -qX "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS \"$s\" CASCADE" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}

ab_worker_fetch_args() {
  AB_ARGS=([p_lock_timeout_ms]=30000 [p_tag_mode]="'${AB_TAG_MODE:-any}'" [p_tags]="'{}'" [p_owner_id]="'bench'"
    [p_session_lock_ms]=30000 [p_next_due]=true [p_floor_ms]=NULL [p_next_floor_margin_ms]=NULL
    [p_history_bytes]=NULL)
}

ab_call() {  # SCHEMA PROCEDURE
  local row name defaults params arg at=0 count call=''
  # One row: the function's name, how many of its last input parameters
  # have defaults, then its input parameters' names.
  # (unnest of two arrays is FROM-clause syntax and cannot be qualified.)
  row=$(psql -qXAt -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "
    SELECT p.proname || ' ' || p.pronargdefaults || ' ' || pg_catalog.array_to_string(ARRAY(
             SELECT a.name
               FROM unnest(p.proargnames, coalesce(p.proargmodes::text[],
                      pg_catalog.array_fill('i'::text, ARRAY[pg_catalog.cardinality(p.proargnames)])))
                    AS a(name, mode)
              WHERE a.mode IN ('i', 'b')), ' ')
      FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = '\"$1\"'::regnamespace
       AND (p.proname = '$2' OR p.proname ~ '^$2__[0-9a-f]{8}\$')")
  [[ -n $row ]] || { echo "no $2 in schema $1" >&2; exit 1; }
  read -r name defaults params <<<"$row"
  count=$(wc -w <<<"$params")
  for arg in $params; do
    at=$((at + 1))
    if [[ ! -v "AB_ARGS[$arg]" ]]; then
      ((at > count - defaults)) && continue
      echo "$1.$name: no value for parameter $arg in AB_ARGS" >&2
      exit 1
    fi
    call+="${call:+, }$arg => ${AB_ARGS[$arg]}"
  done
  echo "\"$1\".$name($call)"
}

ab_rounds() {  # UNIT ROUNDS SECONDS CLIENTS
  local unit=$1 rounds=$2 seconds=$3 clients=$4 round variant before after out tx lat
  printf '%-5s %-8s %10s %12s %14s\n' round variant "$unit/s" "ms/$unit" "wal_sync/$unit"
  for round in $(seq 1 "$rounds"); do
    for variant in base cur; do
      before=$(wal_flushes)
      out=$(pgbench -n -M prepared -c "$clients" -j "$clients" -T "$seconds" -f "$work/$variant.sql" \
        "$DATABASE_URL" 2>&1) || { echo "$out" >&2; exit 1; }
      after=$(wal_flushes)
      tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
      lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
      awk -v r="$round" -v v="$variant" -v tx="$tx" -v s="$seconds" -v lat="$lat" -v w=$((after - before)) \
        'BEGIN { printf "%-5s %-8s %10.1f %12.3f %14.2f\n", r, v, tx / s, lat, (tx > 0 ? w / tx : 0) }'
    done
  done
}

