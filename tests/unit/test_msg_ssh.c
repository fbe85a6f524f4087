/*
 * test_msg_ssh.c - unit tests of the SSH agent codec (msg_ssh.c), the
 * userauth and SSHSIG parsers (msg_ssh_data.c), the key and signature
 * blobs (msg_ssh_key.c), wbuf's mpints, and the purpose binding between
 * SSH and the other purposes: no content of one purpose passes as another.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "msg_ssh.h"
#include "msg_ssh_key.h"
#include "mtls-agent.h"
#include "purpose.h"
#include "scheme.h"
#include "secmem.h"
#include "wbuf.h"

static struct wbuf *
buf(void)
{
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	return b;
}

/* ---------- mpint ---------- */

static void
test_mpint(void **state)
{
	static const unsigned char hi[] = { 0x00, 0x00, 0x80, 0x01 }, lo[] = { 0x7f };
	static const unsigned char neg[] = { 0, 0, 0, 1, 0x80 }, pad[] = { 0, 0, 0, 2, 0, 1 };
	static const unsigned char zero_byte[] = { 0, 0, 0, 1, 0 };
	struct wbuf *b = buf(), *r;
	const unsigned char *p;
	size_t len;

	(void)state;
	assert_int_equal(wbuf_put_mpint(b, hi, sizeof(hi)), 0);
	/* leading zeros dropped, one added for the top bit */
	assert_int_equal(wbuf_len(b), 4 + 3);
	assert_memory_equal(wbuf_ptr(b), "\0\0\0\3\0\x80\x01", 7);
	assert_int_equal(wbuf_put_mpint(b, lo, sizeof(lo)), 0);
	assert_int_equal(wbuf_put_mpint(b, hi, 2), 0); /* zero */
	assert_int_equal(wbuf_get_mpint_direct(b, &p, &len, 0), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(p, "\x80\x01", 2);
	assert_int_equal(wbuf_get_mpint_direct(b, &p, &len, 0), 0);
	assert_int_equal(len, 1);
	assert_int_equal(wbuf_get_mpint_direct(b, &p, &len, 0), 0);
	assert_int_equal(len, 0);
	wbuf_free(b);
	/* negative, needless zero byte, zero written as a byte: refused */
	r = wbuf_from(neg, sizeof(neg));
	assert_int_equal(wbuf_get_mpint_direct(r, &p, &len, 0), MTLS_ERR_BAD_REQUEST);
	assert_int_equal(wbuf_len(r), sizeof(neg)); /* unchanged */
	wbuf_free(r);
	r = wbuf_from(pad, sizeof(pad));
	assert_int_equal(wbuf_get_mpint_direct(r, &p, &len, 0), MTLS_ERR_BAD_REQUEST);
	wbuf_free(r);
	r = wbuf_from(zero_byte, sizeof(zero_byte));
	assert_int_equal(wbuf_get_mpint_direct(r, &p, &len, 0), MTLS_ERR_BAD_REQUEST);
	wbuf_free(r);
	/* max bounds the magnitude, not the padding */
	b = buf();
	assert_int_equal(wbuf_put_mpint(b, hi + 2, 2), 0);
	assert_int_equal(wbuf_get_mpint_direct(b, &p, &len, 1), MTLS_ERR_BAD_REQUEST);
	assert_int_equal(wbuf_get_mpint_direct(b, &p, &len, 2), 0);
	wbuf_free(b);
}

/* ---------- agent messages ---------- */

static void
test_sign_req(void **state)
{
	struct msg_ssh_sign_req m = { (const unsigned char *)"KEY", 3,
				      (const unsigned char *)"DATA", 4, SSH_AGENT_RSA_SHA2_256 };
	struct msg_ssh_sign_req got;
	struct wbuf *b = buf();
	uint8_t type;

	(void)state;
	assert_int_equal(msg_ssh_sign_req_put(b, &m), 0);
	assert_int_equal(wbuf_get_u8(b, &type), 0);
	assert_int_equal(type, SSH_AGENTC_SIGN_REQUEST);
	assert_int_equal(msg_ssh_sign_req_get(b, &got), 0);
	assert_int_equal(got.key_len, 3);
	assert_memory_equal(got.key, "KEY", 3);
	assert_int_equal(got.data_len, 4);
	assert_int_equal(got.flags, SSH_AGENT_RSA_SHA2_256);
	wbuf_free(b);

	/* trailing byte */
	b = buf();
	assert_int_equal(msg_ssh_sign_req_put(b, &m), 0);
	assert_int_equal(wbuf_put_u8(b, 0), 0);
	assert_int_equal(wbuf_get_u8(b, &type), 0);
	assert_int_equal(msg_ssh_sign_req_get(b, &got), MTLS_ERR_TRAILING_DATA);
	assert_null(got.key);
	wbuf_free(b);
	/* flags truncated */
	b = buf();
	assert_int_equal(msg_ssh_sign_req_put(b, &m), 0);
	assert_int_equal(wbuf_unreserve(b, 1), 0);
	assert_int_equal(wbuf_get_u8(b, &type), 0);
	assert_int_equal(msg_ssh_sign_req_get(b, &got), MTLS_ERR_TRUNCATED);
	wbuf_free(b);
	/* empty key blob */
	b = buf();
	m.key_len = 0;
	assert_int_equal(msg_ssh_sign_req_put(b, &m), 0);
	assert_int_equal(wbuf_get_u8(b, &type), 0);
	assert_int_equal(msg_ssh_sign_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	/* key blob over the bound */
	b = buf();
	assert_int_equal(wbuf_put_u32(b, SSH_KEY_BLOB_MAX + 1), 0);
	{
		unsigned char *p;

		assert_int_equal(wbuf_reserve(b, SSH_KEY_BLOB_MAX + 1 + 8 + 4, &p), 0);
		memset(p, 0, SSH_KEY_BLOB_MAX + 1 + 8 + 4);
	}
	assert_int_equal(msg_ssh_sign_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
}

static void
test_lock_ext_bind(void **state)
{
	struct msg_ssh_session_bind sb;
	struct msg_ssh_ext ext;
	struct wbuf *b = buf();
	char *pass = NULL;

	(void)state;
	assert_int_equal(wbuf_put_cstring(b, "secret"), 0);
	assert_int_equal(msg_ssh_lock_get(b, &pass), 0);
	assert_string_equal(pass, "secret");
	mtls_secure_free(pass);
	assert_int_equal(wbuf_put_string(b, "a\0b", 3), 0);
	assert_int_equal(msg_ssh_lock_get(b, &pass), MTLS_ERR_STRING_NUL);
	assert_null(pass);
	wbuf_reset(b);
	assert_int_equal(wbuf_put_cstring(b, "x"), 0);
	assert_int_equal(wbuf_put_u8(b, 1), 0);
	assert_int_equal(msg_ssh_lock_get(b, &pass), MTLS_ERR_TRAILING_DATA);
	wbuf_reset(b);

	/* extension: the name, then its contents */
	assert_int_equal(wbuf_put_cstring(b, SSH_EXT_SESSION_BIND), 0);
	assert_int_equal(wbuf_put_cstring(b, "HOSTKEY"), 0);
	assert_int_equal(wbuf_put_string(b, "0123456789abcdef0123456789abcdef", 32), 0);
	assert_int_equal(wbuf_put_cstring(b, "SIG"), 0);
	assert_int_equal(wbuf_put_u8(b, 1), 0);
	assert_int_equal(msg_ssh_ext_get(b, &ext), 0);
	assert_string_equal(ext.name, SSH_EXT_SESSION_BIND);
	assert_int_equal(msg_ssh_session_bind_get(b, &sb), 0);
	assert_int_equal(sb.hostkey_len, 7);
	assert_int_equal(sb.session_id_len, 32);
	assert_int_equal(sb.forwarding, 1);
	wbuf_reset(b);
	/* a bool that is neither 0 nor 1 */
	assert_int_equal(wbuf_put_cstring(b, "HOSTKEY"), 0);
	assert_int_equal(wbuf_put_cstring(b, "SID"), 0);
	assert_int_equal(wbuf_put_cstring(b, "SIG"), 0);
	assert_int_equal(wbuf_put_u8(b, 2), 0);
	assert_int_equal(msg_ssh_session_bind_get(b, &sb), MTLS_ERR_BAD_REQUEST);
	wbuf_reset(b);
	/* session id over 64 bytes */
	{
		unsigned char sid[65] = { 0 };

		assert_int_equal(wbuf_put_cstring(b, "HOSTKEY"), 0);
		assert_int_equal(wbuf_put_string(b, sid, sizeof(sid)), 0);
		assert_int_equal(wbuf_put_cstring(b, "SIG"), 0);
		assert_int_equal(wbuf_put_u8(b, 0), 0);
		assert_int_equal(msg_ssh_session_bind_get(b, &sb), MTLS_ERR_BAD_REQUEST);
	}
	wbuf_reset(b);
	/* an empty extension name */
	assert_int_equal(wbuf_put_cstring(b, ""), 0);
	assert_int_equal(msg_ssh_ext_get(b, &ext), MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
}

static void
test_identities(void **state)
{
	struct msg_ssh_ident ids[2] = { { (const unsigned char *)"K1", 2, "one" },
					{ (const unsigned char *)"K22", 3, "two" } },
			     got[2];
	struct wbuf *b = buf();
	uint8_t type;
	size_t n;

	(void)state;
	assert_int_equal(msg_ssh_identities_put(b, ids, 2), 0);
	assert_int_equal(wbuf_get_u8(b, &type), 0);
	assert_int_equal(type, SSH_AGENT_IDENTITIES_ANSWER);
	assert_int_equal(msg_ssh_identities_get(b, got, 2, &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(got[1].key, "K22", 3);
	wbuf_reset(b);
	assert_int_equal(msg_ssh_identities_put(b, ids, 2), 0);
	assert_int_equal(wbuf_get_u8(b, &type), 0);
	assert_int_equal(msg_ssh_identities_get(b, got, 1, &n), MTLS_ERR_BAD_REQUEST);
	wbuf_reset(b);
	assert_int_equal(msg_ssh_sign_resp_put(b, (const unsigned char *)"S", 1), 0);
	assert_int_equal(wbuf_len(b), 1 + 4 + 1);
	assert_int_equal(msg_ssh_sign_resp_put(b, (const unsigned char *)"S", 0),
			 MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(b);
}

/* ---------- userauth and SSHSIG ---------- */

static const unsigned char sid32[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
					 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

/* A userauth request; what is NULL / -1 is left out or broken. */
static struct wbuf *
userauth(const char *method, const char *service, int has_sig, const char *hostkey)
{
	struct wbuf *b = buf();

	assert_int_equal(wbuf_put_string(b, sid32, sizeof(sid32)), 0);
	assert_int_equal(wbuf_put_u8(b, 50), 0);
	assert_int_equal(wbuf_put_cstring(b, "alice"), 0);
	assert_int_equal(wbuf_put_cstring(b, service), 0);
	assert_int_equal(wbuf_put_cstring(b, method), 0);
	assert_int_equal(wbuf_put_u8(b, (uint8_t)has_sig), 0);
	assert_int_equal(wbuf_put_cstring(b, "rsa-sha2-256"), 0);
	assert_int_equal(wbuf_put_cstring(b, "KEYBLOB"), 0);
	if (hostkey != NULL)
		assert_int_equal(wbuf_put_cstring(b, hostkey), 0);
	return b;
}

static int
parse_ua(struct wbuf *b, struct ssh_userauth *ua)
{
	char why[200] = "";
	int r = ssh_userauth_parse(b, ua, why, sizeof(why));

	if (r != 0)
		assert_true(why[0] != '\0');
	wbuf_free(b);
	return r;
}

static void
test_userauth(void **state)
{
	struct ssh_userauth ua;
	struct wbuf *b;

	(void)state;
	b = userauth("publickey", "ssh-connection", 1, NULL);
	{
		char why[200];

		assert_int_equal(ssh_userauth_parse(b, &ua, why, sizeof(why)), 0);
		assert_int_equal(ua.session_id_len, 32);
		assert_true(ssh_str_eq(ua.user, ua.user_len, "alice"));
		assert_true(ssh_str_eq(ua.key, ua.key_len, "KEYBLOB"));
		assert_false(ua.hostbound);
		wbuf_free(b);
	}
	b = userauth("publickey-hostbound-v00@openssh.com", "ssh-connection", 1, "HOSTKEY");
	{
		char why[200];

		assert_int_equal(ssh_userauth_parse(b, &ua, why, sizeof(why)), 0);
		assert_true(ua.hostbound);
		assert_true(ssh_str_eq(ua.hostkey, ua.hostkey_len, "HOSTKEY"));
		wbuf_free(b);
	}
	/* hostbound without the host key; publickey with one (trailing) */
	assert_int_equal(
	    parse_ua(userauth("publickey-hostbound-v00@openssh.com", "ssh-connection", 1, NULL),
		     &ua),
	    MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(parse_ua(userauth("publickey", "ssh-connection", 1, "X"), &ua),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(parse_ua(userauth("password", "ssh-connection", 1, NULL), &ua),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(parse_ua(userauth("publickey", "ssh-userauth", 1, NULL), &ua),
			 MTLS_ERR_CONTENT_REJECTED);
	/* the unsigned query form is never signed */
	assert_int_equal(parse_ua(userauth("publickey", "ssh-connection", 0, NULL), &ua),
			 MTLS_ERR_CONTENT_REJECTED);
	/* a message type other than 50 */
	b = userauth("publickey", "ssh-connection", 1, NULL);
	{
		unsigned char copy[256];
		size_t n = wbuf_len(b);

		memcpy(copy, wbuf_ptr(b), n);
		copy[4 + 32] = 51;
		wbuf_free(b);
		assert_int_equal(parse_ua(wbuf_from(copy, n), &ua), MTLS_ERR_CONTENT_REJECTED);
		/* a session id shorter than 16 bytes */
		copy[4 + 32] = 50;
		copy[3] = 8;
		assert_int_equal(parse_ua(wbuf_from(copy, n), &ua), MTLS_ERR_CONTENT_REJECTED);
	}
}

static struct wbuf *
sshsig(const char *ns, const char *alg, size_t hash_len)
{
	unsigned char h[80] = { 7 };
	struct wbuf *b = buf();

	assert_int_equal(wbuf_put(b, SSHSIG_MAGIC, 6), 0);
	assert_int_equal(wbuf_put_cstring(b, ns), 0);
	assert_int_equal(wbuf_put_cstring(b, ""), 0);
	assert_int_equal(wbuf_put_cstring(b, alg), 0);
	assert_int_equal(wbuf_put_string(b, h, hash_len), 0);
	return b;
}

static int
parse_sig(struct wbuf *b, struct sshsig_tbs *m)
{
	char why[200] = "";
	int r = sshsig_parse(b, m, why, sizeof(why));

	if (r != 0)
		assert_true(why[0] != '\0');
	wbuf_free(b);
	return r;
}

static void
test_sshsig(void **state)
{
	struct sshsig_tbs m;
	struct wbuf *b;

	(void)state;
	b = sshsig("git", "sha512", 64);
	assert_int_equal(sshsig_parse(b, &m, NULL, 0), 0);
	assert_true(ssh_str_eq(m.ns, m.ns_len, "git"));
	wbuf_free(b);
	assert_int_equal(parse_sig(sshsig("file", "sha256", 32), &m), 0);
	assert_int_equal(parse_sig(sshsig("git", "sha256", 64), &m), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(parse_sig(sshsig("git", "sha1", 20), &m), MTLS_ERR_CONTENT_REJECTED);
	assert_int_equal(parse_sig(sshsig("", "sha512", 64), &m), MTLS_ERR_CONTENT_REJECTED);
	b = sshsig("git", "sha512", 64);
	assert_int_equal(wbuf_put_u8(b, 0), 0);
	assert_int_equal(parse_sig(b, &m), MTLS_ERR_CONTENT_REJECTED);
	b = buf();
	assert_int_equal(wbuf_put(b, "SSHSIH", 6), 0);
	assert_int_equal(parse_sig(b, &m), MTLS_ERR_CONTENT_REJECTED);
}

/* ---------- no content passes for another purpose ---------- */

static void
test_cross_purpose(void **state)
{
	static const int purposes[] = {
		MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
		MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, MTLS_AGENT_PURPOSE_SSH,
		MTLS_AGENT_PURPOSE_SSH_SIG,	    MTLS_AGENT_PURPOSE_CSR
	};
	struct wbuf *c[6];
	EVP_PKEY *k;
	X509_REQ *req;
	unsigned char *der = NULL;
	int der_len;
	unsigned char nonce[32] = { 9 };
	size_t i, j;
	char why[200];

	(void)state;
	/* TLS 1.3: 64 spaces, context, NUL, 32-byte hash */
	c[0] = buf();
	for (i = 0; i < 64; i++)
		assert_int_equal(wbuf_put_u8(c[0], ' '), 0);
	assert_int_equal(wbuf_put(c[0], TLS13_CLIENT_CV_CONTEXT, sizeof(TLS13_CLIENT_CV_CONTEXT)),
			 0);
	assert_int_equal(wbuf_put(c[0], sid32, 32), 0);
	c[1] = buf();
	assert_int_equal(pam_challenge_put(c[1], nonce, sizeof(nonce), "login", "alice"), 0);
	/* TLS 1.2: ClientHello, ClientKeyExchange */
	c[2] = buf();
	assert_int_equal(wbuf_put(c[2], "\x01\0\0\x02hi\x10\0\0\x01k", 11), 0);
	c[3] = userauth("publickey", "ssh-connection", 1, NULL);
	c[4] = sshsig("git", "sha256", 32);
	/* a certificate request's CertificationRequestInfo (the csr purpose) */
	assert_non_null(k = EVP_EC_gen("P-256"));
	assert_non_null(req = X509_REQ_new());
	assert_int_equal(X509_REQ_set_pubkey(req, k), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN",
						    MBSTRING_ASC, (const unsigned char *)"alice",
						    -1, -1, 0),
			 1);
	assert_true((der_len = i2d_re_X509_REQ_tbs(req, &der)) > 0);
	c[5] = buf();
	assert_int_equal(wbuf_put(c[5], der, (size_t)der_len), 0);
	OPENSSL_free(der);
	X509_REQ_free(req);
	EVP_PKEY_free(k);
	for (i = 0; i < 6; i++)
		for (j = 0; j < 6; j++) {
			/* ECDSA P-256 fits every purpose, so only content decides */
			int r = purpose_check(purposes[j],
					      scheme_lookup(MTLS_AGENT_ECDSA_SECP256R1_SHA256),
					      wbuf_ptr(c[i]), wbuf_len(c[i]), why, sizeof(why));

			if (i == j && r != 0)
				fail_msg("content %zu refused for its purpose: %s", i, why);
			if (i == j)
				assert_int_equal(r, 0);
			else
				assert_int_equal(r, MTLS_ERR_CONTENT_REJECTED);
		}
	/* and the digest purposes take only a digest-sized content */
	for (i = 0; i < 6; i++) {
		assert_int_not_equal(wbuf_len(c[i]), 32);
		assert_int_equal(purpose_check(MTLS_AGENT_PURPOSE_RAW_DIGEST,
					       scheme_lookup(MTLS_AGENT_ECDSA_SECP256R1_SHA256),
					       wbuf_ptr(c[i]), wbuf_len(c[i]), why, sizeof(why)),
				 MTLS_ERR_CONTENT_REJECTED);
		assert_int_equal(purpose_check(MTLS_AGENT_PURPOSE_PKCS11_DIGEST,
					       scheme_lookup(MTLS_AGENT_ECDSA_SECP256R1_SHA256),
					       wbuf_ptr(c[i]), wbuf_len(c[i]), why, sizeof(why)),
				 MTLS_ERR_CONTENT_REJECTED);
	}
	/* SSH has no RSA-PSS */
	assert_int_equal(purpose_check(MTLS_AGENT_PURPOSE_SSH,
				       scheme_lookup(MTLS_AGENT_RSA_PSS_RSAE_SHA256),
				       wbuf_ptr(c[3]), wbuf_len(c[3]), why, sizeof(why)),
			 MTLS_ERR_UNSUPPORTED_SCHEME);
	for (i = 0; i < 6; i++)
		wbuf_free(c[i]);
	assert_string_equal(mtls_agent_purpose_name(MTLS_AGENT_PURPOSE_SSH), "ssh");
	assert_int_equal(mtls_agent_purpose_from_name("ssh-sig"), MTLS_AGENT_PURPOSE_SSH_SIG);
}

/* ---------- key and signature blobs ---------- */

static EVP_PKEY *
keygen(const char *type, const char *arg)
{
	EVP_PKEY *pk = strcmp(type, "RSA") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
						: EVP_PKEY_Q_keygen(NULL, NULL, "EC", arg);

	assert_non_null(pk);
	return pk;
}

static void
sign_verify(EVP_PKEY *pk, const char *alg, const char *md, int ecdsa)
{
	unsigned char sig[600], data[100];
	size_t sig_len = sizeof(sig);
	struct wbuf *key = buf(), *blob = buf();
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY *back = NULL;
	unsigned char *bad;

	assert_int_equal(RAND_bytes(data, sizeof(data)), 1);
	assert_int_equal(ssh_key_blob_put(key, pk), 0);
	assert_int_equal(ssh_key_from_blob(wbuf_ptr(key), wbuf_len(key), &back), 0);
	assert_int_equal(EVP_PKEY_eq(pk, back), 1);
	EVP_PKEY_free(back);
	assert_int_equal(EVP_DigestSignInit_ex(ctx, NULL, md, NULL, NULL, pk, NULL), 1);
	assert_int_equal(EVP_DigestSign(ctx, sig, &sig_len, data, sizeof(data)), 1);
	EVP_MD_CTX_free(ctx);
	assert_int_equal(ssh_sig_blob_put(blob, alg, ecdsa, sig, sig_len), 0);
	assert_int_equal(ssh_sig_verify(wbuf_ptr(key), wbuf_len(key), wbuf_ptr(blob),
					wbuf_len(blob), data, sizeof(data)),
			 0);
	data[0] ^= 1;
	assert_int_equal(ssh_sig_verify(wbuf_ptr(key), wbuf_len(key), wbuf_ptr(blob),
					wbuf_len(blob), data, sizeof(data)),
			 MTLS_ERR_SIGNATURE_INVALID);
	data[0] ^= 1;
	/* a signature blob with a trailing byte */
	bad = malloc(wbuf_len(blob) + 1);
	assert_non_null(bad);
	memcpy(bad, wbuf_ptr(blob), wbuf_len(blob));
	bad[wbuf_len(blob)] = 0;
	assert_int_equal(ssh_sig_verify(wbuf_ptr(key), wbuf_len(key), bad, wbuf_len(blob) + 1, data,
					sizeof(data)),
			 MTLS_ERR_SIGNATURE_INVALID);
	free(bad);
	wbuf_free(key);
	wbuf_free(blob);
}

static void
test_key_blobs(void **state)
{
	EVP_PKEY *rsa = keygen("RSA", NULL), *p256 = keygen("EC", "P-256"),
		 *p384 = keygen("EC", "P-384");
	struct wbuf *b = buf();
	char fp[64], *line = NULL;
	const unsigned char *t;
	size_t tl;

	(void)state;
	assert_string_equal(ssh_key_type(rsa), "ssh-rsa");
	assert_string_equal(ssh_key_type(p256), "ecdsa-sha2-nistp256");
	assert_string_equal(ssh_key_type(p384), "ecdsa-sha2-nistp384");
	sign_verify(rsa, "rsa-sha2-256", "SHA256", 0);
	sign_verify(rsa, "rsa-sha2-512", "SHA512", 0);
	sign_verify(p256, "ecdsa-sha2-nistp256", "SHA256", 1);
	sign_verify(p384, "ecdsa-sha2-nistp384", "SHA384", 1);
	/* the blob starts with its type; fingerprint and line as OpenSSH */
	assert_int_equal(ssh_key_blob_put(b, p256), 0);
	{
		struct wbuf *r = wbuf_from(wbuf_ptr(b), wbuf_len(b));

		assert_int_equal(wbuf_get_string_direct(r, &t, &tl, 0), 0);
		assert_true(ssh_str_eq(t, tl, "ecdsa-sha2-nistp256"));
		wbuf_free(r);
	}
	assert_int_equal(ssh_fingerprint(wbuf_ptr(b), wbuf_len(b), fp, sizeof(fp)), 0);
	assert_int_equal(strncmp(fp, "SHA256:", 7), 0);
	assert_int_equal(strlen(fp), 7 + 43);
	assert_int_equal(ssh_pubkey_line(wbuf_ptr(b), wbuf_len(b), "CN=x", &line), 0);
	assert_int_equal(strncmp(line, "ecdsa-sha2-nistp256 AAAAE2VjZHNh", 32), 0);
	assert_string_equal(line + strlen(line) - 5, " CN=x");
	free(line);
	/* an RSA signature cannot pass as the other RSA algorithm */
	{
		struct wbuf *key = buf(), *blob = buf();
		unsigned char sig[512], data[4] = "abc";
		size_t sl = sizeof(sig);
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();

		assert_int_equal(ssh_key_blob_put(key, rsa), 0);
		assert_int_equal(EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, rsa, NULL),
				 1);
		assert_int_equal(EVP_DigestSign(ctx, sig, &sl, data, 3), 1);
		EVP_MD_CTX_free(ctx);
		assert_int_equal(ssh_sig_blob_put(blob, "rsa-sha2-512", 0, sig, sl), 0);
		assert_int_equal(ssh_sig_verify(wbuf_ptr(key), wbuf_len(key), wbuf_ptr(blob),
						wbuf_len(blob), data, 3),
				 MTLS_ERR_SIGNATURE_INVALID);
		wbuf_reset(blob);
		assert_int_equal(ssh_sig_blob_put(blob, "ssh-rsa", 0, sig, sl), 0);
		assert_int_equal(ssh_sig_verify(wbuf_ptr(key), wbuf_len(key), wbuf_ptr(blob),
						wbuf_len(blob), data, 3),
				 MTLS_ERR_SIGNATURE_INVALID);
		wbuf_free(key);
		wbuf_free(blob);
	}
	wbuf_free(b);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(p256);
	EVP_PKEY_free(p384);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mpint),	      cmocka_unit_test(test_sign_req),
		cmocka_unit_test(test_lock_ext_bind), cmocka_unit_test(test_identities),
		cmocka_unit_test(test_userauth),      cmocka_unit_test(test_sshsig),
		cmocka_unit_test(test_cross_purpose), cmocka_unit_test(test_key_blobs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
