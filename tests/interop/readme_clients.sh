#!/usr/bin/env bash
# README.md's "Use it from your browser, curl, git, python" commands, run as
# written, in order, in one shell, against nginx ("ssl_verify_client on")
# with an identity named "me" (the p256 key, pkcs11-digest for this user's
# programs).  Put in: the service (service.example:8443 -> this nginx), the
# installed openssl.cnf snippet -> etc/openssl/mtls-agent.cnf with the
# provider from the build tree, the installed module -> the build tree's.
# Each client's page must show the client DN, the clone must hold the
# commit, and the NSS database must list the module.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_need_env MTLS_PKCS11_MODULE MTLS_PROVIDER_DIR
it_require nginx curl python3 gnutls-cli wget git modutil certutil
[ "$(id -u)" = 0 ] || it_skip "wget and git find the module through p11-kit's registration: root (CI) writes /etc/pkcs11/modules"
# A sanitizer build's module cannot be hosted by wget and git next to
# SoftHSM2 (tests/interop/pkcs11.sh says why); the normal build's run is the
# proof that README's commands work as written.
[ -z "$IT_ASAN_RT" ] || it_skip "sanitizer build: README's clients load the module next to SoftHSM2"
M=$MTLS_PKCS11_MODULE
IT_ONLY_EXTRA=1
it_extra_conf() {
	echo
	echo "[identity me]"
	echo "key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private"
	echo "certificate = $IT_DIR/p256.pem"
	echo "purposes = tls13, pkcs11-digest"
	echo "peers = uid:$(id -u)"
}
it_init
git init -q --bare "$D/repo.git"
git -C "$D" init -q work
git -C "$D/work" -c user.name=t -c user.email=t@localhost commit -q --allow-empty -m "served over mTLS"
git -C "$D/work" push -q "$D/repo.git" HEAD:refs/heads/main 2>/dev/null || it_die "git push failed"
git -C "$D/repo.git" symbolic-ref HEAD refs/heads/main
git -C "$D/repo.git" update-server-info
NGINX_EXTRA="		location /repo.git/ { alias $D/repo.git/; }"
it_nginx_start
# As `make install` registers the module with p11-kit (for root: system-wide).
it_system_file "/etc/pkcs11/modules/zz-mtls-agent-pkcs11-readme-$$.module" <<EOF2
module: $M
disable-in: mtls-agent mtls-agent-p11
EOF2
mkdir -p "$D/home/.pki/nssdb"
certutil -N -d "sql:$D/home/.pki/nssdb" --empty-password || it_die "certutil -N failed"
cp "$D/p256.pem" "$D/me.pem"
export OPENSSL_MODULES=$MTLS_PROVIDER_DIR HOME=$D/home PATH=$(dirname "$CTL"):$PATH

# The block: the first ```sh after the heading; continuation lines joined.
block=$(awk '/^## Use it from your browser, curl, git, python/ { h = 1; next }
	h && /^```sh$/ { b = 1; next } b && /^```$/ { exit } b { print }' "$top_srcdir/README.md" |
	sed -e ':a' -e '/\\$/N; s/\\\n//; ta')
[ -n "$block" ] || it_die "no command block under the README heading"
port=$NGINX_TLS13
n=0
while IFS= read -r line; do
	[ -n "$line" ] || continue
	n=$((n + 1))
	cmd=${line//service.example:8443/localhost:$port}
	cmd=${cmd//service.example/localhost}
	cmd=${cmd//\/usr\/local\/share\/doc\/mtls-agent\/examples\/mtls-agent.cnf/$top_srcdir/etc/openssl/mtls-agent.cnf}
	cmd=${cmd//\$(pkg-config --variable=p11_module_path p11-kit-1)\/mtls-agent-pkcs11.so/$M}
	it_ok "README command $n: ${line:0:60}" bash -c "cd '$D' && $cmd"
	printf '%s\n' "$IT_OUT" >>"$D/readme.out"
done <<<"$block"
it_check "the block has the eight commands" test "$n" -eq 8
dns=$(grep -c "dn=<CN=p256 client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" "$D/readme.out" || true)
it_check "curl, python3, gnutls-cli and wget each saw the client DN" test "$dns" -eq 4
it_ok "git cloned the repository" git -C "$D/repo" log --format=%s -1
it_match "the commit came over mTLS" "^served over mTLS$" "$IT_OUT"
it_ok "the NSS database has the module" modutil -dbdir "sql:$D/home/.pki/nssdb" -list mtls-agent
it_match "NSS sees the identity me" "Token Name: me " "$IT_OUT"
signed=$(grep -c "audit: sign ok: .* identity=me " "$D/agent.log" || true)
it_check "the agent signed every login (git makes more than one)" test "$signed" -ge 5

it_done
