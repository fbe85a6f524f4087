/*
 * test_policy.c - the agent's decisions: who may connect, what an identity
 * may sign.  Each rule has a case that fails if the rule is removed.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mtls-agent.h"
#include "policy.h"
#include "purpose.h"

#define ALL_PURPOSES                                                                               \
	((1U << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV) | (1U << MTLS_AGENT_PURPOSE_PAM_CHALLENGE) |   \
	 (1U << MTLS_AGENT_PURPOSE_RAW_DIGEST) | (1U << MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV))
#define DEFAULT_PURPOSES                                                                           \
	((1U << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV) | (1U << MTLS_AGENT_PURPOSE_PAM_CHALLENGE))

static size_t
tls13_content(unsigned char *buf, size_t hash_len)
{
	static const char ctx[] = TLS13_CLIENT_CV_CONTEXT;

	memset(buf, 0x20, 64);
	memcpy(buf + 64, ctx, sizeof(ctx));
	memset(buf + 64 + sizeof(ctx), 0xab, hash_len);
	return 64 + sizeof(ctx) + hash_len;
}

static void
test_peer(void **state)
{
	(void)state;
	assert_true(policy_peer_allowed(1000, 1000, 0));
	assert_false(policy_peer_allowed(1001, 1000, 0));
	assert_false(policy_peer_allowed(1001, 1000, 1));
	assert_false(policy_peer_allowed(0, 1000, 0));
	assert_true(policy_peer_allowed(0, 1000, 1));
	assert_true(policy_peer_allowed(0, 0, 0));
}

static void
test_sign_ok(void **state)
{
	const struct scheme_info *s = NULL;
	unsigned char c[200];
	char why[256];
	size_t len = tls13_content(c, 32);

	(void)state;
	assert_int_equal(policy_check_sign(DEFAULT_PURPOSES, MTLS_AGENT_KEY_EC, 256,
					   MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					   MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c, len, &s, why,
					   sizeof(why)),
			 0);
	assert_non_null(s);
	assert_int_equal(s->code, MTLS_AGENT_ECDSA_SECP256R1_SHA256);
	assert_int_equal(policy_check_sign(DEFAULT_PURPOSES, MTLS_AGENT_KEY_RSA, 3072,
					   MTLS_AGENT_RSA_PSS_RSAE_SHA384,
					   MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c, len, &s, why,
					   sizeof(why)),
			 0);
}

static void
test_scheme_must_fit_key(void **state)
{
	const struct scheme_info *s;
	unsigned char c[200];
	char why[256];
	size_t len = tls13_content(c, 32);

	(void)state;
	/* ECDSA with an RSA key, RSA with an EC key, wrong curve, unknown. */
	assert_int_equal(policy_check_sign(ALL_PURPOSES, MTLS_AGENT_KEY_RSA, 2048,
					   MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					   MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c, len, &s, why,
					   sizeof(why)),
			 MTLS_ERR_UNSUPPORTED_SCHEME);
	assert_int_equal(
	    policy_check_sign(ALL_PURPOSES, MTLS_AGENT_KEY_EC, 256, MTLS_AGENT_RSA_PSS_RSAE_SHA256,
			      MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c, len, &s, why, sizeof(why)),
	    MTLS_ERR_UNSUPPORTED_SCHEME);
	assert_int_equal(policy_check_sign(ALL_PURPOSES, MTLS_AGENT_KEY_EC, 256,
					   MTLS_AGENT_ECDSA_SECP384R1_SHA384,
					   MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c, len, &s, why,
					   sizeof(why)),
			 MTLS_ERR_UNSUPPORTED_SCHEME);
	assert_int_equal(policy_check_sign(ALL_PURPOSES, MTLS_AGENT_KEY_EC, 256, 0x9999,
					   MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c, len, &s, why,
					   sizeof(why)),
			 MTLS_ERR_UNSUPPORTED_SCHEME);
	assert_null(s);
	assert_non_null(strstr(why, "0x9999"));
}

static void
test_purpose_must_be_allowed(void **state)
{
	const struct scheme_info *s;
	unsigned char digest[32];
	char why[256];

	(void)state;
	memset(digest, 1, sizeof(digest));
	assert_int_equal(policy_check_sign(DEFAULT_PURPOSES, MTLS_AGENT_KEY_EC, 256,
					   MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					   MTLS_AGENT_PURPOSE_RAW_DIGEST, digest, sizeof(digest),
					   &s, why, sizeof(why)),
			 MTLS_ERR_POLICY_DENIED);
	assert_non_null(strstr(why, "raw-digest"));
	assert_int_equal(policy_check_sign(ALL_PURPOSES, MTLS_AGENT_KEY_EC, 256,
					   MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					   MTLS_AGENT_PURPOSE_RAW_DIGEST, digest, sizeof(digest),
					   &s, why, sizeof(why)),
			 0);
	/* TLS 1.3 only: a TLS 1.2 transcript is refused by policy. */
	assert_int_equal(
	    policy_check_sign(1U << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, MTLS_AGENT_KEY_EC, 256,
			      MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV,
			      digest, sizeof(digest), &s, why, sizeof(why)),
	    MTLS_ERR_POLICY_DENIED);
	/* PAM only: a TLS 1.3 content is refused by policy. */
	assert_int_equal(
	    policy_check_sign(1U << MTLS_AGENT_PURPOSE_PAM_CHALLENGE, MTLS_AGENT_KEY_EC, 256,
			      MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
			      digest, sizeof(digest), &s, why, sizeof(why)),
	    MTLS_ERR_POLICY_DENIED);
}

static void
test_unknown_purpose(void **state)
{
	const struct scheme_info *s;
	unsigned char c[200];
	char why[256];
	size_t len = tls13_content(c, 32);
	int p;

	(void)state;
	/* Purposes 0, 5..255 (and those >= 32, which must not be shifted). */
	for (p = 0; p < 256; p++) {
		if (p >= 1 && p <= 4)
			continue;
		assert_int_equal(policy_check_sign(0xffffffffU, MTLS_AGENT_KEY_EC, 256,
						   MTLS_AGENT_ECDSA_SECP256R1_SHA256, p, c, len, &s,
						   why, sizeof(why)),
				 MTLS_ERR_CONTENT_REJECTED);
	}
}

static void
test_content_checked_after_policy(void **state)
{
	const struct scheme_info *s;
	unsigned char c[200];
	char why[256];
	size_t len = tls13_content(c, 32);

	(void)state;
	memcpy(c + 64 + 9, "server", 6); /* "TLS 1.3, server CertificateVerify" */
	assert_int_equal(policy_check_sign(DEFAULT_PURPOSES, MTLS_AGENT_KEY_EC, 256,
					   MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					   MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c, len, &s, why,
					   sizeof(why)),
			 MTLS_ERR_CONTENT_REJECTED);
	/* The same content claimed as a PAM challenge is not one either. */
	len = tls13_content(c, 32);
	assert_int_equal(policy_check_sign(DEFAULT_PURPOSES, MTLS_AGENT_KEY_EC, 256,
					   MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					   MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, len, &s, why,
					   sizeof(why)),
			 MTLS_ERR_CONTENT_REJECTED);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peer),
		cmocka_unit_test(test_sign_ok),
		cmocka_unit_test(test_scheme_must_fit_key),
		cmocka_unit_test(test_purpose_must_be_allowed),
		cmocka_unit_test(test_unknown_purpose),
		cmocka_unit_test(test_content_checked_after_policy),
	};

	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
