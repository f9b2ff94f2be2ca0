#!/usr/bin/env bash
# Create the TLS and SuperNode-authentication material for a deployment.
#
#   deploy/gen_certs.sh OUT_DIR NUM_SUPERNODES [SAN ...]
#
# Writes into OUT_DIR:
#   ca.key, ca.crt              certificate authority (ca.crt goes to every box)
#   server.key, server.pem      SuperLink certificate signed by the CA, with SANs
#                               localhost, 127.0.0.1 and every SAN given
#   keys/supernode-<i>          EC P-384 private key of SuperNode i (OpenSSH format;
#                               copy it to edge box i only)
#   keys/supernode-<i>.pub      its public key (register it on the SuperLink)
#
# A SAN is a host name (DNS) or an IPv4/IPv6 address (IP), e.g.
#   deploy/gen_certs.sh certs 3 superlink.example.org 203.0.113.7
#
# Re-running is safe: the CA and existing node keys are kept (so registered keys
# stay valid); missing node keys are added; the server certificate is re-issued
# only when missing or when the SAN list changed. Set FORCE=1 to start over.
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-2}"
}

[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && usage 0
[[ $# -ge 2 ]] || usage
OUT_DIR=$1
NUM_NODES=$2
shift 2
[[ "$NUM_NODES" =~ ^[0-9]+$ ]] || { echo "error: NUM_SUPERNODES must be an integer, got '$NUM_NODES'" >&2; usage; }
command -v openssl >/dev/null || { echo "error: openssl not found" >&2; exit 1; }
if [[ "$NUM_NODES" -gt 0 ]]; then
    command -v ssh-keygen >/dev/null || { echo "error: ssh-keygen not found (package openssh-client)" >&2; exit 1; }
fi

CA_DAYS=${CA_DAYS:-3650}
CERT_DAYS=${CERT_DAYS:-825}

if [[ "${FORCE:-0}" == "1" && -d "$OUT_DIR" ]]; then
    echo "FORCE=1: removing old material in $OUT_DIR"
    rm -f "$OUT_DIR"/ca.* "$OUT_DIR"/server.* "$OUT_DIR"/keys/supernode-*
fi
mkdir -p "$OUT_DIR/keys"
chmod 700 "$OUT_DIR/keys"
umask 077

# --- SAN list: always localhost and 127.0.0.1, then the given ones, deduplicated
sans=("DNS:localhost" "IP:127.0.0.1")
for name in "$@"; do
    if [[ "$name" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$name" == *:* ]]; then
        entry="IP:$name"
    else
        entry="DNS:$name"
    fi
    [[ " ${sans[*]} " == *" $entry "* ]] || sans+=("$entry")
done
san_line=$(IFS=,; echo "${sans[*]}")

# --- CA
if [[ -s "$OUT_DIR/ca.key" && -s "$OUT_DIR/ca.crt" ]]; then
    echo "keeping CA $OUT_DIR/ca.crt"
else
    echo "creating CA $OUT_DIR/ca.crt"
    openssl req -x509 -new -newkey rsa:4096 -nodes -sha256 -days "$CA_DAYS" \
        -subj "/CN=ML-ECS Flower CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$OUT_DIR/ca.key" -out "$OUT_DIR/ca.crt" 2>/dev/null
    rm -f "$OUT_DIR/server.pem"  # a new CA invalidates the old server certificate
fi

# --- SuperLink certificate
if [[ -s "$OUT_DIR/server.pem" && -s "$OUT_DIR/server.key" \
      && "$(cat "$OUT_DIR/server.sans" 2>/dev/null)" == "$san_line" ]]; then
    echo "keeping SuperLink certificate $OUT_DIR/server.pem ($san_line)"
else
    echo "issuing SuperLink certificate $OUT_DIR/server.pem for $san_line"
    ext=$(mktemp)
    trap 'rm -f "$ext" "$OUT_DIR/server.csr"' EXIT
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" \
        "subjectAltName=$san_line" >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=mlecs-superlink" \
        -keyout "$OUT_DIR/server.key" -out "$OUT_DIR/server.csr" 2>/dev/null
    openssl x509 -req -in "$OUT_DIR/server.csr" -CA "$OUT_DIR/ca.crt" -CAkey "$OUT_DIR/ca.key" \
        -CAcreateserial -days "$CERT_DAYS" -sha256 -extfile "$ext" \
        -out "$OUT_DIR/server.pem" 2>/dev/null
    echo "$san_line" >"$OUT_DIR/server.sans"
fi
chmod 644 "$OUT_DIR/ca.crt" "$OUT_DIR/server.pem"

# --- one EC key pair per SuperNode (partition ids 0 .. N-1)
for ((i = 0; i < NUM_NODES; i++)); do
    key="$OUT_DIR/keys/supernode-$i"
    if [[ -s "$key" && -s "$key.pub" ]]; then
        echo "keeping SuperNode key $key"
    else
        echo "creating SuperNode key $key"
        rm -f "$key" "$key.pub"
        ssh-keygen -q -t ecdsa -b 384 -N "" -C "mlecs-supernode-$i" -f "$key"
        chmod 644 "$key.pub"
    fi
done

echo "done: CA $OUT_DIR/ca.crt, SuperLink $OUT_DIR/server.pem, $NUM_NODES SuperNode key(s) in $OUT_DIR/keys"
