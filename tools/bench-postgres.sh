#!/usr/bin/env bash
# latchkey on PostgreSQL beside sled, in one run (docs/benchmarks.md,
# "PostgreSQL replicas"): durable creates at 64 connections on sled, on one
# PostgreSQL replica and on two, then revoke on one replica -> event on the
# other's status stream, on an idle cluster and under creates on $CONNS
# connections.
#
# Builds nothing: it runs $LK and $LG (default: the release binaries under
# $CARGO_TARGET_DIR or ./target), so build first:
#   cargo build --release -p latchkey -p loadgen
#
# It starts a throwaway PostgreSQL cluster in a temporary directory: on
# 127.0.0.1 on a free port, password (SCRAM) authentication for TCP,
# fsync=on and the default synchronous_commit=on, so a 201 means the key is
# on disk as it is on sled. Run as root, the cluster runs as the
# unprivileged $PG_USER (PostgreSQL refuses to run as root). Every scenario
# gets a fresh database. The cluster is stopped and its directory removed
# at exit, whatever happens (KEEP=1 keeps the directory).
#
# Knobs: CONNS=64 DUR=10s WARMUP=1s REVOCATIONS=200 PG_BIN=/usr/lib/postgresql/15/bin
#        PG_USER=nobody RESULTS=FILE (default: a new file in $TMPDIR, kept)
#        REPLICA_ORDER="1 2" (the PostgreSQL runs, in order: "2 1" checks order bias)
#        PROFILE=1: load pg_stat_statements and print, after each PostgreSQL
#        run, the statements that took the most time, the WAL flushes, and
#        what latchkey's database sessions were waiting on (pg_stat_activity
#        sampled every 10 ms during the measured time).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-nobody}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LK=${LK:-$TARGET_DIR/release/latchkey}
LG=${LG:-$TARGET_DIR/release/loadgen}
CONNS=${CONNS:-64}
DUR=${DUR:-10s}
WARMUP=${WARMUP:-1s}
REVOCATIONS=${REVOCATIONS:-200}
PROFILE=${PROFILE:-0}

for bin in "$LK" "$LG" "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/psql"; do
    [[ -x $bin ]] || { echo "bench-postgres: $bin is not an executable (build latchkey and loadgen with --release, or set LK, LG, PG_BIN)" >&2; exit 2; }
done
LK=$(realpath "$LK")
LG=$(realpath "$LG")

scratch=$(mktemp -d "${TMPDIR:-/tmp}/bench-postgres.XXXXXX")
RESULTS=${RESULTS:-${TMPDIR:-/tmp}/bench-postgres-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
pgdir=$scratch/pg
data=$pgdir/data
sock=$pgdir/sock

if [[ $EUID -eq 0 ]]; then
    as_pg() { runuser -u "$PG_USER" -- "$@"; }
    chmod 711 "$scratch"
else
    as_pg() { "$@"; }
fi

stop() {
    if [[ -f $data/postmaster.pid ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "bench-postgres: kept $scratch" >&2
    else
        rm -rf "$scratch"
    fi
}
trap stop EXIT
trap 'exit 130' INT TERM

mkdir -p "$pgdir" "$sock"
[[ $EUID -eq 0 ]] && chown "$PG_USER" "$pgdir" "$sock"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')

as_pg "$PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --auth-local=trust \
    --auth-host=scram-sha-256 >"$pgdir/initdb.log" 2>&1 \
    || { cat "$pgdir/initdb.log" >&2; exit 1; }
{
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$sock'"
    echo "fsync = on"
    echo "synchronous_commit = on"
    if [[ $PROFILE == 1 ]]; then
        echo "shared_preload_libraries = 'pg_stat_statements'"
        echo "pg_stat_statements.track = all"
        echo "track_io_timing = on"
    fi
} | as_pg tee -a "$data/postgresql.conf" >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$pgdir/server.log" -w start >/dev/null \
    || { cat "$pgdir/server.log" >&2; exit 1; }
postmaster=$(head -n 1 "$data/postmaster.pid")

psql_admin() {
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres "$@"
}
# The password goes over stdin, never on a command line.
psql_admin -d postgres <<SQL
CREATE ROLE latchkey LOGIN PASSWORD '$password';
CREATE DATABASE lk_pg1 OWNER latchkey;
CREATE DATABASE lk_pg2 OWNER latchkey;
CREATE DATABASE lk_latency OWNER latchkey;
CREATE DATABASE lk_latency_load OWNER latchkey;
SQL
if [[ $PROFILE == 1 ]]; then
    for db in lk_pg1 lk_pg2 lk_latency lk_latency_load; do
        psql_admin -d "$db" -c 'CREATE EXTENSION pg_stat_statements'
    done
fi

url() { echo "postgres://latchkey:$password@127.0.0.1:$port/$1"; }

top_statements() {
    [[ $PROFILE == 1 ]] || return 0
    echo "-- pg_stat_statements, $1: statements by total time"
    psql_admin -d "$1" -P pager=off -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 12"
    psql_admin -d "$1" -P pager=off -c "SELECT wal_records, wal_bytes, wal_sync, round(wal_sync_time::numeric, 1) AS wal_sync_ms, wal_write FROM pg_stat_wal"
    psql_admin -d "$1" -c 'SELECT pg_stat_statements_reset()' >/dev/null
    psql_admin -d "$1" -c "SELECT pg_stat_reset_shared('wal')" >/dev/null
}

# Samples, every 10 ms for $2 seconds after a $3 s delay (the replicas'
# start and the warm-up), what the sessions on database $1 are doing while
# not idle: the mean number of sessions in each state / wait event. Runs
# from database postgres, so its own statements stay out of $1's figures.
sample_waits() {
    local samples
    samples=$(python3 -c "print(int(float('$2') * 100))")
    psql_admin -d postgres -P pager=off <<SQL
SELECT pg_sleep($3) \\g /dev/null
CREATE TEMP TABLE waits (event text);
DO \$\$
BEGIN
    FOR i IN 1..$samples LOOP
        PERFORM pg_stat_clear_snapshot();
        INSERT INTO waits
            SELECT CASE WHEN state = 'active' THEN 'active: ' || coalesce(wait_event_type || ':' || wait_event, 'running (no wait event)')
                        ELSE state || coalesce(': ' || wait_event_type || ':' || wait_event, '') END
            FROM pg_stat_activity
            WHERE datname = '$1' AND backend_type = 'client backend' AND state <> 'idle';
        PERFORM pg_sleep(0.01);
    END LOOP;
END
\$\$;
SELECT event AS "$1: sessions not idle, by state / wait event",
       round(count(*)::numeric / $samples, 3) AS "mean sessions"
FROM waits GROUP BY event ORDER BY count(*) DESC LIMIT 12;
SQL
}

seconds() { python3 -c "
import sys; t = sys.argv[1]
print(float(t[:-2]) / 1000 if t.endswith('ms') else float(t[:-1]) * 60 if t.endswith('m') else float(t.rstrip('s')))" "$1"; }

echo "bench-postgres: $(date -u +%FT%TZ), commit $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, fsync=on, synchronous_commit=on; results in $RESULTS"
echo "(below, \$URL/DB stands for postgres://latchkey:PASSWORD@127.0.0.1:$port/DB, passed as LOADGEN_DATABASE_URL)"

run() {
    echo
    echo "\$ $*"
}

run loadgen fsync-probe --dir "$scratch"
"$LG" --results "$RESULTS" fsync-probe --dir "$scratch"

run loadgen create-keys --spawn latchkey --connections "$CONNS" --duration "$DUR" --warmup "$WARMUP"
"$LG" --results "$RESULTS" create-keys --spawn "$LK" --connections "$CONNS" --duration "$DUR" --warmup "$WARMUP"

for replicas in ${REPLICA_ORDER:-1 2}; do
    db=lk_pg$replicas
    psql_admin -d postgres -c CHECKPOINT >/dev/null
    run LOADGEN_DATABASE_URL=\$URL/$db loadgen create-keys --spawn latchkey --replicas "$replicas" --connections "$CONNS" --duration "$DUR" --warmup "$WARMUP"
    sampler=
    if [[ $PROFILE == 1 ]]; then
        sample_waits "$db" "$(seconds "$DUR")" "$(python3 -c "print($(seconds "$WARMUP") + 0.5)")" >"$scratch/waits-$db.txt" 2>&1 &
        sampler=$!
    fi
    LOADGEN_DATABASE_URL=$(url "$db") "$LG" --results "$RESULTS" create-keys --spawn "$LK" \
        --replicas "$replicas" --postgres-pid "$postmaster" \
        --connections "$CONNS" --duration "$DUR" --warmup "$WARMUP"
    if [[ -n $sampler ]]; then
        wait "$sampler" || true
        cat "$scratch/waits-$db.txt"
    fi
    top_statements "$db"
done

psql_admin -d postgres -c CHECKPOINT >/dev/null
run LOADGEN_DATABASE_URL=\$URL/lk_latency loadgen replica-latency --spawn latchkey --revocations "$REVOCATIONS"
LOADGEN_DATABASE_URL=$(url lk_latency) "$LG" --results "$RESULTS" replica-latency --spawn "$LK" --revocations "$REVOCATIONS"
top_statements lk_latency

psql_admin -d postgres -c CHECKPOINT >/dev/null
run LOADGEN_DATABASE_URL=\$URL/lk_latency_load loadgen replica-latency --spawn latchkey --revocations "$REVOCATIONS" --load-connections "$CONNS"
LOADGEN_DATABASE_URL=$(url lk_latency_load) "$LG" --results "$RESULTS" replica-latency --spawn "$LK" --revocations "$REVOCATIONS" --load-connections "$CONNS"
top_statements lk_latency_load

echo
"$LG" summary "$RESULTS"
