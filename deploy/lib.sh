# shellcheck shell=bash
# Helpers sourced by the deploy/*.sh scripts (not meant to be run directly).

# No update check or telemetry calls to api.flower.ai (edge boxes are often offline).
export FLWR_DISABLE_UPDATE_CHECK=1 FLWR_TELEMETRY_ENABLED=0
# Never install app dependencies at run time: every box has the project's env.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
# Never download from a model hub while running.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

# Use the project's virtualenv when MLECS_VENV names one (systemd, cron, ssh).
if [[ -n "${MLECS_VENV:-}" ]]; then
    export PATH="$MLECS_VENV/bin:$PATH"
fi

# The script's header comment (after the shebang) is its usage text.
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-2}"
}
say() { echo "[$(basename "$0")] $*"; }
die() { echo "[$(basename "$0")] error: $*" >&2; exit 2; }

# need_file LABEL PATH: fail early with a clear message.
need_file() { [[ -f "$2" ]] || die "$1 not found: $2"; }

# need_cmd NAME: the command must be on PATH.
need_cmd() {
    command -v "$1" >/dev/null || die "'$1' not on PATH (activate the project's venv or set MLECS_VENV)"
}

# abspath PATH: absolute path of an existing or future file.
abspath() {
    local dir
    dir=$(cd "$(dirname "$1")" && pwd) || die "no such directory: $(dirname "$1")"
    echo "$dir/$(basename "$1")"
}

# launch PID_FILE LOG_FILE DAEMON CMD...
#   DAEMON=0: exec CMD in the foreground (systemd, docker, a terminal); the PID
#             file, if any, gets this script's PID, which becomes CMD's PID.
#   DAEMON=1: start CMD in the background in its own session (process group =
#             its PID, so `kill -- -PID` also stops the flower-superexec child
#             and the apps it runs), output to LOG_FILE; PID written to PID_FILE.
launch() {
    local pid_file=$1 log_file=$2 daemon=$3
    shift 3
    say "running: $(printf "%q " "$@")"
    if [[ "$daemon" != "1" ]]; then
        if [[ -n "$pid_file" ]]; then
            mkdir -p "$(dirname "$pid_file")"
            echo "$$" >"$pid_file"
        fi
        exec "$@"
    fi
    [[ -n "$log_file" ]] || die "--daemon needs --log-file"
    mkdir -p "$(dirname "$log_file")"
    setsid "$@" >>"$log_file" 2>&1 </dev/null &
    LAUNCHED_PID=$!
    if [[ -n "$pid_file" ]]; then
        mkdir -p "$(dirname "$pid_file")"
        echo "$LAUNCHED_PID" >"$pid_file"
    fi
    local stop="kill -- -$LAUNCHED_PID"
    [[ -z "$pid_file" ]] || stop="$(dirname "$0")/stop.sh $pid_file"
    say "started PID $LAUNCHED_PID, log $log_file (stop it with: $stop; SuperNodes before the SuperLink)"
}
