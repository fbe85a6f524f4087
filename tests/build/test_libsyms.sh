#!/bin/bash
# test_libsyms.sh - libmtls-agent.so holds what a TLS client needs and
# nothing of the PAM module: no certificate validation (certval_*), no user
# mapping (usermap_*), and so no import of OpenSSL's OCSP_* or X509_STORE_*
# functions, which only those use.  Checked on the dynamic symbol table
# (imports and exports) of the library as built.
set -u
prog=test_libsyms.sh
: "${top_builddir:?}"
LIB=$top_builddir/.libs/libmtls-agent.so
command -v nm >/dev/null || { echo "$prog: nm not found; skipped"; exit 77; }
[ -e "$LIB" ] || { echo "$prog: $LIB not built" >&2; exit 99; }
syms=$(nm -D "$LIB") || { echo "$prog: nm -D $LIB failed" >&2; exit 99; }
# The check must see the table: the public API is always there.
echo "$syms" | grep -q ' T mtls_agent_' || { echo "$prog: no mtls_agent_ export in $LIB" >&2; exit 99; }
bad=$(echo "$syms" | grep -E '[[:space:]](OCSP_|X509_STORE_|certval|usermap)' || true)
if [ -n "$bad" ]; then
	echo "$prog: FAIL: $LIB imports or exports what only the PAM module needs:" >&2
	echo "$bad" >&2
	exit 1
fi
echo "$prog: PASS: no OCSP_, X509_STORE_, certval or usermap symbol in $LIB"
