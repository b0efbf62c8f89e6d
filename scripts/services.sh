#!/usr/bin/env bash
# A throw-away PostgreSQL and an MLflow tracking server backed by it, both on 127.0.0.1, for
# searches with many workers (docs/SEARCH.md) and the services tests (tests/test_services.py).
#
#   scripts/services.sh start          start both (a second start reuses running services)
#   eval "$(scripts/services.sh env)"  export OPTUNA_STORAGE and MLFLOW_TRACKING_URI
#   scripts/services.sh status         what runs where (exit 0 when both answer, else 3)
#   scripts/services.sh stop           stop both (always safe); the databases are kept
#   scripts/services.sh stop --purge   stop both and delete the databases and artifacts
#
# Everything lives in $REPRODUCE_SERVICES_DIR (default: .services/ in the repository):
#   pg/data         the PostgreSQL cluster (superuser `reproduce`, databases `optuna` and `mlflow`)
#   pg/postgres.log its log; pg.password the generated password
#   mlflow.log, mlflow.pid, artifacts/   the tracking server, its log and its artifact store
# Ports: $REPRODUCE_PG_PORT (default 55432) and $REPRODUCE_MLFLOW_PORT (default 5055).
# PostgreSQL is the Debian package `postgresql`, installed when missing and run as root. As root
# the cluster runs as the `postgres` user (initdb refuses root); otherwise as the caller.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${REPRODUCE_SERVICES_DIR:-$ROOT/.services}
PG_PORT=${REPRODUCE_PG_PORT:-55432}
MLFLOW_PORT=${REPRODUCE_MLFLOW_PORT:-5055}
MLFLOW_WORKERS=${REPRODUCE_MLFLOW_WORKERS:-2}
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
PG_USER=reproduce
DATABASES=(optuna mlflow)
START_TIMEOUT=${REPRODUCE_SERVICES_TIMEOUT:-120}     # seconds each service may take to answer

say() { echo "[services] $*" >&2; }
die() { echo "[services] error: $*" >&2; exit 1; }

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

alive() {    # process $1 exists and is not a zombie waiting to be reaped
    local st
    [ -n "${1:-}" ] && read -r st 2>/dev/null < "/proc/$1/stat" || return 1
    st=${st##*) }                       # after "pid (comm) ": state ppid pgrp ...
    [ "${st%% *}" != Z ]
}

group_alive() {    # some process of process group $1 is alive (read from /proc: no procps needed)
    local f st state pgrp
    [ -n "${1:-}" ] || return 1
    for f in /proc/[0-9]*/stat; do
        read -r st 2>/dev/null < "$f" || continue
        st=${st##*) }                   # after "pid (comm) ": state ppid pgrp ...
        read -r state _ pgrp _ <<< "$st"
        [ "$pgrp" = "$1" ] && [ "$state" != Z ] && return 0
    done
    return 1
}

# ------------------------------------------------------------------------------ locations

prepare_dir() {
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    # never committed: the folder ignores itself
    [ -e "$DIR/.gitignore" ] || echo '*' > "$DIR/.gitignore"
}

# The cluster's folder: $DIR/pg, unless the postgres user cannot reach $DIR (e.g. a checkout
# under a private /root): then a root-made folder in /var/tmp named after $DIR, recorded in
# $DIR/pg.where so that stop finds it.
pg_home() {
    if [ -f "$DIR/pg.where" ] && [ -d "$(cat "$DIR/pg.where")" ]; then
        cat "$DIR/pg.where"
        return
    fi
    local home=$DIR/pg
    mkdir -p "$home"
    if is_root; then
        chown postgres:postgres "$home"
        if ! runuser -u postgres -- test -w "$home" 2>/dev/null; then
            rmdir "$home" 2>/dev/null || true
            home=/var/tmp/reproduce-services-$(printf '%s' "$DIR" | md5sum | cut -c1-12)
            mkdir -p "$home"
            chown postgres:postgres "$home"
            chmod 700 "$home"
            say "the postgres user cannot reach $DIR; the cluster lives in $home"
        fi
    fi
    echo "$home" > "$DIR/pg.where"
    echo "$home"
}

pg_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        [ -x "$PG_BINDIR/initdb" ] || die "PG_BINDIR=$PG_BINDIR has no initdb"
        echo "$PG_BINDIR"
        return
    fi
    local d
    # shellcheck disable=SC2012
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
    fi
}

# Run a PostgreSQL server program as the cluster's owner.
as_owner() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# ------------------------------------------------------------------------------ requirements

ensure_postgres() {
    BIN=$(pg_bindir)
    if [ -z "$BIN" ]; then
        is_root || die "PostgreSQL is not installed; as root: apt-get install -y postgresql (or set PG_BINDIR)"
        say "installing PostgreSQL (apt-get install postgresql)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        BIN=$(pg_bindir)
        [ -n "$BIN" ] || die "apt-get installed postgresql but no initdb was found under /usr/lib/postgresql"
    fi
    if is_root && ! id postgres >/dev/null 2>&1; then
        die "no postgres user; install the Debian package postgresql (it creates the user)"
    fi
}

ensure_python() {
    [ -x "$PY" ] || die "no virtual environment at $VENV; run make setup first"
    # SQLAlchemy 2.1 opens postgresql:// URLs with psycopg (version 3)
    if ! "$PY" -c "import psycopg" 2>/dev/null; then
        local req
        req=$(grep -i -E '^psycopg(-binary)?==' "$ROOT/requirements.lock" 2>/dev/null | tr '\n' ' ' || true)
        say "installing ${req:-psycopg[binary]} into $VENV (the PostgreSQL driver of Optuna and MLflow)"
        # shellcheck disable=SC2086
        "$PY" -m pip install --quiet --disable-pip-version-check ${req:-psycopg[binary]}
    fi
}

password() {
    if [ ! -s "$DIR/pg.password" ]; then
        (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$DIR/pg.password")
    fi
    cat "$DIR/pg.password"
}

pg_url() { echo "postgresql://$PG_USER:$(password)@127.0.0.1:$(pg_port)/$1"; }
pg_port() { cat "$DIR/pg.port" 2>/dev/null || echo "$PG_PORT"; }
mlflow_port() { cat "$DIR/mlflow.port" 2>/dev/null || echo "$MLFLOW_PORT"; }
mlflow_url() { echo "http://127.0.0.1:$(mlflow_port)"; }

port_in_use() {    # something accepts connections on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ------------------------------------------------------------------------------ PostgreSQL

pg_running() {    # the cluster's postmaster is up and accepts connections
    local home
    [ -f "$DIR/pg.where" ] || return 1
    home=$(cat "$DIR/pg.where")
    [ -f "$home/data/postmaster.pid" ] || return 1
    alive "$(head -n 1 "$home/data/postmaster.pid")" || return 1
    BIN=${BIN:-$(pg_bindir)}
    [ -n "$BIN" ] && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$(pg_port)" -t 5 >/dev/null 2>&1
}

psql_admin() {    # psql as the cluster's superuser, over TCP
    PGPASSWORD=$(password) "$BIN/psql" -h 127.0.0.1 -p "$(pg_port)" -U "$PG_USER" -d postgres \
        -v ON_ERROR_STOP=1 -qtA "$@"
}

start_postgres() {
    ensure_postgres
    local home data
    home=$(pg_home)
    data=$home/data
    if pg_running; then
        say "PostgreSQL already running on 127.0.0.1:$(pg_port) ($data)"
    else
        if [ ! -f "$data/PG_VERSION" ]; then
            say "creating a PostgreSQL cluster in $data"
            rm -rf "$data"
            local pwfile=$home/.pwfile
            (umask 077; password > "$pwfile")
            is_root && chown postgres:postgres "$pwfile"
            as_owner "$BIN/initdb" -D "$data" -U "$PG_USER" --pwfile="$pwfile" \
                --auth=scram-sha-256 -E UTF8 --no-locale --no-sync >"$home/initdb.log" 2>&1 \
                || { rm -f "$pwfile"; cat "$home/initdb.log" >&2; die "initdb failed"; }
            rm -f "$pwfile"
            # a throw-away database: local TCP only, no Unix socket, speed over durability
            cat >> "$data/postgresql.conf" <<EOF

# scripts/services.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        fi
        stop_postgres quiet               # what a crashed or killed cluster left behind
        if port_in_use "$PG_PORT"; then
            die "port $PG_PORT is in use by another program; set REPRODUCE_PG_PORT to a free port"
        fi
        echo "$PG_PORT" > "$DIR/pg.port"
        say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
        local try
        for try in 1 2 3; do    # backends of a killed postmaster may hold its memory a moment
            if as_owner "$BIN/pg_ctl" -D "$data" -l "$home/postgres.log" -w -t "$START_TIMEOUT" \
                    -o "-p $PG_PORT" start >/dev/null 9>&-; then
                break
            fi
            if [ "$try" -eq 3 ]; then
                tail -n 20 "$home/postgres.log" >&2 || true
                die "PostgreSQL did not start (log: $home/postgres.log)"
            fi
            stop_postgres quiet
            sleep 3
        done
    fi
    local db
    for db in "${DATABASES[@]}"; do
        if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
            psql_admin -c "CREATE DATABASE $db" >/dev/null
        fi
    done
}

stop_postgres() {
    [ -f "$DIR/pg.where" ] || return 0
    local home data pid
    home=$(cat "$DIR/pg.where")
    data=$home/data
    [ -f "$data/PG_VERSION" ] || return 0
    BIN=${BIN:-$(pg_bindir)}
    pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
    if [ -n "$BIN" ] && alive "$pid"; then
        [ "${1:-}" = quiet ] || say "stopping PostgreSQL"
        as_owner "$BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            as_owner "$BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    # still there (or killed without a word): the postmaster and the backends it forked
    if alive "$pid" && grep -q postgres "/proc/$pid/comm" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 1 20); do
        alive "$pid" || break
        sleep 0.5
    done
    # a stale postmaster.pid is fine for the next start (PostgreSQL checks it), but status
    # should not trust it
    alive "$pid" || rm -f "$data/postmaster.pid"
}

# ------------------------------------------------------------------------------ MLflow server

mlflow_pid() { cat "$DIR/mlflow.pid" 2>/dev/null || true; }

mlflow_alive() { alive "$(mlflow_pid)"; }

mlflow_answers() {
    "$PY" - "$(mlflow_url)/health" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

start_mlflow() {
    ensure_python
    if mlflow_alive && mlflow_answers; then
        say "MLflow server already running at $(mlflow_url) (pid $(mlflow_pid))"
        return
    fi
    stop_mlflow quiet
    if port_in_use "$MLFLOW_PORT"; then
        die "port $MLFLOW_PORT is in use by another program; set REPRODUCE_MLFLOW_PORT to a free port"
    fi
    echo "$MLFLOW_PORT" > "$DIR/mlflow.port"
    mkdir -p "$DIR/artifacts"
    say "starting the MLflow server at $(mlflow_url) (backend: PostgreSQL database mlflow)"
    # its own session, so that stop ends the server and every worker it forked; no background
    # job runner (MLflow's GenAI jobs), which this suite does not use; the password reaches the
    # driver through PGPASSWORD, not the command line (which ps shows)
    PGPASSWORD=$(password) MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$VENV/bin/mlflow" server \
        --backend-store-uri "postgresql://$PG_USER@127.0.0.1:$(pg_port)/mlflow" \
        --artifacts-destination "$DIR/artifacts" \
        --host 127.0.0.1 --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
        </dev/null >"$DIR/mlflow.log" 2>&1 9>&- &
    echo $! > "$DIR/mlflow.pid"
    local waited=0
    until mlflow_answers; do
        if ! mlflow_alive; then
            tail -n 30 "$DIR/mlflow.log" >&2 || true
            rm -f "$DIR/mlflow.pid"
            die "the MLflow server exited (log: $DIR/mlflow.log)"
        fi
        if [ "$waited" -ge "$START_TIMEOUT" ]; then
            tail -n 30 "$DIR/mlflow.log" >&2 || true
            stop_mlflow quiet
            die "the MLflow server did not answer within ${START_TIMEOUT}s (log: $DIR/mlflow.log)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

stop_mlflow() {    # the server's whole process group (it leads it: setsid), even if the leader died
    local pid
    pid=$(mlflow_pid)
    if [ -n "$pid" ] && group_alive "$pid"; then
        [ "${1:-}" = quiet ] || say "stopping the MLflow server (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            group_alive "$pid" || break
            sleep 0.5
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            port_in_use "$(mlflow_port)" || break
            sleep 0.5
        done
    fi
    rm -f "$DIR/mlflow.pid"
}

# ------------------------------------------------------------------------------ commands

print_env() {
    echo "export OPTUNA_STORAGE=$(pg_url optuna)"
    echo "export MLFLOW_TRACKING_URI=$(mlflow_url)"
}

cmd_start() {
    ensure_python
    start_postgres
    start_mlflow
    say "ready; export these (or: eval \"\$(scripts/services.sh env)\"):"
    print_env
}

cmd_stop() {
    stop_mlflow
    stop_postgres
    if [ "${1:-}" = "--purge" ]; then
        local home=""
        [ -f "$DIR/pg.where" ] && home=$(cat "$DIR/pg.where")
        [ "$home" = "$DIR/pg" ] && home=""
        say "deleting $DIR${home:+ and $home}"
        [ -n "$home" ] && rm -rf "$home"
        rm -rf "$DIR"
    fi
}

cmd_status() {
    local ok=0
    if pg_running; then
        echo "postgresql: running on 127.0.0.1:$(pg_port) (data $(cat "$DIR/pg.where")/data)"
    else
        echo "postgresql: stopped"
        ok=3
    fi
    if mlflow_alive && mlflow_answers; then
        echo "mlflow:     running at $(mlflow_url) (pid $(mlflow_pid), artifacts $DIR/artifacts)"
    else
        echo "mlflow:     stopped"
        ok=3
    fi
    return $ok
}

cmd_env() {
    if ! pg_running || ! mlflow_alive; then
        die "the services are not running; start them with scripts/services.sh start"
    fi
    print_env
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        start|stop|status|env) ;;
        *) usage ;;
    esac
    if [ "$cmd" != start ] && [ ! -d "$DIR" ]; then      # never started here
        case "$cmd" in
            stop) return 0 ;;
            status) echo "postgresql: stopped"; echo "mlflow:     stopped"; return 3 ;;
            env) die "the services are not running; start them with scripts/services.sh start" ;;
        esac
    fi
    prepare_dir
    # one invocation at a time on one services folder (the servers do not inherit the lock: 9>&-)
    exec 9>"$DIR/.lock"
    flock -w 600 9 || die "another scripts/services.sh has held $DIR/.lock for 10 minutes"
    case "$cmd" in
        start) cmd_start ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status ;;
        env) cmd_env ;;
    esac
}

main "$@"
