/*
 * agent_helpers.c - what the mtls-agent integration tests share over the
 * fixture (see agent_helpers.h).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "agent_fixture.h"
#include "agent_helpers.h"
#include "mtls-agent.h"
#include "proto.h"
#include "purpose.h"
#include "wbuf.h"

struct agent_fixture fx;
struct agent_proc ag; /* the agent of tests set up with setup_agent */
char peer_base[64];   /* test_peer_uid's directory, removed in teardown */
char extra_token[64]; /* a token a test made, deleted in teardown */
int pin_changed;      /* test_pin_not_in_memory changed the PIN: restore it */
/* Where test_token_moved put the token directory; moved back in teardown. */
char moved_from[PATH_MAX], moved_to[PATH_MAX];

/* The fixture's keys (softhsm-setup.sh). */
const struct test_key keys[N_KEYS] = {
	{ "rsa2048", 0x01, MTLS_AGENT_KEY_RSA, 2048 },
	{ "rsa3072", 0x02, MTLS_AGENT_KEY_RSA, 3072 },
	{ "p256", 0x03, MTLS_AGENT_KEY_EC, 256 },
	{ "p384", 0x04, MTLS_AGENT_KEY_EC, 384 },
};

/* RFC 8446 4.2.3, written out independently of src/common/scheme.c. */
const struct test_scheme schemes[N_SCHEMES] = {
	{ MTLS_AGENT_RSA_PKCS1_SHA256, "SHA256", 32, MTLS_AGENT_KEY_RSA, 0, 0 },
	{ MTLS_AGENT_RSA_PKCS1_SHA384, "SHA384", 48, MTLS_AGENT_KEY_RSA, 0, 0 },
	{ MTLS_AGENT_RSA_PKCS1_SHA512, "SHA512", 64, MTLS_AGENT_KEY_RSA, 0, 0 },
	{ MTLS_AGENT_RSA_PSS_RSAE_SHA256, "SHA256", 32, MTLS_AGENT_KEY_RSA, 1, 0 },
	{ MTLS_AGENT_RSA_PSS_RSAE_SHA384, "SHA384", 48, MTLS_AGENT_KEY_RSA, 1, 0 },
	{ MTLS_AGENT_RSA_PSS_RSAE_SHA512, "SHA512", 64, MTLS_AGENT_KEY_RSA, 1, 0 },
	{ MTLS_AGENT_ECDSA_SECP256R1_SHA256, "SHA256", 32, MTLS_AGENT_KEY_EC, 0, 256 },
	{ MTLS_AGENT_ECDSA_SECP384R1_SHA384, "SHA384", 48, MTLS_AGENT_KEY_EC, 0, 384 },
};

/* ---------------------------------------------------------------------- */
/* small helpers */

long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

const char *
errname(int r)
{
	return r == 0 ? "success" : mtls_agent_strerror(r);
}

const struct test_scheme *
find_scheme(uint16_t code)
{
	size_t i;

	for (i = 0; i < N_SCHEMES; i++)
		if (schemes[i].code == code)
			return &schemes[i];
	fail_msg("scheme 0x%04x not in the test table", code);
	return NULL;
}

/* Shows the agent's stderr when a test is about to fail on it. */
void
dump_log(const struct agent_proc *p)
{
	char *log = agent_log(p);

	print_message("---- agent log %s ----\n%s---- end of agent log ----\n", p->log, log);
	free(log);
}

void
start_agent(const char *config, const char *const *args, struct agent_proc *p)
{
	if (agent_start(&fx, config, args, p) != 0) {
		dump_log(p);
		fail_msg("agent did not start");
	}
}

/* ---------------------------------------------------------------------- */
/* certificates and signature checks (OpenSSL) */

/* DER of DIR/<label>.pem, through OpenSSL's own parser. */
unsigned char *
cert_der_from_pem(const char *label, size_t *lenp)
{
	char path[PATH_MAX], name[64];
	unsigned char *der = NULL;
	X509 *x = NULL;
	FILE *fp;
	int len;

	snprintf(name, sizeof(name), "%s.pem", label);
	assert_int_equal(fixture_path(&fx, name, path, sizeof(path)), 0);
	assert_non_null(fp = fopen(path, "r"));
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(x);
	len = i2d_X509(x, &der);
	X509_free(x);
	assert_true(len > 0);
	*lenp = (size_t)len;
	return der;
}

EVP_PKEY *
cert_pubkey(const char *label)
{
	const unsigned char *p;
	unsigned char *der;
	EVP_PKEY *pk;
	size_t len;
	X509 *x;

	der = cert_der_from_pem(label, &len);
	p = der;
	x = d2i_X509(NULL, &p, (long)len);
	OPENSSL_free(der);
	if (x == NULL)
		return NULL;
	pk = X509_get_pubkey(x);
	X509_free(x);
	return pk;
}

/*
 * Verifies sig over the whole content, the way a TLS peer or the PAM
 * module does: hash with the scheme's digest, PSS with salt length equal
 * to the digest length (strict, not "auto").  1 if it verifies.
 */
int
verify_content(EVP_PKEY *pk, uint16_t scheme, const unsigned char *content, size_t len,
	       const unsigned char *sig, size_t sig_len)
{
	const struct test_scheme *s = find_scheme(scheme);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	int ok = 0;

	if (ctx == NULL ||
	    EVP_DigestVerifyInit(ctx, &pctx, EVP_get_digestbyname(s->md), NULL, pk) != 1)
		goto out;
	if (s->pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
		       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
		goto out;
	ok = EVP_DigestVerify(ctx, sig, sig_len, content, len) == 1;
out:
	EVP_MD_CTX_free(ctx);
	return ok;
}

/* ---------------------------------------------------------------------- */
/* contents to sign */

/* 64 spaces || context || 0x00 || hash_len random bytes. */
struct wbuf *
tls13_content(const char *context, size_t hash_len)
{
	unsigned char pad[TLS13_CV_PAD_LEN], hash[64];
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_true(hash_len <= sizeof(hash));
	memset(pad, 0x20, sizeof(pad));
	assert_int_equal(RAND_bytes(hash, (int)hash_len), 1);
	assert_int_equal(wbuf_put(b, pad, sizeof(pad)), 0);
	assert_int_equal(wbuf_put(b, context, strlen(context) + 1), 0);
	assert_int_equal(wbuf_put(b, hash, hash_len), 0);
	return b;
}

struct wbuf *
tls13_client(size_t hash_len)
{
	return tls13_content(TLS13_CLIENT_CV_CONTEXT, hash_len);
}

struct wbuf *
pam_content(void)
{
	unsigned char nonce[32];
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(RAND_bytes(nonce, sizeof(nonce)), 1);
	assert_int_equal(pam_challenge_put(b, nonce, sizeof(nonce), "sshd", "alice"), 0);
	return b;
}

/* ---------------------------------------------------------------------- */
/* library helpers */

mtls_agent *
connect_to(const char *sock)
{
	mtls_agent *a = NULL;

	assert_err(mtls_agent_connect(sock, &a), 0);
	assert_non_null(a);
	return a;
}

const struct mtls_agent_identity *
find_identity(const struct mtls_agent_identity *ids, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (ids[i].name != NULL && strcmp(ids[i].name, name) == 0)
			return &ids[i];
	return NULL;
}

/* Number of identities the agent lists; asserts the call works. */
size_t
count_identities(mtls_agent *a)
{
	struct mtls_agent_identity *ids = NULL;
	size_t n = 0;

	assert_err(mtls_agent_list(a, &ids, &n), 0);
	mtls_agent_identities_free(ids, n);
	return n;
}

/* A brand-new connection to sock lists `want` identities. */
void
assert_fresh_client_lists(const char *sock, size_t want)
{
	mtls_agent *a = connect_to(sock);

	assert_int_equal(count_identities(a), want);
	mtls_agent_free(a);
}

uint32_t
flags_of(mtls_agent *a, const char *name)
{
	struct mtls_agent_identity *ids = NULL;
	const struct mtls_agent_identity *id;
	uint32_t flags;
	size_t n = 0;

	assert_err(mtls_agent_list(a, &ids, &n), 0);
	id = find_identity(ids, n, name);
	if (id == NULL)
		fail_msg("identity %s not listed", name);
	flags = id->flags;
	mtls_agent_identities_free(ids, n);
	return flags;
}

void
login(mtls_agent *a, const char *identity)
{
	int retries = -2;

	assert_err(mtls_agent_login(a, identity, fx.pin, &retries), 0);
}

/* Signs content; returns the error code, *sig malloc'd on success. */
int
sign(mtls_agent *a, const char *identity, uint16_t scheme, int purpose, const struct wbuf *content,
     unsigned char **sig, size_t *sig_len)
{
	return mtls_agent_sign(a, identity, scheme, purpose, wbuf_ptr(content), wbuf_len(content),
			       sig, sig_len);
}

/* Signs and checks the signature with the certificate of `label`. */
void
sign_and_verify(mtls_agent *a, const char *identity, const char *label, uint16_t scheme,
		int purpose, const struct wbuf *content)
{
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	EVP_PKEY *pk;
	int r;

	r = sign(a, identity, scheme, purpose, content, &sig, &sig_len);
	if (r != 0)
		fail_msg("%s with %s (0x%04x), purpose %s: %s; agent said \"%s\"", identity,
			 mtls_agent_scheme_name(scheme), scheme, mtls_agent_purpose_name(purpose),
			 errname(r), mtls_agent_last_message());
	assert_non_null(sig);
	assert_non_null(pk = cert_pubkey(label));
	if (!verify_content(pk, scheme, wbuf_ptr(content), wbuf_len(content), sig, sig_len))
		fail_msg("%s with %s (0x%04x), purpose %s: signature does not verify", identity,
			 mtls_agent_scheme_name(scheme), scheme, mtls_agent_purpose_name(purpose));
	/* The same signature over other content must not verify. */
	{
		struct wbuf *other = tls13_client(32);

		assert_false(
		    verify_content(pk, scheme, wbuf_ptr(other), wbuf_len(other), sig, sig_len));
		wbuf_free(other);
	}
	EVP_PKEY_free(pk);
	free(sig);
}

/* Asserts a signature request fails with `want`. */
void
sign_refused(mtls_agent *a, const char *identity, uint16_t scheme, int purpose,
	     const struct wbuf *content, int want)
{
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	int r;

	r = sign(a, identity, scheme, purpose, content, &sig, &sig_len);
	if (r != want)
		fail_msg("%s with 0x%04x, purpose %d: got %d (%s), want %d (%s); agent said \"%s\"",
			 identity, scheme, purpose, r, errname(r), want, errname(want),
			 mtls_agent_last_message());
	assert_null(sig);
	assert_int_equal(sig_len, 0);
}

/* ---------------------------------------------------------------------- */
/* raw socket helpers (frames built with the real codecs) */

/* One read stash per raw connection, by descriptor. */
struct frame_rx raw_rx[RAW_FDS];

struct frame_rx *
rx_of(int fd)
{
	assert_true(fd >= 0 && fd < RAW_FDS);
	return &raw_rx[fd];
}

int
raw_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	assert_true(strlen(path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_true((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) != -1);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
		fail_msg("connect %s: %s", path, strerror(errno));
	frame_rx_reset(rx_of(fd));
	return fd;
}

void
raw_send_body(int fd, struct wbuf *body)
{
	assert_err(frame_write(fd, body, IO_TIMEOUT_MS), 0);
	wbuf_free(body);
}

/*
 * Reads one reply.  Returns 0 with *type and body set, or the frame
 * error (MTLS_ERR_CONNECTION_CLOSED when the agent hung up).
 */
int
raw_read(int fd, uint8_t *type, struct wbuf *body)
{
	int r;

	if ((r = frame_read(fd, rx_of(fd), body, MTLS_FRAME_MAX, IO_TIMEOUT_MS, IO_TIMEOUT_MS)) !=
	    0)
		return r;
	assert_int_equal(wbuf_get_u8(body, type), 0);
	return 0;
}

/*
 * Reads the reply to an abusive request: the code of an ERROR reply, or
 * the read error if the agent closed the connection instead.
 */
int
raw_read_error(int fd)
{
	struct msg_error err = { 0 };
	struct wbuf *body = wbuf_new();
	uint8_t type = 0;
	int r;

	assert_non_null(body);
	if ((r = raw_read(fd, &type, body)) == 0) {
		if (type != MSG_ERROR)
			fail_msg("reply type 0x%02x, want an ERROR", type);
		assert_err(msg_error_get(body, &err), 0);
		r = err.code;
		assert_true(r < 0);
		msg_error_clear(&err);
	}
	wbuf_free(body);
	return r;
}

struct wbuf *
hello_body(uint32_t min, uint32_t max)
{
	struct msg_hello_req req = { .min_version = min,
				     .max_version = max,
				     .client = (char *)"test_agent raw" };
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(msg_hello_req_put(b, &req), 0);
	return b;
}

void
raw_hello(int fd)
{
	struct msg_hello_resp resp = { 0 };
	struct wbuf *body = wbuf_new();
	uint8_t type = 0;

	assert_non_null(body);
	raw_send_body(fd, hello_body(MTLS_PROTO_MIN, MTLS_PROTO_MAX));
	assert_err(raw_read(fd, &type, body), 0);
	assert_int_equal(type, MSG_HELLO | MSG_REPLY);
	assert_err(msg_hello_resp_get(body, &resp), 0);
	assert_int_equal(resp.version, MTLS_AGENT_PROTOCOL_VERSION);
	msg_hello_resp_clear(&resp);
	wbuf_free(body);
}

/* ---------------------------------------------------------------------- */
/* setup / teardown */

int
group_setup(void **state)
{
	signal(SIGPIPE, SIG_IGN);
	if (fixture_setup(&fx) != 0)
		return -1;
	if (access(fx.agent_bin, X_OK) != 0) {
		fprintf(stderr, "test_agent: agent %s: %s\n", fx.agent_bin, strerror(errno));
		fixture_teardown(&fx);
		return -1;
	}
	return 0;
}

int
group_teardown(void **state)
{
	fixture_teardown(&fx);
	return 0;
}

/* Tests that start their own agents. */
int
setup_none(void **state)
{
	memset(&ag, 0, sizeof(ag));
	ag.out_fd = -1;
	return 0;
}

/* Tests that share one default agent: no config, every certificate on the
 * token offered, nothing logged in. */
int
setup_agent(void **state)
{
	setup_none(state);
	if (agent_start(&fx, NULL, NULL, &ag) != 0) {
		dump_log(&ag);
		return -1;
	}
	return 0;
}

int
teardown_agents(void **state)
{
	if (ag.pid > 0)
		(void)agent_stop(&ag);
	fixture_kill_all(&fx);
	if (moved_to[0] != '\0' && rename(moved_to, moved_from) == 0)
		moved_to[0] = '\0';
	if (pin_changed && change_token_pin(DISTINCT_PIN, fx.pin) == 0)
		pin_changed = 0;
	if (extra_token[0] != '\0') {
		const char *del[] = { "softhsm2-util", "--delete-token", "--token", extra_token,
				      NULL };

		(void)fixture_run(del);
		extra_token[0] = '\0';
	}
	if (peer_base[0] != '\0') {
		const char *rm[] = { "rm", "-rf", peer_base, NULL };

		(void)fixture_run(rm);
		peer_base[0] = '\0';
	}
	return 0;
}

/* Under valgrind (make memcheck) the peer's /proc/PID/exe is valgrind's,
 * timing is ten times slower and valgrind holds descriptors and catches
 * core signals itself: the tests that depend on those are skipped there. */
void
skip_under_valgrind(const char *why)
{
	if (getenv("MTLS_TEST_UNDER_VALGRIND") != NULL) {
		print_message("under valgrind: %s: skipped\n", why);
		skip();
	}
}

void *
sign_in_thread(void *arg)
{
	struct slow_signer *w = arg;
	struct wbuf *c = pam_content();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	struct timespec t0, t1;
	mtls_agent *a = NULL;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	w->result = mtls_agent_connect(w->sock, &a);
	if (w->result == 0)
		w->result = mtls_agent_sign(a, "confirmed-slow", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					    MTLS_AGENT_PURPOSE_PAM_CHALLENGE, wbuf_ptr(c),
					    wbuf_len(c), &sig, &sig_len);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	w->ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	free(sig);
	mtls_agent_free(a);
	wbuf_free(c);
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* The PIN left in the agent's memory (issue 10, item 6) */

/* pkcs11-tool --change-pin on the fixture token. */
int
change_token_pin(const char *from, const char *to)
{
	const char *argv[] = { "pkcs11-tool",  "--module",  fx.module, "--token-label",
			       fx.token,       "--login",   "--pin",   from,
			       "--change-pin", "--new-pin", to,	       NULL };

	return fixture_run(argv);
}
