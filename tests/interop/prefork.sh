#!/usr/bin/env bash
# A prefork process acting as a client: one SSL_CTX configured with an agent
# identity before fork(); the parent and three children each complete an
# mTLS request against nginx (ssl_verify_client on), and the children's
# handshakes overlap with the parent's.
set -u
. "${top_srcdir:-$(dirname "$0")/../..}/tests/interop/lib.sh"

FORK_CLIENT=${FORK_CLIENT:-${top_builddir:-.}/tests/interop/fork_client}
[ -x "$FORK_CLIENT" ] || it_die "$FORK_CLIENT not built"
it_init nginx
it_nginx_start

for k in p256 rsa2048; do
	it_ok "fork_client $k: parent and 3 children" \
		"$FORK_CLIENT" "$D/ca.pem" "$k" "$NGINX_TLS13" "dn=<CN=$k client,O=mtls-agent tests>" 3
	it_match "fork_client $k: all succeeded" "^fork_client: 3 children and the parent succeeded$" "$IT_OUT"
done
# The check above must be able to fail: a child with an identity that
# nginx refuses is reported.
it_run "$FORK_CLIENT" "$D/ca.pem" p256-wrongca "$NGINX_TLS13" "dn=<CN=p256 client" 3
it_check "fork_client fails when the server refuses" test "$IT_STATUS" -ne 0

it_done
