#!/usr/bin/env bash
# Start the Fleet-only reverse proxy (cloud host): the address edge boxes connect to.
#
#   deploy/start_fleet_proxy.sh [options]
#
# Options (environment variable in brackets):
#   --certs DIR        ca.crt, server.pem, server.key from gen_certs.sh   [MLECS_CERTS_DIR, ./certs]
#   --host HOST        address edge boxes connect to                      [MLECS_PROXY_HOST, 0.0.0.0]
#   --port PORT        port edge boxes connect to                         [MLECS_PROXY_PORT, 8000]
#   --upstream H:P     the SuperLink (start_superlink.sh, on 127.0.0.1)   [MLECS_PROXY_UPSTREAM, 127.0.0.1:9093]
#   --pid-file FILE    write the proxy's PID here                         [MLECS_PID_FILE]
#   --daemon           run in the background (own process group), wait
#                      until /health answers through it, then return      [MLECS_DAEMON=1]
#   --log-file FILE    output file with --daemon                          [MLECS_LOG_FILE]
#   --wait SECONDS     how long --daemon waits                            [MLECS_WAIT_SECONDS, 60]
#
# The proxy terminates TLS with the SuperLink's certificate and forwards only
# the Fleet API calls of SuperNodes (and GET /health) to the SuperLink; the
# Control API (flwr run/ls/stop, key registration) and the Runtime API are
# refused with 403. Operators use the SuperLink's own port on the cloud host.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

CERTS=${MLECS_CERTS_DIR:-certs}
HOST=${MLECS_PROXY_HOST:-0.0.0.0}
PORT=${MLECS_PROXY_PORT:-8000}
UPSTREAM=${MLECS_PROXY_UPSTREAM:-127.0.0.1:9093}
PID_FILE=${MLECS_PID_FILE:-}
DAEMON=${MLECS_DAEMON:-0}
LOG_FILE=${MLECS_LOG_FILE:-}
WAIT=${MLECS_WAIT_SECONDS:-60}
while [[ $# -gt 0 ]]; do
    case $1 in
        --certs) CERTS=$2; shift 2 ;;
        --host) HOST=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --upstream) UPSTREAM=$2; shift 2 ;;
        --pid-file) PID_FILE=$2; shift 2 ;;
        --daemon) DAEMON=1; shift ;;
        --log-file) LOG_FILE=$2; shift 2 ;;
        --wait) WAIT=$2; shift 2 ;;
        -h | --help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done

need_cmd python3
python3 -c "import httpx, uvicorn" 2>/dev/null \
    || die "python3 cannot import httpx and uvicorn (activate the project's venv or set MLECS_VENV)"
for f in ca.crt server.pem server.key; do
    need_file "TLS file" "$CERTS/$f"
done
CERTS=$(cd "$CERTS" && pwd)
[[ "$PORT" =~ ^[0-9]+$ ]] || die "port must be a number, got '$PORT'"
[[ "$UPSTREAM" == *:* ]] || die "--upstream must be HOST:PORT (got '$UPSTREAM')"

say "Fleet API proxy on https://$HOST:$PORT -> SuperLink https://$UPSTREAM (Control/Runtime APIs refused)"
launch "$PID_FILE" "$LOG_FILE" "$DAEMON" \
    python3 "$(cd "$(dirname "$0")" && pwd)/fleet_proxy.py" \
    --certs "$CERTS" --host "$HOST" --port "$PORT" --upstream "$UPSTREAM"

# --daemon: wait until /health answers through the proxy (so the SuperLink is up too)
probe_host=$HOST
[[ "$HOST" == "0.0.0.0" || "$HOST" == "::" ]] && probe_host=127.0.0.1
for ((t = 0; t < WAIT; t++)); do
    kill -0 "$LAUNCHED_PID" 2>/dev/null || die "proxy exited; see $LOG_FILE"
    if python3 - "$probe_host" "$PORT" "$CERTS/ca.crt" <<'PY' 2>/dev/null; then
import ssl, sys, urllib.request
host, port, ca = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
urllib.request.urlopen(f"https://{host}:{port}/health", context=ctx, timeout=2)
PY
        say "proxy healthy on port $PORT"
        exit 0
    fi
    sleep 1
done
die "proxy not healthy after ${WAIT}s (is the SuperLink up on $UPSTREAM?); see $LOG_FILE"
