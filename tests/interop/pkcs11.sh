#!/usr/bin/env bash
# mtls-agent-pkcs11.so with the clients people already have: pkcs11-tool
# (list, sign, verify with openssl), gnutls-cli with a pkcs11: URI, and
# wget and git (libcurl-gnutls) through p11-kit's registration, each
# against nginx with "ssl_verify_client on".  Every login must show the
# client's DN in the page and a signature in the agent's audit log; the
# agent refuses a digest to an identity that does not allow pkcs11-digest.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_need_env MTLS_PKCS11_MODULE
it_require nginx pkcs11-tool gnutls-cli wget git openssl
M=$MTLS_PKCS11_MODULE

# Identities for PKCS#11 clients: they sign pre-hashed digests, so
# pkcs11-digest, and only for this user's programs (peers).
it_extra_conf() {
	local k id
	for k in p256:03 rsa2048:01; do
		id=${k#*:}
		k=${k%:*}
		echo
		echo "[identity $k-p11]"
		echo "key = pkcs11:token=$MTLS_TEST_TOKEN;id=%$id;type=private"
		echo "certificate = $IT_DIR/$k.pem"
		echo "purposes = tls13, tls12, pkcs11-digest"
		echo "peers = uid:$(id -u)"
	done
}
it_init
# A repository git clones over dumb HTTP.
git init -q --bare "$D/repo.git"
git -C "$D" init -q work
git -C "$D/work" -c user.name=t -c user.email=t@localhost commit -q --allow-empty -m "served over mTLS"
git -C "$D/work" push -q "$D/repo.git" HEAD:refs/heads/main 2>/dev/null ||
	it_die "git push to the bare repository failed"
git -C "$D/repo.git" symbolic-ref HEAD refs/heads/main
git -C "$D/repo.git" update-server-info
NGINX_EXTRA="		location /repo.git/ { alias $D/repo.git/; }"
it_nginx_start
P13=$NGINX_TLS13

# How many signatures the agent logged for an identity so far.
signed() {
	grep -c "audit: sign ok: .* identity=$1 " "$D/agent.log" || true
}
# it_signed NAME IDENTITY BEFORE: the agent logged a signature since BEFORE.
it_signed() {
	local now
	now=$(signed "$2")
	if [ "$now" -gt "$3" ]; then
		it_result "$1" 1
	else
		it_result "$1" 0 "no new 'sign ok' for $2 in the agent's log"
	fi
}

# --- pkcs11-tool: slots, objects, a signature openssl verifies -------------------
it_ok "pkcs11-tool lists the identities as tokens" pkcs11-tool --module "$M" -L
it_match "token p256-p11 listed" "token label +: p256-p11$" "$IT_OUT"
it_match "token rsa2048-p11 listed" "token label +: rsa2048-p11$" "$IT_OUT"
it_ok "pkcs11-tool lists the objects" pkcs11-tool --module "$M" --token-label p256-p11 -O
it_match "certificate object" "Certificate Object; type = X.509 cert" "$IT_OUT"
it_match "private key object, never extractable" "Access: +sensitive, always sensitive, never extractable" "$IT_OUT"
printf 'signed through the agent\n' >"$D/data"
openssl dgst -sha256 -binary "$D/data" >"$D/data.sha256"
openssl x509 -in "$D/p256.pem" -pubkey -noout >"$D/p256.pub"
openssl x509 -in "$D/rsa2048.pem" -pubkey -noout >"$D/rsa2048.pub"
before=$(signed p256-p11)
it_ok "pkcs11-tool signs with ECDSA" pkcs11-tool --module "$M" --token-label p256-p11 \
	--sign -m ECDSA -i "$D/data.sha256" -o "$D/sig.ec" --signature-format openssl
it_ok "openssl verifies the ECDSA signature" openssl dgst -sha256 -verify "$D/p256.pub" \
	-signature "$D/sig.ec" "$D/data"
it_signed "the agent logged the ECDSA signature" p256-p11 "$before"
it_check "audit names purpose and mechanism" grep -q \
	"sign ok: .* identity=p256-p11 scheme=ecdsa_secp256r1_sha256 purpose=pkcs11-digest mechanism=CKM_ECDSA" \
	"$D/agent.log"
it_ok "pkcs11-tool signs with RSA-PSS" pkcs11-tool --module "$M" --token-label rsa2048-p11 \
	--sign -m RSA-PKCS-PSS --hash-algorithm SHA256 --mgf MGF1-SHA256 --salt-len 32 \
	-i "$D/data.sha256" -o "$D/sig.pss"
it_ok "openssl verifies the RSA-PSS signature" openssl pkeyutl -verify -pubin -inkey "$D/rsa2048.pub" \
	-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 -pkeyopt digest:sha256 \
	-in "$D/data.sha256" -sigfile "$D/sig.pss"
# The tls13-only identity refuses a digest, and the audit line says why.
it_run pkcs11-tool --module "$M" --token-label p256 --sign -m ECDSA -i "$D/data.sha256" -o "$D/sig.no"
it_check "pkcs11-tool cannot have p256 (tls13 only) sign a digest" test "$IT_STATUS" -ne 0
it_check "the agent logged the refusal with the mechanism" grep -q \
	"sign refused: .* identity=p256 scheme=ecdsa_secp256r1_sha256 purpose=pkcs11-digest mechanism=CKM_ECDSA result=denied by the identity's policy: purpose pkcs11-digest not allowed" \
	"$D/agent.log"

# --- gnutls-cli: the module as a provider, RFC 7512 URIs ----------------------------
# GnuTLS looks objects up only by id= or object= (the label, which is the
# identity's name, like the token's).
request() {
	printf 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
}
for k in p256 rsa2048; do
	before=$(signed "$k-p11")
	request >"$D/req"
	it_run sh -c 'gnutls-cli --provider "$1" --x509cafile "$2" \
		--x509certfile "pkcs11:token=$3;object=$3;type=cert" \
		--x509keyfile "pkcs11:token=$3;object=$3;type=private" \
		-p "$4" localhost <"$5"' sh "$M" "$D/ca.pem" "$k-p11" "$P13" "$D/req"
	it_match "gnutls-cli $k: nginx saw the client DN" \
		"^dn=<CN=$k client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$IT_OUT"
	it_signed "gnutls-cli $k: the agent signed" "$k-p11" "$before"
done

# --- wget and git: GnuTLS finds the module through p11-kit's registration ----------
# Not in a sanitizer build: p11-kit loads every registered module into wget
# and git, SoftHSM2 (C++) among them, which next to a late-loaded ASan
# runtime frees memory ASan did not allocate, and preloading the runtime
# deadlocks curl and wget in setlocale(); the normal build's run tests them.
if [ -n "$IT_ASAN_RT" ]; then
	it_msg "sanitizer build: wget and git through p11-kit's registration not run"
else
	# Registered as the installed mtls-agent-pkcs11.module does: p11-kit reads
	# a user's ~/.config/pkcs11/modules, but not for root (CI), which gets a
	# system registration for the length of the test.
	if [ "$(id -u)" = 0 ]; then
		it_system_file "/etc/pkcs11/modules/zz-mtls-agent-pkcs11-test-$$.module" <<EOF
module: $M
disable-in: mtls-agent mtls-agent-p11
EOF
	else
		mkdir -p "$D/home/.config/pkcs11/modules"
		printf 'module: %s\n' "$M" >"$D/home/.config/pkcs11/modules/mtls-agent-pkcs11.module"
	fi
	KEY="pkcs11:token=p256-p11;object=p256-p11;type=private"
	CERT="pkcs11:token=p256-p11;object=p256-p11;type=cert"
	before=$(signed p256-p11)
	it_ok "wget with pkcs11: URIs" env HOME="$D/home" wget -q -O - --ca-certificate="$D/ca.pem" \
		--certificate="$CERT" --private-key="$KEY" "https://localhost:$P13/"
	it_match "wget: nginx saw the client DN" \
		"^dn=<CN=p256 client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$IT_OUT"
	it_signed "wget: the agent signed" p256-p11 "$before"
	before=$(signed p256-p11)
	# (GIT_SSL_CAINFO, which CI images set, outranks http.sslCAInfo.)
	it_ok "git clone over https with pkcs11: URIs" env HOME="$D/home" GIT_TERMINAL_PROMPT=0 \
		GIT_SSL_CAINFO="$D/ca.pem" git -c http.sslCert="$CERT" -c http.sslKey="$KEY" \
		clone -q "https://localhost:$P13/repo.git" "$D/clone"
	it_ok "the clone has the commit" git -C "$D/clone" log --format=%s -1
	it_match "git: the commit came over mTLS" "^served over mTLS$" "$IT_OUT"
	it_signed "git: the agent signed" p256-p11 "$before"
	it_check "nginx logged the clone" grep -q "GET /repo.git/info/refs" "$D/nginx/access.log"
fi

it_done
