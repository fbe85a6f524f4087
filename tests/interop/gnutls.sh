#!/usr/bin/env bash
# A second TLS stack: gnutls-serv requiring and verifying a client
# certificate accepts the agent-backed client in TLS 1.3 (RSA-PSS and
# ECDSA), and refuses a certificate from another CA.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_init gnutls-serv
CA=(--ca-file "$D/ca.pem")

it_server gnutls-serv gnutls-serv --http --require-client-cert --verify-client-cert \
	--x509cafile "$D/ca.pem" --x509certfile "$D/server.pem" --x509keyfile "$D/server.key" \
	-p @PORT@
PORT=$IT_PORT

for k in rsa2048 rsa3072 p256 p384; do
	it_ok "gnutls-serv TLS 1.3 $k" "$CTL" connect -v "${CA[@]}" --identity "$k" --tls1.3 \
		"https://localhost:$PORT/"
	it_match "gnutls-serv saw the $k certificate" "CN=$k client" "$IT_OUT"
	it_match "gnutls-serv $k session is TLS 1.3" "^\* protocol: TLSv1.3$" "$IT_ERR"
done
it_ok "gnutls-serv TLS 1.2 p256-tls12" "$CTL" connect "${CA[@]}" --identity p256-tls12 \
	--tls1.2 "https://localhost:$PORT/"
it_refused "gnutls-serv refuses a certificate from another CA" 1 \
	"^mtls-agentctl: connect: server rejected the client certificate: " \
	"$CTL" connect "${CA[@]}" --identity p256-wrongca "https://localhost:$PORT/"

it_done
