/*
 * provider_keymgmt.c - key objects of the mtls-agent provider and their
 * key management.
 *
 * A key is an identity name, the agent socket, and the public key from the
 * identity's certificate.  Everything libssl and libcrypto ask of a key
 * (size, group, modulus, comparison with the certificate, export of the
 * public half) is answered from that public key; the private half is only
 * ever used by the agent, through agent_key_sign().
 *
 * Export refuses any selection with the private key.  That is what makes
 * libcrypto fall back to our own signature implementation: when it first
 * tries another provider's "RSA" signature it exports the key there, and
 * must fail rather than end up with a public-only key it cannot sign with.
 * For the same reason import() refuses private key material.
 *
 * Plain keys (no identity: a certificate's key, a peer's ECDHE share, an
 * ephemeral key libssl generated through us) are ordinary keys held in the
 * default provider; they export whole and copy for real, so libcrypto can
 * move them to the default provider for ECDH (provider_plain.c).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#include "mtls-agent.h"
#include "provider.h"

struct agent_key *
agent_key_new(struct prov_ctx *p, int type)
{
	struct agent_key *k;

	if ((k = calloc(1, sizeof(*k))) == NULL)
		return NULL;
	if (pthread_mutex_init(&k->lock, NULL) != 0) {
		free(k);
		return NULL;
	}
	k->magic = AGENT_KEY_MAGIC;
	k->refs = 1;
	k->prov = p;
	k->type = type;
	return k;
}

int
agent_key_up_ref(struct agent_key *k)
{
	__atomic_add_fetch(&k->refs, 1, __ATOMIC_RELAXED);
	return 1;
}

void
agent_key_free(struct agent_key *k)
{
	size_t i;

	if (k == NULL || __atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (i = 0; i < k->n_pool; i++)
		mtls_agent_free(k->pool[i]);
	pthread_mutex_destroy(&k->lock);
	EVP_PKEY_free(k->pub);
	free(k->identity);
	free(k->socket);
	k->magic = 0;
	free(k);
}

struct agent_key *
agent_key_from_identity(struct prov_ctx *p, const struct mtls_agent_identity *id,
			const char *socket, int *err)
{
	struct agent_key *k = NULL, *ret = NULL;
	X509 *x = NULL;
	const char *want;

	*err = MTLS_ERR_ALLOC;
	if (id->key_type != MTLS_AGENT_KEY_RSA && id->key_type != MTLS_AGENT_KEY_EC) {
		*err = MTLS_ERR_UNSUPPORTED_SCHEME;
		goto out;
	}
	if ((k = agent_key_new(p, id->key_type)) == NULL ||
	    (k->identity = strdup(id->name)) == NULL ||
	    (socket != NULL && (k->socket = strdup(socket)) == NULL))
		goto out;
	/* The public key comes from the certificate the agent offers, or for
	 * a key with no certificate yet from the public key it lists. */
	*err = MTLS_ERR_CERT_INVALID;
	if (id->cert_der == NULL && id->spki_der != NULL) {
		const unsigned char *sp = id->spki_der;

		if ((k->pub = d2i_PUBKEY_ex(NULL, &sp, (long)id->spki_der_len, p->libctx,
					    PROV_INTERNAL_PROPQ)) == NULL ||
		    sp != id->spki_der + id->spki_der_len)
			goto out;
	} else if ((x = prov_cert_from_der(p->libctx, id->cert_der, id->cert_der_len)) == NULL ||
		   (k->pub = X509_get_pubkey(x)) == NULL) {
		goto out;
	}
	want = id->key_type == MTLS_AGENT_KEY_RSA ? "RSA" : "EC";
	if (!EVP_PKEY_is_a(k->pub, want)) {
		*err = MTLS_ERR_UNSUPPORTED_SCHEME;
		goto out;
	}
	k->bits = (unsigned int)EVP_PKEY_get_bits(k->pub);
	*err = 0;
	ret = k;
	k = NULL;
out:
	X509_free(x);
	agent_key_free(k);
	return ret;
}

size_t
agent_key_max_size(const struct agent_key *k)
{
	int n = k->pub != NULL ? EVP_PKEY_get_size(k->pub) : 0;

	return n > 0 ? (size_t)n : 0;
}

/* An idle connection from the pool, or a new one. */
static int
pool_get(struct agent_key *k, mtls_agent **out)
{
	*out = NULL;
	pthread_mutex_lock(&k->lock);
	if (k->n_pool > 0)
		*out = k->pool[--k->n_pool];
	pthread_mutex_unlock(&k->lock);
	if (*out != NULL)
		return 0;
	return mtls_agent_connect(k->socket, out);
}

static void
pool_put(struct agent_key *k, mtls_agent *a)
{
	pthread_mutex_lock(&k->lock);
	if (k->n_pool < AGENT_KEY_POOL_MAX) {
		k->pool[k->n_pool++] = a;
		a = NULL;
	}
	pthread_mutex_unlock(&k->lock);
	mtls_agent_free(a);
}

int
agent_key_sign(struct agent_key *k, uint16_t scheme, int purpose, const unsigned char *content,
	       size_t len, unsigned char **sig, size_t *sig_len)
{
	mtls_agent *a = NULL;
	int r;

	*sig = NULL;
	*sig_len = 0;
	if (k->identity == NULL)
		return MTLS_ERR_NO_IDENTITY;
	/*
	 * Each signature has a connection to itself, so concurrent
	 * handshakes on one SSL_CTX sign in parallel.  A handle that a forked
	 * child inherited reconnects by itself (client.c).
	 */
	if ((r = pool_get(k, &a)) != 0)
		return r;
	r = mtls_agent_sign(a, k->identity, scheme, purpose, content, len, sig, sig_len);
	pool_put(k, a);
	return r;
}

/* ---------------------------------------------------------------------- */
/* key management */

static struct agent_key *
new_key(void *provctx, int type)
{
	return agent_key_new(provctx, type);
}

static void *
rsa_new(void *provctx)
{
	return new_key(provctx, MTLS_AGENT_KEY_RSA);
}

static void *
ec_new(void *provctx)
{
	return new_key(provctx, MTLS_AGENT_KEY_EC);
}

static void
key_free(void *keydata)
{
	agent_key_free(keydata);
}

/*
 * The reference is a pointer to a key object the store made (see
 * provider_store.c); the caller holds it while we take our own.
 */
static void *
key_load(const void *reference, size_t reference_sz, int type)
{
	struct agent_key *k;

	if (reference == NULL || reference_sz != sizeof(k))
		return NULL;
	memcpy(&k, reference, sizeof(k));
	if (k == NULL || k->magic != AGENT_KEY_MAGIC || k->type != type)
		return NULL;
	agent_key_up_ref(k);
	return k;
}

static void *
rsa_load(const void *reference, size_t reference_sz)
{
	return key_load(reference, reference_sz, MTLS_AGENT_KEY_RSA);
}

static void *
ec_load(const void *reference, size_t reference_sz)
{
	return key_load(reference, reference_sz, MTLS_AGENT_KEY_EC);
}

static int
key_has(const void *keydata, int selection)
{
	const struct agent_key *k = keydata;

	if (k == NULL)
		return 0;
	if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 && k->pub == NULL)
		return 0;
	/* The private half is the agent's: "present" when an identity is. */
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && k->identity == NULL &&
	    !k->plain_private)
		return 0;
	/* EC domain parameters come with the public key; RSA has none. */
	if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0 && k->type == MTLS_AGENT_KEY_EC &&
	    k->pub == NULL)
		return 0;
	return 1;
}

static int
key_match(const void *keydata1, const void *keydata2, int selection)
{
	const struct agent_key *a = keydata1, *b = keydata2;

	if (a == NULL || b == NULL || a->type != b->type || a->pub == NULL || b->pub == NULL)
		return 0;
	/* A key pair matches when the public halves do: the private half of
	 * an agent key is, by definition, the one of its certificate. */
	if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0)
		return EVP_PKEY_eq(a->pub, b->pub) == 1;
	if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0)
		return EVP_PKEY_parameters_eq(a->pub, b->pub) == 1 || a->type == MTLS_AGENT_KEY_RSA;
	return 1;
}

static const OSSL_PARAM *
rsa_gettable_params(void *provctx)
{
	static const OSSL_PARAM params[] = { OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
					     OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
					     OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
					     OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST,
								    NULL, 0),
					     OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
					     OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
					     OSSL_PARAM_END };

	return params;
}

static const OSSL_PARAM *
ec_gettable_params(void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
		OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
		OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
		OSSL_PARAM_END
	};

	return params;
}

/* The digest the agent pairs with this key in TLS 1.3. */
static const char *
default_digest(const struct agent_key *k)
{
	if (k->type == MTLS_AGENT_KEY_EC && k->bits == 384)
		return "SHA384";
	return "SHA256";
}

static int
key_get_params(void *keydata, OSSL_PARAM params[])
{
	struct agent_key *k = keydata;
	OSSL_PARAM *q;

	if (k == NULL || k->pub == NULL)
		return 0;
	/* Everything public is the certificate key's business. */
	if (!EVP_PKEY_get_params(k->pub, params))
		return 0;
	if ((q = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST)) != NULL &&
	    !OSSL_PARAM_set_utf8_string(q, default_digest(k)))
		return 0;
	return 1;
}

static const OSSL_PARAM rsa_public_types[] = { OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
					       OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
					       OSSL_PARAM_END };

static const OSSL_PARAM ec_public_types[] = {
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0), OSSL_PARAM_END
};

static const OSSL_PARAM ec_param_types[] = {
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0), OSSL_PARAM_END
};

static const OSSL_PARAM no_types[] = { OSSL_PARAM_END };

static const OSSL_PARAM *
rsa_types(int selection)
{
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0)
		return no_types;
	if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0)
		return rsa_public_types;
	return no_types;
}

static const OSSL_PARAM *
ec_types(int selection)
{
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0)
		return no_types;
	if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0)
		return ec_public_types;
	if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0)
		return ec_param_types;
	return no_types;
}

static int
key_import(void *keydata, int selection, const OSSL_PARAM params[])
{
	struct agent_key *k = keydata;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	int ok = 0, sel = EVP_PKEY_PUBLIC_KEY;

	if (k == NULL || k->pub != NULL || k->identity != NULL)
		return 0;
	/* EC parameters alone: EVP_PKEY_copy_parameters() for a key share. */
	if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) == 0) {
		if (k->type != MTLS_AGENT_KEY_EC ||
		    (selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) == 0)
			return 0;
		sel = EVP_PKEY_KEY_PARAMETERS;
	}
	/* Private key material has no business here (see the top). */
	if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != NULL ||
	    OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL)
		return 0;
	if ((ctx = EVP_PKEY_CTX_new_from_name(k->prov->libctx,
					      k->type == MTLS_AGENT_KEY_RSA ? "RSA" : "EC",
					      PROV_INTERNAL_PROPQ)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, sel, (OSSL_PARAM *)params) <= 0)
		goto out;
	k->pub = pkey;
	k->bits = (unsigned int)EVP_PKEY_get_bits(pkey);
	pkey = NULL;
	ok = 1;
out:
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static int
key_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
	struct agent_key *k = keydata;
	OSSL_PARAM *params = NULL;
	int ok;

	if (k != NULL && k->identity == NULL)
		return prov_plain_export(k, selection, cb, cbarg);
	if (k == NULL || k->pub == NULL || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0)
		return 0;
	if (!EVP_PKEY_todata(k->pub,
			     (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0
				 ? EVP_PKEY_PUBLIC_KEY
				 : EVP_PKEY_KEY_PARAMETERS,
			     &params))
		return 0;
	ok = cb(params, cbarg);
	OSSL_PARAM_free(params);
	return ok;
}

static const char *
rsa_query_operation_name(int operation_id)
{
	return operation_id == OSSL_OP_SIGNATURE ? "RSA" : NULL;
}

static const char *
ec_query_operation_name(int operation_id)
{
	/* No ECDH here: libcrypto takes the default provider's, exporting
	 * the (plain) keys there. */
	if (operation_id == OSSL_OP_KEYEXCH)
		return "ECDH";
	return operation_id == OSSL_OP_SIGNATURE ? "ECDSA" : NULL;
}

/* Agent keys never change once made, so a copy can be a reference; a
 * plain key's point can be set, so its copy is a real one. */
static void *
key_dup(const void *keydata, int selection)
{
	struct agent_key *k = (struct agent_key *)keydata;

	if (k == NULL)
		return NULL;
	if (k->identity == NULL && k->pub != NULL)
		return prov_plain_dup(k, selection);
	agent_key_up_ref(k);
	return k;
}

#define KEYMGMT_FUNCTIONS(t)                                                                       \
	{ OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))t##_new },                                        \
	    { OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))key_free },                                  \
	    { OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))t##_load },                                  \
	    { OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))key_has },                                    \
	    { OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))key_match },                                \
	    { OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))key_get_params },                      \
	    { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))t##_gettable_params },            \
	    { OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))key_import },                              \
	    { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))t##_types },                         \
	    { OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))key_export },                              \
	    { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))t##_types },                         \
	    { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))t##_query_operation_name },  \
	    { OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))key_dup },                                    \
	{                                                                                          \
		0, NULL                                                                            \
	}

const OSSL_DISPATCH prov_rsa_keymgmt_functions[] = { KEYMGMT_FUNCTIONS(rsa) };
/* EC also generates and takes a peer's point, for plain keys only. */
const OSSL_DISPATCH prov_ec_keymgmt_functions[] = {
	{ OSSL_FUNC_KEYMGMT_GEN_INIT, (void (*)(void))prov_ec_gen_init },
	{ OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, (void (*)(void))prov_ec_gen_set_template },
	{ OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, (void (*)(void))prov_ec_gen_set_params },
	{ OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, (void (*)(void))prov_ec_gen_settable_params },
	{ OSSL_FUNC_KEYMGMT_GEN, (void (*)(void))prov_ec_gen },
	{ OSSL_FUNC_KEYMGMT_GEN_CLEANUP, (void (*)(void))prov_ec_gen_cleanup },
	{ OSSL_FUNC_KEYMGMT_SET_PARAMS, (void (*)(void))prov_ec_set_params },
	{ OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, (void (*)(void))prov_ec_settable_params },
	KEYMGMT_FUNCTIONS(ec)
};
