#!/usr/bin/env bash
# Register SuperNode public keys with the SuperLink (run where the `flwr` CLI is).
#
#   deploy/register_nodes.sh [options] KEY.pub|KEYS_DIR ...
#
# Options (environment variable in brackets):
#   --connection NAME   connection in ${FLWR_HOME:-~/.flwr}/config.toml   [MLECS_CONNECTION, mlecs]
#   --address HOST:PORT write/replace that connection first (needs --ca) [MLECS_SUPERLINK_ADDRESS]
#   --ca FILE           CA certificate for --address                      [MLECS_CA_CERT]
#
# A directory stands for every *.pub file in it. A key that is already
# registered is reported and skipped. Only SuperNodes whose key is registered
# can connect (the SuperLink runs with --enable-supernode-auth). Example:
#   deploy/register_nodes.sh --address 127.0.0.1:9093 --ca certs/ca.crt certs/keys
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

CONNECTION=${MLECS_CONNECTION:-mlecs}
ADDRESS=${MLECS_SUPERLINK_ADDRESS:-}
CA=${MLECS_CA_CERT:-}
KEYS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --connection) CONNECTION=$2; shift 2 ;;
        --address) ADDRESS=$2; shift 2 ;;
        --ca) CA=$2; shift 2 ;;
        -h | --help) usage 0 ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *)
            if [[ -d "$1" ]]; then
                shopt -s nullglob
                found=("$1"/*.pub)
                shopt -u nullglob
                [[ ${#found[@]} -gt 0 ]] || die "no *.pub files in $1"
                KEYS+=("${found[@]}")
            else
                need_file "public key" "$1"
                KEYS+=("$1")
            fi
            shift ;;
    esac
done
[[ ${#KEYS[@]} -gt 0 ]] || usage
need_cmd flwr

if [[ -n "$ADDRESS" ]]; then
    [[ -n "$CA" ]] || die "--address needs --ca"
    "$(dirname "$0")/write_connection.sh" "$CONNECTION" "$ADDRESS" "$CA"
fi

failed=0
for key in "${KEYS[@]}"; do
    say "registering $key on '$CONNECTION'"
    if out=$(flwr supernode register "$key" "$CONNECTION" 2>&1); then
        echo "$out" | grep -i "registered" || echo "$out"
    elif grep -qi "already in use" <<<"$out"; then
        say "$key is already registered"
    else
        echo "$out" >&2
        say "FAILED to register $key"
        failed=1
    fi
done
[[ $failed -eq 0 ]] || die "some keys were not registered"
say "done; check with: flwr supernode list $CONNECTION"
