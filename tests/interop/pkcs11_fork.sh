#!/usr/bin/env bash
# A forking client: p11_fork_client (GnuTLS, pkcs11: URIs through
# mtls-agent-pkcs11.so) logs in to nginx ("ssl_verify_client on") in the
# parent, then in four children with the credentials they inherited, then
# in the parent again.  Every process must see its DN in the page, and the
# agent must have signed for each of them, from its own pid.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

it_need_env MTLS_PKCS11_MODULE
it_require nginx
FORK=${top_builddir:-.}/tests/interop/p11_fork_client
if [ ! -x "$FORK" ]; then
	[ "${CI:-}" = true ] && { echo "pkcs11_fork: FAIL: $FORK not built (GnuTLS headers missing: libgnutls28-dev)" >&2; exit 1; }
	it_skip "$FORK not built (no GnuTLS headers)"
fi
IT_ONLY_EXTRA=1
it_extra_conf() {
	echo
	echo "[identity p256-fork]"
	echo "key = pkcs11:token=$MTLS_TEST_TOKEN;id=%03;type=private"
	echo "certificate = $IT_DIR/p256.pem"
	echo "purposes = tls13, pkcs11-digest"
	echo "peers = uid:$(id -u)"
}
it_init
it_nginx_start

U="pkcs11:token=p256-fork;object=p256-fork"
it_ok "p11_fork_client: parent, 4 children, parent" "$FORK" "$MTLS_PKCS11_MODULE" "$D/ca.pem" \
	"$U;type=cert" "$U;type=private" "$NGINX_TLS13" 4
n=$(printf '%s\n' "$IT_OUT" | grep -c "^pid [0-9]*: dn=<CN=p256 client,O=mtls-agent tests> proto=<TLSv1.3> verify=<SUCCESS>" || true)
it_check "six logins saw the client DN" test "$n" -eq 6
pids=$(printf '%s\n' "$IT_OUT" | sed -n 's/^pid \([0-9]*\):.*/\1/p' | sort -u | wc -l)
it_check "from five processes" test "$pids" -eq 5
signers=$(grep "audit: sign ok: .* identity=p256-fork .*purpose=pkcs11-digest" "$D/agent.log" |
	sed -n 's/.*peer pid=\([0-9]*\) .*/\1/p' | sort -u | wc -l)
it_check "the agent signed for five processes" test "$signers" -eq 5

it_done
