#!/usr/bin/env bash
# Start a Flower SuperNode (edge box) that connects to the SuperLink over TLS
# and authenticates with its own EC key.
#
#   deploy/start_supernode.sh [options] [-- extra flower-supernode flags]
#
# Options (environment variable in brackets):
#   --superlink HOST:PORT   the SuperLink's address                      [MLECS_SUPERLINK, 127.0.0.1:8000]
#   --ca FILE               CA certificate (ca.crt from gen_certs.sh)    [MLECS_CA_CERT, ./certs/ca.crt]
#   --key FILE              this node's private key (keys/supernode-<i>) [MLECS_NODE_KEY]
#   --partition-id I        this device's data partition                 [MLECS_PARTITION_ID]
#   --num-partitions N      number of partitions in the federation       [MLECS_NUM_PARTITIONS]
#   --modalities LIST       optional: modalities this device holds, e.g. acc,gyro [MLECS_MODALITIES]
#   --profile NAME          optional: the box's device profile, conf/profiles/NAME.toml
#                           (e.g. sbc-2gb, sbc-8gb, jetson-orin, phone)  [MLECS_PROFILE]
#   --state-dir DIR         optional: keep device state on disk so it survives a
#                           SuperNode restart                            [MLECS_STATE_DIR]
#   --node-config "k=v .."  optional: more node config (TOML values)     [MLECS_NODE_CONFIG_EXTRA]
#   --no-warm-worker        start a fresh process per message instead of keeping the
#                           device in a warm worker (client_app/worker.py) [MLECS_WARM_WORKER=0]
#   --worker-idle SECONDS   a warm worker exits after this long without a message
#                                                                        [MLECS_WORKER_IDLE, 900]
#   --port PORT             local ClientAppIo (Runtime API) port on 127.0.0.1; every
#                           SuperNode on one host needs its own          [MLECS_CLIENTAPPIO_PORT, 9094 + partition id]
#   --pid-file FILE         write the SuperNode's PID here               [MLECS_PID_FILE]
#   --daemon                run in the background (own process group)    [MLECS_DAEMON=1]
#   --log-file FILE         output file with --daemon                    [MLECS_LOG_FILE]
#
# Without --key the key keys/supernode-<partition-id> next to the CA file is used.
# --superlink is the Fleet proxy (deploy/start_fleet_proxy.sh, port 8000), not the
# SuperLink's own loopback port. The SuperNode exits with code 305 ("could not
# establish a connection") when its key is not registered, and also when it is
# restarted within about a minute of dying without a clean stop (the SuperLink
# still counts the old one online); restart it again after that (systemd does).
# Flower's --trusted-entities (run only signed apps) cannot be used with apps
# submitted by `flwr run .` in Flower 1.42: see deploy/README.md.
# What the node writes (--state-dir: the device's private state) is private to
# this user (umask 077). Stop SuperNodes before the SuperLink: deploy/stop.sh.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
umask 077

SUPERLINK=${MLECS_SUPERLINK:-127.0.0.1:8000}
CA=${MLECS_CA_CERT:-certs/ca.crt}
KEY=${MLECS_NODE_KEY:-}
PARTITION_ID=${MLECS_PARTITION_ID:-}
NUM_PARTITIONS=${MLECS_NUM_PARTITIONS:-}
MODALITIES=${MLECS_MODALITIES:-}
PROFILE=${MLECS_PROFILE:-}
STATE_DIR=${MLECS_STATE_DIR:-}
NODE_CONFIG_EXTRA=${MLECS_NODE_CONFIG_EXTRA:-}
WARM_WORKER=${MLECS_WARM_WORKER:-1}
WORKER_IDLE=${MLECS_WORKER_IDLE:-900}
PORT=${MLECS_CLIENTAPPIO_PORT:-}
PID_FILE=${MLECS_PID_FILE:-}
DAEMON=${MLECS_DAEMON:-0}
LOG_FILE=${MLECS_LOG_FILE:-}
EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --superlink) SUPERLINK=$2; shift 2 ;;
        --ca) CA=$2; shift 2 ;;
        --key) KEY=$2; shift 2 ;;
        --partition-id) PARTITION_ID=$2; shift 2 ;;
        --num-partitions) NUM_PARTITIONS=$2; shift 2 ;;
        --modalities) MODALITIES=$2; shift 2 ;;
        --profile) PROFILE=$2; shift 2 ;;
        --state-dir) STATE_DIR=$2; shift 2 ;;
        --node-config) NODE_CONFIG_EXTRA=$2; shift 2 ;;
        --no-warm-worker) WARM_WORKER=0; shift ;;
        --worker-idle) WORKER_IDLE=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --pid-file) PID_FILE=$2; shift 2 ;;
        --daemon) DAEMON=1; shift ;;
        --log-file) LOG_FILE=$2; shift 2 ;;
        -h | --help) usage 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done

need_cmd flower-supernode
[[ "$PARTITION_ID" =~ ^[0-9]+$ ]] || die "--partition-id must be a number (got '$PARTITION_ID')"
[[ "$NUM_PARTITIONS" =~ ^[0-9]+$ ]] || die "--num-partitions must be a number (got '$NUM_PARTITIONS')"
((PARTITION_ID < NUM_PARTITIONS)) || die "partition id $PARTITION_ID >= num-partitions $NUM_PARTITIONS"
[[ -n "$PORT" ]] || PORT=$((9094 + PARTITION_ID))
[[ "$PORT" =~ ^[0-9]+$ ]] || die "--port must be a number (got '$PORT')"
[[ "$SUPERLINK" == *:* ]] || die "--superlink must be HOST:PORT (got '$SUPERLINK')"
need_file "CA certificate" "$CA"
[[ -n "$KEY" ]] || KEY="$(dirname "$CA")/keys/supernode-$PARTITION_ID"
need_file "SuperNode private key" "$KEY"
CA=$(abspath "$CA") KEY=$(abspath "$KEY")

# Node config: TOML values, strings quoted (see client_app.app.identity_from_node_config).
node_config="partition-id=$PARTITION_ID num-partitions=$NUM_PARTITIONS"
if [[ -n "$MODALITIES" ]]; then
    [[ "$MODALITIES" =~ ^[A-Za-z0-9_,[:space:]-]+$ ]] || die "bad --modalities '$MODALITIES'"
    node_config+=" modalities=\"$MODALITIES\""
fi
if [[ -n "$PROFILE" ]]; then
    profiles="$(cd "$(dirname "$0")/.." && pwd)/conf/profiles"
    [[ "$PROFILE" =~ ^[a-z0-9][a-z0-9-]*$ && -f "$profiles/$PROFILE.toml" ]] \
        || die "unknown --profile '$PROFILE' (known: $(cd "$profiles" && ls -- *.toml | sed 's/\.toml$//' | tr '\n' ' '))"
    node_config+=" profile=\"$PROFILE\""
fi
if [[ -n "$STATE_DIR" ]]; then
    mkdir -p "$STATE_DIR"
    node_config+=" state-dir=\"$(cd "$STATE_DIR" && pwd)\""
fi
if [[ "$WARM_WORKER" == "1" ]]; then
    [[ "$WORKER_IDLE" =~ ^[0-9]+$ ]] || die "--worker-idle must be a number of seconds (got '$WORKER_IDLE')"
    node_config+=" warm-worker=true warm-worker-idle=$WORKER_IDLE"
fi
[[ -z "$NODE_CONFIG_EXTRA" ]] || node_config+=" $NODE_CONFIG_EXTRA"

say "SuperNode partition $PARTITION_ID/$NUM_PARTITIONS -> https://$SUPERLINK (key $KEY, ClientAppIo port $PORT)"
launch "$PID_FILE" "$LOG_FILE" "$DAEMON" \
    flower-supernode \
    --root-certificates "$CA" \
    --auth-supernode-private-key "$KEY" \
    --superlink "$SUPERLINK" \
    --port "$PORT" \
    --node-config "$node_config" \
    ${EXTRA[@]+"${EXTRA[@]}"}
