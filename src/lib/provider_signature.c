/*
 * provider_signature.c - "RSA" and "ECDSA" signatures made by the agent.
 *
 * Signing is digest-sign only, and it never hashes: update() buffers the
 * whole to-be-signed content and final() sends it to the agent in one SIGN
 * request.  The agent hashes it itself after checking that it is what the
 * request's purpose says (a TLS 1.3 CertificateVerify content with its
 * context string, or a TLS 1.2 handshake transcript), so a signature over
 * anything else is refused by the agent, not by us (a certificate request
 * is sent as `csr`; a TBSCertificate we refuse ourselves).  The TLS
 * SignatureScheme follows from the key type, the digest and the RSA
 * padding libssl sets.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include "mtls-agent.h"
#include "provider.h"
#include "purpose.h"

#define SALT_UNSET (-100)

struct sig_ctx {
	struct prov_ctx *prov;
	struct agent_key *key;
	int key_type;		/* which algorithm this context is for */
	unsigned int md_bits;	/* 256, 384, 512; 0 before init */
	int pad;		/* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
	int saltlen;		/* SALT_UNSET, RSA_PSS_SALTLEN_DIGEST or bytes */
	unsigned int mgf1_bits; /* 0: same as the digest */
	unsigned char *buf;	/* the content so far */
	size_t len, cap;
	/* Verification, delegated to the default provider's implementation
	 * on the public key (see digest_verify_init). */
	EVP_MD_CTX *vctx;
	EVP_PKEY_CTX *vpctx; /* owned by vctx */
};

/* SHA-256/384/512 (any of their names) -> 256/384/512; else 0. */
static unsigned int
md_bits_from_name(struct prov_ctx *p, const char *name)
{
	EVP_MD *md;
	unsigned int bits = 0;

	if (name == NULL || *name == '\0')
		return 0;
	if ((md = EVP_MD_fetch(p->libctx, name, PROV_INTERNAL_PROPQ)) == NULL)
		return 0;
	if (EVP_MD_is_a(md, "SHA2-256"))
		bits = 256;
	else if (EVP_MD_is_a(md, "SHA2-384"))
		bits = 384;
	else if (EVP_MD_is_a(md, "SHA2-512"))
		bits = 512;
	EVP_MD_free(md);
	return bits;
}

static const char *
md_name(unsigned int bits)
{
	switch (bits) {
	case 256: return "SHA2-256";
	case 384: return "SHA2-384";
	case 512: return "SHA2-512";
	}
	return "";
}

static void *
newctx(void *provctx, int key_type)
{
	struct sig_ctx *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->prov = provctx;
	c->key_type = key_type;
	c->pad = RSA_PKCS1_PADDING;
	c->saltlen = SALT_UNSET;
	return c;
}

static void *
rsa_newctx(void *provctx, const char *propq)
{
	return newctx(provctx, MTLS_AGENT_KEY_RSA);
}

static void *
ecdsa_newctx(void *provctx, const char *propq)
{
	return newctx(provctx, MTLS_AGENT_KEY_EC);
}

static void
clear_content(struct sig_ctx *c)
{
	OPENSSL_clear_free(c->buf, c->cap);
	c->buf = NULL;
	c->len = c->cap = 0;
}

static void
freectx(void *ctx)
{
	struct sig_ctx *c = ctx;

	if (c == NULL)
		return;
	clear_content(c);
	EVP_MD_CTX_free(c->vctx);
	agent_key_free(c->key);
	free(c);
}

static void *
dupctx(void *ctx)
{
	struct sig_ctx *c = ctx, *d;

	if ((d = malloc(sizeof(*d))) == NULL)
		return NULL;
	*d = *c;
	d->buf = NULL;
	d->vctx = NULL;
	d->vpctx = NULL;
	if (c->vctx != NULL) {
		if ((d->vctx = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(d->vctx, c->vctx)) {
			EVP_MD_CTX_free(d->vctx);
			free(d);
			return NULL;
		}
		d->vpctx = EVP_MD_CTX_get_pkey_ctx(d->vctx);
	}
	if (c->cap > 0) {
		if ((d->buf = malloc(c->cap)) == NULL) {
			EVP_MD_CTX_free(d->vctx);
			free(d);
			return NULL;
		}
		memcpy(d->buf, c->buf, c->len);
	}
	if (d->key != NULL)
		agent_key_up_ref(d->key);
	return d;
}

/* Whether the agent has a scheme for this key and digest. */
static int
digest_ok(const struct sig_ctx *c, unsigned int bits)
{
	if (bits == 0)
		return 0;
	if (c->key_type == MTLS_AGENT_KEY_RSA)
		return 1;
	/* ECDSA code points bind the curve to the digest: P-256 with
	 * SHA-256, P-384 with SHA-384, nothing else. */
	return c->key != NULL && c->key->bits == bits && (bits == 256 || bits == 384);
}

static int
set_digest(struct sig_ctx *c, const char *name)
{
	unsigned int bits = md_bits_from_name(c->prov, name);

	if (!digest_ok(c, bits)) {
		PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_DIGEST, "%s with a %u-bit %s key", name,
			   c->key != NULL ? c->key->bits : 0,
			   c->key_type == MTLS_AGENT_KEY_RSA ? "RSA" : "EC");
		return 0;
	}
	c->md_bits = bits;
	return 1;
}

static int set_ctx_params(void *ctx, const OSSL_PARAM params[]);

static int
digest_sign_init(void *ctx, const char *mdname, void *provkey, const OSSL_PARAM params[])
{
	struct sig_ctx *c = ctx;
	struct agent_key *k = provkey;

	if (k == NULL || k->magic != AGENT_KEY_MAGIC || k->type != c->key_type) {
		PROV_RAISE(c->prov, PROV_R_NOT_AGENT_KEY, "not an mtls-agent key of this type");
		return 0;
	}
	if (k->identity == NULL) {
		PROV_RAISE(c->prov, PROV_R_NOT_AGENT_KEY, NULL);
		return 0;
	}
	agent_key_up_ref(k);
	agent_key_free(c->key);
	c->key = k;
	clear_content(c);
	EVP_MD_CTX_free(c->vctx);
	c->vctx = NULL;
	c->vpctx = NULL;
	c->pad = RSA_PKCS1_PADDING;
	c->saltlen = SALT_UNSET;
	c->mgf1_bits = 0;
	if (mdname == NULL || *mdname == '\0')
		mdname = c->key_type == MTLS_AGENT_KEY_EC && k->bits == 384 ? "SHA384" : "SHA256";
	/*
	 * Refusing an unusable digest here, not at signing time, is what lets
	 * libssl skip signature algorithms this key cannot do (it probes with
	 * EVP_DigestSignInit) and pick one it can.
	 */
	if (!set_digest(c, mdname))
		return 0;
	return set_ctx_params(c, params);
}

static int
digest_sign_update(void *ctx, const unsigned char *data, size_t datalen)
{
	struct sig_ctx *c = ctx;
	unsigned char *n;
	size_t cap;

	if (datalen == 0)
		return 1;
	if (c->key == NULL || data == NULL)
		return 0;
	if (datalen > MTLS_AGENT_CONTENT_MAX - c->len) {
		PROV_RAISE(c->prov, PROV_R_CONTENT_TOO_LARGE, "more than %u bytes",
			   (unsigned int)MTLS_AGENT_CONTENT_MAX);
		return 0;
	}
	if (c->len + datalen > c->cap) {
		cap = c->cap < 1024 ? 1024 : c->cap;
		while (cap < c->len + datalen)
			cap *= 2;
		if ((n = malloc(cap)) == NULL)
			return 0;
		if (c->len > 0)
			memcpy(n, c->buf, c->len);
		OPENSSL_clear_free(c->buf, c->cap);
		c->buf = n;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, datalen);
	c->len += datalen;
	return 1;
}

/* The scheme for what the context was told; 0 after raising an error. */
static uint16_t
scheme_for(struct sig_ctx *c)
{
	unsigned int hash_len = c->md_bits / 8;

	if (c->key_type == MTLS_AGENT_KEY_EC) {
		if (c->md_bits == 256 && c->key->bits == 256)
			return MTLS_AGENT_ECDSA_SECP256R1_SHA256;
		if (c->md_bits == 384 && c->key->bits == 384)
			return MTLS_AGENT_ECDSA_SECP384R1_SHA384;
		PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_DIGEST, "%s with a %u-bit EC key",
			   md_name(c->md_bits), c->key->bits);
		return 0;
	}
	if (c->pad == RSA_PKCS1_PADDING) {
		switch (c->md_bits) {
		case 256: return MTLS_AGENT_RSA_PKCS1_SHA256;
		case 384: return MTLS_AGENT_RSA_PKCS1_SHA384;
		case 512: return MTLS_AGENT_RSA_PKCS1_SHA512;
		}
	} else if (c->pad == RSA_PKCS1_PSS_PADDING) {
		/* The agent's PSS salt is the hash length (RFC 8446 4.2.3). */
		if (c->saltlen != SALT_UNSET && c->saltlen != RSA_PSS_SALTLEN_DIGEST &&
		    c->saltlen != (int)hash_len) {
			PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_SALTLEN, "salt length %d, hash %u",
				   c->saltlen, hash_len);
			return 0;
		}
		if (c->mgf1_bits != 0 && c->mgf1_bits != c->md_bits) {
			PROV_RAISE(c->prov, PROV_R_MGF1_MISMATCH, "%s, digest %s",
				   md_name(c->mgf1_bits), md_name(c->md_bits));
			return 0;
		}
		switch (c->md_bits) {
		case 256: return MTLS_AGENT_RSA_PSS_RSAE_SHA256;
		case 384: return MTLS_AGENT_RSA_PSS_RSAE_SHA384;
		case 512: return MTLS_AGENT_RSA_PSS_RSAE_SHA512;
		}
	} else {
		PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_PADDING, "padding mode %d", c->pad);
		return 0;
	}
	PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_DIGEST, "%s", md_name(c->md_bits));
	return 0;
}

/*
 * An X.509 structure to be signed: one DER SEQUENCE spanning the content
 * (read with OpenSSL's ASN1_get_object).  Returns 2 for a TBSCertificate
 * (v3: the [0] version first; v1: serial, AlgorithmIdentifier), 1 for
 * anything else of that
 * shape (a certificate request, claimed as `csr`: the agent parses and
 * checks it), 0 for content that is no DER SEQUENCE.
 */
static int
asn1_item_kind(const unsigned char *c, size_t len)
{
	const unsigned char *p = c;
	long l, l2;
	int tag, cls, tag2, cls2, ret;

	if (len < 2 || len > 0x7fffffff || c[0] != 0x30)
		return 0;
	ret = ASN1_get_object(&p, &l, &tag, &cls, (long)len);
	if ((ret & 0x80) || tag != V_ASN1_SEQUENCE || cls != V_ASN1_UNIVERSAL || p + l != c + len) {
		ERR_clear_error();
		return 0;
	}
	ret = ASN1_get_object(&p, &l2, &tag2, &cls2, l);
	if (ret & 0x80) {
		ERR_clear_error();
		return 0;
	}
	if (cls2 == V_ASN1_CONTEXT_SPECIFIC && tag2 == 0)
		return 2; /* TBSCertificate v2/v3: [0] version */
	/* A v1 TBSCertificate: serial, then an AlgorithmIdentifier (its first
	 * element an OID) where a request has its subject Name (a SET). */
	if (tag2 != V_ASN1_INTEGER || l2 > c + len - p)
		return 1;
	p += l2;
	ret = ASN1_get_object(&p, &l2, &tag2, &cls2, (long)(c + len - p));
	if ((ret & 0x80) || tag2 != V_ASN1_SEQUENCE) {
		ERR_clear_error();
		return 1;
	}
	ret = ASN1_get_object(&p, &l, &tag, &cls, l2);
	ERR_clear_error();
	return !(ret & 0x80) && tag == V_ASN1_OBJECT && cls == V_ASN1_UNIVERSAL ? 2 : 1;
}

static int
digest_sign_final(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
	struct sig_ctx *c = ctx;
	unsigned char *s = NULL;
	size_t s_len = 0;
	uint16_t scheme;
	int r, ok = 0, purpose;

	if (c->key == NULL)
		return 0;
	if (sig == NULL) {
		*siglen = agent_key_max_size(c->key);
		return *siglen > 0;
	}
	if ((scheme = scheme_for(c)) == 0)
		goto out;
	/* `openssl x509 -req -CAkey mtls-agent:...`: refused here, with the
	 * reason, before anything reaches the agent. */
	if (asn1_item_kind(c->buf, c->len) == 2) {
		PROV_RAISE(c->prov, PROV_R_OPERATION_UNSUPPORTED,
			   "%s: the agent signs no certificates (an agent key is not a CA key)",
			   c->key->identity);
		goto out;
	}
	/* A certificate request (a DER SEQUENCE) goes as csr, the rest as TLS. */
	purpose = asn1_item_kind(c->buf, c->len) != 0 ? MTLS_AGENT_PURPOSE_CSR
						      : purpose_of_tls_content(c->buf, c->len);
	r = agent_key_sign(c->key, scheme, purpose, c->buf, c->len, &s, &s_len);
	if (r != 0) {
		PROV_RAISE_AGENT(c->prov, r, c->key->identity);
		goto out;
	}
	if (s_len > sigsize) {
		PROV_RAISE(c->prov, PROV_R_BUFFER_TOO_SMALL, "%zu bytes, need %zu", sigsize, s_len);
		goto out;
	}
	memcpy(sig, s, s_len);
	*siglen = s_len;
	ok = 1;
out:
	free(s);
	clear_content(c);
	return ok;
}

static int
digest_sign(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize, const unsigned char *tbs,
	    size_t tbslen)
{
	struct sig_ctx *c = ctx;

	if (c->key == NULL)
		return 0;
	if (sig == NULL)
		return digest_sign_final(c, NULL, siglen, 0);
	if (!digest_sign_update(c, tbs, tbslen)) {
		clear_content(c);
		return 0;
	}
	return digest_sign_final(c, sig, siglen, sigsize);
}

/*
 * Verification.  libssl never verifies with the client key, but when this
 * provider is loaded before the default one, libcrypto may pick our "RSA"
 * or "ECDSA" for any public key (the server's, a CA's), importing it into
 * our keymgmt as a public-only key.  Those verifications must still work,
 * so they are handed to the default provider's implementation, running on
 * the public key in our private library context.
 */
static int
digest_verify_init(void *ctx, const char *mdname, void *provkey, const OSSL_PARAM params[])
{
	struct sig_ctx *c = ctx;
	struct agent_key *k = provkey;

	if (k == NULL || k->magic != AGENT_KEY_MAGIC || k->type != c->key_type || k->pub == NULL)
		return 0;
	agent_key_up_ref(k);
	agent_key_free(c->key);
	c->key = k;
	clear_content(c);
	EVP_MD_CTX_free(c->vctx);
	c->vpctx = NULL;
	if ((c->vctx = EVP_MD_CTX_new()) == NULL)
		return 0;
	if (EVP_DigestVerifyInit_ex(c->vctx, &c->vpctx, mdname, c->prov->libctx,
				    PROV_INTERNAL_PROPQ, k->pub, NULL) != 1 ||
	    (params != NULL && EVP_PKEY_CTX_set_params(c->vpctx, params) != 1)) {
		EVP_MD_CTX_free(c->vctx);
		c->vctx = NULL;
		c->vpctx = NULL;
		return 0;
	}
	return 1;
}

static int
digest_verify_update(void *ctx, const unsigned char *data, size_t datalen)
{
	struct sig_ctx *c = ctx;

	return c->vctx != NULL && EVP_DigestVerifyUpdate(c->vctx, data, datalen) == 1;
}

static int
digest_verify_final(void *ctx, const unsigned char *sig, size_t siglen)
{
	struct sig_ctx *c = ctx;

	if (c->vctx == NULL)
		return 0;
	return EVP_DigestVerifyFinal(c->vctx, sig, siglen);
}

static int
digest_verify(void *ctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
	      size_t tbslen)
{
	struct sig_ctx *c = ctx;

	if (c->vctx == NULL)
		return 0;
	return EVP_DigestVerify(c->vctx, sig, siglen, tbs, tbslen);
}

/* An integer parameter that may also come as a string of digits. */
static int
param_int_or_name(const OSSL_PARAM *p, const char *const *names, const int *values, int *out)
{
	const char *s = NULL;
	char *end;
	long v;
	size_t i;

	if (p->data_type != OSSL_PARAM_UTF8_STRING)
		return OSSL_PARAM_get_int(p, out);
	if (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || s == NULL)
		return 0;
	for (i = 0; names[i] != NULL; i++) {
		if (strcasecmp(s, names[i]) == 0) {
			*out = values[i];
			return 1;
		}
	}
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < -1000 || v > 100000)
		return 0;
	*out = (int)v;
	return 1;
}

static int
set_ctx_params(void *ctx, const OSSL_PARAM params[])
{
	static const char *const pad_names[] = { "pkcs1", "pss", "none", "x931", NULL };
	static const int pad_values[] = { RSA_PKCS1_PADDING, RSA_PKCS1_PSS_PADDING, RSA_NO_PADDING,
					  RSA_X931_PADDING };
	static const char *const salt_names[] = { "digest", "max", "auto", NULL };
	static const int salt_values[] = { RSA_PSS_SALTLEN_DIGEST, RSA_PSS_SALTLEN_MAX,
					   RSA_PSS_SALTLEN_AUTO };
	struct sig_ctx *c = ctx;
	const OSSL_PARAM *p;
	const char *s = NULL;
	unsigned int bits;
	int v;

	if (params == NULL)
		return 1;
	if (c->vpctx != NULL)
		return EVP_PKEY_CTX_set_params(c->vpctx, params);
	if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL) {
		if (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || !set_digest(c, s))
			return 0;
	}
	if (c->key_type != MTLS_AGENT_KEY_RSA)
		return 1;
	if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
		if (!param_int_or_name(p, pad_names, pad_values, &v))
			return 0;
		if (v != RSA_PKCS1_PADDING && v != RSA_PKCS1_PSS_PADDING) {
			PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_PADDING, "padding mode %d", v);
			return 0;
		}
		c->pad = v;
	}
	if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
		if (!param_int_or_name(p, salt_names, salt_values, &v))
			return 0;
		/* Only "the hash length", by name or by number (checked when
		 * the digest is final): that is the salt the agent uses. */
		if (v != RSA_PSS_SALTLEN_DIGEST && v < 0) {
			PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_SALTLEN, "salt length %d", v);
			return 0;
		}
		c->saltlen = v;
	}
	if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
		if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
			return 0;
		if ((bits = md_bits_from_name(c->prov, s)) == 0) {
			PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_DIGEST, "MGF1 with %s", s);
			return 0;
		}
		c->mgf1_bits = bits;
	}
	return 1;
}

static const OSSL_PARAM *
rsa_settable_ctx_params(void *ctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
		OSSL_PARAM_END
	};

	return params;
}

static const OSSL_PARAM *
ecdsa_settable_ctx_params(void *ctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0), OSSL_PARAM_END
	};

	return params;
}

/*
 * X.509 AlgorithmIdentifiers (DER) for what the agent signs with, as
 * certificates and requests name them (RFC 4055, RFC 5758): PKCS#1 v1.5
 * and ECDSA without parameters or with NULL, RSASSA-PSS with its digest,
 * MGF1 over the same digest and a salt of the hash length.  libcrypto asks
 * for one (OSSL_SIGNATURE_PARAM_ALGORITHM_ID) before signing any ASN.1
 * item; ECDSA with SHA-512 is here for completeness, no key takes it yet.
 */
static const unsigned char aid_rsa_sha256[] = {
	0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
};
static const unsigned char aid_rsa_sha384[] = {
	0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
};
static const unsigned char aid_rsa_sha512[] = {
	0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
};
/* rsassaPss, then [0] hashAlgorithm, [1] MGF1(hash), [2] saltLength. */
#define AID_PSS(h, salt)                                                                           \
	{                                                                                          \
		0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a,      \
		    0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,  \
		    0x03, 0x04, 0x02, (h), 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a,   \
		    0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60,  \
		    0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, (h), 0x05, 0x00, 0xa2, 0x03, 0x02,   \
		    0x01, (salt)                                                                   \
	}
static const unsigned char aid_pss_sha256[] = AID_PSS(0x01, 32);
static const unsigned char aid_pss_sha384[] = AID_PSS(0x02, 48);
static const unsigned char aid_pss_sha512[] = AID_PSS(0x03, 64);
static const unsigned char aid_ecdsa_sha256[] = {
	0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
};
static const unsigned char aid_ecdsa_sha384[] = {
	0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
};
static const unsigned char aid_ecdsa_sha512[] = {
	0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
};

/* The AlgorithmIdentifier for key type, padding and digest; NULL if none. */
static const unsigned char *
algorithm_id(int key_type, int pss, unsigned int md_bits, size_t *len)
{
	static const struct {
		int key_type, pss;
		unsigned int md_bits;
		const unsigned char *der;
		size_t len;
	} ids[] = {
#define AID(t, p, b, a) { (t), (p), (b), (a), sizeof(a) }
		AID(MTLS_AGENT_KEY_RSA, 0, 256, aid_rsa_sha256),
		AID(MTLS_AGENT_KEY_RSA, 0, 384, aid_rsa_sha384),
		AID(MTLS_AGENT_KEY_RSA, 0, 512, aid_rsa_sha512),
		AID(MTLS_AGENT_KEY_RSA, 1, 256, aid_pss_sha256),
		AID(MTLS_AGENT_KEY_RSA, 1, 384, aid_pss_sha384),
		AID(MTLS_AGENT_KEY_RSA, 1, 512, aid_pss_sha512),
		AID(MTLS_AGENT_KEY_EC, 0, 256, aid_ecdsa_sha256),
		AID(MTLS_AGENT_KEY_EC, 0, 384, aid_ecdsa_sha384),
		AID(MTLS_AGENT_KEY_EC, 0, 512, aid_ecdsa_sha512),
#undef AID
	};
	size_t i;

	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		if (ids[i].key_type == key_type && ids[i].pss == pss && ids[i].md_bits == md_bits) {
			*len = ids[i].len;
			return ids[i].der;
		}
	}
	return NULL;
}

/*
 * Answers OSSL_SIGNATURE_PARAM_ALGORITHM_ID.  Failing here (with the
 * reason on the error queue) is what stops libcrypto before it signs with
 * an identifier it made up, or reads one we never wrote.
 */
static int
get_algorithm_id(struct sig_ctx *c, OSSL_PARAM *p)
{
	const unsigned char *der;
	size_t len;

	if (c->key == NULL || c->md_bits == 0) {
		PROV_RAISE(c->prov, PROV_R_OPERATION_UNSUPPORTED, "no signature initialised");
		return 0;
	}
	/* Raises the reason when the padding, salt or MGF1 do not fit. */
	if (scheme_for(c) == 0)
		return 0;
	der = algorithm_id(c->key_type, c->pad == RSA_PKCS1_PSS_PADDING, c->md_bits, &len);
	if (der == NULL) {
		PROV_RAISE(c->prov, PROV_R_UNSUPPORTED_DIGEST, "no AlgorithmIdentifier for %s",
			   md_name(c->md_bits));
		return 0;
	}
	return OSSL_PARAM_set_octet_string(p, der, len);
}

static int
get_ctx_params(void *ctx, OSSL_PARAM params[])
{
	struct sig_ctx *c = ctx;
	OSSL_PARAM *p;
	int salt;

	if (c->vpctx != NULL)
		return EVP_PKEY_CTX_get_params(c->vpctx, params);
	if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL &&
	    !OSSL_PARAM_set_utf8_string(p, md_name(c->md_bits)))
		return 0;
	if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) != NULL &&
	    !get_algorithm_id(c, p))
		return 0;
	if (c->key_type != MTLS_AGENT_KEY_RSA)
		return 1;
	if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
		if (p->data_type == OSSL_PARAM_UTF8_STRING) {
			if (!OSSL_PARAM_set_utf8_string(
				p, c->pad == RSA_PKCS1_PSS_PADDING ? "pss" : "pkcs1"))
				return 0;
		} else if (!OSSL_PARAM_set_int(p, c->pad)) {
			return 0;
		}
	}
	if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
		salt = c->saltlen == SALT_UNSET ? RSA_PSS_SALTLEN_DIGEST : c->saltlen;
		if (p->data_type == OSSL_PARAM_UTF8_STRING) {
			if (salt == RSA_PSS_SALTLEN_DIGEST) {
				if (!OSSL_PARAM_set_utf8_string(p, "digest"))
					return 0;
			} else {
				char num[16];

				snprintf(num, sizeof(num), "%d", salt);
				if (!OSSL_PARAM_set_utf8_string(p, num))
					return 0;
			}
		} else if (!OSSL_PARAM_set_int(p, salt)) {
			return 0;
		}
	}
	if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL &&
	    !OSSL_PARAM_set_utf8_string(p, md_name(c->mgf1_bits != 0 ? c->mgf1_bits : c->md_bits)))
		return 0;
	return 1;
}

static const OSSL_PARAM *
rsa_gettable_ctx_params(void *ctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
		OSSL_PARAM_END
	};

	return params;
}

static const OSSL_PARAM *
ecdsa_gettable_ctx_params(void *ctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0), OSSL_PARAM_END
	};

	return params;
}

#define SIGNATURE_FUNCTIONS(t)                                                                     \
	{ OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))t##_newctx },                                \
	    { OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))freectx },                              \
	    { OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))dupctx },                                \
	    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))digest_sign_init },            \
	    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))digest_sign_update },        \
	    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))digest_sign_final },          \
	    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))digest_sign },                      \
	    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))digest_verify_init },        \
	    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))digest_verify_update },    \
	    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))digest_verify_final },      \
	    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))digest_verify },                  \
	    { OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))get_ctx_params },                \
	    { OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))t##_gettable_ctx_params },  \
	    { OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))set_ctx_params },                \
	    { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))t##_settable_ctx_params },  \
	{                                                                                          \
		0, NULL                                                                            \
	}

const OSSL_DISPATCH prov_rsa_signature_functions[] = { SIGNATURE_FUNCTIONS(rsa) };
const OSSL_DISPATCH prov_ecdsa_signature_functions[] = { SIGNATURE_FUNCTIONS(ecdsa) };
