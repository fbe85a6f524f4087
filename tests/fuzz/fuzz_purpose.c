/*
 * fuzz_purpose - the purpose binding: what the agent agrees to sign.
 *
 * Input: a content to sign.  It is checked for every purpose (and two
 * that do not exist) under every scheme (and an unknown one), and through
 * policy_check_sign() for every key type and size and several purpose
 * masks.  Each verdict is compared with a second, independent reading of
 * the formats (RFC 8446 4.4.3, the PAM challenge of purpose.h, TLS 1.2
 * handshake framing), and a PAM challenge that passes must be exactly
 * what pam_challenge_put() builds from its parts.
 */
#include "config.h"

#include <string.h>

#include "fuzz.h"
#include "mtls-agent.h"
#include "policy.h"
#include "proto.h"
#include "purpose.h"

#define WHY_LEN 200

static uint32_t
be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int
oracle_tls13(const struct scheme_info *s, const uint8_t *c, size_t len)
{
	static const char ctx[] = TLS13_CLIENT_CV_CONTEXT;
	const size_t hdr = TLS13_CV_PAD_LEN + sizeof(ctx);
	size_t i;

	if (s->key_type == MTLS_AGENT_KEY_RSA && !s->pss)
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	if (len != hdr + 32 && len != hdr + 48)
		return MTLS_ERR_CONTENT_REJECTED;
	for (i = 0; i < TLS13_CV_PAD_LEN; i++)
		if (c[i] != ' ')
			return MTLS_ERR_CONTENT_REJECTED;
	if (memcmp(c + TLS13_CV_PAD_LEN, ctx, sizeof(ctx)) != 0)
		return MTLS_ERR_CONTENT_REJECTED;
	return 0;
}

static int
oracle_tls12(const uint8_t *c, size_t len)
{
	size_t off = 0, count = 0, mlen;
	uint8_t type = 0;

	while (off < len) {
		if (len - off < 4)
			return MTLS_ERR_CONTENT_REJECTED;
		type = c[off];
		mlen = ((size_t)c[off + 1] << 16) | ((size_t)c[off + 2] << 8) | c[off + 3];
		if (mlen > len - off - 4)
			return MTLS_ERR_CONTENT_REJECTED;
		if (count++ == 0 && type != 1)
			return MTLS_ERR_CONTENT_REJECTED;
		off += 4 + mlen;
	}
	return count >= 2 && type == 16 ? 0 : MTLS_ERR_CONTENT_REJECTED;
}

static int
printable(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] < 0x21 || p[i] > 0x7e)
			return 0;
	return 1;
}

/* Parses a PAM challenge by hand; on success rebuilds it with
 * pam_challenge_put() and requires the same bytes. */
static int
oracle_pam(const uint8_t *c, size_t len)
{
	static const char ctx[] = PAM_CHALLENGE_CONTEXT;
	size_t off = sizeof(ctx), nl, sl, ul, noff, soff, uoff;
	char service[MTLS_NAME_MAX + 1], user[MTLS_NAME_MAX + 1];
	struct wbuf *b;

	if (len < sizeof(ctx) || memcmp(c, ctx, sizeof(ctx)) != 0)
		return MTLS_ERR_CONTENT_REJECTED;
	if (len - off < 4 || (nl = be32(c + off)) > PAM_NONCE_MAX || nl > len - off - 4)
		return MTLS_ERR_CONTENT_REJECTED;
	noff = off + 4;
	off = noff + nl;
	if (len - off < 4 || (sl = be32(c + off)) > MTLS_NAME_MAX || sl > len - off - 4)
		return MTLS_ERR_CONTENT_REJECTED;
	soff = off + 4;
	off = soff + sl;
	if (len - off < 4 || (ul = be32(c + off)) > MTLS_NAME_MAX || ul > len - off - 4)
		return MTLS_ERR_CONTENT_REJECTED;
	uoff = off + 4;
	off = uoff + ul;
	if (nl < PAM_NONCE_MIN || sl == 0 || ul == 0 || !printable(c + soff, sl) ||
	    !printable(c + uoff, ul) || off != len)
		return MTLS_ERR_CONTENT_REJECTED;

	memcpy(service, c + soff, sl);
	service[sl] = '\0';
	memcpy(user, c + uoff, ul);
	user[ul] = '\0';
	FUZZ_CHECK((b = wbuf_new()) != NULL);
	FUZZ_CHECK(pam_challenge_put(b, c + noff, nl, service, user) == 0);
	FUZZ_CHECK(wbuf_len(b) == len && memcmp(wbuf_ptr(b), c, len) == 0);
	wbuf_free(b);
	return 0;
}

static int
oracle(int purpose, const struct scheme_info *s, const uint8_t *c, size_t len)
{
	if (s == NULL)
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	switch (purpose) {
	case MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV: return oracle_tls13(s, c, len);
	case MTLS_AGENT_PURPOSE_PAM_CHALLENGE: return oracle_pam(c, len);
	case MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV: return oracle_tls12(c, len);
	case MTLS_AGENT_PURPOSE_RAW_DIGEST:
		return len == s->hash_len ? 0 : MTLS_ERR_CONTENT_REJECTED;
	}
	return MTLS_ERR_CONTENT_REJECTED;
}

static const int purposes[] = {
	0,
	MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV,
	MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
	MTLS_AGENT_PURPOSE_RAW_DIGEST,
	MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV,
	/* The SSH purposes (5, 6) have their own target, fuzz_msg_ssh. */
	31,
	255,
};

static const struct {
	int type;
	unsigned int bits;
} keys[] = {
	{ MTLS_AGENT_KEY_RSA, 2048 }, { MTLS_AGENT_KEY_RSA, 3072 }, { MTLS_AGENT_KEY_EC, 256 },
	{ MTLS_AGENT_KEY_EC, 384 },   { MTLS_AGENT_KEY_EC, 521 },
};

#define ALL_PURPOSES                                                                               \
	((1U << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV) | (1U << MTLS_AGENT_PURPOSE_PAM_CHALLENGE) |   \
	 (1U << MTLS_AGENT_PURPOSE_RAW_DIGEST) | (1U << MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV))

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void
check_policy(uint16_t code, int purpose, const uint8_t *c, size_t len)
{
	const struct scheme_info *s = scheme_lookup(code), *sp;
	/* Everything, everything but this purpose, only this purpose. */
	const uint32_t bit = purpose > 0 && purpose < 32 ? 1U << purpose : 0;
	const uint32_t masks[] = { ALL_PURPOSES, ALL_PURPOSES & ~bit, bit };
	char why[WHY_LEN];
	size_t k, m;
	int r, want;

	for (k = 0; k < N(keys); k++) {
		/* One key of the wrong type is enough to see it refused. */
		if (s != NULL && k > 0 && keys[k].type != s->key_type &&
		    keys[k - 1].type != s->key_type)
			continue;
		for (m = 0; m < N(masks); m++) {
			memset(why, 'x', sizeof(why));
			r = policy_check_sign(masks[m], keys[k].type, keys[k].bits, code, purpose,
					      c, len, &sp, why, sizeof(why));
			FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
			FUZZ_CHECK(r == 0 || why[0] != '\0');
			if (s == NULL || s->key_type != keys[k].type ||
			    (s->ec_bits != 0 && s->ec_bits != keys[k].bits))
				want = MTLS_ERR_UNSUPPORTED_SCHEME;
			else if (mtls_agent_purpose_name(purpose) == NULL)
				want = MTLS_ERR_CONTENT_REJECTED;
			else if ((masks[m] & (1U << purpose)) == 0)
				want = MTLS_ERR_POLICY_DENIED;
			else
				want = oracle(purpose, s, c, len);
			FUZZ_CHECK(r == want);
			/* The scheme is handed out only past the key and
			 * purpose checks, and always with a success. */
			FUZZ_CHECK(r != 0 || sp == s);
			FUZZ_CHECK(sp == NULL || sp == s);
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t unknown[] = { 0x0000, 0x0201, 0x0603, 0x0807, 0xffff };
	const struct scheme_info *s;
	char why[WHY_LEN];
	size_t i, p;
	int r;

	if (size > 64 * 1024)
		return 0;
	for (p = 0; p < N(purposes); p++) {
		for (i = 0;; i++) {
			s = scheme_at(i);
			memset(why, 'x', sizeof(why));
			r = purpose_check(purposes[p], s, data, size, why, sizeof(why));
			FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
			FUZZ_CHECK(r == oracle(purposes[p], s, data, size));
			if (r == MTLS_ERR_CONTENT_REJECTED)
				FUZZ_CHECK(why[0] != '\0');
			if (s == NULL)
				break;
			FUZZ_CHECK(scheme_lookup(s->code) == s);
			check_policy(s->code, purposes[p], data, size);
		}
		for (i = 0; i < N(unknown); i++)
			if (scheme_lookup(unknown[i]) == NULL)
				check_policy(unknown[i], purposes[p], data, size);
	}
	/* A one-byte why buffer still gets its terminator. */
	why[0] = 'x';
	r = purpose_check(MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, scheme_at(0), data, size, why, 1);
	FUZZ_CHECK(why[0] == '\0');
	(void)r;
	return 0;
}
