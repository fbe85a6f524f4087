#!/usr/bin/env bash
# openssl s_server -Verify (client certificate required and verified)
# accepts the agent-backed client, through mtls-agentctl connect and
# through an unmodified openssl s_client loading the mtls-agent provider;
# it refuses a certificate from another CA and an expired one with a TLS
# alert, which mtls-agentctl reports as such.  Also: a server certificate
# for another name is refused by the client.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_init openssl
CA=(--ca-file "$D/ca.pem")

start_s_server() {
	local name=$1 cert=$2 key=$3
	it_server "$name" openssl s_server -Verify 1 -verify_return_error -CAfile "$D/ca.pem" \
		-cert "$cert" -key "$key" -accept "127.0.0.1:@PORT@" -www
}
start_s_server s_server "$D/server.pem" "$D/server.key"
PORT=$IT_PORT

# --- mtls-agentctl connect ----------------------------------------------------
for k in rsa2048 rsa3072 p256 p384; do
	it_ok "s_server TLS 1.3 $k via connect" "$CTL" connect "${CA[@]}" --identity "$k" \
		"https://localhost:$PORT/"
	it_match "s_server saw the $k client certificate" \
		"Subject: O ?= ?mtls-agent tests, CN ?= ?$k client" "$IT_OUT"
done
for k in rsa2048 p256; do
	it_ok "s_server TLS 1.2 $k-tls12 via connect" "$CTL" connect "${CA[@]}" --identity "$k-tls12" \
		--tls1.2 "https://localhost:$PORT/"
	it_match "s_server TLS 1.2 session with $k" "Protocol *: TLSv1.2" "$IT_OUT"
done
it_ok "s_server bare handshake" "$CTL" connect "${CA[@]}" --identity p256 "localhost:$PORT"
it_match "s_server bare handshake: accepted" "^client certificate verdict: accepted" "$IT_OUT"

# --- the server refuses with an alert ---------------------------------------
it_refused "s_server refuses a certificate from another CA" 1 \
	"^mtls-agentctl: connect: server rejected the client certificate: unknown CA$" \
	"$CTL" connect "${CA[@]}" --identity p256-wrongca "https://localhost:$PORT/"
it_refused "s_server refuses an expired certificate" 1 \
	"^mtls-agentctl: connect: server rejected the client certificate: certificate expired$" \
	"$CTL" connect "${CA[@]}" --identity p256-expired "https://localhost:$PORT/"
it_refused "s_server refuses another CA (bare handshake)" 1 \
	"^mtls-agentctl: connect: server rejected the client certificate: unknown CA$" \
	"$CTL" connect "${CA[@]}" --identity p256-wrongca "localhost:$PORT"
it_refused "s_server refuses a certificate from another CA in TLS 1.2" 1 \
	"^mtls-agentctl: connect: server rejected the client certificate: unknown CA$" \
	"$CTL" connect "${CA[@]}" --tls1.2 --identity p256-wrongca "https://localhost:$PORT/"

# --- unmodified openssl s_client with the provider ----------------------------
# The order of the issue (mtls-agent first, then default), and the reverse.
s_client_check() {
	local k=$1 order=$2
	it_run sh -c 'printf "GET / HTTP/1.0\r\n\r\n" | openssl s_client \
		-provider-path "$1" $5 -cert "$2/$3.pem" -key "mtls-agent:$3" \
		-CAfile "$2/ca.pem" -verify_return_error -verify_hostname localhost \
		-connect "127.0.0.1:$4" -quiet' sh "$MTLS_PROVIDER_DIR" "$D" "$k" "$PORT" "$order"
	if [ "$IT_STATUS" -eq 0 ] && printf '%s\n' "$IT_OUT" |
		grep -Eq "Subject: O ?= ?mtls-agent tests, CN ?= ?$k client"; then
		it_result "openssl s_client $order -key mtls-agent:$k" 1
	else
		it_result "openssl s_client $order -key mtls-agent:$k" 0 \
			"exit status $IT_STATUS, or s_server did not see the certificate"
	fi
}
if [ -n "${MTLS_PROVIDER_DIR:-}" ]; then
	for k in p256 rsa2048; do
		s_client_check "$k" "-provider mtls-agent -provider default"
	done
	s_client_check p256 "-provider default -provider mtls-agent"
else
	it_result "openssl s_client with the provider" 0 "MTLS_PROVIDER_DIR is not set"
fi

# --- a server certificate for another name ------------------------------------
"$MKCERT" issue --ca-cert "$D/ca.pem" --ca-key "$D/ca.key" --key-out "$D/wrong.key" \
	--subj "/CN=wrong.example" --san DNS:wrong.example --eku serverAuth \
	--out "$D/wrong.pem" >/dev/null 2>&1 || it_die "mkcert for wrong.example failed"
start_s_server s_server-wrongname "$D/wrong.pem" "$D/wrong.key"
it_refused "server certificate for another host name" 1 \
	"^mtls-agentctl: connect: server certificate does not match host localhost$" \
	"$CTL" connect "${CA[@]}" --identity p256 "https://localhost:$IT_PORT/"
it_refused "server certificate for another IP address" 1 \
	"^mtls-agentctl: connect: server certificate does not match host 127.0.0.1$" \
	"$CTL" connect "${CA[@]}" --identity p256 "https://127.0.0.1:$IT_PORT/"

it_done
