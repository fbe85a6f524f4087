/*
 * msg_ssh_key.c - SSH key and signature blobs from and to OpenSSL keys
 * (see msg_ssh_key.h).  The byte layout is wbuf's; OpenSSL does the
 * numbers, points and signatures.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "msg_ssh.h"
#include "msg_ssh_key.h"

#define EC_POINT_MAX 133 /* uncompressed P-521 */

static const struct {
	const char *ssh;    /* key type and signature algorithm */
	const char *curve;  /* in the blob */
	const char *group;  /* OpenSSL's name */
	const char *digest; /* for signatures */
} curves[] = {
	{ "ecdsa-sha2-nistp256", "nistp256", "prime256v1", "SHA256" },
	{ "ecdsa-sha2-nistp384", "nistp384", "secp384r1", "SHA384" },
	{ "ecdsa-sha2-nistp521", "nistp521", "secp521r1", "SHA512" },
};

static int
ec_curve(EVP_PKEY *pk)
{
	char group[64];
	size_t i, len = 0;

	if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					   &len) != 1)
		return -1;
	for (i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (strcmp(group, curves[i].group) == 0)
			return (int)i;
	return -1;
}

const char *
ssh_key_type(EVP_PKEY *pk)
{
	int c;

	if (pk == NULL)
		return NULL;
	if (EVP_PKEY_is_a(pk, "RSA"))
		return "ssh-rsa";
	/* P-521 is verified (host keys) but not offered: tokens' keys are
	 * RSA, P-256 and P-384 (the sign pipeline's schemes). */
	if (EVP_PKEY_is_a(pk, "EC") && (c = ec_curve(pk)) >= 0 && c < 2)
		return curves[c].ssh;
	return NULL;
}

static int
put_bn(struct wbuf *b, EVP_PKEY *pk, const char *param)
{
	unsigned char buf[2048];
	BIGNUM *bn = NULL;
	int n, r = MTLS_ERR_INTERNAL;

	if (EVP_PKEY_get_bn_param(pk, param, &bn) != 1)
		goto out;
	if ((n = BN_num_bytes(bn)) < 0 || (size_t)n > sizeof(buf)) {
		r = MTLS_ERR_UNSUPPORTED_SCHEME;
		goto out;
	}
	if (BN_bn2bin(bn, buf) != n)
		goto out;
	r = wbuf_put_mpint(b, buf, (size_t)n);
out:
	BN_free(bn);
	return r;
}

/* The public point, uncompressed, whatever form the key came in. */
static int
ec_point(EVP_PKEY *pk, int c, unsigned char *out, size_t *out_len)
{
	unsigned char raw[EC_POINT_MAX];
	EC_GROUP *g = NULL;
	EC_POINT *pt = NULL;
	size_t len = 0;
	int r = MTLS_ERR_INTERNAL;

	if (EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, raw, sizeof(raw), &len) !=
		1 ||
	    len == 0)
		return MTLS_ERR_INTERNAL;
	if (raw[0] == 0x04) {
		memcpy(out, raw, len);
		*out_len = len;
		return 0;
	}
	if ((g = EC_GROUP_new_by_curve_name(OBJ_sn2nid(curves[c].group))) == NULL ||
	    (pt = EC_POINT_new(g)) == NULL || EC_POINT_oct2point(g, pt, raw, len, NULL) != 1 ||
	    (*out_len = EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, out, EC_POINT_MAX,
					   NULL)) == 0)
		goto out;
	r = 0;
out:
	EC_POINT_free(pt);
	EC_GROUP_free(g);
	return r;
}

int
ssh_key_blob_put(struct wbuf *b, EVP_PKEY *pk)
{
	unsigned char q[EC_POINT_MAX];
	const char *type = ssh_key_type(pk);
	size_t qlen = 0;
	int r, c;

	if (type == NULL)
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	if ((r = wbuf_put_cstring(b, type)) != 0)
		return r;
	if (EVP_PKEY_is_a(pk, "RSA")) {
		if ((r = put_bn(b, pk, OSSL_PKEY_PARAM_RSA_E)) != 0 ||
		    (r = put_bn(b, pk, OSSL_PKEY_PARAM_RSA_N)) != 0)
			return r;
		return 0;
	}
	c = ec_curve(pk);
	if ((r = ec_point(pk, c, q, &qlen)) != 0 ||
	    (r = wbuf_put_cstring(b, curves[c].curve)) != 0 ||
	    (r = wbuf_put_string(b, q, qlen)) != 0)
		return r;
	return 0;
}

int
ssh_sig_blob_put(struct wbuf *b, const char *alg, int ecdsa, const unsigned char *sig, size_t len)
{
	unsigned char rb[EC_POINT_MAX], sb[EC_POINT_MAX];
	const unsigned char *p = sig;
	const BIGNUM *r_bn, *s_bn;
	ECDSA_SIG *es = NULL;
	struct wbuf *inner = NULL;
	int r = MTLS_ERR_INTERNAL, rl, sl;

	if (!ecdsa) {
		if ((r = wbuf_put_cstring(b, alg)) != 0 || (r = wbuf_put_string(b, sig, len)) != 0)
			return r;
		return 0;
	}
	if (len > (size_t)SSH_SIG_BLOB_MAX || (es = d2i_ECDSA_SIG(NULL, &p, (long)len)) == NULL)
		return MTLS_ERR_TOKEN;
	ECDSA_SIG_get0(es, &r_bn, &s_bn);
	if ((rl = BN_num_bytes(r_bn)) > (int)sizeof(rb) ||
	    (sl = BN_num_bytes(s_bn)) > (int)sizeof(sb) || BN_bn2bin(r_bn, rb) != rl ||
	    BN_bn2bin(s_bn, sb) != sl)
		goto out;
	if ((inner = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = wbuf_put_mpint(inner, rb, (size_t)rl)) != 0 ||
	    (r = wbuf_put_mpint(inner, sb, (size_t)sl)) != 0 ||
	    (r = wbuf_put_cstring(b, alg)) != 0 ||
	    (r = wbuf_put_string(b, wbuf_ptr(inner), wbuf_len(inner))) != 0)
		goto out;
	r = 0;
out:
	wbuf_free(inner);
	ECDSA_SIG_free(es);
	return r;
}

int
ssh_fingerprint(const unsigned char *blob, size_t len, char *out, size_t out_len)
{
	unsigned char md[32];
	char b64[48];
	int n;

	if (EVP_Digest(blob, len, md, NULL, EVP_sha256(), NULL) != 1)
		return MTLS_ERR_INTERNAL;
	n = EVP_EncodeBlock((unsigned char *)b64, md, sizeof(md));
	while (n > 0 && b64[n - 1] == '=')
		b64[--n] = '\0';
	if (snprintf(out, out_len, "SHA256:%s", b64) >= (int)out_len)
		return MTLS_ERR_INVALID_ARGUMENT;
	return 0;
}

int
ssh_pubkey_line(const unsigned char *blob, size_t len, const char *comment, char **line)
{
	struct wbuf *b = NULL;
	const unsigned char *type;
	size_t type_len, n;
	char *out = NULL;
	int r = MTLS_ERR_BAD_REQUEST;

	*line = NULL;
	if (len > SSH_KEY_BLOB_MAX || (b = wbuf_from(blob, len)) == NULL)
		return len > SSH_KEY_BLOB_MAX ? MTLS_ERR_INVALID_ARGUMENT : MTLS_ERR_ALLOC;
	if (wbuf_get_string_direct(b, &type, &type_len, SSH_NAME_MAX) != 0 || type_len == 0)
		goto out;
	n = type_len + 1 + 4 * ((len + 2) / 3) + 1 + (comment ? strlen(comment) : 0) + 1;
	if ((out = malloc(n)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	memcpy(out, type, type_len);
	out[type_len] = ' ';
	EVP_EncodeBlock((unsigned char *)out + type_len + 1, blob, (int)len);
	if (comment != NULL && comment[0] != '\0') {
		strcat(out, " ");
		strcat(out, comment);
	}
	*line = out;
	out = NULL;
	r = 0;
out:
	free(out);
	wbuf_free(b);
	return r;
}

/* The public key of algorithm alg ("RSA", "EC") that params describe. */
static int
pkey_from_params(const char *alg, OSSL_PARAM *params, EVP_PKEY **pk)
{
	EVP_PKEY_CTX *ctx;
	int r = MTLS_ERR_INTERNAL;

	if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL)) != NULL &&
	    EVP_PKEY_fromdata_init(ctx) == 1 &&
	    EVP_PKEY_fromdata(ctx, pk, EVP_PKEY_PUBLIC_KEY, params) == 1)
		r = 0;
	EVP_PKEY_CTX_free(ctx);
	return r;
}

/* Helpers of ssh_key_from_blob(): each reads the rest of its blob. */
static int
rsa_from(struct wbuf *b, EVP_PKEY **pk)
{
	const unsigned char *e, *n;
	size_t e_len, n_len;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	BIGNUM *be = NULL, *bn = NULL;
	int r = MTLS_ERR_BAD_REQUEST;

	if (wbuf_get_mpint_direct(b, &e, &e_len, 8) != 0 ||
	    wbuf_get_mpint_direct(b, &n, &n_len, 2048) != 0 || wbuf_expect_end(b) != 0 ||
	    n_len < 128)
		return r;
	r = MTLS_ERR_INTERNAL;
	if ((be = BN_bin2bn(e, (int)e_len, NULL)) == NULL ||
	    (bn = BN_bin2bn(n, (int)n_len, NULL)) == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL ||
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1 ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
		goto out;
	r = pkey_from_params("RSA", params, pk);
out:
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(be);
	BN_free(bn);
	return r;
}

static int
ec_from(struct wbuf *b, int c, EVP_PKEY **pk)
{
	const unsigned char *curve, *q;
	size_t curve_len, q_len;
	OSSL_PARAM params[3];

	if (wbuf_get_string_direct(b, &curve, &curve_len, SSH_NAME_MAX) != 0 ||
	    !ssh_str_eq(curve, curve_len, curves[c].curve) ||
	    wbuf_get_string_direct(b, &q, &q_len, EC_POINT_MAX) != 0 || q_len == 0 ||
	    wbuf_expect_end(b) != 0)
		return MTLS_ERR_BAD_REQUEST;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
						     (char *)curves[c].group, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)q, q_len);
	params[2] = OSSL_PARAM_construct_end();
	/* A point OpenSSL will not take (not on the curve) is the sender's fault. */
	return pkey_from_params("EC", params, pk) == 0 ? 0 : MTLS_ERR_BAD_REQUEST;
}

int
ssh_key_from_blob(const unsigned char *blob, size_t len, EVP_PKEY **pk)
{
	const unsigned char *type, *raw;
	size_t type_len, raw_len, i;
	struct wbuf *b;
	int r = MTLS_ERR_BAD_REQUEST;

	*pk = NULL;
	if ((b = wbuf_from(blob, len)) == NULL)
		return MTLS_ERR_ALLOC;
	if (wbuf_get_string_direct(b, &type, &type_len, SSH_NAME_MAX) != 0)
		goto out;
	if (ssh_str_eq(type, type_len, "ssh-rsa")) {
		r = rsa_from(b, pk);
		goto out;
	}
	if (ssh_str_eq(type, type_len, "ssh-ed25519")) {
		if (wbuf_get_string_direct(b, &raw, &raw_len, 32) != 0 || raw_len != 32 ||
		    wbuf_expect_end(b) != 0)
			goto out;
		*pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, raw_len);
		r = *pk != NULL ? 0 : MTLS_ERR_BAD_REQUEST;
		goto out;
	}
	for (i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (ssh_str_eq(type, type_len, curves[i].ssh)) {
			r = ec_from(b, (int)i, pk);
			goto out;
		}
	r = MTLS_ERR_UNSUPPORTED_SCHEME;
out:
	wbuf_free(b);
	return r;
}

/* string (mpint r, mpint s) as DER ECDSA-Sig-Value, for OpenSSL. */
static int
ecdsa_sig_der(const unsigned char *p, size_t len, unsigned char **der, int *der_len)
{
	const unsigned char *rp, *sp;
	size_t rl, sl;
	struct wbuf *b = NULL;
	ECDSA_SIG *es = NULL;
	BIGNUM *r_bn = NULL, *s_bn = NULL;
	int r = MTLS_ERR_SIGNATURE_INVALID;

	*der = NULL;
	if ((b = wbuf_from(p, len)) == NULL)
		return MTLS_ERR_ALLOC;
	if (wbuf_get_mpint_direct(b, &rp, &rl, 66) != 0 ||
	    wbuf_get_mpint_direct(b, &sp, &sl, 66) != 0 || wbuf_expect_end(b) != 0)
		goto out;
	if ((es = ECDSA_SIG_new()) == NULL || (r_bn = BN_bin2bn(rp, (int)rl, NULL)) == NULL ||
	    (s_bn = BN_bin2bn(sp, (int)sl, NULL)) == NULL || ECDSA_SIG_set0(es, r_bn, s_bn) != 1)
		goto out;
	r_bn = s_bn = NULL;
	if ((*der_len = i2d_ECDSA_SIG(es, der)) <= 0)
		goto out;
	r = 0;
out:
	BN_free(r_bn);
	BN_free(s_bn);
	ECDSA_SIG_free(es);
	wbuf_free(b);
	return r;
}

int
ssh_sig_verify(const unsigned char *key, size_t key_len, const unsigned char *sig, size_t sig_len,
	       const unsigned char *data, size_t data_len)
{
	const unsigned char *alg, *s;
	size_t alg_len, s_len, i;
	unsigned char *der = NULL;
	int der_len = 0, r = MTLS_ERR_SIGNATURE_INVALID;
	const char *md = NULL, *want = NULL;
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *ctx = NULL;
	struct wbuf *b = NULL;
	const char *ktype;

	if ((r = ssh_key_from_blob(key, key_len, &pk)) != 0)
		return r == MTLS_ERR_ALLOC ? r : MTLS_ERR_SIGNATURE_INVALID;
	r = MTLS_ERR_SIGNATURE_INVALID;
	if ((b = wbuf_from(sig, sig_len)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if (wbuf_get_string_direct(b, &alg, &alg_len, SSH_NAME_MAX) != 0 ||
	    wbuf_get_string_direct(b, &s, &s_len, SSH_SIG_BLOB_MAX) != 0 || wbuf_expect_end(b) != 0)
		goto out;
	if (EVP_PKEY_is_a(pk, "RSA")) {
		if (ssh_str_eq(alg, alg_len, "rsa-sha2-256"))
			md = "SHA256";
		else if (ssh_str_eq(alg, alg_len, "rsa-sha2-512"))
			md = "SHA512";
		else
			goto out; /* not SHA-1 ssh-rsa */
	} else if (EVP_PKEY_is_a(pk, "ED25519")) {
		if (!ssh_str_eq(alg, alg_len, "ssh-ed25519"))
			goto out;
	} else {
		ktype = NULL;
		for (i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
			if ((int)i == ec_curve(pk)) {
				ktype = curves[i].ssh;
				want = curves[i].digest;
			}
		if (ktype == NULL || !ssh_str_eq(alg, alg_len, ktype))
			goto out;
		md = want;
		if (ecdsa_sig_der(s, s_len, &der, &der_len) != 0)
			goto out;
		s = der;
		s_len = (size_t)der_len;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit_ex(ctx, NULL, md, NULL, NULL, pk, NULL) != 1)
		goto out;
	if (EVP_DigestVerify(ctx, s, s_len, data, data_len) == 1)
		r = 0;
out:
	OPENSSL_free(der);
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(pk);
	wbuf_free(b);
	return r;
}
