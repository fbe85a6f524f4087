/*
 * test_helper.c - mtls-agent-p11, the process that holds the PKCS#11
 * module, driven through the agent's side of it (src/agent/helper.c) over
 * the fixture's SoftHSM2 token and the card-like shim.
 *
 * What the split must give: a signature that verifies with the token's
 * certificate; a module that hangs in C_Sign costs that request a TIMEOUT
 * and the helper a restart, while another channel is served meanwhile,
 * and a login on the new helper makes signatures work again; a module
 * that segfaults in C_Sign takes only the helper (this process, the
 * "agent", lives); the helper sees none of our fds and only the
 * environment modules need; no PIN in the helper's memory after logout.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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
#include <dirent.h>
#include <openssl/ec.h>
#include <openssl/rand.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "agent_fixture.h"
#include "helper.h"
#include "mtls-agent.h"
#include "purpose.h"

static struct agent_fixture fx;
static struct helper *hp;

#define S(s) ((char *)(s))

static int
group_setup(void **state)
{
	(void)state;
	return fixture_setup(&fx) == 0 ? 0 : -1;
}

static int
group_teardown(void **state)
{
	(void)state;
	fixture_teardown(&fx);
	return 0;
}

static int
teardown_helper(void **state)
{
	(void)state;
	helper_free(hp);
	hp = NULL;
	unsetenv("MTLS_SHIM_HANG_FILE");
	unsetenv("MTLS_SHIM_CRASH_FILE");
	unsetenv("MTLS_SHIM_HANG_LOGIN_FILE");
	unsetenv("MTLS_LOCKOUT_REAL");
	unsetenv("MTLS_TEST_SECRET_VAR");
	return 0;
}

static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* One request; returns the helper's code, reply positioned after the type. */
static int
call(struct wbuf *req, struct wbuf *reply, struct msg_p11_error *fail)
{
	int r;

	wbuf_reset(reply);
	r = helper_call(hp, req, reply, fail, NULL);
	wbuf_reset(req);
	return r;
}

static uint64_t
find_slot(void)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_tokens_resp toks;
	struct msg_p11_error fail;
	uint64_t slot = UINT64_MAX;
	size_t i;

	assert_int_equal(msg_p11_empty_req_put(req, P11_TOKENS), 0);
	assert_int_equal(call(req, reply, &fail), 0);
	assert_int_equal(msg_p11_tokens_resp_get(reply, &toks), 0);
	for (i = 0; i < toks.n; i++)
		if (strcmp(toks.t[i].label, fx.token) == 0)
			slot = toks.t[i].slot;
	assert_true(slot != UINT64_MAX);
	msg_p11_tokens_resp_clear(&toks);
	wbuf_free(req);
	wbuf_free(reply);
	return slot;
}

static int
login(uint64_t slot, const char *pin, struct msg_p11_error *fail)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_login_req lr = { .slot = slot, .pin = S(pin) };
	int r;

	assert_int_equal(msg_p11_login_req_put(req, &lr), 0);
	r = call(req, reply, fail);
	wbuf_free(req);
	wbuf_free(reply);
	return r;
}

/* The P-256 key's handle and its certificate's public key (id match). */
static void
find_ec_key(uint64_t slot, uint64_t *key, EVP_PKEY **pub, size_t *n_keys)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_slot_req sr = { .slot = slot };
	struct msg_p11_objects_resp objs;
	struct msg_p11_error fail;
	size_t i, j;

	*pub = NULL;
	*n_keys = 0;
	assert_int_equal(msg_p11_slot_req_put(req, P11_OBJECTS, &sr), 0);
	assert_int_equal(call(req, reply, &fail), 0);
	assert_int_equal(msg_p11_objects_resp_get(reply, &objs), 0);
	for (i = 0; i < objs.n; i++) {
		if (objs.o[i].kind == P11_OBJ_CERT)
			continue;
		(*n_keys)++;
		if (objs.o[i].kind != P11_OBJ_EC || *pub != NULL)
			continue;
		for (j = 0; j < objs.n; j++) {
			const unsigned char *p = objs.o[j].a;
			X509 *x;

			if (objs.o[j].kind != P11_OBJ_CERT ||
			    objs.o[j].id_len != objs.o[i].id_len ||
			    memcmp(objs.o[j].id, objs.o[i].id, objs.o[i].id_len) != 0)
				continue;
			assert_non_null(x = d2i_X509(NULL, &p, (long)objs.o[j].a_len));
			*pub = X509_get_pubkey(x);
			X509_free(x);
			/* The fixture has P-256 and P-384 keys: sign_ec() takes P-256. */
			if (*pub != NULL && EVP_PKEY_get_bits(*pub) != 256) {
				EVP_PKEY_free(*pub);
				*pub = NULL;
				continue;
			}
			*key = objs.o[i].handle;
		}
	}
	msg_p11_objects_resp_clear(&objs);
	wbuf_free(req);
	wbuf_free(reply);
}

/* SIGN over SHA-256("hello"); when pub is given the signature must verify. */
static int
sign_ec(uint64_t slot, uint64_t key, EVP_PKEY *pub, struct msg_p11_error *fail)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	unsigned char digest[32], *der = NULL;
	struct msg_p11_sign_req sr = { .slot = slot,
				       .key = key,
				       .mech = P11_MECH_ECDSA,
				       .data = digest,
				       .data_len = sizeof(digest) };
	struct msg_sign_resp resp;
	unsigned int dlen = sizeof(digest);
	EVP_PKEY_CTX *ctx;
	ECDSA_SIG *es;
	int r, der_len;

	assert_int_equal(EVP_Digest("hello", 5, digest, &dlen, EVP_sha256(), NULL), 1);
	assert_int_equal(msg_p11_sign_req_put(req, &sr), 0);
	if ((r = call(req, reply, fail)) != 0)
		goto out;
	assert_int_equal(msg_sign_resp_get(reply, &resp), 0);
	assert_int_equal(resp.sig_len, 64);
	if (pub != NULL) {
		assert_non_null(es = ECDSA_SIG_new());
		assert_int_equal(ECDSA_SIG_set0(es, BN_bin2bn(resp.sig, 32, NULL),
						BN_bin2bn(resp.sig + 32, 32, NULL)),
				 1);
		assert_true((der_len = i2d_ECDSA_SIG(es, &der)) > 0);
		assert_non_null(ctx = EVP_PKEY_CTX_new(pub, NULL));
		assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
		assert_int_equal(EVP_PKEY_verify(ctx, der, (size_t)der_len, digest, sizeof(digest)),
				 1);
		EVP_PKEY_CTX_free(ctx);
		ECDSA_SIG_free(es);
		OPENSSL_free(der);
	}
	msg_sign_resp_clear(&resp);
out:
	wbuf_free(req);
	wbuf_free(reply);
	return r;
}

static void
start(const char *module, unsigned int channels, int timeout_ms)
{
	char err[256] = "";

	if (helper_start(NULL, module, channels, timeout_ms, &hp, err, sizeof(err)) != 0)
		fail_msg("helper_start: %s", err);
}

static void
use_shim(void)
{
	assert_int_equal(setenv("MTLS_LOCKOUT_REAL", fx.module, 1), 0);
}

/* Keys only after login; the signature verifies with the certificate. */
static void
test_helper_sign(void **state)
{
	struct msg_p11_error fail;
	uint64_t slot, key = 0;
	size_t n_keys;
	EVP_PKEY *pub;

	(void)state;
	start(fx.module, 2, 10000);
	slot = find_slot();
	find_ec_key(slot, &key, &pub, &n_keys);
	assert_int_equal(n_keys, 0); /* private keys are private before login */
	assert_null(pub);
	assert_int_equal(login(slot, "wrong-pin", &fail), MTLS_ERR_PIN_INCORRECT);
	msg_p11_error_clear(&fail);
	assert_int_equal(login(slot, fx.pin, &fail), 0);
	find_ec_key(slot, &key, &pub, &n_keys);
	assert_non_null(pub);
	assert_int_equal(sign_ec(slot, key, pub, &fail), 0);
	EVP_PKEY_free(pub);
	assert_int_equal(helper_generation(hp), 1);
}

/* KEYGEN straight to the helper: refused on a slot the helper has not
 * logged in (its own check, besides the agent's); after login a P-256 pair
 * whose public numbers come back; IMPORT_CERT likewise needs the login. */
static void
test_helper_keygen(void **state)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_keygen_req kr = { .kind = MTLS_AGENT_KEYGEN_EC_P256, .label = S("hk") };
	unsigned char id[4] = { 1, 2, 3, 4 }, subj[2] = { 0x30, 0 }, cert[2] = { 0x30, 0 };
	struct msg_p11_import_req ir = { .id = id,
					 .id_len = sizeof(id),
					 .label = S("hk"),
					 .subject = subj,
					 .subject_len = sizeof(subj),
					 .cert = cert,
					 .cert_len = sizeof(cert) };
	struct msg_p11_error fail;
	struct p11_object o;

	(void)state;
	start(fx.module, 2, 10000);
	kr.slot = ir.slot = find_slot();
	assert_int_equal(msg_p11_keygen_req_put(req, &kr), 0);
	assert_int_equal(call(req, reply, &fail), MTLS_ERR_LOGIN_REQUIRED);
	assert_non_null(strstr(fail.message, "log the token in before generating a key"));
	msg_p11_error_clear(&fail);
	assert_int_equal(msg_p11_import_req_put(req, &ir), 0);
	assert_int_equal(call(req, reply, &fail), MTLS_ERR_LOGIN_REQUIRED);
	assert_non_null(strstr(fail.message, "log the token in before importing"));
	msg_p11_error_clear(&fail);
	assert_int_equal(login(kr.slot, fx.pin, &fail), 0);
	assert_int_equal(msg_p11_keygen_req_put(req, &kr), 0);
	assert_int_equal(call(req, reply, &fail), 0);
	assert_int_equal(msg_p11_keygen_resp_get(reply, &o), 0);
	assert_int_equal(o.kind, P11_OBJ_EC);
	assert_int_equal(o.id_len, 16);
	assert_true(o.b_len >= 65);
	msg_p11_object_clear(&o);
	/* RSA and P-384: the template's kind-specific attributes. */
	kr.kind = MTLS_AGENT_KEYGEN_RSA_2048;
	kr.label = S("hk-rsa");
	assert_int_equal(msg_p11_keygen_req_put(req, &kr), 0);
	assert_int_equal(call(req, reply, &fail), 0);
	assert_int_equal(msg_p11_keygen_resp_get(reply, &o), 0);
	assert_int_equal(o.kind, P11_OBJ_RSA);
	assert_int_equal(o.a_len, 256);
	msg_p11_object_clear(&o);
	kr.kind = MTLS_AGENT_KEYGEN_EC_P384;
	kr.label = S("hk-384");
	assert_int_equal(msg_p11_keygen_req_put(req, &kr), 0);
	assert_int_equal(call(req, reply, &fail), 0);
	assert_int_equal(msg_p11_keygen_resp_get(reply, &o), 0);
	assert_int_equal(o.kind, P11_OBJ_EC);
	assert_int_equal(o.a_len, 7); /* the P-384 OID, not P-256 (10) */
	assert_true(o.b_len >= 97);
	msg_p11_object_clear(&o);
	wbuf_free(req);
	wbuf_free(reply);
}

struct stuck {
	uint64_t slot, key;
	int r;
	long took_ms;
};

static void *
stuck_sign(void *arg)
{
	struct stuck *s = arg;
	struct msg_p11_error fail;
	long t0 = now_ms();

	s->r = sign_ec(s->slot, s->key, NULL, &fail);
	s->took_ms = now_ms() - t0;
	msg_p11_error_clear(&fail);
	return NULL;
}

/*
 * C_Sign never returns: that request gets TIMEOUT after the timeout, the
 * helper is killed, reaped and started again; meanwhile another channel
 * answers at once; after a new login the next signature works.
 */
static void
test_helper_hang_restart(void **state)
{
	char hang[PATH_MAX];
	struct msg_p11_error fail;
	struct stuck s = { 0 };
	uint64_t slot, key = 0;
	pthread_t th;
	size_t n_keys;
	EVP_PKEY *pub;
	pid_t old;
	long t0;

	(void)state;
	assert_int_equal(fixture_unique_path(&fx, "hang", "", hang, sizeof(hang)), 0);
	use_shim();
	assert_int_equal(setenv("MTLS_SHIM_HANG_FILE", hang, 1), 0);
	start(fx.lockout_module, 2, 1500);
	slot = find_slot();
	assert_int_equal(login(slot, fx.pin, &fail), 0);
	find_ec_key(slot, &key, &pub, &n_keys);
	assert_non_null(pub);
	old = helper_pid(hp);
	assert_int_equal(fixture_write_file(hang, "", 0600), 0);
	s.slot = slot;
	s.key = key;
	assert_int_equal(pthread_create(&th, NULL, stuck_sign, &s), 0);
	usleep(200 * 1000);
	/* The other channel is served while C_Sign hangs. */
	t0 = now_ms();
	(void)find_slot();
	assert_true(now_ms() - t0 < 1000);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(s.r, MTLS_ERR_TIMEOUT);
	assert_true(s.took_ms >= 1400 && s.took_ms < 5000);
	/* Killed and reaped: no such process any more (not even a zombie). */
	assert_int_equal(kill(old, 0), -1);
	assert_int_equal(errno, ESRCH);
	assert_int_equal(unlink(hang), 0);
	/* A new helper, not logged in: log in, find the key, sign. */
	slot = find_slot();
	assert_int_equal(helper_generation(hp), 2);
	assert_true(helper_pid(hp) != old);
	assert_int_equal(login(slot, fx.pin, &fail), 0);
	EVP_PKEY_free(pub);
	find_ec_key(slot, &key, &pub, &n_keys);
	assert_int_equal(sign_ec(slot, key, pub, &fail), 0);
	EVP_PKEY_free(pub);
}

/* C_Login never returns: TIMEOUT, a new helper, and a login there works. */
static void
test_helper_login_hang(void **state)
{
	char hang[PATH_MAX];
	struct msg_p11_error fail;
	uint64_t slot;
	long t0;

	(void)state;
	assert_int_equal(fixture_unique_path(&fx, "hang-login", "", hang, sizeof(hang)), 0);
	use_shim();
	assert_int_equal(setenv("MTLS_SHIM_HANG_LOGIN_FILE", hang, 1), 0);
	start(fx.lockout_module, 2, 1000);
	slot = find_slot();
	assert_int_equal(fixture_write_file(hang, "", 0600), 0);
	t0 = now_ms();
	assert_int_equal(login(slot, fx.pin, &fail), MTLS_ERR_TIMEOUT);
	assert_true(now_ms() - t0 < 4000);
	assert_int_equal(unlink(hang), 0);
	slot = find_slot();
	assert_int_equal(helper_generation(hp), 2);
	assert_int_equal(login(slot, fx.pin, &fail), 0);
}

/* REINIT: the module starts afresh; the login is gone, a new one signs. */
static void
test_helper_reinit(void **state)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_error fail;
	uint64_t slot, key = 0;
	size_t n_keys;
	EVP_PKEY *pub;

	(void)state;
	start(fx.module, 2, 10000);
	slot = find_slot();
	assert_int_equal(login(slot, fx.pin, &fail), 0);
	assert_int_equal(msg_p11_empty_req_put(req, P11_REINIT), 0);
	assert_int_equal(call(req, reply, &fail), 0);
	/* Same process: REINIT is no restart. */
	assert_int_equal(helper_generation(hp), 1);
	slot = find_slot();
	find_ec_key(slot, &key, &pub, &n_keys);
	assert_int_equal(n_keys, 0); /* logged out with the finalize */
	assert_int_equal(login(slot, fx.pin, &fail), 0);
	find_ec_key(slot, &key, &pub, &n_keys);
	assert_non_null(pub);
	assert_int_equal(sign_ec(slot, key, pub, &fail), 0);
	EVP_PKEY_free(pub);
	wbuf_free(req);
	wbuf_free(reply);
}

/*
 * One channel, and its request hangs in C_Sign: a second request waits
 * for the channel no longer than the timeout, and is then served by the
 * helper started in place of the hung one.
 */
static void
test_helper_channel_wait(void **state)
{
	char hang[PATH_MAX];
	struct msg_p11_error fail;
	struct stuck s = { 0 };
	uint64_t slot, key = 0;
	size_t n_keys;
	EVP_PKEY *pub;
	pthread_t th;
	long t0, took;

	(void)state;
	assert_int_equal(fixture_unique_path(&fx, "hang1", "", hang, sizeof(hang)), 0);
	use_shim();
	assert_int_equal(setenv("MTLS_SHIM_HANG_FILE", hang, 1), 0);
	start(fx.lockout_module, 1, 1500);
	slot = find_slot();
	assert_int_equal(login(slot, fx.pin, &fail), 0);
	find_ec_key(slot, &key, &pub, &n_keys);
	EVP_PKEY_free(pub);
	assert_int_equal(fixture_write_file(hang, "", 0600), 0);
	s.slot = slot;
	s.key = key;
	assert_int_equal(pthread_create(&th, NULL, stuck_sign, &s), 0);
	usleep(200 * 1000);
	t0 = now_ms();
	(void)find_slot(); /* asserts success: served by the new helper */
	took = now_ms() - t0;
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(s.r, MTLS_ERR_TIMEOUT);
	assert_true(took < 3000);
	assert_int_equal(helper_generation(hp), 2);
	assert_int_equal(unlink(hang), 0);
}

/* C_Sign segfaults: only the helper dies; the next one signs after login. */
static void
test_helper_crash_restart(void **state)
{
	char crash[PATH_MAX];
	struct msg_p11_error fail;
	uint64_t slot, key = 0;
	size_t n_keys;
	EVP_PKEY *pub;
	long t0;

	(void)state;
	assert_int_equal(fixture_unique_path(&fx, "crash", "", crash, sizeof(crash)), 0);
	use_shim();
	assert_int_equal(setenv("MTLS_SHIM_CRASH_FILE", crash, 1), 0);
	start(fx.lockout_module, 2, 10000);
	slot = find_slot();
	assert_int_equal(login(slot, fx.pin, &fail), 0);
	find_ec_key(slot, &key, &pub, &n_keys);
	assert_int_equal(fixture_write_file(crash, "", 0600), 0);
	t0 = now_ms();
	assert_int_equal(sign_ec(slot, key, NULL, &fail), MTLS_ERR_TOKEN);
	assert_true(now_ms() - t0 < 5000); /* noticed at once, not by the timeout */
	assert_int_equal(unlink(crash), 0);
	slot = find_slot();
	assert_int_equal(helper_generation(hp), 2);
	assert_int_equal(login(slot, fx.pin, &fail), 0);
	EVP_PKEY_free(pub);
	find_ec_key(slot, &key, &pub, &n_keys);
	assert_int_equal(sign_ec(slot, key, pub, &fail), 0);
	EVP_PKEY_free(pub);
}

/* None of our fds and none of our environment beyond what modules read. */
static void
test_helper_fds_env(void **state)
{
	char path[PATH_MAX], link[PATH_MAX], *env;
	size_t len, off;
	int fd, n, ours, softhsm_conf = 0;
	pid_t pid;

	(void)state;
	assert_int_equal(fixture_unique_path(&fx, "agent-fd", "", path, sizeof(path)), 0);
	/* No O_CLOEXEC: the helper itself must close it. */
	assert_true((ours = open(path, O_WRONLY | O_CREAT, 0600)) >= 0);
	assert_int_equal(setenv("MTLS_TEST_SECRET_VAR", "do-not-pass", 1), 0);
	start(fx.module, 3, 10000);
	(void)find_slot(); /* the module is loaded and answering */
	pid = helper_pid(hp);
	for (fd = 0; fd < 256; fd++) {
		char p[64];

		snprintf(p, sizeof(p), "/proc/%ld/fd/%d", (long)pid, fd);
		if ((n = (int)readlink(p, link, sizeof(link) - 1)) < 0)
			continue;
		link[n] = '\0';
		if (strcmp(link, path) == 0)
			fail_msg("the helper has the agent's fd %d open as its fd %d", ours, fd);
		/* 0-2, the 3 channels, and what the module itself opens (token
		 * files under the fixture); nothing inherited. */
		if (fd >= 3 + 3 && strncmp(link, fx.dir, strlen(fx.dir)) != 0)
			fail_msg("the helper has fd %d open (%s), not its own", fd, link);
		if (fd >= 3 && fd < 3 + 3 && strncmp(link, "socket:", 7) != 0)
			fail_msg("the helper's channel fd %d is %s", fd, link);
	}
	snprintf(path, sizeof(path), "/proc/%ld/environ", (long)pid);
	assert_non_null(env = fixture_read_file(path, &len));
	for (off = 0; off < len; off += strlen(env + off) + 1) {
		if (strncmp(env + off, "MTLS_TEST_SECRET_VAR=", 21) == 0 ||
		    !helper_env_kept(env + off))
			fail_msg("the helper got %s in its environment", env + off);
		if (strncmp(env + off, "SOFTHSM2_CONF=", 14) == 0)
			softhsm_conf = 1;
	}
	assert_true(softhsm_conf); /* what the module needs is passed on */
	free(env);
	close(ours);
}

static int
set_pin(uint64_t slot, const char *old, const char *new_pin, struct msg_p11_error *fail)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_set_pin_req sp = {
		.slot = slot, .mode = SET_PIN_CHANGE, .old_pin = S(old), .new_pin = S(new_pin)
	};
	int r;

	assert_int_equal(msg_p11_set_pin_req_put(req, &sp), 0);
	r = call(req, reply, fail);
	wbuf_free(req);
	wbuf_free(reply);
	return r;
}

static int
logout(uint64_t slot, struct msg_p11_error *fail)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_slot_req sr = { .slot = slot };
	int r;

	assert_int_equal(msg_p11_slot_req_put(req, P11_LOGOUT, &sr), 0);
	r = call(req, reply, fail);
	wbuf_free(req);
	wbuf_free(reply);
	return r;
}

/* The fixture's PIN (123456) is in any hex table: use one nobody else has. */
#define DISTINCT_PIN "Hq3-PIN-mW8z-51Tc"

static void
test_helper_pin_not_in_memory(void **state)
{
	struct msg_p11_error fail;
	long hits;
	uint64_t slot;
	int r;

	(void)state;
	if (geteuid() != 0) {
		print_message("not root: reading the helper's memory needs root; skipped\n");
		skip();
	}
	start(fx.module, 2, 10000);
	slot = find_slot();
	assert_int_equal(set_pin(slot, fx.pin, DISTINCT_PIN, &fail), 0);
	assert_int_equal(logout(slot, &fail), 0);
	assert_int_equal(login(slot, DISTINCT_PIN, &fail), 0);
	assert_int_equal(logout(slot, &fail), 0);
	hits = fixture_count_in_memory(helper_pid(hp), DISTINCT_PIN);
	/* Put the fixture's PIN back before any assertion can stop us. */
	r = set_pin(slot, DISTINCT_PIN, fx.pin, &fail);
	assert_int_equal(r, 0);
	if (hits < 0)
		fail_msg("cannot read the helper's memory");
	if (hits != 0)
		fail_msg("the PIN is in the helper's memory %ld time(s) after logout", hits);
}

/* ---- through the real agent ------------------------------------------ */

static struct agent_proc ag;

static int
teardown_agent(void **state)
{
	(void)state;
	if (ag.pid > 0)
		(void)agent_stop(&ag);
	fixture_kill_all(&fx);
	memset(&ag, 0, sizeof(ag));
	return 0;
}

/* The pid of the agent's mtls-agent-p11 child, or -1. */
static pid_t
helper_child(pid_t agent)
{
	char path[PATH_MAX], buf[512], comm[64];
	struct dirent *e;
	pid_t found = -1;
	DIR *d;

	assert_non_null(d = opendir("/proc"));
	while ((e = readdir(d)) != NULL) {
		long pid, ppid;
		FILE *f;

		if ((pid = strtol(e->d_name, NULL, 10)) <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		/* pid (comm) state ppid ... */
		if (fgets(buf, sizeof(buf), f) != NULL &&
		    sscanf(buf, "%*d (%63[^)]) %*c %ld", comm, &ppid) == 2 && ppid == agent &&
		    strcmp(comm, "mtls-agent-p11") == 0)
			found = (pid_t)pid;
		fclose(f);
	}
	closedir(d);
	return found;
}

/* Does /proc/PID/maps name a file whose name contains `needle`? */
static int
maps_have(pid_t pid, const char *needle)
{
	char path[64];
	char *maps;
	int hit;

	snprintf(path, sizeof(path), "/proc/%ld/maps", (long)pid);
	assert_non_null(maps = fixture_read_file(path, NULL));
	hit = strstr(maps, needle) != NULL;
	free(maps);
	return hit;
}

static struct wbuf *
pam_content(void)
{
	unsigned char nonce[32];
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(RAND_bytes(nonce, sizeof(nonce)), 1);
	assert_int_equal(pam_challenge_put(b, nonce, sizeof(nonce), "sshd", "alice"), 0);
	return b;
}

static int
agent_sign(mtls_agent *a, const struct wbuf *c)
{
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	int r;

	r = mtls_agent_sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			    MTLS_AGENT_PURPOSE_PAM_CHALLENGE, wbuf_ptr(c), wbuf_len(c), &sig,
			    &sig_len);
	free(sig);
	return r;
}

/* No module code in the agent: SoftHSM2 is mapped in its helper only. */
static void
test_agent_maps_no_module(void **state)
{
	struct wbuf *c = pam_content();
	mtls_agent *a = NULL;
	pid_t child;
	int retries;

	(void)state;
	if (agent_start(&fx, NULL, NULL, &ag) != 0)
		fail_msg("agent did not start");
	assert_int_equal(mtls_agent_connect(ag.sock, &a), 0);
	assert_int_equal(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_int_equal(agent_sign(a, c), 0);
	assert_true((child = helper_child(ag.pid)) > 0);
	assert_true(maps_have(child, "libsofthsm2"));
	if (maps_have(ag.pid, "libsofthsm2") || maps_have(ag.pid, "p11-kit-proxy") ||
	    maps_have(ag.pid, "p11-lockout") || maps_have(ag.pid, "/pkcs11/"))
		fail_msg("the agent (pid %ld) maps module code", (long)ag.pid);
	mtls_agent_free(a);
	wbuf_free(c);
}

/* A module that segfaults in C_Sign: the agent lives, its helper is
 * started again, and after a login signatures work. */
static void
test_agent_module_crash(void **state)
{
	const char *args[] = { "--module", fx.lockout_module, NULL };
	char crash[PATH_MAX], env_crash[PATH_MAX + 32];
	const char *env[] = { env_crash, NULL };
	struct agent_opts o = { 0 };
	struct wbuf *c = pam_content();
	mtls_agent *a = NULL;
	pid_t before, after;
	int retries, i;

	(void)state;
	assert_int_equal(fixture_unique_path(&fx, "crash", "", crash, sizeof(crash)), 0);
	snprintf(env_crash, sizeof(env_crash), "MTLS_SHIM_CRASH_FILE=%s", crash);
	o.args = args;
	o.env = env;
	if (agent_start_opts(&fx, &o, &ag) != 0)
		fail_msg("agent did not start");
	assert_int_equal(mtls_agent_connect(ag.sock, &a), 0);
	assert_int_equal(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_int_equal(agent_sign(a, c), 0);
	before = helper_child(ag.pid);
	assert_int_equal(fixture_write_file(crash, "", 0600), 0);
	assert_int_equal(agent_sign(a, c), MTLS_ERR_TOKEN);
	assert_true(agent_alive(&ag));
	/* SIGSEGV; under ASan its fault handler reports and exits instead
	 * (the helper's environment has no ASAN_OPTIONS). */
	assert_true(agent_logged(&ag, "died of signal 11") ||
		    agent_logged(&ag, "exited with status 1 (its channel closed)"));
	assert_int_equal(unlink(crash), 0);
	/* The token needs a login on the new helper. */
	assert_int_equal(agent_sign(a, c), MTLS_ERR_LOGIN_REQUIRED);
	assert_int_equal(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	for (i = 0; i < 20 && agent_sign(a, c) != 0; i++)
		usleep(100 * 1000);
	assert_int_equal(agent_sign(a, c), 0);
	after = helper_child(ag.pid);
	assert_true(after > 0 && after != before);
	mtls_agent_free(a);
	wbuf_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_helper_sign, teardown_helper),
		cmocka_unit_test_teardown(test_helper_keygen, teardown_helper),
		cmocka_unit_test_teardown(test_helper_hang_restart, teardown_helper),
		cmocka_unit_test_teardown(test_helper_login_hang, teardown_helper),
		cmocka_unit_test_teardown(test_helper_channel_wait, teardown_helper),
		cmocka_unit_test_teardown(test_helper_crash_restart, teardown_helper),
		cmocka_unit_test_teardown(test_helper_reinit, teardown_helper),
		cmocka_unit_test_teardown(test_helper_fds_env, teardown_helper),
		cmocka_unit_test_teardown(test_helper_pin_not_in_memory, teardown_helper),
		cmocka_unit_test_teardown(test_agent_maps_no_module, teardown_agent),
		cmocka_unit_test_teardown(test_agent_module_crash, teardown_agent),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("PKCS#11 helper", tests, group_setup, group_teardown);
}
