/*
 * test_agent_sign.c - mtls-agent end to end: listing, login, the signature
 * matrix (every key, every scheme it fits, verified with OpenSSL), purpose
 * refusals, raw digests, lock and unlock.
 *
 * The real daemon on the SoftHSM2 fixture token, driven through
 * libmtls-agent and raw frames; the shared helpers, setup and teardown are
 * in agent_helpers.c (see test_agent.c for how a run is laid out).
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

static int
scheme_fits(const struct test_scheme *s, const struct test_key *k)
{
	if (s->key_type != k->type)
		return 0;
	return s->key_type != MTLS_AGENT_KEY_EC || s->ec_bits == k->bits;
}

/* Verifies sig over a precomputed digest (raw-digest purpose). */
static int
verify_digest(EVP_PKEY *pk, uint16_t scheme, const unsigned char *digest, size_t len,
	      const unsigned char *sig, size_t sig_len)
{
	const struct test_scheme *s = find_scheme(scheme);
	EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(pk, NULL);
	int ok = 0;

	if (pctx == NULL || EVP_PKEY_verify_init(pctx) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(pctx, EVP_get_digestbyname(s->md)) != 1)
		goto out;
	if (s->pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
		       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
		goto out;
	ok = EVP_PKEY_verify(pctx, sig, sig_len, digest, len) == 1;
out:
	EVP_PKEY_CTX_free(pctx);
	return ok;
}

/* A well-formed TLS 1.2 transcript: ClientHello ... ClientKeyExchange. */
static struct wbuf *
tls12_content(void)
{
	static const unsigned char hello_body[40] = { 0x03, 0x03 };
	static const unsigned char cke_body[33] = { 32 };
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(wbuf_put_u8(b, 1), 0); /* ClientHello */
	assert_int_equal(wbuf_put_u8(b, 0), 0);
	assert_int_equal(wbuf_put_u16(b, sizeof(hello_body)), 0);
	assert_int_equal(wbuf_put(b, hello_body, sizeof(hello_body)), 0);
	assert_int_equal(wbuf_put_u8(b, 16), 0); /* ClientKeyExchange */
	assert_int_equal(wbuf_put_u8(b, 0), 0);
	assert_int_equal(wbuf_put_u16(b, sizeof(cke_body)), 0);
	assert_int_equal(wbuf_put(b, cke_body, sizeof(cke_body)), 0);
	return b;
}

/* ---------------------------------------------------------------------- */
/* 1. listing before login */

static void
test_list_before_login(void **state)
{
	struct mtls_agent_identity *ids = NULL;
	const struct mtls_agent_identity *id;
	mtls_agent *a = connect_to(ag.sock);
	unsigned char *der;
	size_t n = 0, i, j, der_len;
	int has_pss, has_p256, has_p384;

	assert_err(mtls_agent_list(a, &ids, &n), 0);
	assert_int_equal(n, N_KEYS);
	for (i = 0; i < N_KEYS; i++) {
		const struct test_key *k = &keys[i];

		id = find_identity(ids, n, k->label);
		if (id == NULL)
			fail_msg("identity %s not listed", k->label);
		assert_int_equal(id->key_type, k->type);
		assert_int_equal(id->key_bits, k->bits);
		assert_string_equal(id->token_label, fx.token);
		assert_string_equal(id->key_label, k->label);
		assert_int_equal(id->key_id_len, 1);
		assert_int_equal(id->key_id[0], k->id);
		assert_true(id->flags & MTLS_AGENT_ID_TOKEN_PRESENT);
		assert_false(id->flags & MTLS_AGENT_ID_LOGGED_IN);
		assert_false(id->flags & MTLS_AGENT_ID_PIN_LOCKED);
		/* Default policy: TLS 1.3 and PAM, nothing else. */
		assert_true(id->purposes & (1U << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV));
		assert_true(id->purposes & (1U << MTLS_AGENT_PURPOSE_PAM_CHALLENGE));
		assert_false(id->purposes & (1U << MTLS_AGENT_PURPOSE_RAW_DIGEST));
		assert_false(id->purposes & (1U << MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV));

		der = cert_der_from_pem(k->label, &der_len);
		assert_non_null(id->cert_der);
		assert_int_equal(id->cert_der_len, der_len);
		assert_memory_equal(id->cert_der, der, der_len);
		OPENSSL_free(der);

		/* The schemes offered fit the key. */
		has_pss = has_p256 = has_p384 = 0;
		assert_true(id->n_schemes > 0);
		for (j = 0; j < id->n_schemes; j++) {
			has_pss |= id->schemes[j] == MTLS_AGENT_RSA_PSS_RSAE_SHA256;
			has_p256 |= id->schemes[j] == MTLS_AGENT_ECDSA_SECP256R1_SHA256;
			has_p384 |= id->schemes[j] == MTLS_AGENT_ECDSA_SECP384R1_SHA384;
		}
		if (k->type == MTLS_AGENT_KEY_RSA) {
			assert_true(has_pss);
			assert_false(has_p256 || has_p384);
		} else {
			assert_false(has_pss);
			assert_int_equal(has_p256, k->bits == 256);
			assert_int_equal(has_p384, k->bits == 384);
		}
	}
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
}

/* ---------------------------------------------------------------------- */
/* 2. login */

static void
test_login(void **state)
{
	mtls_agent *a = connect_to(ag.sock);
	struct mtls_agent_identity *ids = NULL;
	struct wbuf *c = pam_content();
	size_t n = 0, i;
	int retries = -2;

	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
		     c, MTLS_ERR_LOGIN_REQUIRED);

	assert_err(mtls_agent_login(a, NULL, WRONG_PIN, &retries), MTLS_ERR_PIN_INCORRECT);
	/* SoftHSM2 keeps no retry counter: "unknown" (-1) or a count. */
	assert_true(retries == -1 || retries >= 0);
	assert_false(flags_of(a, "p256") & MTLS_AGENT_ID_LOGGED_IN);
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
		     c, MTLS_ERR_LOGIN_REQUIRED);

	/* An empty PIN never reaches the agent. */
	assert_err(mtls_agent_login(a, NULL, "", &retries), MTLS_ERR_PIN_INVALID);

	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(mtls_agent_list(a, &ids, &n), 0);
	assert_int_equal(n, N_KEYS);
	for (i = 0; i < n; i++) {
		assert_true(ids[i].flags & MTLS_AGENT_ID_LOGGED_IN);
		assert_true(ids[i].flags & MTLS_AGENT_ID_KEY_FOUND);
		assert_true(ids[i].flags & MTLS_AGENT_ID_TOKEN_PRESENT);
	}
	mtls_agent_identities_free(ids, n);

	/* Login is the token's state, seen by every client. */
	{
		mtls_agent *b = connect_to(ag.sock);

		assert_true(flags_of(b, "rsa2048") & MTLS_AGENT_ID_LOGGED_IN);
		sign_and_verify(b, "p256", "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c);
		mtls_agent_free(b);
	}
	wbuf_free(c);
	mtls_agent_free(a);
}

/* ---------------------------------------------------------------------- */
/* 3. every scheme with every key */

static void
test_sign_matrix(void **state)
{
	mtls_agent *a = connect_to(ag.sock);
	struct wbuf *pam, *t32, *t48;
	size_t i, j, ok = 0, refused = 0;

	login(a, NULL);
	for (i = 0; i < N_KEYS; i++) {
		const struct test_key *k = &keys[i];

		for (j = 0; j < N_SCHEMES; j++) {
			const struct test_scheme *s = &schemes[j];

			pam = pam_content();
			t32 = tls13_client(32);
			t48 = tls13_client(48);
			if (!scheme_fits(s, k)) {
				/* ECDSA with RSA, RSA with EC, the other curve. */
				sign_refused(a, k->label, s->code, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
					     pam, MTLS_ERR_UNSUPPORTED_SCHEME);
				sign_refused(a, k->label, s->code,
					     MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, t32,
					     MTLS_ERR_UNSUPPORTED_SCHEME);
				refused += 2;
			} else {
				sign_and_verify(a, k->label, k->label, s->code,
						MTLS_AGENT_PURPOSE_PAM_CHALLENGE, pam);
				ok++;
				if (s->key_type == MTLS_AGENT_KEY_RSA && !s->pss) {
					/* RFC 8446 4.4.3: no PKCS#1 v1.5 in TLS 1.3. */
					sign_refused(a, k->label, s->code,
						     MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, t32,
						     MTLS_ERR_UNSUPPORTED_SCHEME);
					refused++;
				} else {
					sign_and_verify(a, k->label, k->label, s->code,
							MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, t32);
					sign_and_verify(a, k->label, k->label, s->code,
							MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, t48);
					ok += 2;
				}
			}
			wbuf_free(pam);
			wbuf_free(t32);
			wbuf_free(t48);
		}
	}
	/* 2 RSA keys x (3 PKCS#1 + 3 x 3 PSS) + 2 EC keys x 3. */
	assert_int_equal(ok, 30);
	assert_true(refused > 0);
	mtls_agent_free(a);
}

/* ---------------------------------------------------------------------- */
/* 4. purpose binding and policy */

static void
test_purpose_refusals(void **state)
{
	mtls_agent *a = connect_to(ag.sock);
	struct wbuf *server = tls13_content("TLS 1.3, server CertificateVerify", 32);
	struct wbuf *pam = pam_content(), *t32 = tls13_client(32), *tls12 = tls12_content();
	struct wbuf *short_hash = tls13_client(20), *digest;
	unsigned char d[32];
	int r, fd;

	login(a, NULL);
	/* Server context: a client key must never sign the server's half. */
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		     MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, server, MTLS_ERR_CONTENT_REJECTED);
	sign_refused(a, "rsa2048", MTLS_AGENT_RSA_PSS_RSAE_SHA256,
		     MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, server, MTLS_ERR_CONTENT_REJECTED);
	/* A PAM challenge claimed as TLS 1.3, and the other way round. */
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		     MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, pam, MTLS_ERR_CONTENT_REJECTED);
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
		     t32, MTLS_ERR_CONTENT_REJECTED);
	/* A transcript hash of no TLS 1.3 suite. */
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		     MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, short_hash, MTLS_ERR_CONTENT_REJECTED);

	/* raw-digest and tls12 are off unless the identity's policy allows. */
	assert_int_equal(RAND_bytes(d, sizeof(d)), 1);
	assert_non_null(digest = wbuf_from(d, sizeof(d)));
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_RAW_DIGEST,
		     digest, MTLS_ERR_POLICY_DENIED);
	sign_refused(a, "rsa2048", MTLS_AGENT_RSA_PSS_RSAE_SHA256, MTLS_AGENT_PURPOSE_RAW_DIGEST,
		     digest, MTLS_ERR_POLICY_DENIED);
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		     MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, tls12, MTLS_ERR_POLICY_DENIED);

	/* Unknown identity, unknown scheme. */
	sign_refused(a, "no-such-identity", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		     MTLS_AGENT_PURPOSE_PAM_CHALLENGE, pam, MTLS_ERR_NO_IDENTITY);
	sign_refused(a, "p256", 0x9999, MTLS_AGENT_PURPOSE_PAM_CHALLENGE, pam,
		     MTLS_ERR_UNSUPPORTED_SCHEME);

	/* Unknown purpose 77, through the library and on a raw connection. */
	{
		unsigned char *sig = NULL;
		size_t sig_len = 0;
		struct msg_sign_req req = { .identity = (char *)"p256",
					    .scheme = MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					    .purpose = 77 };
		struct wbuf *body = wbuf_new();
		int raw;

		r = sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, 77, pam, &sig, &sig_len);
		assert_null(sig);
		if (r != MTLS_ERR_CONTENT_REJECTED && r != MTLS_ERR_BAD_REQUEST)
			fail_msg("purpose 77: got %d (%s), want CONTENT_REJECTED or BAD_REQUEST", r,
				 errname(r));
		print_message("purpose 77 through the library: %s\n", errname(r));

		fd = raw_connect(ag.sock);
		raw_hello(fd);
		req.content = (unsigned char *)wbuf_ptr(pam);
		req.content_len = wbuf_len(pam);
		assert_non_null(body);
		assert_int_equal(msg_sign_req_put(body, &req), 0);
		raw_send_body(fd, body);
		raw = raw_read_error(fd);
		assert_true(raw == MTLS_ERR_CONTENT_REJECTED || raw == MTLS_ERR_BAD_REQUEST);
		assert_int_equal(raw, r);
		close(fd);
	}
	/* Refusals do not cost the connection. */
	sign_and_verify(a, "p256", "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, pam);

	wbuf_free(server);
	wbuf_free(pam);
	wbuf_free(t32);
	wbuf_free(tls12);
	wbuf_free(short_hash);
	wbuf_free(digest);
	mtls_agent_free(a);
}

/* An identity whose policy allows raw-digest (and tls12). */
static void
test_raw_digest_allowed(void **state)
{
	char config[2048], cert[PATH_MAX];
	unsigned char d32[32], d48[48], *sig = NULL;
	struct wbuf *digest, *short_digest, *t32, *tls12;
	size_t sig_len = 0;
	EVP_PKEY *pk;
	mtls_agent *a;

	assert_int_equal(fixture_path(&fx, "p256.pem", cert, sizeof(cert)), 0);
	format_into(config,
		    "[identity rawec]\n"
		    "key = " TOKEN_URI ";id=%%03\n"
		    "certificate = %s\n"
		    "purposes = raw-digest, tls12\n"
		    "[identity rawrsa]\n"
		    "key = " TOKEN_URI ";id=%%01\n"
		    "purposes = raw-digest, tls13\n",
		    cert);
	start_agent(config, NULL, &ag);
	a = connect_to(ag.sock);
	assert_int_equal(count_identities(a), 2);
	login(a, "rawec");

	/* ECDSA over a SHA-256 digest. */
	assert_int_equal(RAND_bytes(d32, sizeof(d32)), 1);
	assert_non_null(digest = wbuf_from(d32, sizeof(d32)));
	assert_err(sign(a, "rawec", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_RAW_DIGEST, digest, &sig, &sig_len),
		   0);
	assert_non_null(pk = cert_pubkey("p256"));
	assert_true(
	    verify_digest(pk, MTLS_AGENT_ECDSA_SECP256R1_SHA256, d32, sizeof(d32), sig, sig_len));
	d32[0] ^= 1;
	assert_false(
	    verify_digest(pk, MTLS_AGENT_ECDSA_SECP256R1_SHA256, d32, sizeof(d32), sig, sig_len));
	EVP_PKEY_free(pk);
	free(sig);
	sig = NULL;

	/* RSA-PSS over a SHA-384 digest. */
	assert_int_equal(RAND_bytes(d48, sizeof(d48)), 1);
	wbuf_free(digest);
	assert_non_null(digest = wbuf_from(d48, sizeof(d48)));
	assert_err(sign(a, "rawrsa", MTLS_AGENT_RSA_PSS_RSAE_SHA384, MTLS_AGENT_PURPOSE_RAW_DIGEST,
			digest, &sig, &sig_len),
		   0);
	assert_non_null(pk = cert_pubkey("rsa2048"));
	assert_true(
	    verify_digest(pk, MTLS_AGENT_RSA_PSS_RSAE_SHA384, d48, sizeof(d48), sig, sig_len));
	EVP_PKEY_free(pk);
	free(sig);
	sig = NULL;

	/* A digest whose length is not the scheme's hash. */
	assert_non_null(short_digest = wbuf_from(d48, 20));
	sign_refused(a, "rawec", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_RAW_DIGEST,
		     short_digest, MTLS_ERR_CONTENT_REJECTED);

	/* tls12 allowed for rawec; tls13 is not in its list (policy given
	 * explicitly replaces the default). */
	tls12 = tls12_content();
	sign_and_verify(a, "rawec", "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, tls12);
	t32 = tls13_client(32);
	sign_refused(a, "rawec", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		     MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, t32, MTLS_ERR_POLICY_DENIED);
	sign_and_verify(a, "rawrsa", "rsa2048", MTLS_AGENT_RSA_PSS_RSAE_SHA256,
			MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, t32);
	sign_refused(a, "rawrsa", MTLS_AGENT_RSA_PKCS1_SHA256, MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV,
		     tls12, MTLS_ERR_POLICY_DENIED);

	wbuf_free(digest);
	wbuf_free(short_digest);
	wbuf_free(tls12);
	wbuf_free(t32);
	mtls_agent_free(a);
}

static void
test_lock_unlock(void **state)
{
	struct wbuf *c;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	int retries, i, r;

	skip_under_valgrind("back-off timing");
	c = pam_content();

	start_agent(NULL, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(mtls_agent_unlock(a, "not locked"), MTLS_ERR_INVALID_ARGUMENT);
	assert_err(mtls_agent_lock(a, "correct horse"), 0);
	assert_err(mtls_agent_lock(a, "again"), MTLS_ERR_AGENT_LOCKED);
	/* Locked: nothing listed (LIST and STATUS say why), nothing signed,
	 * no login. */
	{
		struct mtls_agent_identity *ids = NULL;
		struct mtls_agent_status st;
		size_t n = 1;

		assert_err(mtls_agent_list(a, &ids, &n), MTLS_ERR_AGENT_LOCKED);
		assert_null(ids);
		assert_int_equal(n, 0);
		assert_string_equal(mtls_agent_last_message(), "the agent is locked");
		assert_err(mtls_agent_get_status(a, &st), MTLS_ERR_AGENT_LOCKED);
	}
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_AGENT_LOCKED);
	assert_null(sig);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), MTLS_ERR_AGENT_LOCKED);
	/* A wrong passphrase, then an immediate retry is turned away. */
	assert_err(mtls_agent_unlock(a, "wrong"), MTLS_ERR_AGENT_LOCKED);
	assert_non_null(strstr(mtls_agent_last_message(), "wrong passphrase"));
	assert_err(mtls_agent_unlock(a, "correct horse"), MTLS_ERR_AGENT_LOCKED);
	assert_non_null(strstr(mtls_agent_last_message(), "try again"));
	/* After the back-off the right passphrase unlocks. */
	for (i = 0, r = -1; i < 50 && r != 0; i++) {
		usleep(50 * 1000);
		r = mtls_agent_unlock(a, "correct horse");
	}
	assert_err(r, 0);
	assert_int_equal(count_identities(a), N_KEYS);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	/* The passphrase is never logged. */
	{
		char *log = fixture_read_file(ag.log, NULL);

		assert_non_null(log);
		assert_null(strstr(log, "correct horse"));
		free(log);
	}
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_list_before_login, setup_agent,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_login, setup_agent, teardown_agents),
		cmocka_unit_test_setup_teardown(test_sign_matrix, setup_agent, teardown_agents),
		cmocka_unit_test_setup_teardown(test_purpose_refusals, setup_agent,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_raw_digest_allowed, setup_none,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_lock_unlock, setup_none, teardown_agents),
	};

	/* MTLS_TEST_FILTER=test_name (a shell pattern) runs only those. */
	if (getenv("MTLS_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("MTLS_TEST_FILTER"));
	return cmocka_run_group_tests_name("mtls-agent integration: sign", tests, group_setup,
					   group_teardown);
}
