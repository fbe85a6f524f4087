/*
 * test_purpose.c - unit tests of the purpose binding (src/common/purpose.c),
 * the scheme and purpose names, and the error texts.
 *
 * The purpose check is what stops a client from getting a TLS signature
 * over a PAM challenge (or anything else): each refusal below is a content
 * that must never be signed for the purpose it claims.
 */
#include "config.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls-agent.h"
#include "purpose.h"
#include "scheme.h"
#include "wbuf.h"

#define TLS13_SERVER_CV_CONTEXT "TLS 1.3, server CertificateVerify"

static const struct scheme_info *
scheme(uint16_t code)
{
	const struct scheme_info *s = scheme_lookup(code);

	assert_non_null(s);
	assert_int_equal(s->code, code);
	return s;
}

/* Checks content for purpose and scheme and returns the verdict; a refusal
 * must come with a reason. */
static int
check(int purpose, uint16_t code, const unsigned char *c, size_t len)
{
	char why[256];
	int r;

	memset(why, 'X', sizeof(why));
	r = purpose_check(purpose, scheme(code), c, len, why, sizeof(why));
	assert_non_null(memchr(why, '\0', sizeof(why)));
	if (r == 0)
		assert_string_equal(why, "");
	else
		assert_true(strlen(why) > 0);
	return r;
}

/* ---------- TLS 1.3 ---------- */

/* 64 spaces, context, NUL, hash: written into out (>= 64+34+hash_len). */
static size_t
tls13_content(unsigned char *out, const char *ctx, size_t hash_len)
{
	size_t n = 0, i;

	memset(out, 0x20, TLS13_CV_PAD_LEN);
	n += TLS13_CV_PAD_LEN;
	memcpy(out + n, ctx, strlen(ctx) + 1);
	n += strlen(ctx) + 1;
	for (i = 0; i < hash_len; i++)
		out[n++] = (unsigned char)(0xa0 + i);
	return n;
}

static const uint16_t tls13_ok_schemes[] = {
	MTLS_AGENT_RSA_PSS_RSAE_SHA256,	   MTLS_AGENT_RSA_PSS_RSAE_SHA384,
	MTLS_AGENT_RSA_PSS_RSAE_SHA512,	   MTLS_AGENT_ECDSA_SECP256R1_SHA256,
	MTLS_AGENT_ECDSA_SECP384R1_SHA384,
};

static void
test_tls13_accepted(void **state)
{
	unsigned char c[256];
	size_t i, len;

	(void)state;
	assert_int_equal(strlen(TLS13_CLIENT_CV_CONTEXT), 33);
	for (i = 0; i < sizeof(tls13_ok_schemes) / sizeof(tls13_ok_schemes[0]); i++) {
		/* The transcript hash is the suite's (SHA-256 or SHA-384),
		 * independent of the scheme's hash. */
		len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 32);
		assert_int_equal(len, 64 + 34 + 32);
		assert_int_equal(
		    check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, tls13_ok_schemes[i], c, len), 0);
		len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 48);
		assert_int_equal(
		    check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, tls13_ok_schemes[i], c, len), 0);
	}
	/* why may be NULL. */
	assert_int_equal(purpose_check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
				       scheme(MTLS_AGENT_ECDSA_SECP256R1_SHA256), c, len, NULL, 0),
			 0);
}

static void
expect_tls13_rejected(const unsigned char *c, size_t len)
{
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, MTLS_AGENT_RSA_PSS_RSAE_SHA256, c, len),
	    MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, MTLS_AGENT_ECDSA_SECP256R1_SHA256, c, len),
	    MTLS_ERR_CONTENT_REJECTED);
}

static void
test_tls13_rejected(void **state)
{
	unsigned char c[512];
	size_t len, i, hl;
	static const size_t bad_hash[] = { 0, 1, 31, 33, 47, 49, 64 };

	(void)state;
	/* The server's context: a client signature must never be usable as a
	 * server's. */
	assert_int_equal(strlen(TLS13_SERVER_CV_CONTEXT), strlen(TLS13_CLIENT_CV_CONTEXT));
	len = tls13_content(c, TLS13_SERVER_CV_CONTEXT, 32);
	expect_tls13_rejected(c, len);

	/* 63 spaces (and so everything shifted by one). */
	len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 32);
	memmove(c, c + 1, len - 1);
	expect_tls13_rejected(c, len - 1);
	/* 63 spaces, hash one byte longer so the total length is right. */
	len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 33);
	memmove(c, c + 1, len - 1);
	expect_tls13_rejected(c, len - 1);
	/* 65 spaces. */
	c[0] = 0x20;
	len = tls13_content(c + 1, TLS13_CLIENT_CV_CONTEXT, 32) + 1;
	expect_tls13_rejected(c, len);

	/* Each single space changed to another byte. */
	for (i = 0; i < TLS13_CV_PAD_LEN; i++) {
		len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 32);
		c[i] = (i % 2) ? 0x00 : 0x21;
		expect_tls13_rejected(c, len);
	}
	/* Each context byte changed, including the NUL separator. */
	for (i = TLS13_CV_PAD_LEN; i < TLS13_CV_PAD_LEN + 34; i++) {
		len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 32);
		c[i] ^= 0x01;
		expect_tls13_rejected(c, len);
	}

	/* Missing NUL separator: context followed directly by a hash of 32
	 * bytes, and of 33 bytes (which gives the total length of a valid
	 * content with a 32-byte hash). */
	for (hl = 32; hl <= 33; hl++) {
		len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, hl + 1);
		/* Shift the hash over the NUL: [64+33, 64+33+hl+1) is hash. */
		memmove(c + 64 + 33, c + 64 + 34, hl + 1);
		len -= 1;
		assert_int_equal(len, 64 + 33 + hl + 1);
		assert_int_equal(c[64 + 33], 0xa0);
		expect_tls13_rejected(c, len - 1);
		expect_tls13_rejected(c, len);
	}

	/* Hash lengths other than 32 or 48. */
	for (i = 0; i < sizeof(bad_hash) / sizeof(bad_hash[0]); i++) {
		len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, bad_hash[i]);
		expect_tls13_rejected(c, len);
	}

	/* Empty content and a content cut inside the padding or context. */
	expect_tls13_rejected((const unsigned char *)"", 0);
	len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 32);
	expect_tls13_rejected(c, 10);
	expect_tls13_rejected(c, 64);
	expect_tls13_rejected(c, 64 + 20);
	expect_tls13_rejected(c, 64 + 34);
}

static void
test_tls13_pkcs1_refused(void **state)
{
	unsigned char c[256];
	size_t len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 32);

	(void)state;
	/* RFC 8446 4.4.3: RSASSA-PKCS1-v1_5 is not for CertificateVerify,
	 * even on a content that is otherwise perfect. */
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, MTLS_AGENT_RSA_PKCS1_SHA256, c, len),
	    MTLS_ERR_UNSUPPORTED_SCHEME);
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, MTLS_AGENT_RSA_PKCS1_SHA384, c, len),
	    MTLS_ERR_UNSUPPORTED_SCHEME);
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, MTLS_AGENT_RSA_PKCS1_SHA512, c, len),
	    MTLS_ERR_UNSUPPORTED_SCHEME);
}

/* ---------- PAM challenge ---------- */

static const unsigned char nonce[PAM_NONCE_MAX + 1] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };

static struct wbuf *
pam(size_t nonce_len, const char *service, const char *user)
{
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(pam_challenge_put(b, nonce, nonce_len, service, user), 0);
	return b;
}

/* A challenge built by hand, for what pam_challenge_put refuses. */
static struct wbuf *
pam_by_hand(const void *ctx, size_t ctx_len, size_t nonce_len, const void *service,
	    size_t service_len, const void *user, size_t user_len)
{
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	assert_int_equal(wbuf_put(b, ctx, ctx_len), 0);
	assert_int_equal(wbuf_put_string(b, nonce, nonce_len), 0);
	assert_int_equal(wbuf_put_string(b, service, service_len), 0);
	assert_int_equal(wbuf_put_string(b, user, user_len), 0);
	return b;
}

static int
check_pam(const struct wbuf *b)
{
	return check(MTLS_AGENT_PURPOSE_PAM_CHALLENGE, MTLS_AGENT_ECDSA_SECP256R1_SHA256,
		     wbuf_ptr(b), wbuf_len(b));
}

static void
expect_pam(struct wbuf *b, int want)
{
	assert_int_equal(check_pam(b), want);
	/* The purpose does not depend on the scheme. */
	assert_int_equal(check(MTLS_AGENT_PURPOSE_PAM_CHALLENGE, MTLS_AGENT_RSA_PKCS1_SHA256,
			       wbuf_ptr(b), wbuf_len(b)),
			 want);
	wbuf_free(b);
}

static void
test_pam_accepted(void **state)
{
	static const char ctx[] = PAM_CHALLENGE_CONTEXT;
	struct wbuf *b, *h;

	(void)state;
	expect_pam(pam(PAM_NONCE_MIN, "login", "alice"), 0);
	expect_pam(pam(PAM_NONCE_MAX, "sshd", "bob.smith@EXAMPLE"), 0);
	expect_pam(pam(64, "s", "u"), 0);

	/* pam_challenge_put writes the documented layout. */
	b = pam(PAM_NONCE_MIN, "login", "alice");
	h = pam_by_hand(ctx, sizeof(ctx), PAM_NONCE_MIN, "login", 5, "alice", 5);
	assert_int_equal(wbuf_len(b), wbuf_len(h));
	assert_memory_equal(wbuf_ptr(b), wbuf_ptr(h), wbuf_len(b));
	wbuf_free(b);
	wbuf_free(h);

	/* ... and refuses nonces out of range. */
	b = wbuf_new();
	assert_non_null(b);
	assert_int_equal(pam_challenge_put(b, nonce, PAM_NONCE_MIN - 1, "login", "alice"),
			 MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(pam_challenge_put(b, nonce, PAM_NONCE_MAX + 1, "login", "alice"),
			 MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(wbuf_len(b), 0);
	wbuf_free(b);
}

static void
test_pam_rejected(void **state)
{
	static const char ctx[] = PAM_CHALLENGE_CONTEXT;
	char bad_ctx[sizeof(ctx)];
	struct wbuf *b;
	unsigned char c[256];
	size_t len, i;

	(void)state;
	/* Nonce one byte short, and one byte long (the put refuses both). */
	expect_pam(pam_by_hand(ctx, sizeof(ctx), PAM_NONCE_MIN - 1, "login", 5, "alice", 5),
		   MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam_by_hand(ctx, sizeof(ctx), 0, "login", 5, "alice", 5),
		   MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam_by_hand(ctx, sizeof(ctx), PAM_NONCE_MAX + 1, "login", 5, "alice", 5),
		   MTLS_ERR_CONTENT_REJECTED);

	/* Empty user or service; user or service with a space, a control
	 * byte, DEL, a high byte or a NUL. */
	expect_pam(pam(PAM_NONCE_MIN, "login", ""), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "", "alice"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "login", "alice smith"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "login", " alice"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "login", "alice\n"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "login", "al\x01ice"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "login", "al\x7fice"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "login", "al\xc3\xa9"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "log in", "alice"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam(PAM_NONCE_MIN, "login\t", "alice"), MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam_by_hand(ctx, sizeof(ctx), PAM_NONCE_MIN, "login", 5, "al\0ce", 5),
		   MTLS_ERR_CONTENT_REJECTED);
	/* Over-long service or user. */
	{
		char *big = malloc(300);

		assert_non_null(big);
		memset(big, 'u', 299);
		big[299] = '\0';
		expect_pam(pam(PAM_NONCE_MIN, "login", big), MTLS_ERR_CONTENT_REJECTED);
		expect_pam(pam(PAM_NONCE_MIN, big, "alice"), MTLS_ERR_CONTENT_REJECTED);
		free(big);
	}

	/* A trailing byte. */
	b = pam(PAM_NONCE_MIN, "login", "alice");
	assert_int_equal(wbuf_put_u8(b, 0), 0);
	expect_pam(b, MTLS_ERR_CONTENT_REJECTED);

	/* Every truncation of a valid challenge. */
	b = pam(PAM_NONCE_MIN, "login", "alice");
	for (len = 0; len < wbuf_len(b); len++)
		assert_int_equal(check(MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
				       MTLS_AGENT_ECDSA_SECP256R1_SHA256, wbuf_ptr(b), len),
				 MTLS_ERR_CONTENT_REJECTED);
	wbuf_free(b);

	/* Wrong context: each byte changed (incl. its NUL), missing NUL,
	 * another version. */
	for (i = 0; i < sizeof(ctx); i++) {
		memcpy(bad_ctx, ctx, sizeof(ctx));
		bad_ctx[i] ^= 0x20;
		expect_pam(
		    pam_by_hand(bad_ctx, sizeof(bad_ctx), PAM_NONCE_MIN, "login", 5, "alice", 5),
		    MTLS_ERR_CONTENT_REJECTED);
	}
	expect_pam(pam_by_hand(ctx, sizeof(ctx) - 1, PAM_NONCE_MIN, "login", 5, "alice", 5),
		   MTLS_ERR_CONTENT_REJECTED);
	expect_pam(pam_by_hand("mtls-agent pam-challenge v2", sizeof(ctx), PAM_NONCE_MIN, "login",
			       5, "alice", 5),
		   MTLS_ERR_CONTENT_REJECTED);

	/* Cross-purpose: a valid TLS 1.3 content is not a PAM challenge ... */
	len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 32);
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_PAM_CHALLENGE, MTLS_AGENT_RSA_PSS_RSAE_SHA256, c, len),
	    MTLS_ERR_CONTENT_REJECTED);
	/* ... and a valid PAM challenge is no TLS 1.3 (or 1.2) content. */
	b = pam(PAM_NONCE_MIN, "login", "alice");
	assert_int_equal(check_pam(b), 0);
	assert_int_equal(check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, MTLS_AGENT_RSA_PSS_RSAE_SHA256,
			       wbuf_ptr(b), wbuf_len(b)),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
			       MTLS_AGENT_ECDSA_SECP256R1_SHA256, wbuf_ptr(b), wbuf_len(b)),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check(MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, MTLS_AGENT_RSA_PKCS1_SHA256,
			       wbuf_ptr(b), wbuf_len(b)),
			 MTLS_ERR_CONTENT_REJECTED);
	wbuf_free(b);
	/* Nor is a TLS 1.3 content a TLS 1.2 transcript. */
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, MTLS_AGENT_RSA_PKCS1_SHA256, c, len),
	    MTLS_ERR_CONTENT_REJECTED);
}

/* ---------- raw digest ---------- */

static void
test_raw_digest(void **state)
{
	unsigned char d[128];
	const struct scheme_info *s;
	size_t i, len;

	(void)state;
	memset(d, 0x3c, sizeof(d));
	for (i = 0; (s = scheme_at(i)) != NULL; i++) {
		for (len = 0; len <= 65; len++) {
			int r = purpose_check(MTLS_AGENT_PURPOSE_RAW_DIGEST, s, d, len, NULL, 0);

			if (len == s->hash_len)
				assert_int_equal(r, 0);
			else
				assert_int_equal(r, MTLS_ERR_CONTENT_REJECTED);
		}
	}
	/* The table's lengths are the real digest sizes. */
	assert_int_equal(scheme(MTLS_AGENT_RSA_PSS_RSAE_SHA256)->hash_len, 32);
	assert_int_equal(scheme(MTLS_AGENT_ECDSA_SECP384R1_SHA384)->hash_len, 48);
	assert_int_equal(scheme(MTLS_AGENT_RSA_PKCS1_SHA512)->hash_len, 64);
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_RAW_DIGEST, MTLS_AGENT_ECDSA_SECP256R1_SHA256, d, 48),
	    MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_RAW_DIGEST, MTLS_AGENT_ECDSA_SECP384R1_SHA384, d, 48), 0);
}

/* ---------- TLS 1.2 transcript ---------- */

struct hs {
	uint8_t type;
	uint32_t len; /* 24 bits on the wire */
};

static struct wbuf *
transcript(const struct hs *msgs, size_t n)
{
	struct wbuf *b = wbuf_new();
	unsigned char *p;
	size_t i;

	assert_non_null(b);
	for (i = 0; i < n; i++) {
		assert_int_equal(wbuf_put_u8(b, msgs[i].type), 0);
		assert_int_equal(wbuf_put_u8(b, (uint8_t)(msgs[i].len >> 16)), 0);
		assert_int_equal(wbuf_put_u16(b, (uint16_t)msgs[i].len), 0);
		assert_int_equal(wbuf_reserve(b, msgs[i].len, &p), 0);
		memset(p, 0x40 + (int)i, msgs[i].len);
	}
	return b;
}

static int
check_tls12(const unsigned char *c, size_t len)
{
	int r = check(MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, MTLS_AGENT_RSA_PKCS1_SHA256, c, len);

	assert_int_equal(
	    check(MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, MTLS_AGENT_ECDSA_SECP256R1_SHA256, c, len),
	    r);
	return r;
}

static int
check_tls12_buf(struct wbuf *b)
{
	int r = check_tls12(wbuf_ptr(b), wbuf_len(b));

	wbuf_free(b);
	return r;
}

static void
test_tls12(void **state)
{
	/* ClientHello, ServerHello, Certificate, ServerKeyExchange,
	 * CertificateRequest, ServerHelloDone, Certificate, ClientKeyExchange. */
	static const struct hs full[] = { { 1, 200 }, { 2, 80 }, { 11, 1500 }, { 12, 300 },
					  { 13, 40 }, { 14, 0 }, { 11, 1400 }, { 16, 66 } };
	static const struct hs minimal[] = { { 1, 0 }, { 16, 0 } };
	static const struct hs big[] = { { 1, 0x10000 }, { 16, 0x1ff } };
	static const struct hs not_hello[] = { { 2, 10 }, { 11, 10 }, { 16, 10 } };
	static const struct hs cke_first[] = { { 16, 10 }, { 1, 10 }, { 16, 10 } };
	static const struct hs only_hello[] = { { 1, 10 } };
	static const struct hs only_cke[] = { { 16, 10 } };
	static const struct hs ends_cert[] = { { 1, 10 }, { 2, 10 }, { 11, 10 } };
	static const struct hs ends_done[] = { { 1, 10 }, { 16, 10 }, { 14, 0 } };
	struct wbuf *b;
	unsigned char *p;
	size_t len;

	(void)state;
	assert_int_equal(check_tls12_buf(transcript(full, 8)), 0);
	assert_int_equal(check_tls12_buf(transcript(minimal, 2)), 0);
	assert_int_equal(check_tls12_buf(transcript(big, 2)), 0);

	assert_int_equal(check_tls12_buf(transcript(not_hello, 3)), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check_tls12_buf(transcript(cke_first, 3)), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check_tls12_buf(transcript(only_hello, 1)), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check_tls12_buf(transcript(only_cke, 1)), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check_tls12_buf(transcript(ends_cert, 3)), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check_tls12_buf(transcript(ends_done, 3)), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check_tls12((const unsigned char *)"", 0), MTLS_ERR_CONTENT_REJECTED);

	/* Every truncation of a valid transcript: ends mid-header or mid-body. */
	b = transcript(full, 8);
	for (len = 0; len < wbuf_len(b); len++)
		assert_int_equal(check_tls12(wbuf_ptr(b), len), MTLS_ERR_CONTENT_REJECTED);
	wbuf_free(b);

	/* A length that overruns the content, in the first, a middle and the
	 * last message (the last by one byte). */
	b = transcript(full, 8);
	p = (unsigned char *)wbuf_ptr(b);
	p[1] = 0xff;
	assert_int_equal(check_tls12_buf(b), MTLS_ERR_CONTENT_REJECTED);
	b = transcript(full, 8);
	p = (unsigned char *)wbuf_ptr(b);
	p[4 + 200 + 3] = 81; /* ServerHello says 81, has 80 */
	assert_int_equal(check_tls12_buf(b), MTLS_ERR_CONTENT_REJECTED);
	b = transcript(minimal, 2);
	p = (unsigned char *)wbuf_ptr(b);
	p[4 + 3] = 1; /* ClientKeyExchange says 1, has 0 */
	assert_int_equal(check_tls12_buf(b), MTLS_ERR_CONTENT_REJECTED);

	/* A valid transcript plus a partial header after the last message. */
	b = transcript(minimal, 2);
	assert_int_equal(wbuf_put_u8(b, 16), 0);
	assert_int_equal(wbuf_put_u8(b, 0), 0);
	assert_int_equal(check_tls12_buf(b), MTLS_ERR_CONTENT_REJECTED);
}

static void
test_unknown_purpose(void **state)
{
	unsigned char c[256];
	size_t len = tls13_content(c, TLS13_CLIENT_CV_CONTEXT, 32);

	(void)state;
	assert_int_equal(check(99, MTLS_AGENT_RSA_PSS_RSAE_SHA256, c, len),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check(0, MTLS_AGENT_RSA_PSS_RSAE_SHA256, c, 32),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check(31, MTLS_AGENT_RSA_PSS_RSAE_SHA256, c, 32),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(check(-1, MTLS_AGENT_RSA_PSS_RSAE_SHA256, c, 32),
			 MTLS_ERR_CONTENT_REJECTED);
}

/* ---------- names and error texts ---------- */

static void
test_purpose_names(void **state)
{
	static const struct {
		int purpose;
		const char *name;
	} want[] = {
		{ MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, "tls13-client-certificate-verify" },
		{ MTLS_AGENT_PURPOSE_PAM_CHALLENGE, "pam-challenge" },
		{ MTLS_AGENT_PURPOSE_RAW_DIGEST, "raw-digest" },
		{ MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, "tls12-client-certificate-verify" },
		{ MTLS_AGENT_PURPOSE_SSH, "ssh" },
		{ MTLS_AGENT_PURPOSE_SSH_SIG, "ssh-sig" },
		{ MTLS_AGENT_PURPOSE_CSR, "csr" },
		{ MTLS_AGENT_PURPOSE_PKCS11_DIGEST, "pkcs11-digest" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_non_null(mtls_agent_purpose_name(want[i].purpose));
		assert_string_equal(mtls_agent_purpose_name(want[i].purpose), want[i].name);
		assert_int_equal(mtls_agent_purpose_from_name(want[i].name), want[i].purpose);
	}
	assert_null(mtls_agent_purpose_name(0));
	assert_null(mtls_agent_purpose_name(31));
	assert_null(mtls_agent_purpose_name(99));
	assert_null(mtls_agent_purpose_name(-1));
	assert_int_equal(mtls_agent_purpose_from_name("nope"), 0);
	assert_int_equal(mtls_agent_purpose_from_name(""), 0);
	assert_int_equal(mtls_agent_purpose_from_name("PAM-CHALLENGE"), 0);
	assert_int_equal(mtls_agent_purpose_from_name("pam-challenge "), 0);
	assert_int_equal(mtls_agent_purpose_from_name(NULL), 0);
}

static void
test_scheme_names(void **state)
{
	/* Expected values written out independently of the table. */
	static const struct {
		uint16_t code;
		const char *name;
		int key_type;
		const char *digest;
		size_t hash_len;
		int pss;
		unsigned int ec_bits;
	} want[] = {
		{ MTLS_AGENT_RSA_PKCS1_SHA256, "rsa_pkcs1_sha256", MTLS_AGENT_KEY_RSA, "SHA256", 32,
		  0, 0 },
		{ MTLS_AGENT_RSA_PKCS1_SHA384, "rsa_pkcs1_sha384", MTLS_AGENT_KEY_RSA, "SHA384", 48,
		  0, 0 },
		{ MTLS_AGENT_RSA_PKCS1_SHA512, "rsa_pkcs1_sha512", MTLS_AGENT_KEY_RSA, "SHA512", 64,
		  0, 0 },
		{ MTLS_AGENT_ECDSA_SECP256R1_SHA256, "ecdsa_secp256r1_sha256", MTLS_AGENT_KEY_EC,
		  "SHA256", 32, 0, 256 },
		{ MTLS_AGENT_ECDSA_SECP384R1_SHA384, "ecdsa_secp384r1_sha384", MTLS_AGENT_KEY_EC,
		  "SHA384", 48, 0, 384 },
		{ MTLS_AGENT_RSA_PSS_RSAE_SHA256, "rsa_pss_rsae_sha256", MTLS_AGENT_KEY_RSA,
		  "SHA256", 32, 1, 0 },
		{ MTLS_AGENT_RSA_PSS_RSAE_SHA384, "rsa_pss_rsae_sha384", MTLS_AGENT_KEY_RSA,
		  "SHA384", 48, 1, 0 },
		{ MTLS_AGENT_RSA_PSS_RSAE_SHA512, "rsa_pss_rsae_sha512", MTLS_AGENT_KEY_RSA,
		  "SHA512", 64, 1, 0 },
	};
	const struct scheme_info *s;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_non_null(mtls_agent_scheme_name(want[i].code));
		assert_string_equal(mtls_agent_scheme_name(want[i].code), want[i].name);
		assert_int_equal(mtls_agent_scheme_from_name(want[i].name), want[i].code);
		s = scheme_by_name(want[i].name);
		assert_non_null(s);
		assert_ptr_equal(s, scheme_lookup(want[i].code));
		assert_int_equal(s->key_type, want[i].key_type);
		assert_string_equal(s->digest, want[i].digest);
		assert_int_equal(s->hash_len, want[i].hash_len);
		assert_int_equal(!!s->pss, want[i].pss);
		assert_int_equal(s->ec_bits, want[i].ec_bits);
	}
	/* Every table entry round trips, and the table has no other entries. */
	for (i = 0; (s = scheme_at(i)) != NULL; i++) {
		assert_int_equal(mtls_agent_scheme_from_name(mtls_agent_scheme_name(s->code)),
				 s->code);
		assert_true(s->key_type == MTLS_AGENT_KEY_RSA || s->key_type == MTLS_AGENT_KEY_EC);
		assert_true(s->pss == 0 || s->key_type == MTLS_AGENT_KEY_RSA);
	}
	assert_int_equal(i, sizeof(want) / sizeof(want[0]));
	/* PSS and EC flags match the names. */
	assert_true(scheme(MTLS_AGENT_RSA_PSS_RSAE_SHA256)->pss);
	assert_false(scheme(MTLS_AGENT_RSA_PKCS1_SHA256)->pss);
	assert_int_equal(scheme(MTLS_AGENT_ECDSA_SECP256R1_SHA256)->ec_bits, 256);
	assert_int_equal(scheme(MTLS_AGENT_ECDSA_SECP384R1_SHA384)->ec_bits, 384);

	/* Unknown: ed25519 (0x0807), rsa_pss_pss_sha256 (0x0809), SHA-1. */
	assert_null(mtls_agent_scheme_name(0));
	assert_null(mtls_agent_scheme_name(0x0807));
	assert_null(mtls_agent_scheme_name(0x0809));
	assert_null(mtls_agent_scheme_name(0x0201));
	assert_null(mtls_agent_scheme_name(0xffff));
	assert_null(scheme_lookup(0x0807));
	assert_int_equal(mtls_agent_scheme_from_name("ed25519"), 0);
	assert_int_equal(mtls_agent_scheme_from_name("RSA_PSS_RSAE_SHA256"), 0);
	assert_int_equal(mtls_agent_scheme_from_name(""), 0);
	assert_int_equal(mtls_agent_scheme_from_name(NULL), 0);
	assert_null(scheme_by_name(NULL));
	assert_null(scheme_at(SIZE_MAX));
}

/* ---- csr --------------------------------------------------------------- */

/* A CertificationRequestInfo (DER) for key, as mtls-agentctl enroll and
 * `openssl req` make one: subject CN=cn, the extension ext (conf form,
 * NULL: none) requested, version v. */
static unsigned char *
cri_der(EVP_PKEY *key, int version, const char *cn, const char *ext_nid_value, int ext_nid,
	size_t *len)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	STACK_OF(X509_EXTENSION) *exts = NULL;
	unsigned char *der = NULL;
	int l;

	assert_non_null(req);
	assert_non_null(name);
	assert_int_equal(X509_REQ_set_version(req, version), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
						    (const unsigned char *)cn, -1, -1, 0),
			 1);
	assert_int_equal(X509_REQ_set_subject_name(req, name), 1);
	assert_int_equal(X509_REQ_set_pubkey(req, key), 1);
	if (ext_nid_value != NULL) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, ext_nid, ext_nid_value);

		assert_non_null(e);
		assert_non_null(exts = sk_X509_EXTENSION_new_null());
		assert_true(sk_X509_EXTENSION_push(exts, e) > 0);
		assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	}
	assert_true((l = i2d_re_X509_REQ_tbs(req, &der)) > 0);
	*len = (size_t)l;
	X509_NAME_free(name);
	X509_REQ_free(req);
	return der;
}

static int
csr_verdict(const unsigned char *c, size_t len, EVP_PKEY *key, const char *reason)
{
	char why[256] = "";
	int r = purpose_csr_check(c, len, key, why, sizeof(why));

	if (r != 0) {
		assert_int_equal(r, MTLS_ERR_CONTENT_REJECTED);
		assert_true(strlen(why) > 0);
		if (reason != NULL && strstr(why, reason) == NULL)
			fail_msg("reason \"%s\" does not say \"%s\"", why, reason);
	}
	return r;
}

static void
test_csr(void **state)
{
	EVP_PKEY *key = EVP_EC_gen("P-256"), *other = EVP_EC_gen("P-256");
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	unsigned char *c, *longer;
	size_t len;

	(void)state;
	assert_non_null(key);
	assert_non_null(other);
	assert_non_null(rsa);
	/* The request enroll makes: subject, key, a subjectAltName. */
	c = cri_der(key, 0, "alice", "email:alice@example.org", NID_subject_alt_name, &len);
	assert_int_equal(csr_verdict(c, len, key, NULL), 0);
	assert_int_equal(csr_verdict(c, len, NULL, NULL), 0);
	assert_int_equal(check(MTLS_AGENT_PURPOSE_CSR, MTLS_AGENT_ECDSA_SECP256R1_SHA256, c, len),
			 0);
	/* Bound to the identity: a request for another key is refused. */
	assert_int_equal(csr_verdict(c, len, other, "another key"), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(csr_verdict(c, len, rsa, "another key"), MTLS_ERR_CONTENT_REJECTED);
	/* One encoding: no byte after it, none missing. */
	assert_non_null(longer = malloc(len + 1));
	memcpy(longer, c, len);
	longer[len] = 0;
	assert_int_equal(csr_verdict(longer, len + 1, key, NULL), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(csr_verdict(c, len - 1, key, NULL), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(csr_verdict(c, 0, key, NULL), MTLS_ERR_CONTENT_REJECTED);
	free(longer);
	OPENSSL_free(c);
	/* Version 0 only. */
	c = cri_der(key, 1, "alice", NULL, 0, &len);
	assert_int_equal(csr_verdict(c, len, key, "version"), MTLS_ERR_CONTENT_REJECTED);
	OPENSSL_free(c);
	/* A subject a person cannot read. */
	c = cri_der(key, 0, "ali\x1b[2Jce", NULL, 0, &len);
	assert_int_equal(csr_verdict(c, len, key, "subject"), MTLS_ERR_CONTENT_REJECTED);
	OPENSSL_free(c);
	/* Not a CA. */
	c = cri_der(key, 0, "alice", "critical,CA:TRUE", NID_basic_constraints, &len);
	assert_int_equal(csr_verdict(c, len, key, "CA"), MTLS_ERR_CONTENT_REJECTED);
	OPENSSL_free(c);
	c = cri_der(key, 0, "alice", "CA:FALSE", NID_basic_constraints, &len);
	assert_int_equal(csr_verdict(c, len, key, NULL), 0);
	OPENSSL_free(c);
	/* An extension outside the list. */
	c = cri_der(key, 0, "alice", "URI:http://crl.example/", NID_crl_distribution_points, &len);
	assert_int_equal(csr_verdict(c, len, key, "extension"), MTLS_ERR_CONTENT_REJECTED);
	OPENSSL_free(c);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
	EVP_PKEY_free(rsa);
}

/* A TBSCertificate (what `openssl x509 -req -CAkey` signs) is no request. */
static void
test_csr_not_a_certificate(void **state)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	unsigned char *der = NULL;
	static const unsigned char tls13[] = "                                "
					     "                                "
					     "TLS 1.3, client CertificateVerify";
	int len, v;

	(void)state;
	assert_non_null(key);
	assert_non_null(x);
	for (v = 0; v <= 2; v += 2) {
		assert_int_equal(X509_set_version(x, v), 1);
		assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
		assert_int_equal(
		    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
					       (const unsigned char *)"alice", -1, -1, 0),
		    1);
		assert_int_equal(X509_set_issuer_name(x, X509_get_subject_name(x)), 1);
		assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
		assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
		assert_int_equal(X509_set_pubkey(x, key), 1);
		assert_int_equal(X509_sign(x, key, EVP_sha256()) > 0, 1);
		assert_true((len = i2d_re_X509_tbs(x, &der)) > 0);
		assert_int_equal(
		    csr_verdict(der, (size_t)len, key, "not a CertificationRequestInfo"),
		    MTLS_ERR_CONTENT_REJECTED);
		OPENSSL_free(der);
		der = NULL;
	}
	assert_int_equal(csr_verdict(tls13, sizeof(tls13), key, NULL), MTLS_ERR_CONTENT_REJECTED);
	X509_free(x);
	EVP_PKEY_free(key);
}

static void
test_strerror(void **state)
{
	const char *texts[-MTLS_ERR_LAST_ + 1];
	const char *unknown = mtls_agent_strerror(MTLS_ERR_LAST_ - 1);
	int code, j;

	(void)state;
	assert_non_null(unknown);
	assert_string_equal(unknown, "unknown error");
	for (code = 0; code >= MTLS_ERR_LAST_; code--) {
		const char *t = mtls_agent_strerror(code);

		/* The unassigned codes (-44, -49..-52) have no text; every
		 * other one has a text of its own. */
		if (code == -44 || (code <= -49 && code >= -52)) {
			assert_string_equal(t, "unknown error");
			texts[-code] = "";
			continue;
		}
		assert_non_null(t);
		assert_true(strlen(t) > 0);
		if (strcmp(t, "unknown error") == 0)
			fail_msg("code %d has no text of its own", code);
		for (j = 0; j > code; j--)
			if (strcmp(texts[-j], t) == 0)
				fail_msg("codes %d and %d share the text \"%s\"", j, code, t);
		texts[-code] = t;
	}
	assert_string_equal(mtls_agent_strerror(MTLS_ERR_LAST_ - 1), "unknown error");
	assert_string_equal(mtls_agent_strerror(-1000), "unknown error");
	assert_string_equal(mtls_agent_strerror(INT_MIN), "unknown error");
	assert_string_equal(mtls_agent_strerror(1), "unknown error");
	assert_string_equal(mtls_agent_strerror(INT_MAX), "unknown error");
	assert_string_equal(mtls_agent_strerror(MTLS_ERR_OK), "success");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls13_accepted),
		cmocka_unit_test(test_tls13_rejected),
		cmocka_unit_test(test_tls13_pkcs1_refused),
		cmocka_unit_test(test_pam_accepted),
		cmocka_unit_test(test_pam_rejected),
		cmocka_unit_test(test_raw_digest),
		cmocka_unit_test(test_tls12),
		cmocka_unit_test(test_unknown_purpose),
		cmocka_unit_test(test_purpose_names),
		cmocka_unit_test(test_scheme_names),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_csr),
		cmocka_unit_test(test_csr_not_a_certificate),
	};

	return cmocka_run_group_tests_name("purpose", tests, NULL, NULL);
}
