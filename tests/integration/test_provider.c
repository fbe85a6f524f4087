/*
 * test_provider.c - the OpenSSL provider and mtls_agent_ssl_ctx_use_identity()
 * against the real agent on the SoftHSM2 token.
 *
 * Handshakes run in one thread: an in-process OpenSSL server (server.pem,
 * client certificate required, CA = ca.pem) and the agent-backed client,
 * both non-blocking over a socketpair.  Every success is also checked in
 * the agent's audit log, so a signature that did not go through the agent
 * cannot pass.  The openssl command-line tools are run against the built
 * module ($MTLS_PROVIDER_DIR) for storeutl and s_client/s_server.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include "agent_fixture.h"
#include "mtls-agent.h"

#define HANDSHAKE_TIMEOUT_MS 20000
#define TOKEN_URI	     "pkcs11:token=mtls-test"

static struct agent_fixture fx;
static struct agent_proc ag;	 /* logged in, for most tests */
static struct agent_proc ag_out; /* never logged in */
static pid_t server_pid;	 /* openssl s_server, killed in teardown */
static int server_stdin = -1;

static const char *const labels[] = { "rsa2048", "rsa3072", "p256", "p384" };
#define N_LABELS (sizeof(labels) / sizeof(labels[0]))

/* Identities: the four keys (TLS 1.3 only, the default) and two more
 * names on the same keys whose policy allows TLS 1.2. */
static const char config_text[] =
    "[identity rsa2048]\nkey = " TOKEN_URI ";id=%01\n"
    "[identity rsa3072]\nkey = " TOKEN_URI ";id=%02\n"
    "[identity p256]\nkey = " TOKEN_URI ";id=%03\n"
    "[identity p384]\nkey = " TOKEN_URI ";id=%04\n"
    "[identity p256-tls12]\nkey = " TOKEN_URI ";id=%03\npurposes = tls13, tls12\n"
    "[identity rsa2048-tls12]\nkey = " TOKEN_URI ";id=%01\npurposes = tls13, tls12\n";

#define format_into(buf, ...)                                                                      \
	do {                                                                                       \
		int n_ = snprintf((buf), sizeof(buf), __VA_ARGS__);                                \
		if (n_ < 0 || (size_t)n_ >= sizeof(buf))                                           \
			fail_msg("%s:%d: text does not fit", __FILE__, __LINE__);                  \
	} while (0)

static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void
dump_log(const struct agent_proc *p)
{
	char *log = agent_log(p);

	fprintf(stderr, "---- agent log (%s) ----\n%s---- end ----\n", p->log, log);
	free(log);
}

/* Appends the thread's OpenSSL errors (with their data) to buf. */
static void
drain_errors(char *buf, size_t len)
{
	const char *file, *func, *data;
	char line[512];
	unsigned long e;
	size_t off = strlen(buf);
	int lno, flags;

	while ((e = ERR_get_error_all(&file, &lno, &func, &data, &flags)) != 0) {
		snprintf(line, sizeof(line), "[%s:%s:%s%s%s] ",
			 ERR_lib_error_string(e) ? ERR_lib_error_string(e) : "?",
			 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "?",
			 (flags & ERR_TXT_STRING) ? " " : "", (flags & ERR_TXT_STRING) ? data : "",
			 "");
		if (off + strlen(line) < len) {
			memcpy(buf + off, line, strlen(line) + 1);
			off += strlen(line);
		}
	}
}

static int
count_in(const char *hay, const char *needle)
{
	int n = 0;

	while ((hay = strstr(hay, needle)) != NULL) {
		n++;
		hay += strlen(needle);
	}
	return n;
}

static void
fixture_file(const char *name, char *buf, size_t len)
{
	if (fixture_path(&fx, name, buf, len) != 0)
		fail_msg("path too long");
}

/* ---------------------------------------------------------------------- */
/* TLS contexts and the in-process handshake */

static SSL_CTX *
server_ctx(int version, const char *client_sigalgs)
{
	char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
	SSL_CTX *s = SSL_CTX_new(TLS_server_method());

	assert_non_null(s);
	fixture_file("server.pem", cert, sizeof(cert));
	fixture_file("server.key", key, sizeof(key));
	fixture_file("ca.pem", ca, sizeof(ca));
	assert_int_equal(SSL_CTX_use_certificate_file(s, cert, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_load_verify_locations(s, ca, NULL), 1);
	SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	assert_int_equal(SSL_CTX_set_min_proto_version(s, version), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(s, version), 1);
	if (client_sigalgs != NULL)
		assert_int_equal(SSL_CTX_set1_client_sigalgs_list(s, client_sigalgs), 1);
	return s;
}

/* A client configured by the function under test; NULL if it failed. */
static SSL_CTX *
client_ctx(const struct agent_proc *p, const char *identity, int version, int *err)
{
	char ca[PATH_MAX];
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());

	assert_non_null(c);
	fixture_file("ca.pem", ca, sizeof(ca));
	assert_int_equal(SSL_CTX_load_verify_locations(c, ca, NULL), 1);
	SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
	assert_int_equal(SSL_CTX_set_min_proto_version(c, version), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(c, version), 1);
	*err = mtls_agent_ssl_ctx_use_identity(c, p->sock, identity);
	if (*err != 0) {
		SSL_CTX_free(c);
		return NULL;
	}
	return c;
}

struct hs_result {
	int ok;
	char subject[256]; /* client certificate as the server saw it */
	char errors[4096]; /* OpenSSL errors of both sides */
};

static int
hs_step(SSL *ssl, int *done, struct hs_result *res)
{
	int r, e;

	if (*done)
		return 0;
	r = SSL_do_handshake(ssl);
	if (r == 1) {
		*done = 1;
		return 0;
	}
	e = SSL_get_error(ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	drain_errors(res->errors, sizeof(res->errors));
	return -1;
}

/* A full handshake between a client and a server SSL_CTX in this thread. */
static void
handshake(SSL_CTX *cctx, SSL_CTX *sctx, struct hs_result *res)
{
	int sv[2], cdone = 0, sdone = 0;
	SSL *c = NULL, *s = NULL;
	X509 *peer;
	long deadline = now_ms() + HANDSHAKE_TIMEOUT_MS;

	memset(res, 0, sizeof(*res));
	ERR_clear_error();
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	c = SSL_new(cctx);
	s = SSL_new(sctx);
	assert_non_null(c);
	assert_non_null(s);
	SSL_set_fd(c, sv[0]);
	SSL_set_fd(s, sv[1]);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	while (!(cdone && sdone)) {
		if (hs_step(c, &cdone, res) != 0 || hs_step(s, &sdone, res) != 0)
			goto out;
		if (now_ms() > deadline) {
			snprintf(res->errors, sizeof(res->errors), "handshake timed out");
			goto out;
		}
		if (!(cdone && sdone)) {
			struct pollfd pfd[2] = { { sv[0], POLLIN, 0 }, { sv[1], POLLIN, 0 } };

			(void)poll(pfd, 2, 50);
		}
	}
	/* TLS 1.3 clients finish before the server has checked their
	 * certificate; the server's side is what counts. */
	if ((peer = SSL_get0_peer_certificate(s)) == NULL) {
		snprintf(res->errors, sizeof(res->errors), "server saw no client certificate");
		goto out;
	}
	X509_NAME_oneline(X509_get_subject_name(peer), res->subject, sizeof(res->subject));
	if (SSL_get_verify_result(s) != X509_V_OK || SSL_get_verify_result(c) != X509_V_OK) {
		snprintf(res->errors, sizeof(res->errors), "verification failed: %s / %s",
			 X509_verify_cert_error_string(SSL_get_verify_result(s)),
			 X509_verify_cert_error_string(SSL_get_verify_result(c)));
		goto out;
	}
	res->ok = 1;
out:
	SSL_free(c);
	SSL_free(s);
	close(sv[0]);
	close(sv[1]);
}

static void
expect_handshake(const struct agent_proc *p, SSL_CTX *cctx, SSL_CTX *sctx, const char *label)
{
	struct hs_result res;
	char want[128];

	handshake(cctx, sctx, &res);
	if (!res.ok) {
		dump_log(p);
		fail_msg("%s: handshake failed: %s", label, res.errors);
	}
	format_into(want, "/CN=%s client", label);
	if (strstr(res.subject, want) == NULL)
		fail_msg("%s: server saw subject %s", label, res.subject);
}

/* ---------------------------------------------------------------------- */
/* fixtures */

static int
group_setup(void **state)
{
	int retries;
	mtls_agent *a = NULL;
	int r;

	signal(SIGPIPE, SIG_IGN);
	if (fixture_setup(&fx) != 0)
		return -1;
	if (agent_start(&fx, config_text, NULL, &ag) != 0 ||
	    agent_start(&fx, config_text, NULL, &ag_out) != 0) {
		fprintf(stderr, "test_provider: cannot start the agents\n");
		fixture_teardown(&fx);
		return -1;
	}
	if ((r = mtls_agent_connect(ag.sock, &a)) != 0 ||
	    (r = mtls_agent_login(a, "p256", fx.pin, &retries)) != 0) {
		fprintf(stderr, "test_provider: login: %s\n", mtls_agent_strerror(r));
		mtls_agent_free(a);
		fixture_teardown(&fx);
		return -1;
	}
	mtls_agent_free(a);
	return 0;
}

static int
group_teardown(void **state)
{
	fixture_teardown(&fx);
	return 0;
}

static void
stop_server(void)
{
	pid_t r;

	if (server_stdin != -1) {
		close(server_stdin);
		server_stdin = -1;
	}
	if (server_pid > 0) {
		(void)kill(server_pid, SIGKILL);
		do {
			r = waitpid(server_pid, NULL, 0);
		} while (r == -1 && errno == EINTR);
		server_pid = 0;
	}
}

static int
teardown(void **state)
{
	stop_server();
	ERR_clear_error();
	return 0;
}

/* ---------------------------------------------------------------------- */
/* tests */

/* TLS 1.3 with each key type; the agent signed each CertificateVerify. */
static void
test_tls13_each_key(void **state)
{
	static const char *const scheme[] = { "rsa_pss_rsae_sha256", "rsa_pss_rsae_sha256",
					      "ecdsa_secp256r1_sha256", "ecdsa_secp384r1_sha384" };
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, NULL), *cctx;
	char audit[256];
	size_t i;
	int err;

	for (i = 0; i < N_LABELS; i++) {
		if ((cctx = client_ctx(&ag, labels[i], TLS1_3_VERSION, &err)) == NULL)
			fail_msg("%s: mtls_agent_ssl_ctx_use_identity: %s", labels[i],
				 mtls_agent_strerror(err));
		expect_handshake(&ag, cctx, sctx, labels[i]);
		format_into(audit, "sign ok: peer pid=%ld uid=%u exe=", (long)getpid(),
			    (unsigned int)getuid());
		assert_true(agent_logged(&ag, audit));
		format_into(audit, "identity=%s scheme=%s purpose=tls13-client-certificate-verify",
			    labels[i], scheme[i]);
		if (!agent_logged(&ag, audit)) {
			dump_log(&ag);
			fail_msg("no audit line \"%s\"", audit);
		}
		SSL_CTX_free(cctx);
	}
	SSL_CTX_free(sctx);
}

/* The identity can also be named by URI, key label or key id. */
static void
test_identity_names(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, NULL), *cctx;
	char uri[PATH_MAX + 64];
	int err;

	format_into(uri, "mtls-agent:p384?socket=%s", ag.sock);
	cctx = client_ctx(&ag_out, uri, TLS1_3_VERSION, &err); /* URI's socket wins */
	assert_non_null(cctx);
	expect_handshake(&ag, cctx, sctx, "p384");
	SSL_CTX_free(cctx);

	/* By key id (only rsa3072 has id 02). */
	cctx = client_ctx(&ag, "%02", TLS1_3_VERSION, &err);
	assert_non_null(cctx);
	expect_handshake(&ag, cctx, sctx, "rsa3072");
	SSL_CTX_free(cctx);
	/* id 03 belongs to two identities: ambiguous. */
	assert_null(client_ctx(&ag, "03", TLS1_3_VERSION, &err));
	assert_int_equal(err, MTLS_ERR_NO_IDENTITY);

	assert_null(client_ctx(&ag, "no-such-identity", TLS1_3_VERSION, &err));
	assert_int_equal(err, MTLS_ERR_NO_IDENTITY);

	/* A socket path relative to the current directory works too. */
	{
		struct agent_proc rel = ag;
		char cwd[PATH_MAX], dir[PATH_MAX], *slash;

		assert_non_null(getcwd(cwd, sizeof(cwd)));
		format_into(dir, "%s", ag.sock);
		assert_non_null(slash = strrchr(dir, '/'));
		*slash = '\0';
		assert_int_equal(chdir(dir), 0);
		format_into(rel.sock, "%s", slash + 1);
		cctx = client_ctx(&rel, "p256", TLS1_3_VERSION, &err);
		assert_int_equal(chdir(cwd), 0);
		if (cctx == NULL)
			fail_msg("relative socket %s: %s", rel.sock, mtls_agent_strerror(err));
		expect_handshake(&ag, cctx, sctx, "p256");
		SSL_CTX_free(cctx);
	}
	assert_null(client_ctx(&ag, "mtls-agent:p256?bogus=1", TLS1_3_VERSION, &err));
	assert_int_equal(err, MTLS_ERR_INVALID_ARGUMENT);
	SSL_CTX_free(sctx);
}

/* TLS 1.2 where the identity's policy allows it: ECDSA, RSA PKCS#1, PSS. */
static void
test_tls12_allowed(void **state)
{
	static const struct {
		const char *identity, *label, *sigalgs, *scheme;
	} cases[] = {
		{ "p256-tls12", "p256", "ECDSA+SHA256", "ecdsa_secp256r1_sha256" },
		{ "rsa2048-tls12", "rsa2048", "RSA+SHA256", "rsa_pkcs1_sha256" },
		{ "rsa2048-tls12", "rsa2048", "RSA+SHA384", "rsa_pkcs1_sha384" },
		{ "rsa2048-tls12", "rsa2048", "rsa_pss_rsae_sha256", "rsa_pss_rsae_sha256" },
	};
	SSL_CTX *sctx, *cctx;
	char audit[256];
	size_t i;
	int err;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sctx = server_ctx(TLS1_2_VERSION, cases[i].sigalgs);
		if ((cctx = client_ctx(&ag, cases[i].identity, TLS1_2_VERSION, &err)) == NULL)
			fail_msg("%s: %s", cases[i].identity, mtls_agent_strerror(err));
		expect_handshake(&ag, cctx, sctx, cases[i].label);
		format_into(audit, "identity=%s scheme=%s purpose=tls12-client-certificate-verify",
			    cases[i].identity, cases[i].scheme);
		if (!agent_logged(&ag, audit)) {
			dump_log(&ag);
			fail_msg("no audit line \"%s\"", audit);
		}
		SSL_CTX_free(cctx);
		SSL_CTX_free(sctx);
	}
}

/* TLS 1.2 with an identity that allows only TLS 1.3: the agent refuses,
 * and its refusal is on the caller's error queue. */
static void
test_tls12_denied(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS1_2_VERSION, NULL), *cctx;
	struct hs_result res;
	char want[64];
	int err;

	cctx = client_ctx(&ag, "p256", TLS1_2_VERSION, &err);
	assert_non_null(cctx);
	handshake(cctx, sctx, &res);
	assert_false(res.ok);
	format_into(want, "[mtls-agent:%s:", mtls_agent_strerror(MTLS_ERR_POLICY_DENIED));
	if (strstr(res.errors, want) == NULL ||
	    strstr(res.errors, "tls12-client-certificate-verify not allowed") == NULL)
		fail_msg("errors lack the agent's refusal: %s", res.errors);
	assert_true(agent_logged(&ag, "identity=p256 scheme=ecdsa_secp256r1_sha256 "
				      "purpose=tls12-client-certificate-verify result=denied"));
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

/* A library context with the provider, as an application would make. */
static OSSL_LIB_CTX *
provider_libctx(OSSL_PROVIDER **provs)
{
	OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();

	assert_non_null(lc);
	assert_int_equal(OSSL_PROVIDER_add_builtin(lc, "mtls-agent", mtls_agent_provider_init), 1);
	assert_non_null(provs[0] = OSSL_PROVIDER_load(lc, "default"));
	assert_non_null(provs[1] = OSSL_PROVIDER_load(lc, "mtls-agent"));
	return lc;
}

static EVP_PKEY *
store_key(OSSL_LIB_CTX *lc, const char *uri)
{
	OSSL_STORE_CTX *st = OSSL_STORE_open_ex(uri, lc, NULL, NULL, NULL, NULL, NULL, NULL);
	OSSL_STORE_INFO *info;
	EVP_PKEY *pk = NULL;

	assert_non_null(st);
	while (pk == NULL && !OSSL_STORE_eof(st)) {
		if ((info = OSSL_STORE_load(st)) == NULL)
			continue;
		if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
			pk = OSSL_STORE_INFO_get1_PKEY(info);
		OSSL_STORE_INFO_free(info);
	}
	OSSL_STORE_close(st);
	assert_non_null(pk);
	return pk;
}

/* EVP_DigestSign over `content` with the agent-backed key; 1 if signed. */
static int
provider_sign(EVP_PKEY *pk, OSSL_LIB_CTX *lc, const unsigned char *content, size_t len,
	      unsigned char *sig, size_t *sig_len, char *errors, size_t errlen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	errors[0] = '\0';
	ERR_clear_error();
	assert_non_null(md);
	ok = EVP_DigestSignInit_ex(md, NULL, "SHA256", lc, NULL, pk, NULL) == 1 &&
	     EVP_DigestSign(md, sig, sig_len, content, len) == 1;
	if (!ok)
		drain_errors(errors, errlen);
	EVP_MD_CTX_free(md);
	return ok;
}

/* The agent signs a TLS 1.3 CertificateVerify content through the
 * provider, and refuses anything else sent through the same path. */
static void
test_forged_content(void **state)
{
	OSSL_PROVIDER *provs[2];
	OSSL_LIB_CTX *lc = provider_libctx(provs);
	unsigned char cv[64 + 34 + 32], sig[512];
	static const unsigned char forged[] = "GET /transfer?to=mallory HTTP/1.1\r\n";
	char uri[PATH_MAX + 64], errors[4096], cert[PATH_MAX];
	EVP_PKEY *pk, *pub;
	EVP_MD_CTX *md;
	X509 *x;
	FILE *f;
	size_t sig_len;

	/* Positive control: a real-looking CertificateVerify content. */
	memset(cv, 0x20, 64);
	memcpy(cv + 64, "TLS 1.3, client CertificateVerify", 34);
	memset(cv + 98, 0xab, 32);
	format_into(uri, "mtls-agent:p256-tls12?socket=%s", ag.sock);
	pk = store_key(lc, uri);
	sig_len = sizeof(sig);
	if (!provider_sign(pk, lc, cv, sizeof(cv), sig, &sig_len, errors, sizeof(errors)))
		fail_msg("CertificateVerify content refused: %s", errors);
	fixture_file("p256.pem", cert, sizeof(cert));
	assert_non_null(f = fopen(cert, "r"));
	assert_non_null(x = PEM_read_X509(f, NULL, NULL, NULL));
	fclose(f);
	assert_non_null(pub = X509_get0_pubkey(x));
	assert_non_null(md = EVP_MD_CTX_new());
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub), 1);
	assert_int_equal(EVP_DigestVerify(md, sig, sig_len, cv, sizeof(cv)), 1);
	EVP_MD_CTX_free(md);
	X509_free(x);

	/* Arbitrary bytes: even an identity allowed TLS 1.2 refuses them, as
	 * they are not a handshake transcript. */
	sig_len = sizeof(sig);
	assert_false(provider_sign(pk, lc, forged, sizeof(forged) - 1, sig, &sig_len, errors,
				   sizeof(errors)));
	if (strstr(errors, mtls_agent_strerror(MTLS_ERR_CONTENT_REJECTED)) == NULL)
		fail_msg("expected a content refusal: %s", errors);
	/* A TLS 1.3 prefix with a bad transcript hash length. */
	sig_len = sizeof(sig);
	assert_false(
	    provider_sign(pk, lc, cv, sizeof(cv) - 1, sig, &sig_len, errors, sizeof(errors)));
	assert_non_null(strstr(errors, mtls_agent_strerror(MTLS_ERR_CONTENT_REJECTED)));
	EVP_PKEY_free(pk);

	/* A TLS 1.3-only identity refuses the forged bytes by policy. */
	format_into(uri, "mtls-agent:p256?socket=%s", ag.sock);
	pk = store_key(lc, uri);
	sig_len = sizeof(sig);
	assert_false(provider_sign(pk, lc, forged, sizeof(forged) - 1, sig, &sig_len, errors,
				   sizeof(errors)));
	assert_non_null(strstr(errors, mtls_agent_strerror(MTLS_ERR_POLICY_DENIED)));
	/* An ECDSA P-256 key cannot sign with SHA-384: refused before the
	 * agent is asked (libssl relies on that to pick another algorithm). */
	assert_non_null(md = EVP_MD_CTX_new());
	assert_int_not_equal(EVP_DigestSignInit_ex(md, NULL, "SHA384", lc, NULL, pk, NULL), 1);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	OSSL_PROVIDER_unload(provs[1]);
	OSSL_PROVIDER_unload(provs[0]);
	OSSL_LIB_CTX_free(lc);
	ERR_clear_error();
}

/* A logged-out token: no handshake, and the caller learns why. */
static void
test_logged_out(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, NULL), *cctx;
	struct hs_result res;
	int err;

	cctx = client_ctx(&ag_out, "p256", TLS1_3_VERSION, &err);
	assert_non_null(cctx);
	handshake(cctx, sctx, &res);
	assert_false(res.ok);
	if (strstr(res.errors, "login required") == NULL)
		fail_msg("errors do not say login required: %s", res.errors);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

/*
 * A prefork server: the SSL_CTX is configured (and used) before fork();
 * the child signs over a connection of its own (the agent sees the child's
 * pid), and the parent's connection still works afterwards.
 */
static void
test_fork(void **state)
{
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, NULL), *cctx;
	struct hs_result res;
	char audit[128];
	pid_t pid, r;
	int err, st;

	cctx = client_ctx(&ag, "p384", TLS1_3_VERSION, &err);
	assert_non_null(cctx);
	expect_handshake(&ag, cctx, sctx, "p384");
	fflush(NULL);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		handshake(cctx, sctx, &res);
		if (!res.ok)
			fprintf(stderr, "child handshake: %s\n", res.errors);
		/* Freed so that a leak checker in the child sees no loss. */
		SSL_CTX_free(cctx);
		SSL_CTX_free(sctx);
		_exit(res.ok ? 0 : 1);
	}
	do {
		r = waitpid(pid, &st, 0);
	} while (r == -1 && errno == EINTR);
	assert_int_equal(r, pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	format_into(audit, "sign ok: peer pid=%ld ", (long)pid);
	if (!agent_logged(&ag, audit)) {
		dump_log(&ag);
		fail_msg("the child did not sign over its own connection");
	}
	expect_handshake(&ag, cctx, sctx, "p384");
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

struct par_arg {
	SSL_CTX *cctx, *sctx;
	int ok;
};

static void *
par_thread(void *arg)
{
	struct par_arg *a = arg;
	struct hs_result res;
	int i;

	a->ok = 1;
	for (i = 0; i < 3; i++) {
		handshake(a->cctx, a->sctx, &res);
		if (!res.ok) {
			fprintf(stderr, "parallel handshake: %s\n", res.errors);
			a->ok = 0;
		}
	}
	return NULL;
}

/* Concurrent handshakes on one SSL_CTX. */
static void
test_parallel(void **state)
{
	struct par_arg args[4];
	pthread_t t[4];
	SSL_CTX *sctx = server_ctx(TLS1_3_VERSION, NULL), *cctx;
	size_t i;
	int err;

	cctx = client_ctx(&ag, "rsa2048", TLS1_3_VERSION, &err);
	assert_non_null(cctx);
	for (i = 0; i < 4; i++) {
		args[i].cctx = cctx;
		args[i].sctx = sctx;
		assert_int_equal(pthread_create(&t[i], NULL, par_thread, &args[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_true(args[i].ok);
	}
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

/* ---------------------------------------------------------------------- */
/* the openssl command-line tools with the built module */

static const char *
provider_dir(void)
{
	const char *d = getenv("MTLS_PROVIDER_DIR");

	return d != NULL && *d != '\0' ? d : ".libs";
}

/* Runs argv with stdout+stderr into *out (malloc'd); returns exit status. */
static int
run_capture(const char *const *argv, char **out)
{
	char path[PATH_MAX];
	pid_t pid, r;
	int fd, st;

	if (fixture_unique_path(&fx, "cmd", ".out", path, sizeof(path)) != 0)
		fail_msg("path");
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd != -1);
	fflush(NULL);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		if (null == -1 || dup2(null, 0) == -1 || dup2(fd, 1) == -1 || dup2(fd, 2) == -1)
			_exit(126);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fd);
	do {
		r = waitpid(pid, &st, 0);
	} while (r == -1 && errno == EINTR);
	*out = fixture_read_file(path, NULL);
	assert_non_null(*out);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void
test_storeutl(void **state)
{
	char uri[PATH_MAX + 64], *out = NULL;
	const char *argv[] = {
		"openssl",    "storeutl",  "-provider-path", provider_dir(), "-provider",
		"mtls-agent", "-provider", "default",	     "-noout",	     uri,
		NULL
	};
	int st;

	format_into(uri, "mtls-agent:?socket=%s", ag.sock);
	st = run_capture(argv, &out);
	if (st != 0 || count_in(out, ": Pkey\n") != 6 || count_in(out, ": Certificate\n") != 6)
		fail_msg("storeutl %s (exit %d):\n%s", uri, st, out);
	free(out);

	format_into(uri, "mtls-agent:p384?socket=%s", ag.sock);
	st = run_capture(argv, &out);
	if (st != 0 || count_in(out, ": Pkey\n") != 1 || count_in(out, ": Certificate\n") != 1)
		fail_msg("storeutl %s (exit %d):\n%s", uri, st, out);
	free(out);

	format_into(uri, "mtls-agent:nobody?socket=%s", ag.sock);
	st = run_capture(argv, &out);
	assert_int_not_equal(st, 0);
	assert_non_null(strstr(out, mtls_agent_strerror(MTLS_ERR_NO_IDENTITY)));
	free(out);
}

static int
free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

	assert_true(fd != -1);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

/* openssl s_server -Verify 1 on a free loopback port; returns the port. */
static int
start_s_server(char *log, size_t loglen)
{
	char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX], port_s[16];
	int port = free_port(), in[2], fd, c;
	long deadline;

	fixture_file("server.pem", cert, sizeof(cert));
	fixture_file("server.key", key, sizeof(key));
	fixture_file("ca.pem", ca, sizeof(ca));
	snprintf(port_s, sizeof(port_s), "%d", port);
	if (fixture_unique_path(&fx, "s_server", ".log", log, loglen) != 0)
		fail_msg("path");
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd != -1);
	fflush(NULL);
	server_pid = fork();
	assert_true(server_pid != -1);
	if (server_pid == 0) {
		const char *argv[] = { "openssl", "s_server", "-Verify",  "1",	  "-CAfile",
				       ca,	  "-cert",    cert,	  "-key", key,
				       "-accept", port_s,     "-naccept", "1",	  NULL };

		/* stdin stays open (a pipe we hold): s_server quits on EOF. */
		if (dup2(in[0], 0) == -1 || dup2(fd, 1) == -1 || dup2(fd, 2) == -1)
			_exit(126);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	close(fd);
	server_stdin = in[1];
	/* Ready once it says so: a probe connection would use up its one
	 * accept. */
	for (deadline = now_ms() + 10000; now_ms() < deadline; sleep_ms(20)) {
		char *text = fixture_read_file(log, NULL);

		c = text != NULL && strstr(text, "ACCEPT") != NULL;
		free(text);
		if (c)
			return port;
	}
	fail_msg("s_server did not start");
	return -1;
}

static int
run_s_client(const struct agent_proc *p, int port, char **out)
{
	char cert[PATH_MAX], ca[PATH_MAX], key[PATH_MAX + 64], connect[64];
	const char *argv[] = { "openssl",
			       "s_client",
			       "-provider-path",
			       provider_dir(),
			       "-provider",
			       "mtls-agent",
			       "-provider",
			       "default",
			       "-cert",
			       cert,
			       "-key",
			       key,
			       "-CAfile",
			       ca,
			       "-verify_return_error",
			       "-connect",
			       connect,
			       "-brief",
			       NULL };

	fixture_file("p256.pem", cert, sizeof(cert));
	fixture_file("ca.pem", ca, sizeof(ca));
	format_into(key, "mtls-agent:p256?socket=%s", p->sock);
	format_into(connect, "127.0.0.1:%d", port);
	return run_capture(argv, out);
}

static void
test_s_client(void **state)
{
	char log[PATH_MAX], *out = NULL, *slog;
	int port, st;
	long deadline;

	port = start_s_server(log, sizeof(log));
	st = run_s_client(&ag, port, &out);
	if (st != 0 || strstr(out, "CONNECTION ESTABLISHED") == NULL ||
	    strstr(out, "TLSv1.3") == NULL)
		fail_msg("s_client (exit %d):\n%s", st, out);
	free(out);
	/* The server saw and verified the agent's client certificate. */
	for (deadline = now_ms() + 5000;; sleep_ms(20)) {
		slog = fixture_read_file(log, NULL);
		assert_non_null(slog);
		if (strstr(slog, "CN = p256 client") != NULL)
			break;
		free(slog);
		if (now_ms() > deadline)
			fail_msg("s_server did not log the client certificate");
	}
	free(slog);
	stop_server();

	/* The same with a logged-out token fails, saying why. */
	port = start_s_server(log, sizeof(log));
	st = run_s_client(&ag_out, port, &out);
	if (st == 0 || strstr(out, "login required") == NULL)
		fail_msg("s_client with a logged-out token (exit %d):\n%s", st, out);
	free(out);
	stop_server();
}

/* ---------------------------------------------------------------------- */
/* certificates and requests signed with an agent key (openssl req, x509) */

/* The AlgorithmIdentifier (DER) a signature context answers; its length. */
static size_t
algorithm_id(EVP_PKEY *pk, OSSL_LIB_CTX *lc, const char *md, int pss, unsigned char *aid,
	     size_t len)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pc = NULL;
	OSSL_PARAM p[2];
	char errors[1024] = "";

	assert_non_null(m);
	if (EVP_DigestSignInit_ex(m, &pc, md, lc, NULL, pk, NULL) != 1) {
		drain_errors(errors, sizeof(errors));
		fail_msg("DigestSignInit %s: %s", md, errors);
	}
	if (pss) {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING), 1);
		assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST), 1);
	}
	p[0] = OSSL_PARAM_construct_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, aid, len);
	p[1] = OSSL_PARAM_construct_end();
	if (EVP_PKEY_CTX_get_params(pc, p) != 1 || !OSSL_PARAM_modified(&p[0]))
		fail_msg("%s%s: no AlgorithmIdentifier", md, pss ? " PSS" : "");
	EVP_MD_CTX_free(m);
	return p[0].return_size;
}

/*
 * The AlgorithmIdentifier of each scheme is the DER the default provider
 * gives for the same key type, digest and padding (PSS: salt = hash
 * length, MGF1 with the same digest), and it decodes to the right OID.
 */
static void
test_algorithm_id(void **state)
{
	static const struct {
		const char *label, *md, *sigalg;
		int pss;
	} cases[] = {
		{ "rsa2048", "SHA256", "sha256WithRSAEncryption", 0 },
		{ "rsa2048", "SHA384", "sha384WithRSAEncryption", 0 },
		{ "rsa2048", "SHA512", "sha512WithRSAEncryption", 0 },
		{ "rsa3072", "SHA256", "rsassaPss", 1 },
		{ "rsa3072", "SHA384", "rsassaPss", 1 },
		{ "rsa3072", "SHA512", "rsassaPss", 1 },
		{ "p256", "SHA256", "ecdsa-with-SHA256", 0 },
		{ "p384", "SHA384", "ecdsa-with-SHA384", 0 },
	};
	OSSL_PROVIDER *provs[2];
	OSSL_LIB_CTX *lc = provider_libctx(provs);
	unsigned char ours[256], want[256];
	char uri[PATH_MAX + 64], name[64], cert[PATH_MAX], oid[64];
	const unsigned char *pp;
	const ASN1_OBJECT *obj;
	size_t i, n_ours, n_want;
	X509_ALGOR *alg;
	EVP_PKEY *pk, *pub;
	X509 *x;
	FILE *f;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		format_into(uri, "mtls-agent:%s?socket=%s", cases[i].label, ag.sock);
		pk = store_key(lc, uri);
		n_ours = algorithm_id(pk, lc, cases[i].md, cases[i].pss, ours, sizeof(ours));
		/* The oracle: the default provider on the certificate's key. */
		format_into(name, "%s.pem", cases[i].label);
		fixture_file(name, cert, sizeof(cert));
		assert_non_null(f = fopen(cert, "r"));
		assert_non_null(x = PEM_read_X509(f, NULL, NULL, NULL));
		fclose(f);
		assert_non_null(pub = X509_get0_pubkey(x));
		n_want = algorithm_id(pub, NULL, cases[i].md, cases[i].pss, want, sizeof(want));
		if (n_ours != n_want || memcmp(ours, want, n_want) != 0)
			fail_msg("%s %s%s: AlgorithmIdentifier differs (%zu vs %zu bytes)",
				 cases[i].label, cases[i].md, cases[i].pss ? " PSS" : "", n_ours,
				 n_want);
		pp = ours;
		assert_non_null(alg = d2i_X509_ALGOR(NULL, &pp, (long)n_ours));
		assert_true(pp == ours + n_ours);
		X509_ALGOR_get0(&obj, NULL, NULL, alg);
		OBJ_obj2txt(oid, sizeof(oid), obj, 0);
		assert_string_equal(oid, cases[i].sigalg);
		X509_ALGOR_free(alg);
		X509_free(x);
		EVP_PKEY_free(pk);
	}
	OSSL_PROVIDER_unload(provs[1]);
	OSSL_PROVIDER_unload(provs[0]);
	OSSL_LIB_CTX_free(lc);
	ERR_clear_error();
}

/*
 * `openssl req -new` and `openssl x509 -req -CAkey` with an agent key: a
 * certificate request goes to the agent under the csr purpose, which these
 * identities (keys with a certificate, csr not in their purposes) are not
 * allowed; a certificate the provider refuses itself (the agent is no CA).
 * The tools must fail cleanly (exit status 1, not a signal) and print the
 * reason.  (An identity allowed csr makes a request that verifies:
 * tests/ctl/test_enroll.sh.)
 */
static void
test_req_and_x509(void **state)
{
	char key[PATH_MAX + 64], csr[PATH_MAX], crt[PATH_MAX], ca[PATH_MAX], cacert[PATH_MAX];
	char cakey[PATH_MAX], *out = NULL;
	static const char *const ids[] = { "p256", "rsa2048-tls12" };
	const char *why[] = { "purpose csr not allowed for this identity",
			      "purpose csr not allowed for this identity" };
	const char *why_ca = "the agent signs no certificates";
	const char *req[] = {
		"openssl",    "req",	   "-provider-path", provider_dir(), "-provider",
		"mtls-agent", "-provider", "default",	     "-new",	     "-key",
		key,	      "-subj",	   "/CN=csr test",   "-out",	     csr,
		NULL
	};
	const char *mkreq[] = { "openssl", "req",	   "-new", "-key", cakey,
				"-subj",   "/CN=csr test", "-out", csr,	   NULL };
	const char *x509[] = { "openssl",
			       "x509",
			       "-provider-path",
			       provider_dir(),
			       "-provider",
			       "mtls-agent",
			       "-provider",
			       "default",
			       "-req",
			       "-in",
			       csr,
			       "-CA",
			       ca,
			       "-CAkey",
			       key,
			       "-CAcreateserial",
			       "-days",
			       "1",
			       "-out",
			       crt,
			       NULL };
	size_t i;
	int st;

	if (fixture_unique_path(&fx, "req", ".csr", csr, sizeof(csr)) != 0 ||
	    fixture_unique_path(&fx, "x509", ".crt", crt, sizeof(crt)) != 0)
		fail_msg("path");
	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		format_into(key, "mtls-agent:%s?socket=%s", ids[i], ag.sock);
		st = run_capture(req, &out);
		if (st != 1 || strstr(out, ":mtls-agent:") == NULL || strstr(out, why[i]) == NULL)
			fail_msg("openssl req -key %s (exit %d):\n%s", key, st, out);
		free(out);
	}

	/* A request signed by an ordinary key, then a certificate for it
	 * issued by the agent's key (CA = the identity's own certificate). */
	fixture_file("server.key", cakey, sizeof(cakey));
	st = run_capture(mkreq, &out);
	if (st != 0)
		fail_msg("openssl req with a file key (exit %d):\n%s", st, out);
	free(out);
	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		format_into(cacert, "%s.pem", strncmp(ids[i], "p256", 4) == 0 ? "p256" : "rsa2048");
		fixture_file(cacert, ca, sizeof(ca));
		format_into(key, "mtls-agent:%s?socket=%s", ids[i], ag.sock);
		st = run_capture(x509, &out);
		if (st != 1 || strstr(out, ":mtls-agent:") == NULL || strstr(out, why_ca) == NULL)
			fail_msg("openssl x509 -req -CAkey %s (exit %d):\n%s", key, st, out);
		free(out);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_tls13_each_key, teardown),
		cmocka_unit_test_teardown(test_identity_names, teardown),
		cmocka_unit_test_teardown(test_tls12_allowed, teardown),
		cmocka_unit_test_teardown(test_tls12_denied, teardown),
		cmocka_unit_test_teardown(test_forged_content, teardown),
		cmocka_unit_test_teardown(test_logged_out, teardown),
		cmocka_unit_test_teardown(test_fork, teardown),
		cmocka_unit_test_teardown(test_parallel, teardown),
		cmocka_unit_test_teardown(test_storeutl, teardown),
		cmocka_unit_test_teardown(test_s_client, teardown),
		cmocka_unit_test_teardown(test_algorithm_id, teardown),
		cmocka_unit_test_teardown(test_req_and_x509, teardown),
	};

	return cmocka_run_group_tests_name("mtls-agent provider", tests, group_setup,
					   group_teardown);
}
