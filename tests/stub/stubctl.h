/*
 * stubctl - what the tests that run tests/stub/p11-stub read and write in
 * its directory (MTLS_SHIM_STUB_DIR; see p11-stub.c): shared by the stub
 * itself, tests/unit/test_sign_pipeline.c and tests/fuzz/fuzz_dispatch.c.
 */
#ifndef MTLS_STUBCTL_H
#define MTLS_STUBCTL_H

#include <stddef.h>

/* The SIGN requests the stubs of `dir` received (DIR/sign-count; 0 if
 * there is none yet); `last` (may be NULL) gets the hex of the last one's
 * data, "" if unknown. */
unsigned long stub_sign_count(const char *dir, char *last, size_t last_len);

/* Writes DIR/sign-mode (what the next SIGNs do); 0 or -1. */
int stub_set_mode(const char *dir, const char *mode);

#endif
