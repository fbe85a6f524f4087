#!/usr/bin/env bash
# openssl s_server -Verify (client certificate required and verified)
# accepts the agent-backed client, through mtls-agentctl connect and
# through an unmodified openssl s_client loading the mtls-agent provider;
# it refuses a certificate from another CA and an expired one with a TLS
# alert, which mtls-agentctl reports as such.  Also: an IPv6 loopback
# server; a server certificate for another name is refused by the client.
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
# Both provider orders (the README's mtls-agent first, the man page's default
# first) x TLS 1.2 and 1.3 x EC and RSA client keys x ECDSA and RSA server
# certificates, each server also with ECDHE over P-384/P-256 (libssl then
# makes its ephemeral EC keys through whichever "EC" key management it
# fetched first: ours when mtls-agent is loaded first).
openssl genrsa -out "$D/rsa-server.key" 2048 >/dev/null 2>&1 &&
	openssl pkey -in "$D/rsa-server.key" -pubout -out "$D/rsa-server.pub.pem" 2>/dev/null &&
	"$MKCERT" issue --ca-cert "$D/ca.pem" --ca-key "$D/ca.key" --pubkey "$D/rsa-server.pub.pem" \
		--subj "/O=mtls-agent tests/CN=localhost" --san DNS:localhost,IP:127.0.0.1 \
		--eku serverAuth --out "$D/rsa-server.pem" >/dev/null 2>&1 ||
	it_die "RSA server certificate failed"

# s_client_check KEY ORDER VERSION SERVER PORT TEMPKEY: one handshake; TEMPKEY
# (if not empty) must start the "Server Temp Key:" line of s_client -brief.
s_client_check() {
	local k=$1 order=$2 ver=$3 srv=$4 port=$5 temp=$6 proto name
	proto=TLSv1.${ver#-tls1_}
	name="openssl s_client $order $ver -key mtls-agent:$k-tls12, $srv server"
	it_run sh -c 'printf "GET / HTTP/1.0\r\n\r\n" | openssl s_client \
		-provider-path "$1" $5 $6 -cert "$2/$3.pem" -key "mtls-agent:$3-tls12" \
		-CAfile "$2/ca.pem" -verify_return_error -verify_hostname localhost \
		-connect "127.0.0.1:$4" -quiet -brief' sh "$MTLS_PROVIDER_DIR" "$D" "$k" "$port" \
		"$order" "$ver"
	if [ "$IT_STATUS" -ne 0 ]; then
		it_result "$name" 0 "exit status $IT_STATUS"
	elif ! printf '%s\n' "$IT_OUT" | grep -Eq "Subject: O ?= ?mtls-agent tests, CN ?= ?$k client"; then
		it_result "$name" 0 "s_server did not see the client certificate"
	elif ! printf '%s\n' "$IT_ERR" | grep -q "^Protocol version: $proto$"; then
		it_result "$name" 0 "not $proto"
	elif [ -n "$temp" ] && ! printf '%s\n' "$IT_ERR" | grep -q "^Server Temp Key: $temp"; then
		it_result "$name" 0 "no $temp key exchange"
	else
		it_result "$name" 1
	fi
}
if [ -n "${MTLS_PROVIDER_DIR:-}" ]; then
	for srv in ecdsa ecdsa-ecdhe rsa rsa-ecdhe; do
		case $srv in
		ecdsa*) cert=$D/server.pem key=$D/server.key ;;
		rsa*) cert=$D/rsa-server.pem key=$D/rsa-server.key ;;
		esac
		groups=() temp=
		case $srv in
		*-ecdhe) groups=(-groups P-384:P-256) temp="ECDH, " ;;
		esac
		it_server "s_server-$srv" openssl s_server -Verify 1 -verify_return_error \
			-CAfile "$D/ca.pem" -cert "$cert" -key "$key" "${groups[@]}" \
			-accept "127.0.0.1:@PORT@" -www
		for order in "-provider mtls-agent -provider default" \
			"-provider default -provider mtls-agent"; do
			for ver in -tls1_2 -tls1_3; do
				for k in p256 rsa2048; do
					s_client_check "$k" "$order" "$ver" "$srv" "$IT_PORT" "$temp"
				done
			done
		done
	done
else
	it_result "openssl s_client with the provider" 0 "MTLS_PROVIDER_DIR is not set"
fi

# --- IPv6 (libcurl): https://[::1]:PORT/ and [::1]:PORT -----------------------
"$MKCERT" issue --ca-cert "$D/ca.pem" --ca-key "$D/ca.key" --key-out "$D/v6.key" \
	--subj "/O=mtls-agent tests/CN=ip6-localhost" --san IP:::1 --eku serverAuth \
	--out "$D/v6.pem" >/dev/null 2>&1 || it_die "mkcert for ::1 failed"
it_server s_server-v6 openssl s_server -Verify 1 -verify_return_error -CAfile "$D/ca.pem" \
	-cert "$D/v6.pem" -key "$D/v6.key" -accept "[::1]:@PORT@" -www
it_ok "IPv6 loopback URL https://[::1]:PORT/" "$CTL" connect "${CA[@]}" --identity p256 \
	"https://[::1]:$IT_PORT/"
it_match "IPv6: s_server saw the client certificate" \
	"Subject: O ?= ?mtls-agent tests, CN ?= ?p256 client" "$IT_OUT"
it_ok "IPv6 bare handshake [::1]:PORT" "$CTL" connect "${CA[@]}" --identity p256 "[::1]:$IT_PORT"
it_match "IPv6 bare handshake: accepted" "^client certificate verdict: accepted" "$IT_OUT"
it_match "IPv6 bare handshake: the address in brackets" "^connected to \[::1\]:$IT_PORT$" "$IT_OUT"
it_refused "IPv6 without brackets is a usage error" 2 "IPv6 addresses go in brackets" \
	"$CTL" connect "${CA[@]}" --identity p256 "::1:$IT_PORT"

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
