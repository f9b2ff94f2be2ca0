#!/usr/bin/env bash
# Start the Flower SuperLink (cloud host) with TLS and SuperNode authentication.
#
#   deploy/start_superlink.sh [options] [-- extra flower-superlink flags]
#
# Options (environment variable in brackets):
#   --certs DIR       ca.crt, server.pem, server.key from gen_certs.sh  [MLECS_CERTS_DIR, ./certs]
#   --host HOST       address to listen on                               [MLECS_SUPERLINK_HOST, 127.0.0.1]
#   --port PORT       the one HTTPS port for Fleet, Control, Runtime APIs [MLECS_SUPERLINK_PORT, 9093]
#   --database FILE   SuperLink state (registered SuperNodes, runs) so it survives
#                     restarts  [MLECS_SUPERLINK_DB, ${FLWR_HOME:-~/.flwr}/superlink/state.db]
#   --pid-file FILE   write the SuperLink's PID here                     [MLECS_PID_FILE]
#   --daemon          run in the background (own process group), wait until
#                     healthy, then return                               [MLECS_DAEMON=1]
#   --log-file FILE   output file with --daemon                          [MLECS_LOG_FILE]
#   --wait SECONDS    how long --daemon waits for /health                [MLECS_WAIT_SECONDS, 60]
#
# This port serves the Control API too (flwr run/ls/stop, key registration), which
# has no account login in open-source Flower: keep it on 127.0.0.1 (the operator's
# port) and let edge boxes in through deploy/start_fleet_proxy.sh, which forwards
# only the Fleet API. Another --host prints a warning.
#
# Runtime dependency installation is disabled: this host needs the project's
# Python env (the ServerApp runs here). Results go to <output-dir>/<run-name>/
# relative to this script's working directory unless output-dir is absolute.
#
# Everything the SuperLink and its ServerApps create is private to this user
# (umask 077): the database (registered keys, runs) is 0600, a folder created
# for it 0700, run outputs 0700/0600. An existing database is made 0600 too.
# Stop it last, after the SuperNodes and the proxy: deploy/stop.sh.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
umask 077

CERTS=${MLECS_CERTS_DIR:-certs}
HOST=${MLECS_SUPERLINK_HOST:-127.0.0.1}
PORT=${MLECS_SUPERLINK_PORT:-9093}
DB=${MLECS_SUPERLINK_DB:-${FLWR_HOME:-$HOME/.flwr}/superlink/state.db}
PID_FILE=${MLECS_PID_FILE:-}
DAEMON=${MLECS_DAEMON:-0}
LOG_FILE=${MLECS_LOG_FILE:-}
WAIT=${MLECS_WAIT_SECONDS:-60}
EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --certs) CERTS=$2; shift 2 ;;
        --host) HOST=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --database) DB=$2; shift 2 ;;
        --pid-file) PID_FILE=$2; shift 2 ;;
        --daemon) DAEMON=1; shift ;;
        --log-file) LOG_FILE=$2; shift 2 ;;
        --wait) WAIT=$2; shift 2 ;;
        -h | --help) usage 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done

need_cmd flower-superlink
for f in ca.crt server.pem server.key; do
    need_file "TLS file" "$CERTS/$f"
done
CERTS=$(cd "$CERTS" && pwd)
[[ "$PORT" =~ ^[0-9]+$ ]] || die "port must be a number, got '$PORT'"
mkdir -p "$(dirname "$DB")"
DB=$(abspath "$DB")
for f in "$DB" "$DB-journal" "$DB-wal" "$DB-shm"; do
    [[ ! -e "$f" ]] || chmod 600 "$f"  # written before, under a looser umask
done

case $HOST in
    127.* | localhost | ::1) ;;
    *) say "WARNING: the Control API (flwr run/ls, key registration) is reachable on $HOST:$PORT;" \
        "bind 127.0.0.1 and expose deploy/start_fleet_proxy.sh to edge boxes instead" ;;
esac
say "SuperLink on https://$HOST:$PORT (TLS, SuperNode auth on, runtime installs off), state $DB"
launch "$PID_FILE" "$LOG_FILE" "$DAEMON" \
    flower-superlink \
    --ssl-ca-certfile "$CERTS/ca.crt" \
    --ssl-certfile "$CERTS/server.pem" \
    --ssl-keyfile "$CERTS/server.key" \
    --enable-supernode-auth \
    --disable-runtime-dependency-installation \
    --database "$DB" \
    --host "$HOST" \
    --port "$PORT" \
    ${EXTRA[@]+"${EXTRA[@]}"}

# --daemon: wait until the SuperLink answers on /health
probe_host=$HOST
[[ "$HOST" == "0.0.0.0" || "$HOST" == "::" ]] && probe_host=127.0.0.1
for ((t = 0; t < WAIT; t++)); do
    kill -0 "$LAUNCHED_PID" 2>/dev/null || die "SuperLink exited; see $LOG_FILE"
    if python3 - "$probe_host" "$PORT" "$CERTS/ca.crt" <<'EOF' 2>/dev/null; then
import ssl, sys, urllib.request
host, port, ca = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
urllib.request.urlopen(f"https://{host}:{port}/health", context=ctx, timeout=2)
EOF
        say "SuperLink healthy on port $PORT"
        exit 0
    fi
    sleep 1
done
die "SuperLink not healthy after ${WAIT}s; see $LOG_FILE"
