#!/bin/bash
# test_pam.sh - runs tests/pam/test_pam (libpamtest + cmocka) under
# pam_wrapper and nss_wrapper; see wrapper-env.sh.  Registered in TESTS.
set -u
prog=test_pam.sh
cleanup() { :; }
. "$(dirname "$0")/wrapper-env.sh"
LD_PRELOAD="$WRAPPER_PRELOAD" "$top_builddir/tests/pam/test_pam" "$@"
