#!/bin/bash
# pkcs11.sh - mtls-agent-pkcs11.so as `make install DESTDIR=...` put it
# (run by make installcheck after readme.sh): the module in p11-kit's
# module directory with no libtool archive, exporting C_GetFunctionList
# only; its .module registration (module: by name, disable-in for the
# agent and its helper); the man page; the openssl.cnf snippet; and the
# installed module loads in pkcs11-tool and answers as mtls-agent.
set -u
prog=pkcs11.sh
: "${DESTDIR:?}" "${libdir:?}" "${p11kitmoduledir:?}" "${p11kitconfigdir:?}" "${mandir:?}" \
	"${examplesdir:?}"
failed=0
fail() {
	echo "$prog: FAIL: $*" >&2
	failed=1
}
so=$DESTDIR$p11kitmoduledir/mtls-agent-pkcs11.so
reg=$DESTDIR$p11kitconfigdir/mtls-agent-pkcs11.module
[ -f "$so" ] || fail "$p11kitmoduledir/mtls-agent-pkcs11.so not installed"
[ -e "${so%.so}.la" ] && fail "the module's libtool archive was installed"
[ -f "$reg" ] || fail "$p11kitconfigdir/mtls-agent-pkcs11.module not installed"
grep -qx 'module: mtls-agent-pkcs11.so' "$reg" 2>/dev/null || fail "registration does not name the module"
grep -qx 'disable-in: mtls-agent mtls-agent-p11' "$reg" 2>/dev/null ||
	fail "registration lacks disable-in for the agent and its helper"
[ -f "$DESTDIR$mandir/man8/mtls-agent-pkcs11.8" ] || fail "mtls-agent-pkcs11(8) not installed"
[ -f "$DESTDIR$examplesdir/mtls-agent.cnf" ] || fail "the openssl.cnf snippet is not installed"
if [ -f "$so" ]; then
	syms=$(nm -D --defined-only "$so" | awk '$2 == "T" { print $3 }')
	[ "$syms" = C_GetFunctionList ] || fail "the module exports more than C_GetFunctionList: $syms"
	if command -v pkcs11-tool >/dev/null; then
		# No agent: loaded, no slots (pkcs11-tool then exits 1).
		out=$(LD_LIBRARY_PATH=$DESTDIR$libdir MTLS_AGENT_SOCK=/nonexistent/agent.sock \
			pkcs11-tool --module "$so" -I 2>&1)
		case $out in *"Manufacturer"*mtls-agent*) ;; *) fail "pkcs11-tool cannot load the installed module: $out" ;; esac
	elif [ "${CI:-}" = true ]; then
		fail "pkcs11-tool (opensc) is not installed"
	fi
fi
[ "$failed" = 0 ] && echo "$prog: module, registration, man page and snippet installed where p11-kit and OpenSSL look"
exit "$failed"
