/*
 * objects.c - the three objects of an identity's token: its certificate,
 * the public key and the private key.  All attribute values come from the
 * certificate the agent lists (parsed with OpenSSL); the private key object
 * only says what the key can do: sign, never be read.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "module.h"

void
p11_slot_clear(struct p11_slot *sl)
{
	free(sl->name);
	free(sl->id);
	free(sl->cert);
	free(sl->subject);
	free(sl->issuer);
	free(sl->serial);
	free(sl->spki);
	free(sl->modulus);
	free(sl->exponent);
	free(sl->ec_params);
	free(sl->ec_point);
	memset(sl, 0, sizeof(*sl));
}

static int
dup_bytes(unsigned char **dst, size_t *dst_len, const unsigned char *src, size_t len)
{
	*dst = NULL;
	*dst_len = 0;
	if ((*dst = malloc(len > 0 ? len : 1)) == NULL)
		return MTLS_ERR_ALLOC;
	if (len > 0)
		memcpy(*dst, src, len);
	*dst_len = len;
	return 0;
}

/* i2d of anything into a malloc'd buffer. */
#define I2D(fn, obj, dst, dst_len)                                                                 \
	do {                                                                                       \
		unsigned char *p_ = NULL;                                                          \
		int n_ = fn(obj, &p_);                                                             \
		if (n_ <= 0)                                                                       \
			goto out;                                                                  \
		r = dup_bytes(dst, dst_len, p_, (size_t)n_);                                       \
		OPENSSL_free(p_);                                                                  \
		if (r != 0)                                                                        \
			goto out;                                                                  \
		r = MTLS_ERR_CERT_INVALID;                                                         \
	} while (0)

static int
bn_param(const EVP_PKEY *pk, const char *name, unsigned char **dst, size_t *dst_len)
{
	BIGNUM *bn = NULL;
	int r = MTLS_ERR_CERT_INVALID, n;

	if (EVP_PKEY_get_bn_param(pk, name, &bn) != 1)
		goto out;
	n = BN_num_bytes(bn);
	if ((*dst = malloc(n > 0 ? (size_t)n : 1)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	*dst_len = (size_t)BN_bn2bin(bn, *dst);
	r = 0;
out:
	BN_free(bn);
	return r;
}

/* CKA_EC_PARAMS (the curve's OID) and CKA_EC_POINT (DER OCTET STRING). */
static int
ec_params(const EVP_PKEY *pk, struct p11_slot *sl)
{
	unsigned char point[256];
	char group[64];
	ASN1_OCTET_STRING *os = NULL;
	ASN1_OBJECT *oid = NULL;
	size_t point_len = 0;
	int r = MTLS_ERR_CERT_INVALID, nid;

	if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					   NULL) != 1 ||
	    (nid = OBJ_txt2nid(group)) == NID_undef || (oid = OBJ_nid2obj(nid)) == NULL)
		goto out;
	I2D(i2d_ASN1_OBJECT, oid, &sl->ec_params, &sl->ec_params_len);
	if (EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
					    sizeof(point), &point_len) != 1 ||
	    (os = ASN1_OCTET_STRING_new()) == NULL ||
	    ASN1_OCTET_STRING_set(os, point, (int)point_len) != 1)
		goto out;
	I2D(i2d_ASN1_OCTET_STRING, os, &sl->ec_point, &sl->ec_point_len);
	r = 0;
out:
	ASN1_OCTET_STRING_free(os);
	ASN1_OBJECT_free(oid);
	return r;
}

/* Everything the objects show, from the certificate. */
static int
slot_from_cert(struct p11_slot *sl)
{
	const unsigned char *p = sl->cert;
	unsigned char md[SHA256_DIGEST_LENGTH];
	EVP_PKEY *pk;
	X509 *x = NULL;
	size_t i;
	int r = MTLS_ERR_CERT_INVALID;

	if ((x = d2i_X509(NULL, &p, (long)sl->cert_len)) == NULL || p != sl->cert + sl->cert_len ||
	    (pk = X509_get0_pubkey(x)) == NULL)
		goto out;
	I2D(i2d_X509_NAME, X509_get_subject_name(x), &sl->subject, &sl->subject_len);
	I2D(i2d_X509_NAME, X509_get_issuer_name(x), &sl->issuer, &sl->issuer_len);
	I2D(i2d_ASN1_INTEGER, X509_get0_serialNumber(x), &sl->serial, &sl->serial_len);
	I2D(i2d_PUBKEY, pk, &sl->spki, &sl->spki_len);
	if (sl->key_type == MTLS_AGENT_KEY_RSA && EVP_PKEY_is_a(pk, "RSA")) {
		if ((r = bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &sl->modulus, &sl->modulus_len)) !=
			0 ||
		    (r = bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &sl->exponent, &sl->exponent_len)) !=
			0)
			goto out;
	} else if (sl->key_type == MTLS_AGENT_KEY_EC && EVP_PKEY_is_a(pk, "EC")) {
		if ((r = ec_params(pk, sl)) != 0)
			goto out;
	} else {
		r = MTLS_ERR_CERT_INVALID; /* the agent says one key type, the cert another */
		goto out;
	}
	/* The token serial: the start of the certificate's SHA-256. */
	SHA256(sl->cert, sl->cert_len, md);
	for (i = 0; i < 8; i++)
		snprintf(sl->serial_hex + 2 * i, 3, "%02x", md[i]);
	r = 0;
out:
	X509_free(x);
	return r;
}

int
p11_slot_fill(struct p11_slot *sl, const struct mtls_agent_identity *id)
{
	struct p11_slot n = { 0 };
	int r;

	/* Unchanged certificate: only the flags move. */
	if (sl->name != NULL && sl->cert_len == id->cert_der_len &&
	    memcmp(sl->cert, id->cert_der, id->cert_der_len) == 0) {
		sl->listed = 1;
		sl->flags = id->flags;
		sl->purposes = id->purposes;
		return 0;
	}
	n.listed = 1;
	n.flags = id->flags;
	n.purposes = id->purposes;
	n.key_type = id->key_type;
	n.key_bits = id->key_bits;
	if ((n.name = strdup(id->name)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = dup_bytes(&n.cert, &n.cert_len, id->cert_der, id->cert_der_len)) != 0)
		goto out;
	if (id->key_id_len > 0)
		r = dup_bytes(&n.id, &n.id_len, id->key_id, id->key_id_len);
	else /* no CKA_ID on the token: one derived from the identity's name */
		r = dup_bytes(&n.id, &n.id_len, (const unsigned char *)id->name, strlen(id->name));
	if (r != 0 || (r = slot_from_cert(&n)) != 0)
		goto out;
	p11_slot_clear(sl);
	*sl = n;
	memset(&n, 0, sizeof(n));
out:
	p11_slot_clear(&n);
	return r;
}

/* --- handles ---------------------------------------------------------------- */

static CK_OBJECT_HANDLE
handle_of(CK_SLOT_ID slot, enum p11_obj_kind kind)
{
	return (CK_OBJECT_HANDLE)((slot + 1) * 4 + kind);
}

/* The private key is a private object: visible once the identity may sign. */
static int
visible(const struct p11_slot *sl, enum p11_obj_kind kind)
{
	if (!sl->listed || !(sl->flags & MTLS_AGENT_ID_TOKEN_PRESENT))
		return 0;
	return kind != OBJ_PRIVKEY || p11_slot_logged_in(sl);
}

int
p11_object_lookup(const struct p11_session *s, CK_OBJECT_HANDLE h, struct p11_slot **slp,
		  enum p11_obj_kind *kind)
{
	struct p11_slot *sl = p11_session_slot(s);
	int k = (int)(h % 4);

	*slp = NULL;
	if (sl == NULL || h < 4 || h / 4 - 1 != s->slot || k < OBJ_CERT || k > OBJ_PRIVKEY ||
	    !visible(sl, (enum p11_obj_kind)k))
		return -1;
	*slp = sl;
	*kind = (enum p11_obj_kind)k;
	return 0;
}

/* --- attributes --------------------------------------------------------------- */

/*
 * One attribute's value: val and len, or 0 with *sensitive set for what the
 * key never shows, or -1 for an attribute the object does not have.
 */
struct attr_val {
	const void *val;
	size_t len;
	CK_BBOOL b;
	CK_ULONG ul;
	int sensitive;
};

#define BOOL_ATTR(v)                                                                               \
	do {                                                                                       \
		a->b = (v);                                                                        \
		a->val = &a->b;                                                                    \
		a->len = sizeof(a->b);                                                             \
		return 0;                                                                          \
	} while (0)
#define ULONG_ATTR(v)                                                                              \
	do {                                                                                       \
		a->ul = (v);                                                                       \
		a->val = &a->ul;                                                                   \
		a->len = sizeof(a->ul);                                                            \
		return 0;                                                                          \
	} while (0)
#define BYTES_ATTR(p, n)                                                                           \
	do {                                                                                       \
		a->val = (p);                                                                      \
		a->len = (n);                                                                      \
		return 0;                                                                          \
	} while (0)

static int
key_attr(const struct p11_slot *sl, CK_ATTRIBUTE_TYPE t, struct attr_val *a)
{
	int rsa = sl->key_type == MTLS_AGENT_KEY_RSA;

	switch (t) {
	case CKA_KEY_TYPE: ULONG_ATTR(rsa ? CKK_RSA : CKK_EC);
	case CKA_SUBJECT: BYTES_ATTR(sl->subject, sl->subject_len);
	case CKA_LOCAL: BOOL_ATTR(CK_FALSE);
	case CKA_DERIVE: BOOL_ATTR(CK_FALSE);
	case CKA_START_DATE:
	case CKA_END_DATE: BYTES_ATTR("", 0);
	case CKA_KEY_GEN_MECHANISM: ULONG_ATTR(CK_UNAVAILABLE_INFORMATION);
	case CKA_PUBLIC_KEY_INFO: BYTES_ATTR(sl->spki, sl->spki_len);
	case CKA_MODULUS:
		if (rsa)
			BYTES_ATTR(sl->modulus, sl->modulus_len);
		return -1;
	case CKA_MODULUS_BITS:
		if (rsa)
			ULONG_ATTR(sl->key_bits);
		return -1;
	case CKA_PUBLIC_EXPONENT:
		if (rsa)
			BYTES_ATTR(sl->exponent, sl->exponent_len);
		return -1;
	case CKA_EC_PARAMS:
		if (!rsa)
			BYTES_ATTR(sl->ec_params, sl->ec_params_len);
		return -1;
	case CKA_EC_POINT:
		if (!rsa)
			BYTES_ATTR(sl->ec_point, sl->ec_point_len);
		return -1;
	}
	return -1;
}

static int
attr_of(const struct p11_slot *sl, enum p11_obj_kind kind, CK_ATTRIBUTE_TYPE t, struct attr_val *a)
{
	memset(a, 0, sizeof(*a));
	switch (t) {
	case CKA_CLASS:
		ULONG_ATTR(kind == OBJ_CERT	? CKO_CERTIFICATE
			   : kind == OBJ_PUBKEY ? CKO_PUBLIC_KEY
						: CKO_PRIVATE_KEY);
	case CKA_TOKEN: BOOL_ATTR(CK_TRUE);
	case CKA_PRIVATE: BOOL_ATTR(kind == OBJ_PRIVKEY);
	case CKA_MODIFIABLE: BOOL_ATTR(CK_FALSE);
	case CKA_COPYABLE: BOOL_ATTR(CK_FALSE);
	case CKA_DESTROYABLE: BOOL_ATTR(CK_FALSE);
	case CKA_LABEL: BYTES_ATTR(sl->name, strlen(sl->name));
	case CKA_ID: BYTES_ATTR(sl->id, sl->id_len);
	}
	if (kind == OBJ_CERT) {
		switch (t) {
		case CKA_CERTIFICATE_TYPE: ULONG_ATTR(CKC_X_509);
		case CKA_CERTIFICATE_CATEGORY: ULONG_ATTR(1); /* token user */
		case CKA_TRUSTED: BOOL_ATTR(CK_FALSE);
		case CKA_VALUE: BYTES_ATTR(sl->cert, sl->cert_len);
		case CKA_SUBJECT: BYTES_ATTR(sl->subject, sl->subject_len);
		case CKA_ISSUER: BYTES_ATTR(sl->issuer, sl->issuer_len);
		case CKA_SERIAL_NUMBER: BYTES_ATTR(sl->serial, sl->serial_len);
		case CKA_PUBLIC_KEY_INFO: BYTES_ATTR(sl->spki, sl->spki_len);
		case CKA_JAVA_MIDP_SECURITY_DOMAIN: ULONG_ATTR(0);
		}
		return -1;
	}
	if (kind == OBJ_PUBKEY) {
		switch (t) {
		case CKA_VERIFY: BOOL_ATTR(CK_TRUE);
		case CKA_ENCRYPT:
		case CKA_WRAP:
		case CKA_VERIFY_RECOVER: BOOL_ATTR(CK_FALSE);
		case CKA_TRUSTED: BOOL_ATTR(CK_FALSE);
		}
		return key_attr(sl, t, a);
	}
	switch (t) {
	case CKA_SIGN: BOOL_ATTR(CK_TRUE);
	case CKA_SENSITIVE:
	case CKA_ALWAYS_SENSITIVE:
	case CKA_NEVER_EXTRACTABLE: BOOL_ATTR(CK_TRUE);
	case CKA_EXTRACTABLE:
	case CKA_DECRYPT:
	case CKA_UNWRAP:
	case CKA_SIGN_RECOVER:
	case CKA_WRAP_WITH_TRUSTED:
	case CKA_ALWAYS_AUTHENTICATE: BOOL_ATTR(CK_FALSE);
	case CKA_PRIVATE_EXPONENT:
	case CKA_PRIME_1:
	case CKA_PRIME_2:
	case CKA_EXPONENT_1:
	case CKA_EXPONENT_2:
	case CKA_COEFFICIENT:
	case CKA_VALUE: a->sensitive = 1; return 0;
	}
	return key_attr(sl, t, a);
}

CK_RV
p11_get_attributes(struct p11_slot *sl, enum p11_obj_kind kind, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	struct attr_val a;
	CK_RV rv = CKR_OK;
	CK_ULONG i;

	for (i = 0; i < n; i++) {
		if (attr_of(sl, kind, tmpl[i].type, &a) != 0) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_ATTRIBUTE_TYPE_INVALID;
		} else if (a.sensitive) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_ATTRIBUTE_SENSITIVE;
		} else if (tmpl[i].pValue == NULL) {
			tmpl[i].ulValueLen = a.len;
		} else if (tmpl[i].ulValueLen < a.len) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_BUFFER_TOO_SMALL;
		} else {
			if (a.len > 0)
				memcpy(tmpl[i].pValue, a.val, a.len);
			tmpl[i].ulValueLen = a.len;
		}
	}
	return rv;
}

/* --- C_FindObjectsInit ------------------------------------------------------ */

static int
matches(const struct p11_slot *sl, enum p11_obj_kind kind, const CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	struct attr_val a;
	CK_ULONG i;

	for (i = 0; i < n; i++) {
		if (attr_of(sl, kind, tmpl[i].type, &a) != 0 || a.sensitive ||
		    a.len != tmpl[i].ulValueLen ||
		    (a.len > 0 && memcmp(a.val, tmpl[i].pValue, a.len) != 0))
			return 0;
	}
	return 1;
}

CK_RV
p11_find_init(struct p11_session *s, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
	struct p11_slot *sl = p11_session_slot(s);
	CK_ULONG i;
	int k;

	for (i = 0; i < n; i++)
		if (tmpl[i].pValue == NULL && tmpl[i].ulValueLen != 0)
			return CKR_ARGUMENTS_BAD;
	s->n_found = s->next_found = 0;
	for (k = OBJ_CERT; sl != NULL && k <= OBJ_PRIVKEY; k++)
		if (visible(sl, (enum p11_obj_kind)k) && matches(sl, (enum p11_obj_kind)k, tmpl, n))
			s->found[s->n_found++] = handle_of(s->slot, (enum p11_obj_kind)k);
	s->finding = 1;
	return CKR_OK;
}
