#!/usr/bin/env bash
# Throw-away services on this machine for searches with many workers (docs/SEARCH.md), the
# cluster launcher (docs/SLURM.md) and the services tests (tests/test_services.py,
# tests/test_slurm.py): a PostgreSQL, an MLflow tracking server backed by it (both on 127.0.0.1),
# and a single-node Slurm cluster.
#
#   scripts/services.sh start [SERVICE...]   start them (a second start reuses what runs)
#   eval "$(scripts/services.sh env)"        export what clients need (of the services that run)
#   scripts/services.sh status [SERVICE...]  what runs where (exit 0 when all answer, else 3)
#   scripts/services.sh stop [SERVICE...]    stop them (always safe); their data are kept
#   scripts/services.sh stop --purge [SERVICE...]   stop them and delete their data
#
# SERVICE is postgres, mlflow or slurm; none named means all of them, Slurm only as root (it is
# left out, with a note, for other users). mlflow needs postgres: starting it starts postgres,
# stopping postgres stops it.
#
# Everything lives in $REPRODUCE_SERVICES_DIR (default: .services/ in the repository):
#   pg/data         the PostgreSQL cluster (superuser `reproduce`, databases `optuna` and `mlflow`)
#   pg/postgres.log its log; pg.password the generated password
#   mlflow.log, mlflow.pid, artifacts/   the tracking server, its log and its artifact store
#   slurm/          the cluster: slurm.conf, state/, spool/, log/, munge/ (its own munged and key)
# Ports: $REPRODUCE_PG_PORT (default 55432), $REPRODUCE_MLFLOW_PORT (5055),
# $REPRODUCE_SLURMCTLD_PORT (16817) and $REPRODUCE_SLURMD_PORT (16818).
# PostgreSQL is the Debian package `postgresql`, installed when missing and run as root. As root
# the cluster runs as the `postgres` user (initdb refuses root); otherwise as the caller.
# Slurm is Debian's (slurmctld, slurmd, slurm-client, munge), installed when missing; it runs as
# root only (slurmd starts each job as the user who submitted it). Its configuration stays in
# slurm/slurm.conf (clients find it through SLURM_CONF, exported by `env`): nothing in /etc is
# written, and a munged of its own on a socket of its own leaves any host MUNGE alone.
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
SLURMCTLD_PORT=${REPRODUCE_SLURMCTLD_PORT:-16817}   # not Slurm's 6817: a host cluster keeps its own
SLURMD_PORT=${REPRODUCE_SLURMD_PORT:-16818}
SLURM_KILL_WAIT=5           # seconds between SIGTERM and SIGKILL when a job ends early (Slurm: 30)
SLURM_CRED_EXPIRE=10        # a requeued job waits this long before it starts again (Slurm: 120)
SERVICES=(postgres mlflow slurm)
APT_UPDATED=

say() { echo "[services] $*" >&2; }
die() { echo "[services] error: $*" >&2; exit 1; }

usage() {
    sed -n '7,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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

apt_install() {    # Debian packages (and apt-get options), quietly; the lists are refreshed once
    if [ -z "$APT_UPDATED" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
    BIN=$(pg_bindir)
    if [ -z "$BIN" ]; then
        is_root || die "PostgreSQL is not installed; as root: apt-get install -y postgresql (or set PG_BINDIR)"
        say "installing PostgreSQL (apt-get install postgresql)"
        apt_install postgresql
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

# ------------------------------------------------------------------------------ Slurm

# One node, this machine, named after it (hostname -s) and reached on 127.0.0.1; slurmctld and
# slurmd run as root with SlurmUser=root; MUNGE authenticates them with a key and a munged of
# their own. No slurmdbd: there is no accounting, so `sacct` fails (docs/SLURM.md).
SLURM_DIR=$DIR/slurm
SLURM_CONF_FILE=$SLURM_DIR/slurm.conf

slurm_node() { hostname -s 2>/dev/null || hostname; }

slurm_installed() {
    local b
    for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged; do
        [ -x "$b" ] || return 1
    done
    for b in sbatch squeue sinfo scontrol scancel srun munge; do
        command -v "$b" >/dev/null 2>&1 || return 1
    done
}

ensure_slurm() {
    if ! is_root; then
        slurm_installed || die "Slurm is not installed, and the local cluster runs as root only" \
            "(slurmd starts each job as the user who submitted it): as root, scripts/services.sh" \
            "start slurm installs it (apt-get install slurmctld slurmd slurm-client munge) and starts it"
        die "the local Slurm runs as root only (slurmd starts each job as the user who submitted" \
            "it): run scripts/services.sh start slurm as root"
    fi
    if ! slurm_installed; then
        say "installing Slurm and MUNGE (apt-get install slurmctld slurmd slurm-client munge)"
        apt_install --no-install-recommends slurmctld slurmd slurm-client munge
        slurm_installed || die "apt-get installed Slurm but slurmctld, slurmd, munged or the" \
            "client commands (sbatch, squeue, sinfo, scontrol, scancel, srun) are still missing"
    fi
}

# Where the sockets live: munged's and slurmd's spool (slurmstepd's sockets). munged wants every
# folder above its socket open to all (o+x) and a Unix socket path has at most 107 bytes, so a
# long or private $DIR (e.g. a checkout under /root) moves them to /var/tmp, recorded in
# slurm/run.where so that stop finds them. Chosen once, by start.
choose_slurm_run_dir() {
    [ -f "$SLURM_DIR/run.where" ] && return
    local run=$SLURM_DIR d=$SLURM_DIR
    mkdir -p "$SLURM_DIR"
    chmod 755 "$SLURM_DIR"
    while [ "$d" != / ]; do
        d=$(dirname "$d")
        if [ -z "$(find "$d" -maxdepth 0 -perm -o=x 2>/dev/null)" ]; then
            run=""
            break
        fi
    done
    if [ -z "$run" ] || [ "${#run}" -gt 50 ]; then
        run=/var/tmp/reproduce-slurm-$(printf '%s' "$DIR" | md5sum | cut -c1-12)
        say "$SLURM_DIR is private or too long for sockets; munged and slurmd's spool live in $run"
        mkdir -p "$run"
        chmod 755 "$run"
    fi
    echo "$run" > "$SLURM_DIR/run.where"
}

slurm_run_dir() { cat "$SLURM_DIR/run.where" 2>/dev/null || echo "$SLURM_DIR"; }

munge_socket() { echo "$(slurm_run_dir)/munge/munge.socket"; }

# A daemon of this cluster: process $1 is alive, named $2, and its command line names $3 (this
# cluster's slurm.conf or munge socket), so that a reused PID is never taken for it.
ours() {
    local comm
    alive "${1:-}" || return 1
    read -r comm 2>/dev/null < "/proc/$1/comm" && [ "$comm" = "$2" ] || return 1
    tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$3"
}

# The PID of this cluster's daemon $1 (slurmctld, slurmd, munged): its PID file, else a search
# of /proc (a daemon whose PID file went missing); empty when it does not run.
daemon_pid() {
    local name=$1 needle pidfile pid f comm
    case "$name" in
        munged) needle=--socket=$(munge_socket); pidfile=$(slurm_run_dir)/munge/munged.pid ;;
        *) needle=$SLURM_CONF_FILE; pidfile=$SLURM_DIR/$name.pid ;;
    esac
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if ours "$pid" "$name" "$needle"; then
        echo "$pid"
        return
    fi
    for f in /proc/[0-9]*/comm; do
        { read -r comm < "$f"; } 2>/dev/null || continue
        [ "$comm" = "$name" ] || continue
        pid=${f#/proc/}
        pid=${pid%/comm}
        if ours "$pid" "$name" "$needle"; then
            echo "$pid"
            return
        fi
    done
}

slurm_cli() { SLURM_CONF=$SLURM_CONF_FILE "$@"; }

# The node's state as sinfo prints it (idle, mix, alloc, comp, down*, drain, ...), or nothing
# when slurmctld does not answer.
node_state() {
    slurm_cli timeout 10 sinfo -h -n "$(slurm_node)" -o %t 2>/dev/null | head -n 1 || true
}

slurm_running() {    # the three daemons run and the node takes jobs
    [ -f "$SLURM_CONF_FILE" ] || return 1
    [ -n "$(daemon_pid munged)" ] && [ -n "$(daemon_pid slurmctld)" ] &&
        [ -n "$(daemon_pid slurmd)" ] || return 1
    case "$(node_state)" in
        idle|mix|alloc|comp) return 0 ;;
    esac
    return 1
}

write_slurm_conf() {
    local node run cpus mem
    node=$(slurm_node)
    run=$(slurm_run_dir)
    cpus=$(nproc)
    # all but 1 GiB of the memory (slurmd drains a node that has less than it is said to have)
    mem=$(awk '/^MemTotal:/ { m = int($2 / 1024) - 1024; print (m < 256 ? 256 : m) }' /proc/meminfo)
    mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/log" "$run/spool" "$run/munge"
    cat > "$SLURM_CONF_FILE.new" <<CONF
# Written by scripts/services.sh at every start: a single-node cluster for the suite's tests.
ClusterName=reproduce
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$run/munge/munge.socket,cred_expire=$SLURM_CRED_EXPIRE
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$run/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
# no accounting (no slurmdbd); finished jobs are written here, one line each
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.log
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
# no cgroups needed: processes are tracked by their parents, tasks are not bound to CPUs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
# look at pending jobs every 2 s (Slurm: 60 and 30): a requeued job starts once its wait is over
SchedulerParameters=sched_interval=2,bf_interval=2
# CPUs are consumed, memory is not: jobs fill the cores whatever memory they ask for
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
KillWait=$SLURM_KILL_WAIT
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$SLURM_CONF_FILE.new" "$SLURM_CONF_FILE"
}

start_munged() {
    local run pid
    run=$(slurm_run_dir)
    pid=$(daemon_pid munged)
    if [ -n "$pid" ]; then
        return
    fi
    if [ ! -s "$SLURM_DIR/munge.key" ]; then
        (umask 077; dd if=/dev/urandom bs=1 count=1024 of="$SLURM_DIR/munge.key" status=none)
    fi
    chmod 400 "$SLURM_DIR/munge.key"
    mkdir -p "$run/munge"
    chmod 755 "$run/munge"
    rm -f "$run/munge/munge.socket" "$run/munge/munge.socket.lock" "$run/munge/munged.pid"
    # as root (it is the key's owner); it forks and returns once its socket is made
    /usr/sbin/munged --socket="$run/munge/munge.socket" --key-file="$SLURM_DIR/munge.key" \
        --pid-file="$run/munge/munged.pid" --log-file="$SLURM_DIR/log/munged.log" \
        --seed-file="$run/munge/munged.seed" 9>&- ||
        { tail -n 5 "$SLURM_DIR/log/munged.log" >&2 2>/dev/null || true; die "munged did not start (log: $SLURM_DIR/log/munged.log)"; }
    munge -n -S "$run/munge/munge.socket" | unmunge -S "$run/munge/munge.socket" >/dev/null ||
        die "munged runs but does not answer on $run/munge/munge.socket"
}

start_slurmctld() {    # and wait until it answers
    rm -f "$SLURM_DIR/slurmctld.pid"
    /usr/sbin/slurmctld -f "$SLURM_CONF_FILE" </dev/null >/dev/null 2>&1 9>&- || return 1
    local waited=0
    until slurm_cli timeout 10 scontrol ping 2>/dev/null | grep -q UP; do
        [ -n "$(daemon_pid slurmctld)" ] || return 1
        [ "$waited" -ge $((START_TIMEOUT * 5)) ] && return 1
        sleep 0.2
        waited=$((waited + 1))
    done
}

start_slurm() {
    ensure_slurm
    choose_slurm_run_dir
    if slurm_running; then
        say "Slurm already running (cluster reproduce, node $(slurm_node): $(node_state); conf $SLURM_CONF_FILE)"
        return
    fi
    # what a killed or half-started cluster left behind: the daemons that still run are reused
    # with the configuration they read; otherwise stray jobs are ended and the file rewritten
    if [ -z "$(daemon_pid slurmctld)" ] && [ -z "$(daemon_pid slurmd)" ]; then
        end_stray_jobs
        if port_in_use "$SLURMCTLD_PORT"; then
            die "port $SLURMCTLD_PORT is in use by another program; set REPRODUCE_SLURMCTLD_PORT to a free port"
        fi
        if port_in_use "$SLURMD_PORT"; then
            die "port $SLURMD_PORT is in use by another program; set REPRODUCE_SLURMD_PORT to a free port"
        fi
        write_slurm_conf
    fi
    say "starting Slurm (munged, slurmctld, slurmd on 127.0.0.1:$SLURMCTLD_PORT/$SLURMD_PORT; conf $SLURM_CONF_FILE)"
    start_munged
    if [ -z "$(daemon_pid slurmctld)" ]; then
        if ! start_slurmctld; then
            # a saved state it cannot read (another Slurm version, a half-written file): set
            # it aside, with the log that says why, and start afresh
            stop_daemon slurmctld quiet
            say "slurmctld did not start on the saved state; starting afresh (the old state is" \
                "in $SLURM_DIR/state.unreadable, the log in log/slurmctld.unreadable.log)"
            rm -rf "$SLURM_DIR/state.unreadable"
            mv "$SLURM_DIR/state" "$SLURM_DIR/state.unreadable"
            mkdir -p "$SLURM_DIR/state"
            mv "$SLURM_DIR/log/slurmctld.log" "$SLURM_DIR/log/slurmctld.unreadable.log" 2>/dev/null || true
            start_slurmctld || {
                tail -n 20 "$SLURM_DIR/log/slurmctld.log" >&2 2>/dev/null || true
                die "slurmctld did not start (log: $SLURM_DIR/log/slurmctld.log)"
            }
        fi
    fi
    if [ -z "$(daemon_pid slurmd)" ]; then
        rm -f "$SLURM_DIR/slurmd.pid"
        /usr/sbin/slurmd -f "$SLURM_CONF_FILE" -N "$(slurm_node)" </dev/null >/dev/null 2>&1 9>&- || {
            tail -n 20 "$SLURM_DIR/log/slurmd.log" >&2 2>/dev/null || true
            die "slurmd did not start (log: $SLURM_DIR/log/slurmd.log)"
        }
    fi
    # until the node takes jobs; a node left down or drained by an earlier run is resumed
    local waited=0 state resumed=
    while :; do
        state=$(node_state)
        case "$state" in
            idle|mix|alloc|comp) break ;;
            down|drain|drng|down\*|drain\*)
                if [ -z "$resumed" ] && [ -n "$(daemon_pid slurmd)" ]; then
                    slurm_cli scontrol update NodeName="$(slurm_node)" State=RESUME 2>/dev/null || true
                    resumed=1
                fi ;;
        esac
        if [ -z "$(daemon_pid slurmd)" ] || [ "$waited" -ge $((START_TIMEOUT * 5)) ]; then
            tail -n 20 "$SLURM_DIR/log/slurmd.log" >&2 2>/dev/null || true
            slurm_cli scontrol show node "$(slurm_node)" >&2 2>/dev/null || true
            die "the Slurm node did not become idle (state: ${state:-no answer}; logs: $SLURM_DIR/log)"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
}

stop_daemon() {    # TERM, then KILL after 15 s
    local name=$1 pid
    pid=$(daemon_pid "$name")
    [ -n "$pid" ] || return 0
    [ "${2:-}" = quiet ] || say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do
        alive "$pid" || return 0
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 25); do
        alive "$pid" || return 0
        sleep 0.2
    done
}

# Processes of this cluster's jobs that outlived their daemons (slurmd killed before its jobs):
# a slurmstepd writing to this cluster's slurmd.log, and any process started by one (it has the
# job's SLURM_JOB_ID and this cluster's SLURM_CONF). Never this script nor its callers.
end_stray_jobs() {
    local f pid comm fd hit mine=" " p=$$ found="" candidates
    while [ -n "$p" ] && [ "$p" != 0 ]; do          # this process and its ancestors
        mine+="$p "
        p=$(awk '{ print $4 }' "/proc/$p/stat" 2>/dev/null || true)
    done
    # one grep over every environment: processes that name this cluster's configuration
    candidates=$(grep -lzxF -- "SLURM_CONF=$SLURM_CONF_FILE" /proc/[0-9]*/environ 2>/dev/null || true)
    for f in /proc/[0-9]*/comm; do
        { read -r comm < "$f"; } 2>/dev/null || continue
        [ "$comm" = slurmstepd ] || continue
        hit=""
        for fd in "${f%/comm}"/fd/*; do
            [ "$(readlink "$fd" 2>/dev/null)" = "$SLURM_DIR/log/slurmd.log" ] && { hit=1; break; }
        done
        [ -n "$hit" ] && candidates+=$'\n'${f%/comm}/environ
    done
    while read -r f; do
        [ -n "$f" ] || continue
        f=${f%/environ}
        pid=${f#/proc/}
        case "$mine" in *" $pid "*) continue ;; esac
        { read -r comm < "$f/comm"; } 2>/dev/null || continue
        if [ "$comm" != slurmstepd ]; then
            grep -qz '^SLURM_JOB_ID=' "$f/environ" 2>/dev/null || continue
        fi
        kill -KILL "$pid" 2>/dev/null && found+=" $pid"
    done < <(sort -u <<< "$candidates")
    [ -z "$found" ] || say "ended processes of earlier Slurm jobs:$found"
}

stop_slurm() {
    [ -d "$SLURM_DIR" ] || return 0
    local ids quiet=""
    # jobs first, so that none runs on without its slurmd; they get SIGTERM, SIGKILL KillWait later
    if [ -n "$(daemon_pid slurmctld)" ]; then
        ids=$(slurm_cli timeout 10 squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ' || true)
        if [ -n "${ids// /}" ]; then
            [ "$quiet" = quiet ] || say "cancelling Slurm jobs $ids"
            # shellcheck disable=SC2086
            slurm_cli timeout 30 scancel $ids 2>/dev/null || true
            for _ in $(seq 1 $(((SLURM_KILL_WAIT + 15) * 5))); do
                [ -z "$(slurm_cli timeout 10 squeue -h -t R,CG,S -o %i 2>/dev/null || true)" ] && break
                sleep 0.2
            done
        fi
    fi
    stop_daemon slurmd "$quiet"
    stop_daemon slurmctld "$quiet"
    end_stray_jobs
    stop_daemon munged "$quiet"
    rm -f "$SLURM_DIR/slurmd.pid" "$SLURM_DIR/slurmctld.pid"
}

purge_slurm() {
    local run=""
    [ -f "$SLURM_DIR/run.where" ] && run=$(cat "$SLURM_DIR/run.where")
    [ -n "$run" ] && [ "$run" != "$SLURM_DIR" ] && rm -rf "$run"
    rm -rf "$SLURM_DIR"
}

# ------------------------------------------------------------------------------ commands

# The services that no names mean: all, Slurm only as root (for other users it cannot run).
default_services() {
    if is_root; then
        echo postgres mlflow slurm
    else
        echo postgres mlflow
    fi
}

service_running() {
    case "$1" in
        postgres) pg_running ;;
        mlflow) mlflow_alive && mlflow_answers ;;
        slurm) slurm_running ;;
    esac
}

print_env() {
    case "$1" in
        postgres) echo "export OPTUNA_STORAGE=$(pg_url optuna)" ;;
        mlflow) echo "export MLFLOW_TRACKING_URI=$(mlflow_url)" ;;
        slurm) printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE" ;;
    esac
}

cmd_start() {    # $@: the services, in the order postgres, mlflow, slurm
    local s
    for s in "$@"; do
        case "$s" in
            postgres) start_postgres ;;
            mlflow) start_mlflow ;;
            slurm) start_slurm ;;
        esac
    done
    say "ready; export these (or: eval \"\$(scripts/services.sh env)\"):"
    for s in "$@"; do
        print_env "$s"
    done
}

cmd_stop() {    # $1: --purge or nothing; then the services
    local purge=$1 s home=""
    shift
    for s in "$@"; do
        case "$s" in
            mlflow) stop_mlflow ;;
            postgres) stop_postgres ;;
            slurm) stop_slurm ;;
        esac
    done
    [ "$purge" = --purge ] || return 0
    if [ $# -eq ${#SERVICES[@]} ]; then        # all of them: the whole folder
        [ -f "$DIR/pg.where" ] && home=$(cat "$DIR/pg.where")
        [ "$home" = "$DIR/pg" ] && home=""
        say "deleting $DIR${home:+ and $home}"
        [ -n "$home" ] && rm -rf "$home"
        purge_slurm
        rm -rf "$DIR"
        return 0
    fi
    for s in "$@"; do
        case "$s" in
            mlflow)
                say "deleting the MLflow server's artifacts and log"
                rm -rf "$DIR/artifacts" "$DIR/mlflow.log" "$DIR/mlflow.port" ;;
            postgres)
                [ -f "$DIR/pg.where" ] && home=$(cat "$DIR/pg.where")
                say "deleting the PostgreSQL cluster${home:+ $home}"
                [ -n "$home" ] && rm -rf "$home"
                rm -f "$DIR/pg.where" "$DIR/pg.port" "$DIR/pg.password" ;;
            slurm)
                say "deleting the Slurm cluster's state, spool and logs ($SLURM_DIR)"
                purge_slurm ;;
        esac
    done
}

cmd_status() {
    local ok=0 s
    for s in "$@"; do
        case "$s" in
            postgres)
                if pg_running; then
                    echo "postgresql: running on 127.0.0.1:$(pg_port) (data $(cat "$DIR/pg.where")/data)"
                else
                    echo "postgresql: stopped"
                    ok=3
                fi ;;
            mlflow)
                if mlflow_alive && mlflow_answers; then
                    echo "mlflow:     running at $(mlflow_url) (pid $(mlflow_pid), artifacts $DIR/artifacts)"
                else
                    echo "mlflow:     stopped"
                    ok=3
                fi ;;
            slurm)
                if slurm_running; then
                    echo "slurm:      running, node $(slurm_node) $(node_state)," \
                        "$(slurm_cli sinfo -h -o %c) CPUs (pids: munged $(daemon_pid munged)," \
                        "slurmctld $(daemon_pid slurmctld), slurmd $(daemon_pid slurmd); conf $SLURM_CONF_FILE)"
                else
                    echo "slurm:      stopped"
                    ok=3
                fi ;;
        esac
    done
    return $ok
}

# Named services must all run; with no names, the variables of every service that runs (a
# default service that does not is named on stderr).
cmd_env() {    # $1: named or default; then the services
    local how=$1 s any=
    shift
    for s in "$@"; do
        if service_running "$s"; then
            print_env "$s"
            any=1
        elif [ "$how" = named ]; then
            die "$s is not running; start it with scripts/services.sh start $s"
        else
            say "$s is not running: its variables are left out"
        fi
    done
    [ -n "$any" ] || die "the services are not running; start them with scripts/services.sh start"
}

main() {
    local cmd=${1:-} purge="" how=named s
    local -a names=() chosen=()
    [ $# -gt 0 ] && shift
    case "$cmd" in
        start|stop|status|env) ;;
        *) usage ;;
    esac
    for s in "$@"; do
        case "$s" in
            --purge) [ "$cmd" = stop ] || usage; purge=--purge ;;
            postgres|postgresql) names+=(postgres) ;;
            mlflow|slurm) names+=("$s") ;;
            *) echo "[services] unknown service or option: $s (services: ${SERVICES[*]})" >&2; usage ;;
        esac
    done
    if [ ${#names[@]} -eq 0 ]; then
        how=default
        case "$cmd" in
            stop) names=("${SERVICES[@]}") ;;        # stop (and purge) everything, always safe
            *) read -r -a names <<< "$(default_services)" ;;
        esac
        if [ "$cmd" = start ] && ! is_root; then
            say "Slurm left out: it runs as root only (slurmd starts each job as the user who submitted it)"
        fi
    fi
    # dependencies: mlflow's store is in postgres
    [ "$cmd" = start ] && [[ " ${names[*]} " == *" mlflow "* ]] && names+=(postgres)
    [ "$cmd" = stop ] && [[ " ${names[*]} " == *" postgres "* ]] && names+=(mlflow)
    # each once, in the order that start needs (stop goes the other way)
    for s in "${SERVICES[@]}"; do
        [[ " ${names[*]} " == *" $s "* ]] && chosen+=("$s")
    done
    if [ "$cmd" != start ] && [ ! -d "$DIR" ]; then      # never started here
        case "$cmd" in
            stop) return 0 ;;
            status) for s in "${chosen[@]}"; do printf '%-11s stopped\n' "${s/postgres/postgresql}:"; done; return 3 ;;
            env) die "the services are not running; start them with scripts/services.sh start" ;;
        esac
    fi
    prepare_dir
    SLURM_DIR=$DIR/slurm
    SLURM_CONF_FILE=$SLURM_DIR/slurm.conf
    # one invocation at a time on one services folder (the servers do not inherit the lock: 9>&-)
    exec 9>"$DIR/.lock"
    flock -w 600 9 || die "another scripts/services.sh has held $DIR/.lock for 10 minutes"
    case "$cmd" in
        start) cmd_start "${chosen[@]}" ;;
        stop)
            local -a reversed=()
            for ((s = ${#chosen[@]} - 1; s >= 0; s--)); do reversed+=("${chosen[$s]}"); done
            cmd_stop "$purge" "${reversed[@]}" ;;
        status) cmd_status "${chosen[@]}" ;;
        env) cmd_env "$how" "${chosen[@]}" ;;
    esac
}

main "$@"
