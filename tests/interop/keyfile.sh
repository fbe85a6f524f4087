#!/usr/bin/env bash
# Key files for programs that only take a file name: `mtls-agentctl
# key-file NAME` writes a PEM block naming the identity, and with the
# shipped etc/openssl/mtls-agent.cnf in OPENSSL_CONF, curl (OpenSSL build)
# and python3's urllib log in to nginx ("ssl_verify_client on") with the
# agent's key: the page shows the client DN, the agent's audit log the
# signature with its TLS 1.3 purpose.  Without the provider the file is
# refused, and a malformed block is an error, not another key.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_need_env MTLS_PROVIDER_DIR
it_require nginx curl python3
it_init
it_nginx_start
P13=$NGINX_TLS13
# The snippet exactly as shipped; the module comes from the build tree.
export OPENSSL_MODULES=$MTLS_PROVIDER_DIR
CNF=$top_srcdir/etc/openssl/mtls-agent.cnf

# signed IDENTITY PROGRAM: tls13 signatures the agent logged for PROGRAM
# (the executable's name, as the kernel reports it).
signed() {
	grep -c "audit: sign ok: .* exe=[^ ]*/$2[^/ ]* identity=$1 .*purpose=tls13-client-certificate-verify" \
		"$D/agent.log" || true
}
it_signed() {
	if [ "$(signed "$2" "$3")" -gt "$4" ]; then
		it_result "$1" 1
	else
		it_result "$1" 0 "no new tls13 'sign ok' for $2 by $3 in the agent's log"
	fi
}

for k in p256 rsa2048; do
	it_ok "key-file $k" "$CTL" key-file "$k"
	printf '%s\n' "$IT_OUT" >"$D/$k.key"
	it_match "key-file $k is an MTLS AGENT KEY block" "^-----BEGIN MTLS AGENT KEY-----$" "$IT_OUT"
	it_check "the key file holds no key material" sh -c "! grep -q PRIVATE '$D/$k.key'"

	before=$(signed "$k" curl)
	it_ok "curl --key $k.key" env OPENSSL_CONF="$CNF" curl -sS --cacert "$D/ca.pem" \
		--cert "$D/$k.pem" --key "$D/$k.key" "https://localhost:$P13/"
	it_match "curl $k: nginx saw the client DN" \
		"^dn=<CN=$k client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$IT_OUT"
	it_signed "curl $k: the agent signed (tls13 purpose)" "$k" curl "$before"

	before=$(signed "$k" python3)
	it_ok "python3 urllib with $k.key" env OPENSSL_CONF="$CNF" python3 -c '
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
print(urllib.request.urlopen(sys.argv[4], context=ctx).read().decode(), end="")
' "$D/ca.pem" "$D/$k.pem" "$D/$k.key" "https://localhost:$P13/"
	it_match "python3 $k: nginx saw the client DN" \
		"^dn=<CN=$k client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$IT_OUT"
	it_signed "python3 $k: the agent signed (tls13 purpose)" "$k" python3 "$before"
done

# The certificate from the agent too: one file for --cert and --key.
it_ok "key-file --cert" "$CTL" key-file p384 --cert
printf '%s\n' "$IT_OUT" >"$D/p384.both"
it_ok "curl with one file from the agent" env OPENSSL_CONF="$CNF" curl -sS --cacert "$D/ca.pem" \
	--cert "$D/p384.both" --key "$D/p384.both" "https://localhost:$P13/"
it_match "curl p384: nginx saw the client DN" "^dn=<CN=p384 client,O=mtls-agent tests>" "$IT_OUT"

# Refusals.
it_refused "key-file of an unknown identity" 1 \
	"^mtls-agentctl: key-file: the agent has no identity named 'nosuch'$" "$CTL" key-file nosuch
it_run env -u OPENSSL_CONF OPENSSL_CONF=/dev/null curl -sS --cacert "$D/ca.pem" \
	--cert "$D/p256.pem" --key "$D/p256.key" "https://localhost:$P13/"
it_check "without the provider curl cannot use the key file" test "$IT_STATUS" -ne 0
printf -- '-----BEGIN MTLS AGENT KEY-----\nbm90LWEtdXJp\n-----END MTLS AGENT KEY-----\n' >"$D/bad.key"
it_run env OPENSSL_CONF="$CNF" curl -sS --cacert "$D/ca.pem" --cert "$D/p256.pem" \
	--key "$D/bad.key" "https://localhost:$P13/"
it_check "a key file whose body is not an mtls-agent: URI is refused" test "$IT_STATUS" -ne 0
# A tls13-only identity signs no TLS 1.2 transcript, whoever asks.
it_run env OPENSSL_CONF="$CNF" curl -sS --tlsv1.2 --tls-max 1.2 --cacert "$D/ca.pem" \
	--cert "$D/p256.pem" --key "$D/p256.key" "https://localhost:$NGINX_TLS12_PKCS1/"
it_check "TLS 1.2 with the tls13-only p256 fails" test "$IT_STATUS" -ne 0
it_check "the agent refused the TLS 1.2 purpose" grep -q \
	"sign refused: .* identity=p256 .*purpose=tls12-client-certificate-verify" "$D/agent.log"

it_done
