/*
 * fuzz_dispatch - request bodies into the agent's dispatcher (server.c,
 * through server_dispatch_frame()), over the real token layer and sign
 * pipeline, with the stub helper (tests/stub/p11-stub) as the token.
 *
 * Input: one flags byte, then frame bodies, each as a u32 length and the
 * bytes (wbuf strings); a last incomplete one is ignored.  Flags bit 0:
 * a well-formed HELLO goes first; otherwise the connection starts without
 * one, as a client that skips it.  Every input starts with the token
 * logged in, so a SIGN can reach the stub.  LOCK requests are dropped:
 * a lock outlives the input (its passphrase is the fuzzer's) and its slow
 * hash would take 100 ms; UNLOCK and everything else go in.
 *
 * Invariants: a reply is always built; it is MSG_ERROR with a known code,
 * or the request's type with MSG_REPLY; before HELLO everything else is
 * refused with HELLO_REQUIRED; only a SIGN reaches the token, and a SIGN
 * answered with a signature did, once.
 *
 * Environment: MTLS_P11_STUB_BIN (make check), else the build tree's stub.
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"
#include "log.h"
#include "mtls-agent.h"
#include "proto.h"
#include "server.h"
#include "stubctl.h"
#include "token.h"

#ifndef FUZZ_STUB_BIN
#define FUZZ_STUB_BIN "tests/stub/p11-stub"
#endif
#define PIN "1234"

static char tmp[PATH_MAX], stubdir[PATH_MAX + 8];
static struct server *srv;
static struct tokenset *ts;
static struct wbuf *in, *out, *hello;

static void
cleanup(void)
{
	char cmd[PATH_MAX + 16];

	if (tmp[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_dispatch: cannot remove %s\n", tmp);
}

static int
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0 || chmod(path, mode) != 0)
		return -1;
	return 0;
}

static unsigned long
stub_count(void)
{
	return stub_sign_count(stubdir, NULL, 0);
}

/* Once per process: a token set on the stub, a server around it. */
static void
init(void)
{
	char path[PATH_MAX + 64], text[3 * PATH_MAX + 1024], err[512] = "";
	const char *stub = getenv("MTLS_P11_STUB_BIN"), *td = getenv("TMPDIR");
	struct msg_hello_req hr = { MTLS_PROTO_MIN, MTLS_PROTO_MAX, (char *)"fuzz_dispatch" };
	struct config *cfg;
	int lfd = -1;

	/* Refusals are the point here: only errors are logged. */
	log_init("fuzz_dispatch", 0, LOG_LEVEL_ERROR);
	setenv("MTLS_P11_HELPER_BIN", stub != NULL ? stub : FUZZ_STUB_BIN, 1);
	snprintf(tmp, sizeof(tmp), "%s/fuzz_dispatch.XXXXXX", td ? td : "/tmp");
	FUZZ_CHECK(mkdtemp(tmp) != NULL);
	atexit(cleanup);
	snprintf(stubdir, sizeof(stubdir), "%s/stub", tmp);
	snprintf(path, sizeof(path), "%s/mod", tmp);
	FUZZ_CHECK(mkdir(stubdir, 0700) == 0 && mkdir(path, 0700) == 0);
	setenv("MTLS_SHIM_STUB_DIR", stubdir, 1);
	snprintf(path, sizeof(path), "%s/mod/stub.so", tmp);
	FUZZ_CHECK(write_file(path, "", 0644) == 0);
	snprintf(path, sizeof(path), "%s/askpass-no", tmp);
	FUZZ_CHECK(write_file(path, "#!/bin/sh\nexit 1\n", 0755) == 0);
	snprintf(text, sizeof(text),
		 "module = stub.so\nmodule-dirs = %s/mod\ntoken-timeout = 5\n"
		 "askpass = %s/askpass-no\n"
		 "[identity rsa]\nkey = pkcs11:token=stub;id=%%01\n"
		 "purposes = tls13-client-certificate-verify, tls12-client-certificate-verify, "
		 "pam-challenge, raw-digest\n"
		 "[identity ec]\nkey = pkcs11:token=stub;id=%%02\n"
		 "purposes = tls13-client-certificate-verify, tls12-client-certificate-verify, "
		 "pam-challenge, raw-digest\n"
		 "[identity ec-tls13]\nkey = pkcs11:token=stub;id=%%02\n"
		 "[identity ec-confirm]\nkey = pkcs11:token=stub;id=%%02\nconfirm = yes\n"
		 "[identity ec-other]\nkey = pkcs11:token=stub;id=%%02\npeers = uid:%u\n",
		 tmp, tmp, (unsigned)getuid() + 1);
	if (config_parse(text, "fuzz_dispatch", &cfg, err, sizeof(err)) != 0 ||
	    token_open(cfg, &ts, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_dispatch: %s\n", err);
		abort();
	}
	FUZZ_CHECK(server_new(cfg, NULL, NULL, ts, lfd, "/nonexistent/agent.sock", &srv) == 0);
	FUZZ_CHECK((in = wbuf_new()) != NULL && (out = wbuf_new()) != NULL &&
		   (hello = wbuf_new()) != NULL);
	FUZZ_CHECK(msg_hello_req_put(hello, &hr) == 0);
}

/* One request; the invariants on its reply. */
static void
one(const struct sign_peer *peer, int *hello_done, const unsigned char *body, size_t len)
{
	struct msg_error e;
	struct msg_sign_resp sr;
	unsigned long before = stub_count();
	int was_hello = *hello_done;
	uint8_t type = len > 0 ? body[0] : 0, rtype;

	wbuf_reset(in);
	FUZZ_CHECK(wbuf_put(in, body, len) == 0);
	FUZZ_CHECK(server_dispatch_frame(srv, peer, hello_done, in, out) == 0);
	FUZZ_CHECK(wbuf_get_u8(out, &rtype) == 0);
	if (rtype == MSG_ERROR) {
		FUZZ_CHECK(msg_error_get(out, &e) == 0);
		FUZZ_CHECK(e.code < 0 && e.code >= MTLS_ERR_LAST_);
		FUZZ_CHECK(was_hello || len == 0 || type == MSG_HELLO ||
			   e.code == MTLS_ERR_HELLO_REQUIRED);
		msg_error_clear(&e);
	} else {
		FUZZ_CHECK(len > 0 && rtype == (type | MSG_REPLY));
		FUZZ_CHECK(was_hello || type == MSG_HELLO);
		if (type == MSG_SIGN) {
			FUZZ_CHECK(msg_sign_resp_get(out, &sr) == 0 && sr.sig_len > 0);
			msg_sign_resp_clear(&sr);
			FUZZ_CHECK(stub_count() == before + 1);
		}
	}
	if (type != MSG_SIGN || !was_hello)
		FUZZ_CHECK(stub_count() == before);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sign_peer peer = {
		.pid = getpid(), .uid = getuid(), .gid = getgid(), .exe = "/usr/bin/fuzz-client"
	};
	struct wbuf *b;
	const unsigned char *body;
	size_t len;
	char why[256];
	int hello_done = 0, retries;
	uint8_t flags;

	if (srv == NULL)
		init();
	if ((b = wbuf_new()) == NULL)
		return 0;
	if (wbuf_put(b, data, size) != 0 || wbuf_get_u8(b, &flags) != 0)
		goto out;
	/* The state an input starts from: logged in (an earlier input may
	 * have logged out), not locked (LOCK is never fed). */
	if (token_login(ts, "", PIN, 0, &retries, why, sizeof(why)) != 0) {
		fprintf(stderr, "fuzz_dispatch: login: %s\n", why);
		abort();
	}
	if (flags & 1)
		one(&peer, &hello_done, wbuf_ptr(hello), wbuf_len(hello));
	while (wbuf_get_string_direct(b, &body, &len, MTLS_FRAME_MAX) == 0) {
		if (len > 0 && body[0] == MSG_LOCK)
			continue;
		one(&peer, &hello_done, body, len);
	}
out:
	wbuf_free(b);
	return 0;
}
