#!/bin/sh
# Makes a test CA, a server certificate (SANs DNS:localhost, DNS:tls-server,
# IP:127.0.0.1) and a client certificate for mutual TLS, with openssl only.
#
#   ./certs.sh [--force] [DIR]      DIR defaults to certs/
#
# Existing files are kept unless --force. Private keys are mode 0600.
set -eu

usage() { echo "usage: $0 [--force] [DIR]" >&2; }

force=0
dir=certs
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "certs.sh: unknown option $arg" >&2; usage; exit 2 ;;
    *) dir=$arg ;;
  esac
done

command -v openssl >/dev/null 2>&1 || { echo "certs.sh: openssl is required" >&2; exit 1; }
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# new_key PATH: an EC P-256 private key, readable by the owner only.
new_key() {
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null)
  chmod 600 "$1"
}

# issue NAME CN EXTENSIONS: a certificate signed by the CA.
issue() {
  new_key "$dir/$1.key"
  openssl req -new -key "$dir/$1.key" -subj "/O=tlslog/CN=$2" -out "$tmp/$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 825 -sha256 -extfile "$tmp/$1.ext" -out "$dir/$1.crt" 2>/dev/null
  echo "certs.sh: made $dir/$1.crt and $dir/$1.key"
}

new_ca=0
if [ "$force" = 1 ] || [ ! -f "$dir/ca.crt" ] || [ ! -f "$dir/ca.key" ]; then
  new_key "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -subj "/O=tlslog/CN=tlslog test CA" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.crt" 2>/dev/null
  echo "certs.sh: made $dir/ca.crt and $dir/ca.key"
  new_ca=1
else
  echo "certs.sh: kept $dir/ca.crt"
fi

# A new CA invalidates certificates issued by the old one.
if [ "$new_ca" = 1 ] || [ ! -f "$dir/server.crt" ] || [ ! -f "$dir/server.key" ]; then
  issue server localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:tls-server,IP:127.0.0.1"
else
  echo "certs.sh: kept $dir/server.crt"
fi

if [ "$new_ca" = 1 ] || [ ! -f "$dir/client.crt" ] || [ ! -f "$dir/client.key" ]; then
  issue client tlslog-client "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:tlslog-client"
else
  echo "certs.sh: kept $dir/client.crt"
fi
