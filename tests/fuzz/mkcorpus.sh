#!/bin/sh
# mkcorpus.sh DIR: (re)writes the fuzz seed corpora under DIR (normally
# tests/fuzz/corpus in the source tree; `make fuzz-corpus` runs this).
#
#   fuzz_msg, fuzz_msg_p11, fuzz_frame,
#   fuzz_purpose, fuzz_dispatch         encoded by the real codecs (mkcorpus)
#   fuzz_config                         the example configuration and variants
#   fuzz_usermap                        the test fixture's certificates (DER)
#                                       and a few with e-mail, UPN and UID names
# Files named regress-* (inputs a fuzzer once failed on, kept as
# regression tests) are left in place.
#
# Environment: MKCORPUS (default: mkcorpus next to this script, in the
# build tree), MKCERT and the fixture's needs (see softhsm-setup.sh).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
out=$1
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
MKCORPUS=${MKCORPUS:-./tests/fuzz/mkcorpus}
[ -x "$MKCORPUS" ] || { echo "$0: $MKCORPUS not built (make tests/fuzz/mkcorpus)" >&2; exit 1; }

mkdir -p "$out"
# Inputs named regress-* (ones a fuzzer once found) are kept.
for t in fuzz_msg fuzz_msg_p11 fuzz_frame fuzz_purpose fuzz_config fuzz_dispatch; do
	[ -d "$out/$t" ] && find "$out/$t" -type f ! -name 'regress-*' -exec rm -f {} +
done
"$MKCORPUS" "$out"

# --- configuration -------------------------------------------------------
c=$out/fuzz_config
mkdir -p "$c"
cp "$top/etc/mtls-agent.conf.example" "$c/example.conf"
cat >"$c/minimal.conf" <<'CONF'
module = /usr/lib/softhsm/libsofthsm2.so
token = pkcs11:token=mtls-test
CONF
cat >"$c/all-keys.conf" <<'CONF'
socket = "/run/user/1000/mtls agent.sock"
module = /usr/lib/softhsm/libsofthsm2.so
token = pkcs11:token=mtls-test
purposes = tls13, tls12, pam, raw-digest
login-timeout = 28800
allow-root = no
max-connections = 256
request-timeout = 10000
log-level = debug

[identity p256]
key = pkcs11:token=mtls-test;id=%03;type=private
certificate = /etc/mtls-agent/p256.pem
chain = /etc/mtls-agent/chain.pem
pin-file = /etc/mtls-agent/pin
purposes = tls13-client-certificate-verify, pam-challenge

[identity rsa.2048_x]
key = pkcs11:token=mtls-test;object=rsa2048
CONF
printf 'module = /m.so\r\n[identity a]\r\nkey = pkcs11:id=%%01\r\n' >"$c/crlf.conf"
printf '[identity a]\nkey = pkcs11:id=%%01;pin-value=1234\n' >"$c/pin-value.conf"

# --- certificates --------------------------------------------------------
u=$out/fuzz_usermap
if [ -n "${MKCERT:-}" ] || [ -x ./tests/fixtures/mkcert ]; then
	export MKCERT=${MKCERT:-$(pwd)/tests/fixtures/mkcert}
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	[ -d "$u" ] && find "$u" -type f ! -name 'regress-*' -exec rm -f {} +
	mkdir -p "$u" "$tmp/fx"
	"$top/tests/fixtures/softhsm-setup.sh" "$tmp/fx" >/dev/null
	for pem in ca server p256 rsa2048 p256-expired p256-noeku p256-wrongca; do
		openssl x509 -in "$tmp/fx/$pem.pem" -outform DER -out "$u/$pem.der"
	done
	# Names usermap matches on: e-mail and UPN SANs, the UID attribute.
	openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/k.pem" 2>/dev/null
	openssl req -new -x509 -key "$tmp/k.pem" -days 3650 -outform DER \
		-subj "/CN=alice/UID=alice/emailAddress=alice@example.org" \
		-addext "subjectAltName=email:alice@example.org,otherName:1.3.6.1.4.1.311.20.2.3;UTF8:alice@EXAMPLE.ORG" \
		-addext "extendedKeyUsage=clientAuth" -out "$u/alice-names.der"
	openssl req -new -x509 -key "$tmp/k.pem" -days 3650 -outform DER \
		-subj "/O=Example/CN=bob/CN=mallory" -out "$u/two-cns.der"
fi
echo "seeds written to $out"
