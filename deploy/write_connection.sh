#!/usr/bin/env bash
# Add (or replace) a SuperLink connection in the Flower CLI configuration.
#
#   deploy/write_connection.sh NAME HOST:PORT CA_CERT [--default]
#
# Writes to ${FLWR_HOME:-~/.flwr}/config.toml:
#   [superlink.NAME]
#   address = "HOST:PORT"
#   root-certificates = "/absolute/path/to/ca.crt"
# --default also makes NAME the connection used when `flwr` gets none.
# Then use it as `flwr run . NAME`, `flwr ls NAME`, `flwr supernode register KEY.pub NAME`.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && usage 0
[[ $# -ge 3 ]] || usage
NAME=$1 ADDRESS=$2 CA=$3
MAKE_DEFAULT=0
[[ "${4:-}" == "--default" ]] && MAKE_DEFAULT=1
[[ "$NAME" =~ ^[A-Za-z0-9_-]+$ ]] || die "connection name must be letters, digits, - or _: '$NAME'"
[[ "$ADDRESS" == *:* ]] || die "address must be HOST:PORT, got '$ADDRESS'"
need_file "CA certificate" "$CA"
need_cmd flwr
CA=$(abspath "$CA")

CONFIG="${FLWR_HOME:-$HOME/.flwr}/config.toml"
if [[ ! -f "$CONFIG" ]]; then
    flwr config list >/dev/null  # lets Flower create its default config.toml
fi
need_file "Flower config" "$CONFIG"

tmp=$(mktemp "$CONFIG.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# Drop an old [superlink.NAME] table (and its sub-tables), then append the new one.
awk -v name="$NAME" -v dflt="$MAKE_DEFAULT" '
    /^[[:space:]]*\[/ {
        hdr = $0; gsub(/[[:space:]]/, "", hdr)
        skip = (hdr == "[superlink." name "]" || index(hdr, "[superlink." name ".") == 1)
        top = (hdr == "[superlink]")
    }
    top && dflt == "1" && /^[[:space:]]*default[[:space:]]*=/ { print "default = \"" name "\""; next }
    !skip { print }
' "$CONFIG" >"$tmp"
# Remove trailing blank lines before appending.
sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$tmp"
printf '\n[superlink.%s]\naddress = "%s"\nroot-certificates = "%s"\n' "$NAME" "$ADDRESS" "$CA" >>"$tmp"
mv "$tmp" "$CONFIG"
trap - EXIT
say "connection '$NAME' -> $ADDRESS (CA $CA) written to $CONFIG"
