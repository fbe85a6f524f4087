#!/usr/bin/env bash
# TLS destination binding ("servers =", src/agent/dest.c) with nginx servers
# on loopback ("ssl_verify_client on") and an unmodified openssl s_client
# through the provider (TLS 1.2), plus mtls-agentctl connect (TLS 1.2 and
# 1.3): a bound identity reaches the allowed server (nginx answers with the
# client DN it verified), and the agent refuses, with the reason in its
# audit log and no CertificateVerify sent (nginx saw no client
# certificate), toward a server from another CA, a name not in the list, a
# pinned server with another key, an RSA key exchange and TLS 1.3 (whose
# transcript the provider cannot supply).  A proxy between client and
# server records, tampers with and replays TLS 1.2 handshakes (see there
# for what the real client does).  The client here
# checks nothing about the server (no -verify_return_error): the agent's
# check is the one that holds.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

# SHA-256 of a certificate's SubjectPublicKeyInfo, base64.
spki_pin() {
	openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform DER |
		openssl dgst -sha256 -binary | base64
}

it_extra_conf() {
	local id key=pkcs11:token=$MTLS_TEST_TOKEN\;id=%03\;type=private
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
		-out "$IT_DIR/stranger.key" 2>/dev/null || it_die "genpkey failed"
	openssl pkey -in "$IT_DIR/stranger.key" -pubout -outform DER 2>/dev/null |
		openssl dgst -sha256 -binary | base64 >"$IT_DIR/stranger.pin"
	for id in bound pinned pinned-other othername; do
		echo
		echo "[identity p256-$id]"
		echo "key = $key"
		echo "certificate = $IT_DIR/p256.pem"
		echo "purposes = tls12, tls13"
		case $id in
		bound) echo "servers = localhost ca=$IT_DIR/ca.pem" ;;
		pinned) echo "servers = localhost pin=sha256:$(spki_pin "$IT_DIR/server.pem")" ;;
		pinned-other) echo "servers = localhost pin=sha256:$(cat "$IT_DIR/stranger.pin")" ;;
		othername) echo "servers = api.example.com ca=$IT_DIR/ca.pem" ;;
		esac
	done
}

it_require nginx python3
it_init openssl
[ -n "${MTLS_PROVIDER_DIR:-}" ] || it_die "MTLS_PROVIDER_DIR is not set"

# The servers: the allowed one (ca.pem, localhost), one from the other CA
# for the same name, one of the allowed CA for another name, an RSA one.
"$MKCERT" issue --ca-cert "$D/other-ca.pem" --ca-key "$D/other-ca.key" \
	--key-out "$D/otherca-server.key" --subj "/CN=localhost" --san DNS:localhost \
	--eku serverAuth --out "$D/otherca-server.pem" >/dev/null 2>&1 || it_die "mkcert failed"
"$MKCERT" issue --ca-cert "$D/ca.pem" --ca-key "$D/ca.key" --key-out "$D/wrong.key" \
	--subj "/CN=wrong.example" --san DNS:wrong.example --eku serverAuth \
	--out "$D/wrong.pem" >/dev/null 2>&1 || it_die "mkcert failed"
openssl genrsa -out "$D/rsa-server.key" 2048 >/dev/null 2>&1 &&
	openssl pkey -in "$D/rsa-server.key" -pubout -out "$D/rsa-server.pub.pem" 2>/dev/null &&
	"$MKCERT" issue --ca-cert "$D/ca.pem" --ca-key "$D/ca.key" --pubkey "$D/rsa-server.pub.pem" \
		--subj "/CN=localhost" --san DNS:localhost --eku serverAuth \
		--out "$D/rsa-server.pem" >/dev/null 2>&1 || it_die "RSA server certificate failed"

# nginx, one server block per case, each with "ssl_verify_client on" for
# the fixture's CA: the allowed one (ca.pem, localhost, TLS 1.2 and 1.3),
# one from the other CA for the same name, one of the allowed CA for
# another name, and an RSA one that offers only an RSA key exchange.
# Each answers (and logs, with its port) the client DN it verified.
declare -A PORT
dest_nginx_server() {
	local port=$1 cert=$2 key=$3 protocols=$4 ciphers=${5:-}
	cat <<EOF
	server {
		listen 127.0.0.1:$port ssl;
		server_name localhost;
		ssl_certificate $cert;
		ssl_certificate_key $key;
		ssl_client_certificate $D/ca.pem;
		ssl_verify_client on;
		ssl_protocols $protocols;
EOF
	[ -z "$ciphers" ] || echo "		ssl_ciphers $ciphers;"
	cat <<'EOF'
		default_type text/plain;
		location / {
			return 200 "dn=<$ssl_client_s_dn> proto=<$ssl_protocol> cipher=<$ssl_cipher>\n";
		}
	}
EOF
}
dest_nginx_try() {
	local N=$IT_DIR/nginx s
	mkdir -p "$N/tmp"
	for s in good otherca wrong rsa; do
		it_free_port
		PORT[$s]=$IT_PORT
	done
	{
		cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $N/nginx.pid;
error_log $N/error.log info;
events {
	worker_connections 64;
}
http {
	log_format dest '\$server_port dn=<\$ssl_client_s_dn>';
	access_log $N/access.log dest;
	client_body_temp_path $N/tmp/body;
	proxy_temp_path $N/tmp/proxy;
	fastcgi_temp_path $N/tmp/fastcgi;
	uwsgi_temp_path $N/tmp/uwsgi;
	scgi_temp_path $N/tmp/scgi;
EOF
		dest_nginx_server "${PORT[good]}" "$D/server.pem" "$D/server.key" "TLSv1.2 TLSv1.3"
		dest_nginx_server "${PORT[otherca]}" "$D/otherca-server.pem" "$D/otherca-server.key" \
			"TLSv1.2 TLSv1.3"
		dest_nginx_server "${PORT[wrong]}" "$D/wrong.pem" "$D/wrong.key" "TLSv1.2 TLSv1.3"
		# Only RSA key exchange suites: what a bound identity must refuse.
		dest_nginx_server "${PORT[rsa]}" "$D/rsa-server.pem" "$D/rsa-server.key" TLSv1.2 \
			AES128-GCM-SHA256:AES128-SHA
		echo "}"
	} >"$N/nginx.conf"
	it_bg nginx "$NGINX" -p "$N" -c "$N/nginx.conf" -e "$N/error.log"
	NGINX_PID=$IT_PID
	for s in good otherca wrong rsa; do
		it_wait_listen "$NGINX_PID" "${PORT[$s]}" nginx || return 1
	done
}
for _ in 1 2 3; do
	dest_nginx_try && break
done
it_listening "${PORT[rsa]}" || it_die "nginx did not start"
ACCESS=$D/nginx/access.log
touch "$ACCESS"
# The client DN nginx verified, as its pages give it.
DN='dn=<CN=p256 client,O=mtls-agent tests>'

# seen SERVER: how many requests with a client certificate SERVER logged.
seen() {
	grep -c "^${PORT[$1]} dn=<CN=" "$ACCESS" || true
}

# s_client_as ID SERVER VERSION [ARGS...]: one GET with identity ID.
s_client_as() {
	local id=$1 srv=$2 ver=$3
	shift 3
	it_run sh -c 'p=$1 d=$2 id=$3 port=$4 ver=$5
		shift 5
		printf "GET / HTTP/1.0\r\n\r\n" | openssl s_client -provider-path "$p" \
		-provider mtls-agent -provider default -cert "$d/p256.pem" -key "mtls-agent:$id" \
		-servername localhost -connect "127.0.0.1:$port" "$ver" -quiet -brief "$@"' sh \
		"$MTLS_PROVIDER_DIR" "$D" "$id" "${PORT[$srv]}" "$ver" "$@"
}

# allowed NAME ID SERVER VERSION [ARGS]: nginx verified the client
# certificate and answered with its DN (in its page and its access log).
allowed() {
	local name=$1 srv=$3 before
	shift
	before=$(seen "$srv")
	s_client_as "$@"
	if [ "$IT_STATUS" -ne 0 ]; then
		it_result "$name" 0 "exit status $IT_STATUS"
	elif ! printf '%s\n' "$IT_OUT" | grep -Fq "$DN"; then
		it_result "$name" 0 "nginx did not answer with the client DN"
	elif [ "$(seen "$srv")" -ne $((before + 1)) ]; then
		it_result "$name" 0 "nginx did not log the client DN"
	else
		it_result "$name" 1
	fi
}

# refused NAME REASON ID SERVER VERSION [ARGS]: the handshake fails, the
# agent's audit line for ID gives REASON, and nothing was signed: nginx
# saw no client certificate (no page with a DN, no new access log line).
refused() {
	local name=$1 reason=$2 id=$3 srv=$4 before
	shift 2
	before=$(seen "$srv")
	s_client_as "$@"
	if printf '%s\n' "$IT_OUT" | grep -q "dn=<CN="; then
		it_result "$name" 0 "the server accepted the client"
	elif [ "$(seen "$srv")" -ne "$before" ]; then
		it_result "$name" 0 "nginx logged a client certificate"
	elif ! grep -E "audit: sign refused: .*identity=$id .*$reason" "$IT_DIR/agent.log" >/dev/null; then
		it_result "$name" 0 "no audit line 'sign refused ... identity=$id ... $reason'"
	else
		it_result "$name" 1
	fi
}

allowed "bound identity, TLS 1.2, allowed CA and name" p256-bound good -tls1_2
allowed "pinned identity, TLS 1.2, pinned server key" p256-pinned good -tls1_2
allowed "unbound identity unchanged toward another CA's server" p256-tls12 otherca -tls1_2
refused "bound identity refused toward a server from another CA" \
	"server localhost is not recognised: unable to get local issuer certificate" \
	p256-bound otherca -tls1_2
refused "bound identity refused toward a certificate for another name" \
	"server localhost is not recognised: hostname mismatch" p256-bound wrong -tls1_2
refused "bound identity refused toward a name not in its servers" \
	"server localhost is not in the servers of identity p256-othername" \
	p256-othername good -tls1_2
refused "pinned identity refused toward a server with another key" \
	"server localhost is not recognised: its key is not pinned for localhost" \
	p256-pinned-other good -tls1_2
refused "bound identity refused with an RSA key exchange" \
	"cipher suite 0x009c is not ECDHE" p256-bound rsa -tls1_2 -cipher AES128-GCM-SHA256
refused "bound identity refused in TLS 1.3 without the handshake messages" \
	"identity p256-bound is bound to servers: a TLS 1.3 CertificateVerify needs the handshake messages with the request.*use mtls-agentctl connect" \
	p256-bound good -tls1_3

# mtls-agentctl connect (the library's SSL_CTX helper), TLS 1.2.
it_ok "connect: bound identity, TLS 1.2, allowed server" "$CTL" connect --ca-file "$D/ca.pem" \
	--identity p256-bound --tls1.2 "https://localhost:${PORT[good]}/"
it_match "connect: nginx saw the client certificate" "^$DN proto=<TLSv1.2>" "$IT_OUT"
before=$(seen otherca)
it_run "$CTL" connect --ca-file "$D/other-ca.pem" --identity p256-bound --tls1.2 \
	"https://localhost:${PORT[otherca]}/"
it_check "connect: bound identity refused toward the other CA's server" \
	test "$IT_STATUS" -ne 0
it_check "connect: the other CA's nginx saw no client certificate" test "$(seen otherca)" = "$before"
it_match "connect: the refusal names the server" "not recognised" "$IT_ERR"

# TLS 1.3 through the helper: it sends the handshake messages with the SIGN.
it_ok "connect: bound identity, TLS 1.3, allowed server" "$CTL" connect --ca-file "$D/ca.pem" \
	--identity p256-bound "https://localhost:${PORT[good]}/"
it_match "connect TLS 1.3: nginx saw the client certificate" "^$DN proto=<TLSv1.3>" "$IT_OUT"
it_match "connect TLS 1.3: TLSv1.3" "TLSv1.3" "$IT_OUT"
it_ok "connect: pinned identity, TLS 1.3" "$CTL" connect --ca-file "$D/ca.pem" \
	--identity p256-pinned "https://localhost:${PORT[good]}/"
for c in "p256-bound otherca other-ca.pem not recognised: unable to get local issuer" \
	"p256-pinned-other good ca.pem its key is not pinned for localhost" \
	"p256-othername good ca.pem is not in the servers of identity p256-othername"; do
	read -r id srv ca reason <<<"$c"
	before=$(seen "$srv")
	it_run "$CTL" connect --ca-file "$D/$ca" --identity "$id" "https://localhost:${PORT[$srv]}/"
	it_check "connect TLS 1.3: $id refused toward $srv" test "$IT_STATUS" -ne 0
	it_check "connect TLS 1.3: $id: nginx saw no client certificate" test "$(seen "$srv")" = "$before"
	it_check "connect TLS 1.3: $id: audit line says '$reason'" \
		grep -Eq "audit: sign refused: .*identity=$id .*purpose=tls13-client-certificate-verify .*$reason" \
		"$IT_DIR/agent.log"
done

# --- a tampering proxy between client and server (TLS 1.2) --------------------
# tls-proxy.py PORT UPSTREAM MODE OUT relays one connection at a time to
# 127.0.0.1:UPSTREAM and writes the handshake messages it relayed before
# ChangeCipherSpec, ClientHello .. ClientKeyExchange (what the client's
# CertificateVerify signs), to OUT.N for the Nth connection.  MODE flip
# flips the last byte of the ServerKeyExchange (its signature) on the way
# to the client; MODE replay (with a fifth argument, a recorded transcript)
# gives the client that transcript's ServerKeyExchange instead of the
# server's.  tls-proxy.py tamper IN OUT flip|replay OLD rewrites a
# recorded transcript: flip the ServerKeyExchange signature, or replace
# the ServerKeyExchange by OLD's (a valid signature by the same server,
# over another handshake's randoms).
cat >"$D/tls-proxy.py" <<'PY'
import select, socket, sys

def messages(hs):
    off, out = 0, []
    while len(hs) - off >= 4:
        end = off + 4 + int.from_bytes(hs[off + 1:off + 4], "big")
        if end > len(hs):
            break
        out.append(hs[off:end])
        off = end
    return out, off

def relay(c, port, mode, msgs):
    u = socket.create_connection(("127.0.0.1", port))
    st = {c: {"buf": b"", "hs": b"", "off": 0, "ccs": False, "to": u, "srv": False},
          u: {"buf": b"", "hs": b"", "off": 0, "ccs": False, "to": c, "srv": True}}
    try:
        while True:
            for s in select.select([c, u], [], [])[0]:
                d = s.recv(65536)
                if not d:
                    return
                x = st[s]
                x["buf"] += d
                while len(x["buf"]) >= 5:
                    n = 5 + int.from_bytes(x["buf"][3:5], "big")
                    if len(x["buf"]) < n:
                        break
                    rec, x["buf"] = bytearray(x["buf"][:n]), x["buf"][n:]
                    if rec[0] == 20:
                        x["ccs"] = True
                    elif rec[0] == 22 and not x["ccs"]:
                        start = len(x["hs"])
                        x["hs"] += bytes(rec[5:])
                        new, used = messages(x["hs"][x["off"]:])
                        end = x["off"]
                        for m in new:
                            begin, end = end, end + len(m)
                            if m[0] == 12 and x["srv"] and mode == "flip":
                                rec[5 + end - 1 - start] ^= 1
                                m = m[:-1] + bytes([m[-1] ^ 1])
                            elif m[0] == 12 and x["srv"] and mode == "replay" and begin >= start:
                                frag = rec[5:]
                                frag[begin - start:end - start] = REPLAY
                                rec[3:] = len(frag).to_bytes(2, "big") + frag
                                m = REPLAY
                            msgs.append(m)
                        x["off"] += used
                    x["to"].sendall(bytes(rec))
    finally:
        u.close()
        c.close()

def signed(msgs):
    out = []
    for m in msgs:
        if m[0] == 15:
            break
        out.append(m)
    return out

if sys.argv[1] == "tamper":
    t = open(sys.argv[2], "rb").read()
    msgs, used = messages(t)
    assert used == len(t)
    for i, m in enumerate(msgs):
        if m[0] == 12:
            if sys.argv[4] == "flip":
                msgs[i] = m[:-1] + bytes([m[-1] ^ 1])
            else:
                old = [o for o in messages(open(sys.argv[5], "rb").read())[0] if o[0] == 12]
                msgs[i] = old[0]
    open(sys.argv[3], "wb").write(b"".join(msgs))
    sys.exit(0)
if sys.argv[3] == "replay":
    REPLAY = [m for m in messages(open(sys.argv[5], "rb").read())[0] if m[0] == 12][0]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(8)
n = 0
while True:
    c = srv.accept()[0]
    n += 1
    msgs = []
    try:
        relay(c, int(sys.argv[2]), sys.argv[3], msgs)
    except OSError:
        pass
    open("%s.%d" % (sys.argv[4], n), "wb").write(b"".join(signed(msgs)))
PY

# proxy_start MODE [ARG]: a proxy in front of the allowed nginx.
proxy_start() {
	it_server "proxy-$1" python3 "$D/tls-proxy.py" @PORT@ "${PORT[good]}" "$1" "$D/$1" "${@:2}"
	PORT[proxy-$1]=$IT_PORT
}
# What we found about the real client: OpenSSL's s_client verifies the
# ServerKeyExchange signature itself (tls_process_key_exchange: "bad
# signature") and aborts before it asks for the CertificateVerify, for a
# flipped signature byte and for a replayed ServerKeyExchange alike, so
# through a tampering proxy the agent is never asked.  The agent's own
# check is shown below by driving it directly with recorded transcripts.
proxy_start record
s_client_as p256-tls12 proxy-record -tls1_2
it_match "proxy: an untampered handshake through the proxy works" "^$DN proto=<TLSv1.2>" "$IT_OUT"
s_client_as p256-tls12 proxy-record -tls1_2
it_match "proxy: a second handshake through the proxy works" "^$DN proto=<TLSv1.2>" "$IT_OUT"
proxy_start flip
proxy_start replay "$D/record.1"
for mode in flip replay; do
	from=$(($(wc -l <"$IT_DIR/agent.log") + 1))
	before=$(seen good)
	s_client_as p256-bound "proxy-$mode" -tls1_2
	it_check "proxy $mode: the client itself rejects the ServerKeyExchange" \
		sh -c 'test "$1" -ne 0 && printf "%s\n" "$2" | grep -q "tls_process_key_exchange:bad signature"' \
		sh "$IT_STATUS" "$IT_ERR"
	it_check "proxy $mode: the agent was not asked to sign" \
		sh -c '! tail -n +"$2" "$1" | grep -q "audit: sign"' sh "$IT_DIR/agent.log" "$from"
	it_check "proxy $mode: nginx saw no client certificate" test "$(seen good)" = "$before"
done

# The agent on recorded transcripts: the second handshake as recorded, its
# ServerKeyExchange signature flipped, and its ServerKeyExchange replaced
# by the first handshake's (signed by the same server, over other randoms).
python3 "$D/tls-proxy.py" tamper "$D/record.2" "$D/flipped" flip &&
	python3 "$D/tls-proxy.py" tamper "$D/record.2" "$D/replayed" replay "$D/record.1" ||
	it_die "tampering the transcript failed"
# agent_sign NAME FILE: the bound identity signs FILE as a TLS 1.2 transcript.
agent_sign() {
	it_run "$CTL" sign --identity p256-bound --scheme ecdsa_secp256r1_sha256 \
		--purpose tls12-client-certificate-verify --in "$1" --out "$D/sig"
}
from=$(($(wc -l <"$IT_DIR/agent.log") + 1))
agent_sign "$D/record.2"
it_check "recorded transcript: the bound identity signs it" test "$IT_STATUS" -eq 0
it_check "recorded transcript: audit says sign ok" \
	sh -c 'tail -n +"$2" "$1" | grep -Eq "audit: sign ok: .*identity=p256-bound .*purpose=tls12"' \
	sh "$IT_DIR/agent.log" "$from"
for t in flipped replayed; do
	from=$(($(wc -l <"$IT_DIR/agent.log") + 1))
	rm -f "$D/sig"
	agent_sign "$D/$t"
	it_check "$t ServerKeyExchange: the agent refuses" test "$IT_STATUS" -ne 0
	it_check "$t ServerKeyExchange: no signature" test ! -s "$D/sig"
	it_check "$t ServerKeyExchange: audit gives the reason" \
		sh -c 'tail -n +"$2" "$1" | grep -Eq "audit: sign refused: .*identity=p256-bound .*the ServerKeyExchange signature does not verify with the server certificate.s key"' \
		sh "$IT_DIR/agent.log" "$from"
done

# --- forwarded to a "remote" host: ssh -R of the agent socket ------------------
# The README's recipe: on the far side of `ssh -R REMOTE.sock:$MTLS_AGENT_SOCK`
# a program using the forwarded socket reaches the bound identity's server
# and nothing else (the agent checks the handshake, whoever relays it).
SSHD=$(it_find sshd) || SSHD=
if [ -z "$SSHD" ] || ! command -v ssh >/dev/null; then
	[ "${CI:-}" = true ] && it_die "sshd or ssh is not installed"
	it_msg "sshd or ssh is not installed: the forwarding checks are not run"
else
	[ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd
	ssh-keygen -q -t ed25519 -N '' -f "$D/hostkey" || it_die "ssh-keygen"
	ssh-keygen -q -t ed25519 -N '' -f "$D/userkey" || it_die "ssh-keygen"
	cp "$D/userkey.pub" "$D/authorized_keys"
	for _ in 1 2 3; do
		it_free_port
		{
			echo "ListenAddress 127.0.0.1:$IT_PORT"
			echo "HostKey $D/hostkey"
			echo "AuthorizedKeysFile $D/authorized_keys"
			echo "PidFile none"
			echo "StrictModes no"
			echo "UsePAM no"
			echo "PasswordAuthentication no"
			echo "KbdInteractiveAuthentication no"
			echo "PermitRootLogin prohibit-password"
			echo "AllowStreamLocalForwarding yes"
			echo "StreamLocalBindUnlink yes"
		} >"$D/sshd.conf"
		it_bg sshd "$SSHD" -D -e -f "$D/sshd.conf"
		it_wait_listen "$IT_PID" "$IT_PORT" sshd && break
	done
	it_listening "$IT_PORT" || it_die "sshd did not start"
	SSH_PORT=$IT_PORT
	echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$D/hostkey.pub")" >"$D/known_hosts"
	# remote_s_client SERVER: the far side's unmodified s_client, TLS 1.2.
	# (sshd passes no environment on: a sanitizer build's ASAN_OPTIONS,
	# which let openssl load the ASan-built provider, go on the command.)
	remote_s_client() {
		it_run ssh -F /dev/null -o "UserKnownHostsFile=$D/known_hosts" \
			-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes \
			-o IdentityAgent=none -o ExitOnForwardFailure=yes -o LogLevel=ERROR \
			-i "$D/userkey" -p "$SSH_PORT" -R "$D/remote.sock:$MTLS_AGENT_SOCK" \
			"$(id -un)@127.0.0.1" \
			"printf 'GET / HTTP/1.0\r\n\r\n' | ${ASAN_OPTIONS:+ASAN_OPTIONS=$ASAN_OPTIONS} \
			MTLS_AGENT_SOCK=$D/remote.sock openssl s_client \
			-provider-path $MTLS_PROVIDER_DIR -provider mtls-agent -provider default \
			-cert $D/p256.pem -key mtls-agent:p256-bound -servername localhost \
			-connect 127.0.0.1:${PORT[$1]} -tls1_2 -quiet -brief"
	}
	# The agent's peer is the local ssh relaying the far side's requests.
	from=$(($(wc -l <"$IT_DIR/agent.log") + 1))
	remote_s_client good
	it_match "forwarded socket: the bound identity reaches its server" \
		"^$DN" "$IT_OUT"
	remote_s_client otherca
	it_check "forwarded socket: the server from another CA does not see the client" \
		sh -c '! printf "%s\n" "$1" | grep -q "dn=<CN="' sh "$IT_OUT"
	it_check "forwarded socket: the agent refused it, with the reason" \
		sh -c 'tail -n +"$2" "$1" | grep -Eq "audit: sign refused: .*exe=[^ ]*/ssh .*identity=p256-bound .*unable to get local issuer"' \
		sh "$IT_DIR/agent.log" "$from"
	it_check "forwarded socket: the allowed signature came through ssh too" \
		sh -c 'tail -n +"$2" "$1" | grep -Eq "audit: sign ok: .*exe=[^ ]*/ssh .*identity=p256-bound "' \
		sh "$IT_DIR/agent.log" "$from"
fi

it_done
