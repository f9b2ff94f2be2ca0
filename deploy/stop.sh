#!/usr/bin/env bash
# Stop what start_supernode.sh, start_fleet_proxy.sh and start_superlink.sh started.
#
#   deploy/stop.sh [--wait SECONDS] PID_FILE...
#
# Options (environment variable in brackets):
#   --wait SECONDS   how long each stage waits before SIGKILL      [MLECS_STOP_WAIT, 30]
#
# Whatever order the PID files come in: the SuperNodes first (they sign off with
# the SuperLink, through the proxy; a SuperLink stopped first keeps listing them
# online for minutes after its restart), then the Fleet proxy, then the SuperLink.
# Each stage gets SIGTERM (the whole process group in --daemon mode, so the
# flower-superexec child and the apps go too) and up to --wait seconds to exit,
# then SIGKILL. A PID file whose process is gone or is not one of these (a stale
# file, a reused PID) is skipped; the PID files of stopped processes are removed.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

WAIT=${MLECS_STOP_WAIT:-30}
FILES=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --wait) WAIT=$2; shift 2 ;;
        -h | --help) usage 0 ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) FILES+=("$1"); shift ;;
    esac
done
[[ ${#FILES[@]} -gt 0 ]] || usage
[[ "$WAIT" =~ ^[0-9]+$ ]] || die "--wait must be a number of seconds (got '$WAIT')"

need_cmd ps

# alive PID: the process exists and is not a zombie.
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z* ]]
}

# group_alive PGID: a process of that group exists (zombies aside).
group_alive() {
    ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# stage PID: 0 SuperNode, 1 Fleet proxy, 2 SuperLink; nothing for another process.
stage() {
    local args
    args=$(ps -ww -o args= -p "$1" 2>/dev/null) || return 0
    case $args in
        *flower-supernode*) echo 0 ;;
        *fleet_proxy.py*) echo 1 ;;
        *flower-superlink*) echo 2 ;;
    esac
}

STAGE_PIDS=("" "" "")
declare -A PID_FILE_OF=() GROUP=()
for f in "${FILES[@]}"; do
    [[ -f "$f" ]] || { say "no PID file $f, skipped"; continue; }
    pid=$(tr -d '[:space:]' <"$f")
    [[ "$pid" =~ ^[0-9]+$ ]] || { say "$f holds no PID, skipped"; continue; }
    if ! alive "$pid"; then
        say "$f: process $pid is not running"
        rm -f "$f"
        continue
    fi
    s=$(stage "$pid")
    [[ -n "$s" ]] || { say "$f: process $pid is no SuperNode, proxy or SuperLink, skipped"; continue; }
    STAGE_PIDS[s]+=" $pid"
    PID_FILE_OF[$pid]=$f
    # --daemon: it leads its own process group, which holds its children too
    [[ "$(ps -o pgid= -p "$pid" | tr -d ' ')" == "$pid" ]] && GROUP[$pid]=1
done

# running PID / send SIG PID: the whole group of a group leader, else the process.
running() { if [[ -n "${GROUP[$1]:-}" ]]; then group_alive "$1"; else alive "$1"; fi; }
send() { if [[ -n "${GROUP[$2]:-}" ]]; then kill "-$1" -- "-$2"; else kill "-$1" "$2"; fi 2>/dev/null || true; }

names=("SuperNode(s)" "Fleet proxy" "SuperLink")
for s in 0 1 2; do
    read -r -a pids <<<"${STAGE_PIDS[s]}"
    [[ ${#pids[@]} -gt 0 ]] || continue
    say "stopping ${names[s]}: ${pids[*]}"
    for pid in "${pids[@]}"; do send TERM "$pid"; done
    for ((t = 0; t < WAIT * 5; t++)); do
        left=0
        for pid in "${pids[@]}"; do running "$pid" && left=1; done
        ((left)) || break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        if running "$pid"; then
            say "$pid still running after ${WAIT}s: SIGKILL"
            send KILL "$pid"
        fi
        rm -f "${PID_FILE_OF[$pid]}"
    done
done
