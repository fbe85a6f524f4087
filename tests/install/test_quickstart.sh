#!/bin/bash
# test_quickstart.sh - ./quickstart installs, per command, what that command
# needs and no more (QUICKSTART_LIST_PACKAGES=1 prints the set instead of
# installing it): the demo gets no valgrind, clang or test frameworks;
# check gets the test frameworks; sanitizers gets clang and libFuzzer.
set -u
prog=test_quickstart.sh
: "${top_srcdir:?}"
failed=0
fail() {
	echo "$prog: FAIL: $*" >&2
	failed=1
}
set_of() {
	QUICKSTART_LIST_PACKAGES=1 "$top_srcdir/quickstart" deps "$1" | tr '\n' ' '
}
has() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

demo=$(set_of demo) || fail "quickstart deps demo failed"
for p in valgrind clang libclang-rt-14-dev libcmocka-dev libpamtest0-dev clang-format; do
	has "$demo" "$p" && fail "the demo installs $p, which it does not use"
done
for p in softhsm2 nginx-light pamtester libpam-wrapper libnss-wrapper libssl-dev libcurl4-openssl-dev; do
	has "$demo" "$p" || fail "the demo lacks $p"
done
check=$(set_of check) || fail "quickstart deps check failed"
for p in libcmocka-dev libpamtest0-dev softhsm2 pamtester gnutls-bin clang-format python3; do
	has "$check" "$p" || fail "check lacks $p"
done
has "$check" clang && fail "check installs clang (only the sanitizers use it)"
san=$(set_of sanitizers) || fail "quickstart deps sanitizers failed"
for p in clang libclang-rt-14-dev libcmocka-dev; do
	has "$san" "$p" || fail "sanitizers lack $p"
done
all=$(set_of all) || fail "quickstart deps all failed"
for p in $demo $check $san; do
	has "$all" "$p" || fail "deps (all) lacks $p"
done
out=$(QUICKSTART_LIST_PACKAGES=1 "$top_srcdir/quickstart" deps nosuch 2>&1) &&
	fail "an unknown package set was accepted"
[ "$failed" = 0 ] && echo "$prog: demo: ${demo}"
exit "$failed"
