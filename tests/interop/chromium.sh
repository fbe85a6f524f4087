#!/usr/bin/env bash
# The browser test of a smart-card mTLS login: headless Chromium (Debian's
# chromium) with an NSS database that has mtls-agent-pkcs11.so added by
# modutil, and the AutoSelectCertificateForUrls policy, loads a page from
# nginx ("ssl_verify_client on"): the DOM it dumps shows the client DN and
# the agent's audit log the signature.  NSS hands the module a digest, so
# the identity needs pkcs11-digest; one without it is refused, with the
# reason in the audit log, and the browser's login fails.
#
# Chromium reads managed policies only from /etc/chromium/policies/managed:
# the test writes one file there (it runs as root in CI) and removes it.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_need_env MTLS_PKCS11_MODULE
it_require nginx chromium modutil certutil
[ "$(id -u)" = 0 ] || it_skip "Chromium's managed policies need root (/etc/chromium/policies/managed)"
M=$MTLS_PKCS11_MODULE

# Two identities with different certificates, so that the policy's
# subject filter picks one: p256 may sign digests, rsa2048 may not.
IT_ONLY_EXTRA=1
it_extra_conf() {
	echo
	echo "[identity p256-browser]"
	echo "key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private"
	echo "certificate = $IT_DIR/p256.pem"
	echo "purposes = tls13, pkcs11-digest"
	echo "peers = uid:$(id -u)"
	echo
	echo "[identity rsa2048-tls13]"
	echo "key = pkcs11:token=$MTLS_TEST_TOKEN;id=%01;type=private"
	echo "certificate = $IT_DIR/rsa2048.pem"
	echo "purposes = tls13"
}
it_init
it_nginx_start
P13=$NGINX_TLS13

# The user's NSS database, where Chromium on Linux finds modules and trust.
H=$D/home
DB=sql:$H/.pki/nssdb
mkdir -p "$H/.pki/nssdb"
it_ok "certutil creates the NSS database" certutil -N -d "$DB" --empty-password
it_ok "certutil trusts the test CA" certutil -A -d "$DB" -n mtls-test-ca -t "C,," -i "$D/ca.pem"
it_ok "modutil adds mtls-agent-pkcs11.so" modutil -force -dbdir "$DB" -add mtls-agent -libfile "$M"
it_ok "modutil lists the module" modutil -dbdir "$DB" -list mtls-agent
it_match "NSS sees the identities as tokens" "Token Name: p256-browser" "$IT_OUT"
it_ok "NSS lists the agent's certificates" certutil -L -d "$DB" -h all
it_match "certificate p256-browser" "^p256-browser:p256-browser " "$IT_OUT"

POLICY=/etc/chromium/policies/managed/zz-mtls-agent-test-$$.json
# browse CN: Chromium picks the client certificate whose subject CN is CN.
browse() {
	it_system_file "$POLICY" <<EOF
{ "AutoSelectCertificateForUrls": [
  "{\"pattern\":\"https://localhost:$P13\",\"filter\":{\"SUBJECT\":{\"CN\":\"$1\"}}}" ] }
EOF
	rm -rf "$D/chrome"
	it_run env HOME="$H" timeout 60 chromium --headless --no-sandbox --disable-gpu \
		--no-first-run --user-data-dir="$D/chrome" --dump-dom "https://localhost:$P13/"
}

browse "p256 client"
it_match "Chromium: nginx saw the client DN" \
	"dn=&lt;CN=p256 client,O=mtls-agent tests&gt; proto=&lt;TLSv1.3&gt; verify=&lt;SUCCESS&gt;" "$IT_OUT"
it_check "the agent signed for Chromium" grep -q \
	"audit: sign ok: .* exe=[^ ]*chromium identity=p256-browser scheme=ecdsa_secp256r1_sha256 purpose=pkcs11-digest mechanism=CKM_ECDSA" \
	"$D/agent.log"

browse "rsa2048 client"
it_check "Chromium's login with rsa2048-tls13 fails" sh -c "! printf '%s' \"\$1\" | grep -q 'CN=rsa2048'" sh "$IT_OUT"
it_match "Chromium says the client signature failed" "ERR_SSL_CLIENT_AUTH_SIGNATURE_FAILED" "$IT_ERR"
it_check "the agent refused NSS's digest, saying why" grep -q \
	"audit: sign refused: .* exe=[^ ]*chromium identity=rsa2048-tls13 scheme=rsa_pss_rsae_sha256 purpose=pkcs11-digest mechanism=CKM_RSA_PKCS_PSS result=denied by the identity's policy: purpose pkcs11-digest not allowed" \
	"$D/agent.log"

it_done
