# shellcheck shell=bash
# Helpers shared by scripts/demo (and the benchmark scripts): free loopback ports,
# real redis-server and haproxy processes started in the background with their logs in
# one run directory, readiness polled with deadlines, and a cleanup that stops every
# process started here (and waits for it) and removes the run directory, whether the
# script ends normally, fails, or is interrupted.
#
# Source it, then call lib_init once:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   lib_init            # creates $RUN_DIR, installs the EXIT/INT/TERM traps
#   port=$(free_port)
#   start_redis master "$port"; master_pid=$LIB_LAST_PID
#
# Never call start_* in a command substitution: they must run in the main shell so
# that the cleanup knows their processes.

# Directory holding logs, data and configs of this run; removed by lib_cleanup.
RUN_DIR=""
# Password of every redis-server started here (and of the HAProxy health check).
REDIS_PASSWORD=${REDIS_PASSWORD:-}
# PID of the process the last start_* call started.
LIB_LAST_PID=""
# Every process started, in start order, with a name for messages.
LIB_PIDS=()
LIB_NAMES=()
LIB_CLEANED=false

# log MESSAGE...: a progress line on stderr, so stdout stays for what the user asked.
log() {
    printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# lib_init: create the run directory and register the cleanup.
lib_init() {
    RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/redis-canary-run.XXXXXX")
    if [[ -z $REDIS_PASSWORD ]]; then
        REDIS_PASSWORD="canary-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    fi
    export REDIS_PASSWORD
    trap lib_cleanup EXIT
    trap 'lib_cleanup; exit 130' INT
    trap 'lib_cleanup; exit 143' TERM
}

# free_port: print a TCP port on 127.0.0.1 that was free a moment ago (the kernel
# picks it by binding port 0).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# free_ports N: print N distinct free ports on one line (all bound at the same time,
# so two calls of free_port cannot hand out the same port twice).
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# lib_alive PID: true while the process exists and is not a zombie.
lib_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# lib_spawn NAME COMMAND...: start COMMAND in the background, stdout and stderr in
# $RUN_DIR/NAME.log, and remember it for the cleanup. Sets LIB_LAST_PID.
# It runs in a session of its own, so a Ctrl-C in the terminal reaches only the
# script, whose cleanup then stops things in order (the canary first, gracefully).
# In a script (no job control) the child is no group leader, so setsid execs in place
# and $! is the command's own PID.
lib_spawn() {
    local name=$1
    shift
    setsid "$@" >"$RUN_DIR/$name.log" 2>&1 &
    LIB_LAST_PID=$!
    LIB_PIDS+=("$LIB_LAST_PID")
    LIB_NAMES+=("$name")
}

# lib_log_tail NAME: show the end of a process's log (after a failure).
lib_log_tail() {
    local file="$RUN_DIR/$1.log"
    [[ -f $file ]] || return 0
    log "last lines of $file:"
    tail -n 20 "$file" >&2 || true
}

# lib_check_alive [PID...]: fail, naming the process and showing its log, if one of
# these processes (default: every process started here) has exited.
lib_check_alive() {
    local i pid
    for i in "${!LIB_PIDS[@]}"; do
        pid=${LIB_PIDS[$i]}
        if (($# > 0)) && [[ " $* " != *" $pid "* ]]; then
            continue
        fi
        if ! lib_alive "$pid"; then
            lib_log_tail "${LIB_NAMES[$i]}"
            die "${LIB_NAMES[$i]} (pid $pid) exited unexpectedly"
        fi
    done
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it
# succeeds; fail after SECONDS, or as soon as a process started here dies.
wait_until() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        lib_check_alive
        if ((SECONDS >= deadline)); then
            die "timed out after ${timeout}s waiting for $what"
        fi
        sleep 0.1
    done
}

# watch_for SECONDS [PID...]: let SECONDS pass while checking every 0.2 s that these
# processes (default: all started here) still run. A pause in a scenario, not a
# synchronisation.
watch_for() {
    local deadline=$((SECONDS + $1))
    shift
    while ((SECONDS < deadline)); do
        lib_check_alive "$@"
        sleep 0.2
    done
}

# wait_http URL [SECONDS]: wait until URL answers with a 2xx status (default 15 s).
wait_http() {
    wait_until "${2:-15}" "$1" curl -fsS -o /dev/null --max-time 1 "$1"
}

redis_ping() {
    [[ $(redis-cli -h 127.0.0.1 -p "$1" -a "$REDIS_PASSWORD" --no-auth-warning PING 2>/dev/null) == PONG ]]
}

# start_redis NAME PORT [EXTRA-ARGS...]: start a redis-server on 127.0.0.1:PORT with
# $REDIS_PASSWORD required (and used towards its master), no persistence, data in
# $RUN_DIR/NAME; wait until it answers PING. Sets LIB_LAST_PID.
start_redis() {
    local name=$1 port=$2
    shift 2
    mkdir -p "$RUN_DIR/$name"
    lib_spawn "$name" redis-server \
        --bind 127.0.0.1 --port "$port" \
        --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
        --save "" --appendonly no \
        --dir "$RUN_DIR/$name" --daemonize no --logfile "" \
        "$@"
    wait_until 10 "redis-server $name on port $port" redis_ping "$port"
}

redis_replicas_online() {
    local info
    info=$(redis-cli -h 127.0.0.1 -p "$1" -a "$REDIS_PASSWORD" --no-auth-warning INFO replication 2>/dev/null) || return 1
    [[ $(grep -c '^slave[0-9]*:.*state=online' <<<"$info") -ge $2 ]]
}

# wait_replicas MASTER_PORT COUNT [SECONDS]: wait until COUNT replicas are online.
wait_replicas() {
    wait_until "${3:-15}" "$2 replicas online at port $1" redis_replicas_online "$1" "$2"
}

# haproxy_status STATS_URL: print the check status of each server of the redis
# backend, in order, e.g. "UP DOWN DOWN".
haproxy_status() {
    local csv
    csv=$(curl -fsS --max-time 1 "$1/;csv") || return 1
    awk -F, '$1 == "redis_nodes" && $2 != "BACKEND" { split($18, s, " "); printf "%s%s", sep, s[1]; sep = " " }' <<<"$csv"
}

haproxy_status_is() {
    [[ $(haproxy_status "$1") == "$2" ]]
}

# start_haproxy NAME CONFIG: start haproxy in the foreground with CONFIG (the
# HAPROXY_* and REDIS_* variables it expands must be exported), after checking it
# with `haproxy -c`; wait until its stats page (HAPROXY_STATS_BIND) answers.
start_haproxy() {
    local name=$1 config=$2
    if ! haproxy -c -q -f "$config" >"$RUN_DIR/$name-check.log" 2>&1; then
        cat "$RUN_DIR/$name-check.log" >&2
        die "haproxy rejected $config"
    fi
    lib_spawn "$name" haproxy -db -f "$config"
    wait_http "http://$HAPROXY_STATS_BIND/" 10
}

# wait_haproxy_status STATS_URL "UP DOWN DOWN" [SECONDS]: wait until the servers'
# checks say exactly that. HAProxy starts every server UP and only the first failed
# check (up to `timeout check` later) marks it down, so wait for this before relying
# on which node the proxy sends clients to.
wait_haproxy_status() {
    wait_until "${3:-15}" "haproxy servers \"$2\"" haproxy_status_is "$1" "$2"
}

# lib_stop PID NAME: SIGTERM (and SIGCONT, in case it was SIGSTOPped: a stopped
# process would hold the signal forever), wait up to 10 s, then SIGKILL; reap it.
lib_stop() {
    local pid=$1 name=$2
    if lib_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while lib_alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if lib_alive "$pid"; then
            log "$name (pid $pid) did not stop within 10 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

# lib_cleanup: stop every process started here, newest first (so the canary goes
# before the servers it measures), then remove the run directory. Runs once.
lib_cleanup() {
    [[ $LIB_CLEANED == false ]] || return 0
    LIB_CLEANED=true
    set +e
    local i
    for ((i = ${#LIB_PIDS[@]} - 1; i >= 0; i--)); do
        lib_stop "${LIB_PIDS[$i]}" "${LIB_NAMES[$i]}"
    done
    if [[ -n $RUN_DIR && -d $RUN_DIR ]]; then
        if [[ -n ${KEEP_RUN_DIR:-} ]]; then
            log "kept $RUN_DIR (KEEP_RUN_DIR is set)"
        else
            rm -rf -- "$RUN_DIR"
        fi
    fi
}
