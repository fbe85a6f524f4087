#!/usr/bin/env bash
# nginx with "ssl_verify_client on" accepts agent-backed client certificates
# (every key type in TLS 1.3; TLS 1.2 with RSA PKCS#1, RSA-PSS and ECDSA
# where the identity's policy allows it) and refuses the bad ones; the
# agent refuses what its policy forbids; mtls-agentctl connect says which
# side refused, in one line.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_init nginx
it_nginx_start
CA=(--ca-file "$D/ca.pem")
P13=$NGINX_TLS13

# --- TLS 1.3, every key type --------------------------------------------------
for k in rsa2048 rsa3072 p256 p384; do
	it_ok "TLS 1.3 $k" "$CTL" connect "${CA[@]}" --identity "$k" "https://localhost:$P13/"
	it_match "TLS 1.3 $k: nginx saw the subject" \
		"^dn=<CN=$k client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$IT_OUT"
done

# --- TLS 1.2 where the policy allows it ---------------------------------------
for k in rsa2048 rsa3072; do
	it_ok "TLS 1.2 $k-tls12 rsa_pkcs1" "$CTL" connect -v "${CA[@]}" --identity "$k-tls12" \
		--tls1.2 "https://localhost:$NGINX_TLS12_PKCS1/"
	it_match "TLS 1.2 $k-tls12 rsa_pkcs1: nginx saw the subject" \
		"^dn=<CN=$k client,O=mtls-agent tests> proto=<TLSv1.2> verify=<SUCCESS>" "$IT_OUT"
	it_match "TLS 1.2 $k-tls12 signed with RSA PKCS#1" "client signature: RSA-PKCS1\+SHA(256|384)" "$IT_ERR"
	it_ok "TLS 1.2 $k-tls12 rsa_pss" "$CTL" connect -v "${CA[@]}" --identity "$k-tls12" \
		--tls1.2 "https://localhost:$NGINX_TLS12_PSS/"
	it_match "TLS 1.2 $k-tls12 rsa_pss: nginx saw the subject" \
		"^dn=<CN=$k client,O=mtls-agent tests> proto=<TLSv1.2> verify=<SUCCESS>" "$IT_OUT"
	it_match "TLS 1.2 $k-tls12 signed with RSA-PSS" "client signature: RSA-PSS\+SHA(256|384)" "$IT_ERR"
done
for k in p256 p384; do
	it_ok "TLS 1.2 $k-tls12 ecdsa" "$CTL" connect -v "${CA[@]}" --identity "$k-tls12" \
		--tls1.2 "https://localhost:$NGINX_TLS12_PKCS1/"
	it_match "TLS 1.2 $k-tls12 ecdsa: nginx saw the subject" \
		"^dn=<CN=$k client,O=mtls-agent tests> proto=<TLSv1.2> verify=<SUCCESS>" "$IT_OUT"
	it_match "TLS 1.2 $k-tls12 signed with ECDSA" "client signature: ECDSA\+SHA(256|384)" "$IT_ERR"
done
# The same identities still do TLS 1.3.
it_ok "TLS 1.3 p256-tls12" "$CTL" connect "${CA[@]}" --identity p256-tls12 "https://localhost:$P13/"

# --- the agent refuses TLS 1.2 to a tls13-only identity -----------------------
for k in rsa2048 p256; do
	it_refused "TLS 1.2 refused by the agent for tls13-only $k" 1 \
		"^mtls-agentctl: connect: the agent did not sign for identity '$k': denied by the identity's policy" \
		"$CTL" connect "${CA[@]}" --identity "$k" --tls1.2 "https://localhost:$NGINX_TLS12_PKCS1/"
done

# --- the server refuses bad client certificates -------------------------------
it_refused "certificate from another CA refused by nginx" 1 \
	"^mtls-agentctl: connect: server rejected the client certificate: HTTP/1.1 400 Bad Request \(400 The SSL certificate error\)$" \
	"$CTL" connect "${CA[@]}" --identity p256-wrongca "https://localhost:$P13/"
it_refused "expired certificate refused by nginx" 1 \
	"^mtls-agentctl: connect: server rejected the client certificate: HTTP/1.1 400 Bad Request \(400 The SSL certificate error\)$" \
	"$CTL" connect "${CA[@]}" --identity p256-expired "https://localhost:$P13/"
it_check "no body printed for a refused request" test -z "$IT_OUT"

# --- we refuse a server we cannot trust ---------------------------------------
it_refused "server from an untrusted CA refused" 1 \
	"^mtls-agentctl: connect: server certificate not trusted: unable to get local issuer certificate$" \
	"$CTL" connect --ca-file "$D/other-ca.pem" --identity p256 "https://localhost:$P13/"

# --- HTTP: headers, output file, IP address, non-2xx --------------------------
it_ok "--header and --output" "$CTL" connect "${CA[@]}" --identity p384 \
	--header 'X-Test: hello there' --output "$D/page.txt" "https://127.0.0.1:$P13/?q=1"
it_check "--output: stdout empty" test -z "$IT_OUT"
it_check "--output holds the body, with the header sent" \
	grep -q '^dn=<CN=p384 client,O=mtls-agent tests> .* x=<hello there>' "$D/page.txt"
it_ok "-v shows the exchange on stderr" "$CTL" connect -v "${CA[@]}" --identity p256 "https://localhost:$P13/"
it_match "-v: request line" "^> GET / HTTP/1.1$" "$IT_ERR"
it_match "-v: status line" "^< HTTP/1.1 200 OK$" "$IT_ERR"
it_match "-v: TLS 1.3 and the certificate sent" "^\* client certificate: CN=p256 client,O=mtls-agent tests$" "$IT_ERR"
it_refused "HTTP 403 is a failure with its status line" 1 \
	"^mtls-agentctl: connect: server answered HTTP/1.1 403 Forbidden \(403 Forbidden\)$" \
	"$CTL" connect "${CA[@]}" --identity p256 "https://localhost:$P13/forbidden"
it_ok "bare TLS connect to HOST:PORT" "$CTL" connect "${CA[@]}" --identity p256 "localhost:$P13"
it_match "bare connect reports the handshake" "^protocol: TLSv1.3$" "$IT_OUT"

# --- redirects (libcurl): followed with -L, only to https ---------------------
it_refused "a redirect without -L is the answer" 1 \
	"^mtls-agentctl: connect: server answered HTTP/1.1 302 Moved Temporarily \(302 Found\)$" \
	"$CTL" connect "${CA[@]}" --identity p256 "https://localhost:$P13/redirect"
it_ok "-L follows a redirect" "$CTL" connect "${CA[@]}" --identity p256 -L "https://localhost:$P13/redirect"
it_match "-L: the body of the target, our certificate sent" \
	"^dn=<CN=p256 client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$IT_OUT"
it_ok "--location -v shows both requests" "$CTL" connect -v "${CA[@]}" --identity p256 --location \
	"https://localhost:$P13/redirect"
it_match "--location -v: the redirect" "^< HTTP/1.1 302 Moved Temporarily$" "$IT_ERR"
it_match "--location -v: the second request" "^> GET / HTTP/1.1$" "$IT_ERR"
it_refused "-L does not follow a redirect to http://" 1 \
	"^mtls-agentctl: connect: localhost: .*[Pp]rotocol .*http" \
	"$CTL" connect "${CA[@]}" --identity p256 -L "https://localhost:$P13/to-http"

# --- HTTP/2 (libcurl), negotiated by ALPN ------------------------------------
it_ok "HTTP/2 with a server that offers it" "$CTL" connect -v "${CA[@]}" --identity rsa2048 \
	"https://localhost:$NGINX_H2/"
it_match "HTTP/2: nginx saw the client certificate" \
	"^dn=<CN=rsa2048 client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$IT_OUT"
it_match "HTTP/2: -v shows the HTTP/2 status" "^< HTTP/2 200" "$IT_ERR"
it_refused "HTTP/2 403 is a failure with its status line" 1 \
	"^mtls-agentctl: connect: server answered HTTP/2 403 \(403 Forbidden\)$" \
	"$CTL" connect "${CA[@]}" --identity p256 "https://localhost:$NGINX_H2/forbidden"

# --- through an HTTP CONNECT proxy (libcurl) ----------------------------------
# A tiny CONNECT-only proxy that logs each tunnel it opens.
cat >"$D/connect-proxy.py" <<'PY'
import select, socket, sys, threading
log = open(sys.argv[2], "a", buffering=1)
def tunnel(c):
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.recv(4096)
            if not d:
                return
            head += d
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(line) != 3 or line[0] != "CONNECT":
            c.sendall(b"HTTP/1.1 405 Only CONNECT\r\nContent-Length: 0\r\n\r\n")
            return
        host, port = line[1].rsplit(":", 1)
        u = socket.create_connection((host.strip("[]"), int(port)))
        log.write("CONNECT %s\n" % line[1])
        c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        rest = head.split(b"\r\n\r\n", 1)[1]
        if rest:
            u.sendall(rest)
        while True:
            r, _, _ = select.select([c, u], [], [])
            for s in r:
                d = s.recv(65536)
                if not d:
                    return
                (u if s is c else c).sendall(d)
    finally:
        c.close()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)
while True:
    threading.Thread(target=tunnel, args=(srv.accept()[0],), daemon=True).start()
PY
if command -v python3 >/dev/null 2>&1; then
	it_server connect-proxy python3 "$D/connect-proxy.py" @PORT@ "$D/proxy.log"
	PROXY=$IT_PORT
	it_ok "--proxy: through a CONNECT proxy" "$CTL" connect "${CA[@]}" --identity p256 \
		--proxy "http://127.0.0.1:$PROXY" "https://localhost:$P13/"
	it_match "--proxy: nginx saw the client certificate" \
		"^dn=<CN=p256 client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$IT_OUT"
	it_check "--proxy: the proxy opened the tunnel" grep -q "^CONNECT localhost:$P13\$" "$D/proxy.log"
	: >"$D/proxy.log"
	it_ok "https_proxy from the environment" env https_proxy="http://127.0.0.1:$PROXY" \
		"$CTL" connect "${CA[@]}" --identity p384 "https://localhost:$P13/"
	it_check "https_proxy: the proxy opened the tunnel" grep -q "^CONNECT localhost:$P13\$" "$D/proxy.log"
else
	it_result "CONNECT proxy" 0 "python3 is not installed"
fi

# --- timeouts: a server that accepts and never answers -------------------------
it_server silent python3 -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
held = []
while True: held.append(s.accept()[0])' @PORT@
it_refused "--timeout: a silent server times the handshake out" 1 \
	"^mtls-agentctl: connect: TLS handshake with 127.0.0.1:$IT_PORT: timed out$" \
	"$CTL" connect "${CA[@]}" --identity p256 --timeout 1 "https://127.0.0.1:$IT_PORT/"
it_refused "--max-time bounds the whole request" 1 \
	"^mtls-agentctl: connect: TLS handshake with 127.0.0.1:$IT_PORT: timed out$" \
	"$CTL" connect "${CA[@]}" --identity p256 --timeout 0 --max-time 1 "https://127.0.0.1:$IT_PORT/"
it_refused "--max-time must be seconds" 2 "bad max-time 'soon'" \
	"$CTL" connect "${CA[@]}" --identity p256 --max-time soon "https://127.0.0.1:$IT_PORT/"

# --- libcurl must be the OpenSSL flavour ----------------------------------------
# A preloaded shim makes curl_version_info() say GnuTLS, as a libcurl built
# with it would (the real GnuTLS build has other symbol versions, so it
# cannot be swapped in): connect refuses before it asks the agent or the
# network anything.
cat >"$D/curl-gnutls-shim.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <curl/curl.h>
curl_version_info_data *curl_version_info(CURLversion v)
{
	static curl_version_info_data d;
	curl_version_info_data *(*real)(CURLversion) =
		(curl_version_info_data * (*)(CURLversion)) dlsym(RTLD_NEXT, "curl_version_info");

	d = *real(v);
	d.ssl_version = "GnuTLS/3.7.9";
	return &d;
}
C
printf 'CURL_OPENSSL_4 { global: curl_version_info; };\n' >"$D/curl-gnutls-shim.map"
if ${CC:-cc} -shared -fPIC -o "$D/curl-gnutls-shim.so" "$D/curl-gnutls-shim.c" \
	-Wl,--version-script="$D/curl-gnutls-shim.map" -ldl 2>"$D/shim.log"; then
	before=$(cat "$D/nginx/access.log" | wc -l)
	it_refused "a libcurl built with GnuTLS is refused" 1 \
		"^mtls-agentctl: connect: libcurl is built with GnuTLS/3.7.9, not OpenSSL: connect needs the OpenSSL flavour of libcurl \(Debian: libcurl4\)$" \
		env LD_PRELOAD="$D/curl-gnutls-shim.so" "$CTL" connect "${CA[@]}" --identity p256 \
		"https://localhost:$P13/"
	it_check "GnuTLS libcurl: nothing reached nginx" test "$before" = "$(cat "$D/nginx/access.log" | wc -l)"
else
	it_result "GnuTLS libcurl refused" 0 "cannot build the shim: $(cat "$D/shim.log")"
fi

# --- usage errors -------------------------------------------------------------
it_refused "several identities need --identity" 2 "choose one with --identity: rsa2048, " \
	"$CTL" connect "${CA[@]}" "https://localhost:$P13/"
it_refused "unknown identity" 1 "no such identity 'nope' \(the agent offers: rsa2048, " \
	"$CTL" connect "${CA[@]}" --identity nope "https://localhost:$P13/"
it_refused "http:// is refused" 2 "only https:// is supported" \
	"$CTL" connect "${CA[@]}" --identity p256 "http://localhost:$P13/"
it_refused "header injection is refused" 2 "bad header" \
	"$CTL" connect "${CA[@]}" --identity p256 --header $'X-A: b\r\nX-B: c' "https://localhost:$P13/"

# --- nothing listening --------------------------------------------------------
it_free_port
it_refused "connection refused" 1 "^mtls-agentctl: connect: cannot connect to localhost:$IT_PORT: Connection refused$" \
	"$CTL" connect "${CA[@]}" --identity p256 "https://localhost:$IT_PORT/"

# --- logged out: clear error, and nginx never sees a connection ---------------
"$CTL" -q logout >/dev/null 2>&1 || it_die "logout failed"
before=$(cat "$D/nginx/access.log" "$D/nginx/error.log" | wc -l)
it_refused "logged-out token: login required, exit 4" 4 \
	"^mtls-agentctl: connect: token login required for identity 'p256' \(run 'mtls-agentctl login p256'\)$" \
	"$CTL" connect "${CA[@]}" --identity p256 "https://localhost:$P13/"
sleep 0.2
after=$(cat "$D/nginx/access.log" "$D/nginx/error.log" | wc -l)
it_check "logged out: nothing reached nginx (log lines $before, then $after)" \
	test "$before" = "$after"
# An mtls-agent: URI is not checked beforehand: the agent's refusal in the
# handshake comes back through the provider, with the same exit status.
it_refused "logged-out token, URI identity: the agent's refusal, exit 4" 4 \
	"^mtls-agentctl: connect: the agent did not sign for identity 'mtls-agent:p256': token login required" \
	"$CTL" connect "${CA[@]}" --identity mtls-agent:p256 "https://localhost:$P13/"
it_login
it_ok "logged in again: works" "$CTL" connect "${CA[@]}" --identity p256 "https://localhost:$P13/"

# --- agent stopped ------------------------------------------------------------
it_stop "$AGENT_PID"
it_refused "agent stopped: cannot connect to the agent, exit 3" 3 \
	"^mtls-agentctl: connect: cannot connect to the agent" \
	"$CTL" connect "${CA[@]}" --identity p256 "https://localhost:$P13/"

it_done
