/*
 * purpose.c - content checks per purpose (the "purpose binding").
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "msg_ssh.h"
#include "mtls-agent.h"
#include "proto.h"
#include "purpose.h"

static const struct {
	int purpose;
	const char *name;
} purposes[] = {
	{ MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, "tls13-client-certificate-verify" },
	{ MTLS_AGENT_PURPOSE_PAM_CHALLENGE, "pam-challenge" },
	{ MTLS_AGENT_PURPOSE_RAW_DIGEST, "raw-digest" },
	{ MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, "tls12-client-certificate-verify" },
	{ MTLS_AGENT_PURPOSE_SSH, "ssh" },
	{ MTLS_AGENT_PURPOSE_SSH_SIG, "ssh-sig" },
	{ MTLS_AGENT_PURPOSE_PKCS11_DIGEST, "pkcs11-digest" },
	{ MTLS_AGENT_PURPOSE_CSR, "csr" },
};

const char *
mtls_agent_purpose_name(int purpose)
{
	size_t i;

	for (i = 0; i < sizeof(purposes) / sizeof(purposes[0]); i++)
		if (purposes[i].purpose == purpose)
			return purposes[i].name;
	return NULL;
}

int
mtls_agent_purpose_from_name(const char *name)
{
	size_t i;

	if (name == NULL)
		return 0;
	for (i = 0; i < sizeof(purposes) / sizeof(purposes[0]); i++)
		if (strcmp(purposes[i].name, name) == 0)
			return purposes[i].purpose;
	return 0;
}

int
purpose_reject(char *why, size_t why_len, const char *reason)
{
	if (why != NULL && why_len > 0)
		snprintf(why, why_len, "%s", reason);
	return MTLS_ERR_CONTENT_REJECTED;
}

/*
 * TLS 1.3 client CertificateVerify: 64 x 0x20 || context || 0x00 ||
 * transcript hash.  The transcript hash length is the cipher suite's hash
 * (SHA-256 or SHA-384 for every TLS 1.3 suite), which need not be the
 * signature scheme's hash, so both lengths are accepted.
 */
static int
check_tls13(const struct scheme_info *s, const unsigned char *c, size_t len, char *why,
	    size_t why_len)
{
	static const char ctx[] = TLS13_CLIENT_CV_CONTEXT;
	struct wbuf *b;
	unsigned char pad[TLS13_CV_PAD_LEN], label[sizeof(ctx)];
	size_t i, rest;
	int r = MTLS_ERR_CONTENT_REJECTED;

	if (s->key_type == MTLS_AGENT_KEY_RSA && !s->pss) {
		if (why != NULL && why_len > 0)
			snprintf(why, why_len,
				 "%s is not allowed in TLS 1.3 "
				 "CertificateVerify (RFC 8446 4.4.3)",
				 s->name);
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	}
	if ((b = wbuf_from(c, len)) == NULL)
		return MTLS_ERR_ALLOC;
	if (wbuf_get(b, pad, sizeof(pad)) != 0 || wbuf_get(b, label, sizeof(label)) != 0) {
		r = purpose_reject(why, why_len,
				   "too short for a TLS 1.3 CertificateVerify content");
		goto out;
	}
	for (i = 0; i < sizeof(pad); i++) {
		if (pad[i] != 0x20) {
			r = purpose_reject(why, why_len, "TLS 1.3 padding is not 64 spaces");
			goto out;
		}
	}
	/* sizeof(ctx) includes the terminating 0x00 the format requires. */
	if (memcmp(label, ctx, sizeof(ctx)) != 0) {
		r = purpose_reject(why, why_len, "context is not \"" TLS13_CLIENT_CV_CONTEXT "\"");
		goto out;
	}
	rest = wbuf_len(b);
	if (rest != 32 && rest != 48) {
		r = purpose_reject(why, why_len, "transcript hash is neither 32 nor 48 bytes");
		goto out;
	}
	r = 0;
out:
	wbuf_free(b);
	return r;
}

static int
printable(const unsigned char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] < 0x21 || p[i] > 0x7e)
			return 0;
	return 1;
}

static int
check_pam(const unsigned char *c, size_t len, char *why, size_t why_len)
{
	static const char ctx[] = PAM_CHALLENGE_CONTEXT;
	const unsigned char *nonce, *service, *user;
	size_t nonce_len, service_len, user_len;
	unsigned char label[sizeof(ctx)];
	struct wbuf *b;
	int r = MTLS_ERR_CONTENT_REJECTED;

	if ((b = wbuf_from(c, len)) == NULL)
		return MTLS_ERR_ALLOC;
	if (wbuf_get(b, label, sizeof(label)) != 0 || memcmp(label, ctx, sizeof(ctx)) != 0) {
		r = purpose_reject(why, why_len, "not a PAM challenge (context string)");
		goto out;
	}
	if (wbuf_get_string_direct(b, &nonce, &nonce_len, PAM_NONCE_MAX) != 0 ||
	    wbuf_get_string_direct(b, &service, &service_len, MTLS_NAME_MAX) != 0 ||
	    wbuf_get_string_direct(b, &user, &user_len, MTLS_NAME_MAX) != 0) {
		r = purpose_reject(why, why_len, "malformed PAM challenge");
		goto out;
	}
	if (nonce_len < PAM_NONCE_MIN) {
		r = purpose_reject(why, why_len, "PAM challenge nonce shorter than 32 bytes");
		goto out;
	}
	if (service_len == 0 || user_len == 0 || !printable(service, service_len) ||
	    !printable(user, user_len)) {
		r = purpose_reject(why, why_len,
				   "PAM challenge service or user empty or not printable");
		goto out;
	}
	if (wbuf_expect_end(b) != 0) {
		r = purpose_reject(why, why_len, "trailing bytes after PAM challenge");
		goto out;
	}
	r = 0;
out:
	wbuf_free(b);
	return r;
}

/*
 * TLS 1.2 client CertificateVerify signs the handshake messages so far:
 * a sequence of Handshake structs (u8 type, u24 length, body) starting
 * with a ClientHello.  We check the framing adds up exactly and that the
 * first message is a ClientHello and the last one a ClientKeyExchange
 * (type 16), which in TLS 1.2 directly precedes CertificateVerify.
 */
static int
check_tls12(const unsigned char *c, size_t len, char *why, size_t why_len)
{
	struct wbuf *b;
	uint8_t type = 0, hi;
	uint16_t lo;
	size_t count = 0;
	int r = MTLS_ERR_CONTENT_REJECTED;

	if ((b = wbuf_from(c, len)) == NULL)
		return MTLS_ERR_ALLOC;
	while (wbuf_len(b) > 0) {
		if (wbuf_get_u8(b, &type) != 0 || wbuf_get_u8(b, &hi) != 0 ||
		    wbuf_get_u16(b, &lo) != 0 || wbuf_consume(b, ((size_t)hi << 16) | lo) != 0) {
			r = purpose_reject(why, why_len,
					   "TLS 1.2 transcript: bad handshake framing");
			goto out;
		}
		if (count++ == 0 && type != 1) {
			r = purpose_reject(why, why_len,
					   "TLS 1.2 transcript does not start with a ClientHello");
			goto out;
		}
	}
	if (count < 2 || type != 16) {
		r = purpose_reject(why, why_len,
				   "TLS 1.2 transcript does not end with a ClientKeyExchange");
		goto out;
	}
	r = 0;
out:
	wbuf_free(b);
	return r;
}

/*
 * SSH: the content must parse completely as a userauth request or an
 * SSHSIG blob (msg_ssh_data.c); which key, host and namespace is the
 * agent's decision (src/agent/ssh_policy.c).  SSH has no RSA-PSS and no
 * SHA-384 RSA signatures.
 */
static int
check_ssh(int purpose, const struct scheme_info *s, const unsigned char *c, size_t len, char *why,
	  size_t why_len)
{
	struct ssh_userauth ua;
	struct sshsig_tbs sig;
	struct wbuf *b;
	int r;

	if (s->key_type == MTLS_AGENT_KEY_RSA && (s->pss || s->hash_len == 48)) {
		if (why != NULL && why_len > 0)
			snprintf(why, why_len, "%s has no SSH signature algorithm", s->name);
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	}
	if ((b = wbuf_from(c, len)) == NULL)
		return MTLS_ERR_ALLOC;
	if (purpose == MTLS_AGENT_PURPOSE_SSH)
		r = ssh_userauth_parse(b, &ua, why, why_len);
	else
		r = sshsig_parse(b, &sig, why, why_len);
	wbuf_free(b);
	return r;
}

int
purpose_check(int purpose, const struct scheme_info *s, const unsigned char *content, size_t len,
	      char *why, size_t why_len)
{
	if (why != NULL && why_len > 0)
		why[0] = '\0';
	if (s == NULL)
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	switch (purpose) {
	case MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV: return check_tls13(s, content, len, why, why_len);
	case MTLS_AGENT_PURPOSE_PAM_CHALLENGE: return check_pam(content, len, why, why_len);
	case MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV: return check_tls12(content, len, why, why_len);
	case MTLS_AGENT_PURPOSE_SSH:
	case MTLS_AGENT_PURPOSE_SSH_SIG: return check_ssh(purpose, s, content, len, why, why_len);
	case MTLS_AGENT_PURPOSE_CSR: return purpose_csr_check(content, len, NULL, why, why_len);
	case MTLS_AGENT_PURPOSE_RAW_DIGEST:
	case MTLS_AGENT_PURPOSE_PKCS11_DIGEST:
		if (len != s->hash_len)
			return purpose_reject(why, why_len,
					      "raw digest length does not match the scheme's hash");
		return 0;
	}
	return purpose_reject(why, why_len, "unknown purpose");
}

int
purpose_of_tls_content(const unsigned char *c, size_t len)
{
	static const char ctx[] = TLS13_CLIENT_CV_CONTEXT;
	size_t i;

	if (c == NULL || len < TLS13_CV_PAD_LEN + sizeof(ctx))
		return MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV;
	for (i = 0; i < TLS13_CV_PAD_LEN; i++)
		if (c[i] != 0x20)
			return MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV;
	/* sizeof includes the 0x00 that ends the context string. */
	if (memcmp(c + TLS13_CV_PAD_LEN, ctx, sizeof(ctx)) != 0)
		return MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV;
	return MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV;
}

int
pam_challenge_put(struct wbuf *b, const unsigned char *nonce, size_t nonce_len, const char *service,
		  const char *user)
{
	static const char ctx[] = PAM_CHALLENGE_CONTEXT;
	int r;

	if (nonce_len < PAM_NONCE_MIN || nonce_len > PAM_NONCE_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put(b, ctx, sizeof(ctx))) != 0 ||
	    (r = wbuf_put_string(b, nonce, nonce_len)) != 0 ||
	    (r = wbuf_put_cstring(b, service)) != 0 || (r = wbuf_put_cstring(b, user)) != 0)
		return r;
	return 0;
}
