/*
 * test_sign_pipeline.c - the agent's sign pipeline (src/agent/sign.c over
 * the token layer and src/agent/helper.c) called through token_sign(),
 * against the stub helper tests/stub/p11-stub (software keys; see its
 * header comment).  Every refusal is checked twice: by its code and by the
 * stub's SIGN counter, which shows that nothing reached the token.  The
 * signatures that succeed are verified with OpenSSL against the stub's
 * certificates.
 *
 * Environment: MTLS_P11_STUB_BIN (set by make check) names the stub.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "conf.h"
#include "log.h"
#include "mtls-agent.h"
#include "purpose.h"
#include "stubctl.h"
#include "token.h"
#include "token_int.h"

#define PIN	      "1234"
#define TOKEN_TIMEOUT 2 /* s: the hang test waits this long */

static char tmp[PATH_MAX], stubdir[PATH_MAX + 8];
static struct config *cfg;
static struct tokenset *ts;
static struct sign_peer peer;

static void
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

/* What the stub does with the next SIGN requests (p11-stub.c). */
static void
stub_mode(const char *mode)
{
	assert_int_equal(stub_set_mode(stubdir, mode), 0);
}

/* SIGN requests the stub received so far; hex of the last one's data. */
static unsigned long
stub_count(char *last, size_t last_len)
{
	return stub_sign_count(stubdir, last, last_len);
}

static EVP_PKEY *
stub_pubkey(const char *name)
{
	char path[PATH_MAX + 32];
	EVP_PKEY *pk;
	X509 *x;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.pem", stubdir, name);
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(x = PEM_read_X509(f, NULL, NULL, NULL));
	fclose(f);
	assert_non_null(pk = X509_get_pubkey(x));
	X509_free(x);
	return pk;
}

static size_t
tls13_content(unsigned char *buf, size_t hash_len)
{
	static const char ctx[] = TLS13_CLIENT_CV_CONTEXT;
	size_t i;

	memset(buf, 0x20, TLS13_CV_PAD_LEN);
	memcpy(buf + TLS13_CV_PAD_LEN, ctx, sizeof(ctx));
	for (i = 0; i < hash_len; i++)
		buf[TLS13_CV_PAD_LEN + sizeof(ctx) + i] = (unsigned char)(rand() & 0xff);
	return TLS13_CV_PAD_LEN + sizeof(ctx) + hash_len;
}

static int
sign(const char *name, uint16_t scheme, int purpose, const unsigned char *content, size_t len,
     unsigned char **sig, size_t *sig_len, char *why, size_t why_len)
{
	return token_sign(ts, &peer, name, scheme, purpose, content, len, sig, sig_len, why,
			  why_len);
}

/* Signs a fresh TLS 1.3 content with name and scheme; returns the code.
 * The signature, if any, is freed. */
static int
sign_tls13(const char *name, uint16_t scheme, char *why, size_t why_len)
{
	unsigned char content[200], *sig = NULL;
	size_t len = tls13_content(content, 32), sig_len = 0;
	int r = sign(name, scheme, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, &sig, &sig_len,
		     why, why_len);

	free(sig);
	return r;
}

static void
login(void)
{
	char why[256] = "";
	int retries;

	assert_int_equal(token_login(ts, "", PIN, 0, &retries, why, sizeof(why)), 0);
}

/* A refusal: its code, and the stub saw no SIGN. */
static void
assert_refused(const char *name, uint16_t scheme, int purpose, const unsigned char *content,
	       size_t len, int want)
{
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	unsigned long before = stub_count(NULL, 0);
	char why[256] = "";
	int r = sign(name, scheme, purpose, content, len, &sig, &sig_len, why, sizeof(why));

	if (r != want)
		fail_msg("identity %s: got %s (%s), want %s", name, mtls_agent_strerror(r), why,
			 mtls_agent_strerror(want));
	assert_null(sig);
	assert_true(why[0] != '\0');
	assert_int_equal(stub_count(NULL, 0), before);
}

static int
group_setup(void **state)
{
	char path[PATH_MAX + 64], text[4 * PATH_MAX + 2048], err[512] = "";
	const char *stub = getenv("MTLS_P11_STUB_BIN");
	const char *td = getenv("TMPDIR");

	(void)state;
	log_init("test_sign_pipeline", 0, LOG_LEVEL_ERROR);
	if (stub == NULL || access(stub, X_OK) != 0) {
		fprintf(stderr, "MTLS_P11_STUB_BIN does not name the stub helper (make check "
				"sets it)\n");
		return -1;
	}
	setenv("MTLS_P11_HELPER_BIN", stub, 1);
	snprintf(tmp, sizeof(tmp), "%s/test_sign_pipeline.XXXXXX", td ? td : "/tmp");
	if (mkdtemp(tmp) == NULL)
		return -1;
	snprintf(stubdir, sizeof(stubdir), "%s/stub", tmp);
	snprintf(path, sizeof(path), "%s/mod", tmp);
	if (mkdir(stubdir, 0700) != 0 || mkdir(path, 0700) != 0)
		return -1;
	setenv("MTLS_SHIM_STUB_DIR", stubdir, 1);
	/* The agent checks the module's path; the stub never opens it. */
	snprintf(path, sizeof(path), "%s/mod/stub.so", tmp);
	write_file(path, "", 0644);
	/* Says yes while TMP/confirm-yes exists. */
	snprintf(path, sizeof(path), "%s/askpass", tmp);
	snprintf(text, sizeof(text), "#!/bin/sh\ntest -e '%s/confirm-yes'\n", tmp);
	write_file(path, text, 0755);
	snprintf(text, sizeof(text),
		 "module = stub.so\n"
		 "module-dirs = %s/mod\n"
		 "token-timeout = %d\n"
		 "askpass = %s/askpass\n"
		 "confirm-timeout = 5\n"
		 "[identity rsa]\nkey = pkcs11:token=stub;id=%%01\n"
		 "purposes = tls13-client-certificate-verify, raw-digest\n"
		 "[identity ec]\nkey = pkcs11:token=stub;id=%%02\n"
		 "purposes = tls13-client-certificate-verify, raw-digest\n"
		 "[identity ec-tls13]\nkey = pkcs11:token=stub;id=%%02\n"
		 "purposes = tls13-client-certificate-verify\n"
		 "[identity ec-other-uid]\nkey = pkcs11:token=stub;id=%%02\npeers = uid:%u\n"
		 "[identity ec-other-exe]\nkey = pkcs11:token=stub;id=%%02\n"
		 "peers = exe:/nonexistent/bin/other\n"
		 "[identity ec-my-uid]\nkey = pkcs11:token=stub;id=%%02\npeers = uid:%u\n"
		 "[identity ec-rate]\nkey = pkcs11:token=stub;id=%%02\nrate-limit = 2\n"
		 "[identity ec-confirm]\nkey = pkcs11:token=stub;id=%%02\nconfirm = yes\n",
		 tmp, TOKEN_TIMEOUT, tmp, (unsigned)getuid() + 1, (unsigned)getuid());
	if (config_parse(text, "test_sign_pipeline", &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "config: %s\n", err);
		return -1;
	}
	if (token_open(cfg, &ts, err, sizeof(err)) != 0) {
		fprintf(stderr, "token_open: %s\n", err);
		return -1;
	}
	peer = (struct sign_peer){
		.pid = getpid(), .uid = getuid(), .gid = getgid(), .exe = "/usr/bin/test-client"
	};
	return 0;
}

static int
group_teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	token_close(ts);
	config_free(cfg);
	if (tmp[0] != '\0') {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", tmp);
	}
	return 0;
}

/* Every test starts with a stub that signs and a logged-in token. */
static int
setup(void **state)
{
	(void)state;
	stub_mode("ok\n");
	login();
	return 0;
}

static void
test_unknown_identity(void **state)
{
	unsigned char content[200];
	size_t len = tls13_content(content, 32);

	(void)state;
	assert_refused("nobody", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		       MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, MTLS_ERR_NO_IDENTITY);
}

static void
test_peer_denied(void **state)
{
	unsigned char content[200];
	size_t len = tls13_content(content, 32);
	char why[256];

	(void)state;
	assert_refused("ec-other-uid", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		       MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, MTLS_ERR_POLICY_DENIED);
	assert_refused("ec-other-exe", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		       MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, MTLS_ERR_POLICY_DENIED);
	/* The same key for a peer its policy names. */
	assert_int_equal(
	    sign_tls13("ec-my-uid", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)), 0);
}

static void
test_purpose_denied(void **state)
{
	unsigned char digest[32] = { 1, 2, 3 };

	(void)state;
	/* ec-tls13 may sign TLS 1.3 contents only; ec may sign digests. */
	assert_refused("ec-tls13", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_RAW_DIGEST,
		       digest, sizeof(digest), MTLS_ERR_POLICY_DENIED);
	assert_refused("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, 99, digest, sizeof(digest),
		       MTLS_ERR_CONTENT_REJECTED);
}

static void
test_scheme_key_type(void **state)
{
	unsigned char content[200];
	size_t len = tls13_content(content, 32);

	(void)state;
	assert_refused("rsa", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
		       content, len, MTLS_ERR_UNSUPPORTED_SCHEME);
	assert_refused("ec", MTLS_AGENT_RSA_PSS_RSAE_SHA256, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
		       content, len, MTLS_ERR_UNSUPPORTED_SCHEME);
	/* P-256 with the P-384 scheme: the curve counts too. */
	assert_refused("ec", MTLS_AGENT_ECDSA_SECP384R1_SHA384, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
		       content, len, MTLS_ERR_UNSUPPORTED_SCHEME);
	assert_refused("ec", 0x1234, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len,
		       MTLS_ERR_UNSUPPORTED_SCHEME);
}

static void
test_content_rejected(void **state)
{
	unsigned char content[200], digest[48] = { 0 };
	size_t len = tls13_content(content, 32);

	(void)state;
	/* Not a TLS 1.3 CertificateVerify content: the context string is off. */
	content[TLS13_CV_PAD_LEN + 4] ^= 1;
	assert_refused("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
		       content, len, MTLS_ERR_CONTENT_REJECTED);
	/* A "digest" whose length is not the scheme's hash's. */
	assert_refused("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_RAW_DIGEST,
		       digest, sizeof(digest), MTLS_ERR_CONTENT_REJECTED);
}

static void
test_rate_limit(void **state)
{
	unsigned char content[200];
	size_t len = tls13_content(content, 32);
	unsigned long before;
	char why[256];

	(void)state;
	before = stub_count(NULL, 0);
	/* rate-limit = 2: two a minute, refilled at 2/60 a second. */
	assert_int_equal(sign_tls13("ec-rate", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)),
			 0);
	assert_int_equal(sign_tls13("ec-rate", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)),
			 0);
	assert_int_equal(stub_count(NULL, 0), before + 2);
	assert_refused("ec-rate", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		       MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, MTLS_ERR_RATE_LIMITED);
	/* Another identity on the same key has its own bucket. */
	assert_int_equal(sign_tls13("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)), 0);
}

static void
test_confirm(void **state)
{
	unsigned char content[200];
	size_t len = tls13_content(content, 32);
	char yes[PATH_MAX + 16], why[256];
	unsigned long before;

	(void)state;
	/* The askpass program answers no. */
	assert_refused("ec-confirm", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		       MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, MTLS_ERR_CONFIRM_DENIED);
	/* And yes: the signature is made, once. */
	snprintf(yes, sizeof(yes), "%s/confirm-yes", tmp);
	write_file(yes, "", 0644);
	before = stub_count(NULL, 0);
	assert_int_equal(
	    sign_tls13("ec-confirm", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)), 0);
	assert_int_equal(stub_count(NULL, 0), before + 1);
	assert_int_equal(unlink(yes), 0);
}

/* Signs `content` for `purpose` and verifies the signature with OpenSSL:
 * over the content with the scheme's hash, or (raw-digest) over the
 * digest itself. */
static void
sign_and_verify(const char *name, const char *keyfile, uint16_t scheme, int purpose,
		const unsigned char *content, size_t len, const EVP_MD *md, int padding)
{
	unsigned char *sig = NULL, digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	char why[256] = "", last[1200], want[2 * EVP_MAX_MD_SIZE + 1];
	EVP_PKEY *pk = stub_pubkey(keyfile);
	EVP_PKEY_CTX *pctx;
	unsigned long before = stub_count(NULL, 0);
	size_t sig_len = 0, i;
	int r;

	r = sign(name, scheme, purpose, content, len, &sig, &sig_len, why, sizeof(why));
	if (r != 0)
		fail_msg("%s: %s (%s)", name, mtls_agent_strerror(r), why);
	assert_int_equal(stub_count(last, sizeof(last)), before + 1);
	if (purpose == MTLS_AGENT_PURPOSE_RAW_DIGEST) {
		memcpy(digest, content, len);
		dlen = (unsigned int)len;
	} else {
		assert_int_equal(EVP_Digest(content, len, digest, &dlen, md, NULL), 1);
	}
	/* The token was given the hash (its tail, after a DigestInfo). */
	for (i = 0; i < dlen; i++)
		snprintf(want + 2 * i, 3, "%02x", digest[i]);
	assert_true(strlen(last) >= 2 * dlen);
	assert_string_equal(last + strlen(last) - 2 * dlen, want);
	assert_non_null(pctx = EVP_PKEY_CTX_new(pk, NULL));
	assert_int_equal(EVP_PKEY_verify_init(pctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_signature_md(pctx, md), 1);
	if (padding != 0) {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, padding), 1);
		if (padding == RSA_PKCS1_PSS_PADDING)
			assert_int_equal(
			    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
	}
	/* ECDSA: the token's r || s has become DER, which OpenSSL verifies. */
	assert_int_equal(EVP_PKEY_verify(pctx, sig, sig_len, digest, dlen), 1);
	/* And the signature is of this content, not of any. */
	digest[0] ^= 1;
	assert_int_not_equal(EVP_PKEY_verify(pctx, sig, sig_len, digest, dlen), 1);
	EVP_PKEY_CTX_free(pctx);
	EVP_PKEY_free(pk);
	free(sig);
}

static void
test_sign_rsa_pss(void **state)
{
	unsigned char content[200];
	size_t len = tls13_content(content, 32);

	(void)state;
	sign_and_verify("rsa", "rsa", MTLS_AGENT_RSA_PSS_RSAE_SHA256,
			MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, EVP_sha256(),
			RSA_PKCS1_PSS_PADDING);
	len = tls13_content(content, 48);
	sign_and_verify("rsa", "rsa", MTLS_AGENT_RSA_PSS_RSAE_SHA384,
			MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, EVP_sha384(),
			RSA_PKCS1_PSS_PADDING);
}

static void
test_sign_rsa_pkcs1(void **state)
{
	unsigned char digest[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(digest); i++)
		digest[i] = (unsigned char)(rand() & 0xff);
	/* PKCS#1 v1.5 is not for TLS 1.3; raw digests of each hash. */
	sign_and_verify("rsa", "rsa", MTLS_AGENT_RSA_PKCS1_SHA256, MTLS_AGENT_PURPOSE_RAW_DIGEST,
			digest, 32, EVP_sha256(), RSA_PKCS1_PADDING);
	sign_and_verify("rsa", "rsa", MTLS_AGENT_RSA_PKCS1_SHA512, MTLS_AGENT_PURPOSE_RAW_DIGEST,
			digest, 64, EVP_sha512(), RSA_PKCS1_PADDING);
}

static void
test_sign_ecdsa(void **state)
{
	unsigned char content[200], digest[32];
	size_t len = tls13_content(content, 32), i;

	(void)state;
	sign_and_verify("ec", "ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, EVP_sha256(), 0);
	for (i = 0; i < sizeof(digest); i++)
		digest[i] = (unsigned char)(rand() & 0xff);
	sign_and_verify("ec", "ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_RAW_DIGEST, digest, sizeof(digest), EVP_sha256(), 0);
}

/* The stub answers `mode` to name's SIGN with scheme; the pipeline
 * answers want; it reached the token once.  *why gets the reason. */
static void
assert_stub_answer_for(const char *name, uint16_t scheme, const char *mode, int want, char *why,
		       size_t why_len)
{
	unsigned long before = stub_count(NULL, 0);
	int r;

	stub_mode(mode);
	r = sign_tls13(name, scheme, why, why_len);
	if (r != want)
		fail_msg("stub %s: got %s (%s), want %s", mode, mtls_agent_strerror(r), why,
			 mtls_agent_strerror(want));
	assert_int_equal(stub_count(NULL, 0), before + 1);
	stub_mode("ok\n");
}

static void
assert_stub_answer(const char *mode, int want, char *why, size_t why_len)
{
	assert_stub_answer_for("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, mode, want, why, why_len);
}

static void
test_stub_errors(void **state)
{
	char mode[64], why[256];
	int pid = helper_pid(ts->hp);

	(void)state;
	/* CKR_DEVICE_ERROR: a token failure, the CK_RV in the reason. */
	snprintf(mode, sizeof(mode), "error %d 30\n", MTLS_ERR_TOKEN);
	assert_stub_answer(mode, MTLS_ERR_TOKEN, why, sizeof(why));
	assert_non_null(strstr(why, "0x30"));
	/* CKR_SESSION_HANDLE_INVALID: the token went away under the session. */
	snprintf(mode, sizeof(mode), "error %d b3\n", MTLS_ERR_TOKEN);
	assert_stub_answer(mode, MTLS_ERR_TOKEN_ABSENT, why, sizeof(why));
	/* The helper says the token is not logged in (it was reset). */
	snprintf(mode, sizeof(mode), "error %d 101\n", MTLS_ERR_LOGIN_REQUIRED);
	assert_stub_answer(mode, MTLS_ERR_LOGIN_REQUIRED, why, sizeof(why));
	/* A signature reply whose body does not parse: refused, and since
	 * the frame was one, the helper is kept. */
	assert_stub_answer("badsig\n", MTLS_ERR_TOKEN, why, sizeof(why));
	assert_stub_answer_for("rsa", MTLS_AGENT_RSA_PSS_RSAE_SHA256, "badsig\n", MTLS_ERR_TOKEN,
			       why, sizeof(why));
	assert_int_equal(helper_pid(ts->hp), pid);
	login();
	assert_int_equal(sign_tls13("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)), 0);
}

/* The stub in `mode` loses the helper: it is started again, logged out. */
static void
assert_restarted(const char *mode, int want, double min_s, double max_s)
{
	struct timespec t0, t1;
	unsigned int gen = helper_generation(ts->hp);
	int pid = helper_pid(ts->hp);
	char why[256] = "";
	double s;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_stub_answer(mode, want, why, sizeof(why));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	/* make memcheck: the agent's side runs under valgrind, slower. */
	if (getenv("MTLS_TEST_UNDER_VALGRIND") != NULL)
		max_s += 5;
	if (s < min_s || s > max_s)
		fail_msg("stub %s: answered after %.2f s, want %.1f..%.1f s", mode, s, min_s,
			 max_s);
	assert_true(helper_generation(ts->hp) > gen);
	/* The next request starts the new helper; its token is logged out,
	 * and the client is told so by its code. */
	assert_int_equal(sign_tls13("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)),
			 MTLS_ERR_LOGIN_REQUIRED);
	assert_int_not_equal(helper_pid(ts->hp), pid);
	assert_true(helper_pid(ts->hp) > 0);
	login();
	assert_int_equal(sign_tls13("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)), 0);
}

static void
test_stub_hangs(void **state)
{
	(void)state;
	/* TIMEOUT within token-timeout (and not long after it). */
	assert_restarted("hang\n", MTLS_ERR_TIMEOUT, TOKEN_TIMEOUT - 0.2, TOKEN_TIMEOUT + 1.5);
}

static void *
sign_rsa_thread(void *arg)
{
	char why[256];

	*(int *)arg = sign_tls13("rsa", MTLS_AGENT_RSA_PSS_RSAE_SHA256, why, sizeof(why));
	return NULL;
}

static void
test_stub_hang_others_go_on(void **state)
{
	struct timespec t0, t1;
	pthread_t th;
	char why[256];
	int r_rsa = 1, i;
	double s;

	(void)state;
	/* The RSA key's signature hangs in the module; the EC key's are
	 * made meanwhile, in parallel, with no lock waiting for the hung one. */
	stub_mode("hang rsa\n");
	assert_int_equal(pthread_create(&th, NULL, sign_rsa_thread, &r_rsa), 0);
	usleep(200 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < 5; i++)
		assert_int_equal(
		    sign_tls13("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, why, sizeof(why)), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (s > (getenv("MTLS_TEST_UNDER_VALGRIND") != NULL ? 1.5 : 0.5))
		fail_msg("5 EC signatures took %.2f s beside the hung one", s);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(r_rsa, MTLS_ERR_TIMEOUT);
	stub_mode("ok\n");
	login();
	assert_int_equal(sign_tls13("rsa", MTLS_AGENT_RSA_PSS_RSAE_SHA256, why, sizeof(why)), 0);
}

static void
test_stub_exits(void **state)
{
	(void)state;
	assert_restarted("exit\n", MTLS_ERR_TOKEN, 0, 1.5);
}

static void
test_stub_garbage(void **state)
{
	(void)state;
	/* A reply of another type: nothing it says is believed any more. */
	assert_restarted("garbage\n", MTLS_ERR_TOKEN, 0, 1.5);
}

static void
test_logged_out(void **state)
{
	unsigned char content[200];
	size_t len = tls13_content(content, 32);
	char why[256];

	(void)state;
	assert_int_equal(token_logout(ts, "", why, sizeof(why)), 0);
	/* No key without a login: the agent knows before asking the token. */
	assert_refused("ec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
		       content, len, MTLS_ERR_LOGIN_REQUIRED);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_unknown_identity, setup),
		cmocka_unit_test_setup(test_peer_denied, setup),
		cmocka_unit_test_setup(test_purpose_denied, setup),
		cmocka_unit_test_setup(test_scheme_key_type, setup),
		cmocka_unit_test_setup(test_content_rejected, setup),
		cmocka_unit_test_setup(test_rate_limit, setup),
		cmocka_unit_test_setup(test_confirm, setup),
		cmocka_unit_test_setup(test_sign_rsa_pss, setup),
		cmocka_unit_test_setup(test_sign_rsa_pkcs1, setup),
		cmocka_unit_test_setup(test_sign_ecdsa, setup),
		cmocka_unit_test_setup(test_stub_errors, setup),
		cmocka_unit_test_setup(test_stub_hangs, setup),
		cmocka_unit_test_setup(test_stub_hang_others_go_on, setup),
		cmocka_unit_test_setup(test_stub_exits, setup),
		cmocka_unit_test_setup(test_stub_garbage, setup),
		cmocka_unit_test_setup(test_logged_out, setup),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
