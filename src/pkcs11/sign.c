/*
 * sign.c - mechanisms and signatures.  Each C_Sign is one SIGN request to
 * the agent, which decides and audits; this file only says what the data
 * is:
 *
 *  - hash-and-sign mechanisms (CKM_ECDSA_SHA256, CKM_SHA256_RSA_PKCS_PSS,
 *    ...) get the whole data, sent unchanged with the purpose its form
 *    shows (a TLS 1.3 client CertificateVerify content, else a TLS 1.2
 *    transcript), exactly as the OpenSSL provider does, so the agent's
 *    purpose binding applies;
 *  - the pre-hashed ones (CKM_ECDSA, CKM_RSA_PKCS with a DigestInfo,
 *    CKM_RSA_PKCS_PSS) get a digest nobody can tell the origin of: it goes
 *    as purpose pkcs11-digest, which an identity must allow explicitly.
 *
 * The agent answers ECDSA in DER; PKCS#11 wants r || s.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ecdsa.h>

#include "module.h"
#include "purpose.h"

struct mech {
	CK_MECHANISM_TYPE type;
	int key_type;	 /* MTLS_AGENT_KEY_* */
	size_t hash_len; /* hash-and-sign: the hash; 0 for pre-hashed */
	int pss;
};

static const struct mech mechs[] = {
	{ CKM_ECDSA, MTLS_AGENT_KEY_EC, 0, 0 },
	{ CKM_ECDSA_SHA256, MTLS_AGENT_KEY_EC, 32, 0 },
	{ CKM_ECDSA_SHA384, MTLS_AGENT_KEY_EC, 48, 0 },
	{ CKM_RSA_PKCS, MTLS_AGENT_KEY_RSA, 0, 0 },
	{ CKM_RSA_PKCS_PSS, MTLS_AGENT_KEY_RSA, 0, 1 },
	{ CKM_SHA256_RSA_PKCS, MTLS_AGENT_KEY_RSA, 32, 0 },
	{ CKM_SHA384_RSA_PKCS, MTLS_AGENT_KEY_RSA, 48, 0 },
	{ CKM_SHA512_RSA_PKCS, MTLS_AGENT_KEY_RSA, 64, 0 },
	{ CKM_SHA256_RSA_PKCS_PSS, MTLS_AGENT_KEY_RSA, 32, 1 },
	{ CKM_SHA384_RSA_PKCS_PSS, MTLS_AGENT_KEY_RSA, 48, 1 },
	{ CKM_SHA512_RSA_PKCS_PSS, MTLS_AGENT_KEY_RSA, 64, 1 },
};
#define N_MECHS (sizeof(mechs) / sizeof(mechs[0]))

/* The agent signs ECDSA only with the curve's own hash (its schemes). */
static size_t
ec_hash_len(const struct p11_slot *sl)
{
	return sl->key_bits == 256 ? 32 : sl->key_bits == 384 ? 48 : 0;
}

/* A mechanism this slot's key can do through the agent, or NULL. */
static const struct mech *
mech_for(const struct p11_slot *sl, CK_MECHANISM_TYPE type)
{
	size_t i;

	for (i = 0; i < N_MECHS; i++) {
		if (mechs[i].type != type || mechs[i].key_type != sl->key_type)
			continue;
		if (sl->key_type == MTLS_AGENT_KEY_EC &&
		    (ec_hash_len(sl) == 0 ||
		     (mechs[i].hash_len != 0 && mechs[i].hash_len != ec_hash_len(sl))))
			return NULL;
		return &mechs[i];
	}
	return NULL;
}

CK_RV
p11_mechanisms(const struct p11_slot *sl, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
	CK_ULONG n = 0;
	CK_RV rv = CKR_OK;
	size_t i;

	for (i = 0; i < N_MECHS; i++) {
		if (mech_for(sl, mechs[i].type) == NULL)
			continue;
		if (list != NULL && n < *count)
			list[n] = mechs[i].type;
		n++;
	}
	if (list != NULL && n > *count)
		rv = CKR_BUFFER_TOO_SMALL;
	*count = n;
	return rv;
}

CK_RV
p11_mechanism_info(const struct p11_slot *sl, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
	if (mech_for(sl, type) == NULL)
		return CKR_MECHANISM_INVALID;
	memset(info, 0, sizeof(*info));
	info->ulMinKeySize = sl->key_bits;
	info->ulMaxKeySize = sl->key_bits;
	info->flags = CKF_HW | CKF_SIGN;
	if (sl->key_type == MTLS_AGENT_KEY_EC)
		info->flags |= CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
	return CKR_OK;
}

void
p11_sign_clear(struct p11_sign_op *op)
{
	free(op->buf);
	memset(op, 0, sizeof(*op));
}

static CK_MECHANISM_TYPE
pss_hash(size_t hash_len)
{
	return hash_len == 32 ? CKM_SHA256 : hash_len == 48 ? CKM_SHA384 : CKM_SHA512;
}

static CK_RSA_PKCS_MGF_TYPE
pss_mgf(size_t hash_len)
{
	return hash_len == 32	? CKG_MGF1_SHA256
	       : hash_len == 48 ? CKG_MGF1_SHA384
				: CKG_MGF1_SHA512;
}

/* The agent's PSS: MGF1 with the message hash, salt as long as the hash. */
static CK_RV
pss_check(const struct mech *m, CK_MECHANISM_PTR mech, CK_RSA_PKCS_PSS_PARAMS *out)
{
	CK_RSA_PKCS_PSS_PARAMS p;
	size_t hl;

	if (mech->pParameter == NULL || mech->ulParameterLen != sizeof(p))
		return CKR_MECHANISM_PARAM_INVALID;
	memcpy(&p, mech->pParameter, sizeof(p));
	hl = p.hashAlg == CKM_SHA256   ? 32
	     : p.hashAlg == CKM_SHA384 ? 48
	     : p.hashAlg == CKM_SHA512 ? 64
				       : 0;
	if (hl == 0 || (m->hash_len != 0 && hl != m->hash_len) || p.mgf != pss_mgf(hl) ||
	    p.sLen != hl)
		return CKR_MECHANISM_PARAM_INVALID;
	*out = p;
	return CKR_OK;
}

CK_RV
p11_sign_init(struct p11_session *s, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	const struct mech *m;
	struct p11_slot *sl;
	enum p11_obj_kind kind;
	CK_RV rv;

	if (s->sign.active)
		return CKR_OPERATION_ACTIVE;
	if (p11_object_lookup(s, key, &sl, &kind) != 0)
		return CKR_KEY_HANDLE_INVALID;
	if (kind != OBJ_PRIVKEY)
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	if ((m = mech_for(sl, mech->mechanism)) == NULL)
		return CKR_MECHANISM_INVALID;
	memset(&s->sign, 0, sizeof(s->sign));
	if (m->pss) {
		if ((rv = pss_check(m, mech, &s->sign.pss)) != CKR_OK)
			return rv;
	} else if (mech->pParameter != NULL || mech->ulParameterLen != 0) {
		return CKR_MECHANISM_PARAM_INVALID;
	}
	s->sign.active = 1;
	s->sign.mech = m->type;
	s->sign.key = key;
	return CKR_OK;
}

CK_RV
p11_sign_update(struct p11_session *s, CK_BYTE_PTR data, CK_ULONG len)
{
	struct p11_sign_op *op = &s->sign;
	unsigned char *nb;
	size_t cap;

	if (len == 0)
		return CKR_OK;
	if (len > MTLS_AGENT_CONTENT_MAX || op->len > MTLS_AGENT_CONTENT_MAX - len) {
		p11_sign_clear(op);
		return CKR_DATA_LEN_RANGE;
	}
	if (op->len + len > op->cap) {
		cap = op->cap ? op->cap : 256;
		while (cap < op->len + len)
			cap *= 2;
		if ((nb = realloc(op->buf, cap)) == NULL) {
			p11_sign_clear(op);
			return CKR_HOST_MEMORY;
		}
		op->buf = nb;
		op->cap = cap;
	}
	memcpy(op->buf + op->len, data, len);
	op->len += len;
	return CKR_OK;
}

/* DigestInfo prefixes of RFC 8017 9.2 note 1, for the agent's hashes. */
static const unsigned char di_sha256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
					   0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
					   0x01, 0x05, 0x00, 0x04, 0x20 };
static const unsigned char di_sha384[] = { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60,
					   0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
					   0x02, 0x05, 0x00, 0x04, 0x30 };
static const unsigned char di_sha512[] = { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60,
					   0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
					   0x03, 0x05, 0x00, 0x04, 0x40 };

/*
 * What to ask the agent for: scheme, purpose and content (pointing into
 * op->buf).  Returns CKR_OK or why the data cannot be signed.
 */
static CK_RV
request_for(const struct p11_slot *sl, const struct p11_sign_op *op, uint16_t *scheme, int *purpose,
	    const unsigned char **content, size_t *len)
{
	const struct mech *m = mech_for(sl, op->mech);
	static const struct {
		const unsigned char *prefix;
		size_t hash_len;
	} dis[] = { { di_sha256, 32 }, { di_sha384, 48 }, { di_sha512, 64 } };
	size_t hl = 0, i;

	*content = op->buf;
	*len = op->len;
	if (m == NULL)
		return CKR_MECHANISM_INVALID;
	if (m->hash_len != 0) {
		hl = m->hash_len;
		*purpose = purpose_of_tls_content(op->buf, op->len);
	} else {
		*purpose = MTLS_AGENT_PURPOSE_PKCS11_DIGEST;
		if (m->type == CKM_ECDSA) {
			hl = ec_hash_len(sl);
			if (op->len != hl)
				return CKR_DATA_LEN_RANGE;
		} else if (m->type == CKM_RSA_PKCS_PSS) {
			/* The digest of the hash C_SignInit's parameters named. */
			hl = op->len;
			if ((hl != 32 && hl != 48 && hl != 64) || pss_hash(hl) != op->pss.hashAlg)
				return CKR_DATA_LEN_RANGE;
		} else {
			/* CKM_RSA_PKCS: a DigestInfo of a hash the agent knows. */
			for (i = 0; i < sizeof(dis) / sizeof(dis[0]) && hl == 0; i++)
				if (op->len == 19 + dis[i].hash_len &&
				    memcmp(op->buf, dis[i].prefix, 19) == 0)
					hl = dis[i].hash_len;
			if (hl == 0) {
				p11_log("identity %s: CKM_RSA_PKCS data is not a SHA-256/384/512 "
					"DigestInfo; the agent signs nothing else",
					sl->name);
				return CKR_DATA_INVALID;
			}
			*content = op->buf + 19;
			*len = hl;
		}
	}
	if (sl->key_type == MTLS_AGENT_KEY_EC)
		*scheme = hl == 32 ? MTLS_AGENT_ECDSA_SECP256R1_SHA256
				   : MTLS_AGENT_ECDSA_SECP384R1_SHA384;
	else if (m->pss)
		*scheme = hl == 32   ? MTLS_AGENT_RSA_PSS_RSAE_SHA256
			  : hl == 48 ? MTLS_AGENT_RSA_PSS_RSAE_SHA384
				     : MTLS_AGENT_RSA_PSS_RSAE_SHA512;
	else
		*scheme = hl == 32   ? MTLS_AGENT_RSA_PKCS1_SHA256
			  : hl == 48 ? MTLS_AGENT_RSA_PKCS1_SHA384
				     : MTLS_AGENT_RSA_PKCS1_SHA512;
	return CKR_OK;
}

static size_t
sig_size(const struct p11_slot *sl)
{
	if (sl->key_type == MTLS_AGENT_KEY_RSA)
		return sl->modulus_len;
	return 2 * ((sl->key_bits + 7) / 8);
}

/* DER ECDSA-Sig-Value -> r || s, each `half` bytes. */
static CK_RV
ecdsa_raw(const unsigned char *der, size_t der_len, unsigned char *out, size_t half)
{
	const unsigned char *p = der;
	const BIGNUM *r, *s;
	ECDSA_SIG *es;
	CK_RV rv = CKR_DEVICE_ERROR;

	if ((es = d2i_ECDSA_SIG(NULL, &p, (long)der_len)) == NULL || p != der + der_len)
		goto out;
	ECDSA_SIG_get0(es, &r, &s);
	if (BN_bn2binpad(r, out, (int)half) < 0 || BN_bn2binpad(s, out + half, (int)half) < 0)
		goto out;
	rv = CKR_OK;
out:
	ECDSA_SIG_free(es);
	return rv;
}

CK_RV
p11_sign_final(struct p11_session *s, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len)
{
	struct p11_sign_op *op = &s->sign, taken = { 0 };
	const unsigned char *content;
	unsigned char *out = NULL;
	struct p11_slot *sl;
	enum p11_obj_kind kind;
	size_t need, len, out_len = 0;
	CK_SESSION_HANDLE handle = s->handle;
	unsigned long gen = g_generation;
	mtls_agent *agent = NULL;
	char *name = NULL;
	uint16_t scheme = 0;
	int purpose = 0, key_type, r;
	CK_RV rv;

	if (p11_object_lookup(s, op->key, &sl, &kind) != 0) {
		rv = CKR_KEY_HANDLE_INVALID; /* logged out or gone since C_SignInit */
		goto done;
	}
	need = sig_size(sl);
	/* The size query and a short buffer keep the operation going. */
	if (sig == NULL) {
		*sig_len = need;
		return CKR_OK;
	}
	if (*sig_len < need) {
		*sig_len = need;
		return CKR_BUFFER_TOO_SMALL;
	}
	if ((rv = request_for(sl, op, &scheme, &purpose, &content, &len)) != CKR_OK)
		goto done;
	key_type = sl->key_type;
	if ((name = strdup(sl->name)) == NULL) {
		rv = CKR_HOST_MEMORY;
		goto done;
	}
	if (s->agent == NULL && (r = mtls_agent_connect(NULL, &s->agent)) != 0) {
		p11_log("identity %s: cannot reach the agent: %s", name, mtls_agent_strerror(r));
		rv = p11_rv(r);
		goto done;
	}
	/*
	 * The agent may take long (a confirmation, a PIN pad, a slow token):
	 * the request goes out without the module's lock, so other threads'
	 * sessions go on.  The operation, its data and the session's
	 * connection are this call's until it takes the lock again; the
	 * session may be closed meanwhile.
	 */
	agent = s->agent;
	s->agent = NULL;
	taken = *op;
	memset(op, 0, sizeof(*op));
	pthread_mutex_unlock(&g_lock);
	r = mtls_agent_sign(agent, name, scheme, purpose, content, len, &out, &out_len);
	if (r != 0)
		p11_log("identity %s: the agent refused to sign (%s, %s): %s%s%s", name,
			mtls_agent_scheme_name(scheme), mtls_agent_purpose_name(purpose),
			mtls_agent_strerror(r), *mtls_agent_last_message() ? ": " : "",
			mtls_agent_last_message());
	pthread_mutex_lock(&g_lock);
	if (g.initialized && g_generation == gen && p11_session_get(handle) == s &&
	    s->agent == NULL) {
		s->agent = agent; /* kept for the session's next signature */
		agent = NULL;
	}
	if (r != 0) {
		rv = p11_rv(r);
		goto done;
	}
	if (key_type == MTLS_AGENT_KEY_EC) {
		rv = ecdsa_raw(out, out_len, sig, need / 2);
	} else if (out_len != need) {
		rv = CKR_DEVICE_ERROR;
	} else {
		memcpy(sig, out, out_len);
		rv = CKR_OK;
	}
	if (rv == CKR_OK)
		*sig_len = need;
done:
	mtls_agent_free(agent);
	free(name);
	free(out);
	p11_sign_clear(&taken);
	if (g_generation == gen && p11_session_get(handle) == s)
		p11_sign_clear(op);
	return rv;
}
