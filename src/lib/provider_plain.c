/*
 * provider_plain.c - plain EC keys (no agent identity) in the mtls-agent
 * provider: what libssl needs of "EC" key management when this provider
 * is loaded before the default one.
 *
 * libssl fetches the "EC" key management with no property query, and gets
 * ours when we are loaded first (-provider mtls-agent -provider default).
 * It then drops every EC group the default provider offers (its TLS-GROUP
 * check wants the keymgmt of the group's own provider), so a TLS 1.2
 * ClientHello carries no P-256/P-384/P-521 and an ECDSA server answers
 * "no shared cipher"; and it makes its ephemeral ECDHE keys with our
 * keymgmt.  So, only for keys without an agent identity:
 *
 * - the EC groups are offered as our TLS-GROUP capability too (libssl
 *   keeps whichever provider's copy matches the keymgmt it fetches);
 * - key generation (parameters, key pairs) is done by the default
 *   provider in our private library context, the key kept in k->pub;
 * - the encoded public key of a peer's share can be set;
 * - ECDH is left to the default provider: our keymgmt names "ECDH" for key
 *   exchange and exports plain keys whole (private half included), so
 *   libcrypto moves them there.
 *
 * Keys with an identity are untouched: their private half stays with the
 * agent and is never exported (provider_keymgmt.c).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/prov_ssl.h>

#include "mtls-agent.h"
#include "provider.h"

/* ---------------------------------------------------------------------- */
/* TLS-GROUP capability: the EC groups of libssl's default list */

struct tls_group {
	const char *name;     /* IANA name */
	const char *internal; /* OpenSSL's curve name */
	unsigned int id;      /* TLS NamedGroup */
	unsigned int secbits;
};

static const struct tls_group ec_groups[] = {
	{ "secp256r1", "prime256v1", 23, 128 },
	{ "secp384r1", "secp384r1", 24, 192 },
	{ "secp521r1", "secp521r1", 25, 256 },
};

static int
group_capability(const struct tls_group *g, OSSL_CALLBACK *cb, void *arg)
{
	static char alg[] = "EC";
	unsigned int id = g->id, secbits = g->secbits;
	int min_tls = TLS1_VERSION, max_tls = 0, min_dtls = DTLS1_VERSION, max_dtls = 0;
	OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME, (char *)g->name, 0),
		OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME_INTERNAL, (char *)g->internal,
				       0),
		OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_ALG, alg, sizeof(alg)),
		OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_ID, &id),
		OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_SECURITY_BITS, &secbits),
		OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_TLS, &min_tls),
		OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_TLS, &max_tls),
		OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_DTLS, &min_dtls),
		OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_DTLS, &max_dtls),
		OSSL_PARAM_END
	};

	params[0].data_size = strlen(g->name) + 1;
	params[1].data_size = strlen(g->internal) + 1;
	return cb(params, arg);
}

int
prov_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg)
{
	size_t i;

	(void)provctx;
	if (capability == NULL || strcasecmp(capability, "TLS-GROUP") != 0)
		return 0;
	for (i = 0; i < sizeof(ec_groups) / sizeof(ec_groups[0]); i++)
		if (!group_capability(&ec_groups[i], cb, arg))
			return 0;
	return 1;
}

/* ---------------------------------------------------------------------- */
/* generation, done by the default provider in our library context */

struct plain_gen {
	struct prov_ctx *prov;
	int selection;
	char group[64];
};

void *
prov_ec_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
	struct plain_gen *g;

	if ((selection & (OSSL_KEYMGMT_SELECT_KEYPAIR | OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS)) ==
	    0)
		return NULL;
	if ((g = calloc(1, sizeof(*g))) == NULL)
		return NULL;
	g->prov = provctx;
	g->selection = selection;
	if (!prov_ec_gen_set_params(g, params)) {
		free(g);
		return NULL;
	}
	return g;
}

int
prov_ec_gen_set_params(void *genctx, const OSSL_PARAM params[])
{
	struct plain_gen *g = genctx;
	const OSSL_PARAM *p;
	char *q;

	if (g == NULL)
		return 0;
	if (params == NULL)
		return 1;
	if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME)) != NULL) {
		q = g->group;
		if (!OSSL_PARAM_get_utf8_string(p, &q, sizeof(g->group)))
			return 0;
	}
	return 1;
}

const OSSL_PARAM *
prov_ec_gen_settable_params(void *genctx, void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0), OSSL_PARAM_END
	};

	(void)genctx;
	(void)provctx;
	return params;
}

/* The group of a template key (EVP_PKEY_keygen from parameters). */
int
prov_ec_gen_set_template(void *genctx, void *templ)
{
	struct plain_gen *g = genctx;
	const struct agent_key *t = templ;
	size_t len = 0;

	if (g == NULL || t == NULL || t->pub == NULL || t->type != MTLS_AGENT_KEY_EC)
		return 0;
	return EVP_PKEY_get_utf8_string_param(t->pub, OSSL_PKEY_PARAM_GROUP_NAME, g->group,
					      sizeof(g->group), &len);
}

void *
prov_ec_gen(void *genctx, OSSL_CALLBACK *cb, void *cbarg)
{
	struct plain_gen *g = genctx;
	struct agent_key *k = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM params[2];
	int keypair;

	(void)cb;
	(void)cbarg;
	if (g == NULL || g->group[0] == '\0')
		return NULL;
	keypair = (g->selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, g->group, 0);
	params[1] = OSSL_PARAM_construct_end();
	if ((ctx = EVP_PKEY_CTX_new_from_name(g->prov->libctx, "EC", PROV_INTERNAL_PROPQ)) ==
		NULL ||
	    (keypair ? EVP_PKEY_keygen_init(ctx) : EVP_PKEY_paramgen_init(ctx)) <= 0 ||
	    !EVP_PKEY_CTX_set_params(ctx, params) || EVP_PKEY_generate(ctx, &pkey) <= 0)
		goto out;
	if ((k = agent_key_new(g->prov, MTLS_AGENT_KEY_EC)) == NULL)
		goto out;
	k->pub = pkey;
	k->bits = (unsigned int)EVP_PKEY_get_bits(pkey);
	k->plain_private = keypair;
	pkey = NULL;
out:
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	return k;
}

void
prov_ec_gen_cleanup(void *genctx)
{
	free(genctx);
}

/* ---------------------------------------------------------------------- */
/* plain keys: settable public point, whole copies */

/* A peer's key share: EVP_PKEY_set1_encoded_public_key on parameters. */
int
prov_ec_set_params(void *keydata, const OSSL_PARAM params[])
{
	struct agent_key *k = keydata;

	if (k == NULL || k->pub == NULL || k->identity != NULL)
		return 0;
	if (params == NULL ||
	    OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY) == NULL)
		return 1;
	if (!EVP_PKEY_set_params(k->pub, (OSSL_PARAM *)params))
		return 0;
	k->bits = (unsigned int)EVP_PKEY_get_bits(k->pub);
	return 1;
}

const OSSL_PARAM *
prov_ec_settable_params(void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0), OSSL_PARAM_END
	};

	(void)provctx;
	return params;
}

/* The EVP_PKEY_todata/fromdata selection for a keymgmt selection. */
static int
evp_selection(const struct agent_key *k, int selection)
{
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && k->plain_private)
		return EVP_PKEY_KEYPAIR;
	if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0)
		return EVP_PKEY_PUBLIC_KEY;
	return EVP_PKEY_KEY_PARAMETERS;
}

int
prov_plain_export(const struct agent_key *k, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
	OSSL_PARAM *params = NULL;
	int ok;

	if (k == NULL || k->pub == NULL || k->identity != NULL)
		return 0;
	if (!EVP_PKEY_todata(k->pub, evp_selection(k, selection), &params))
		return 0;
	ok = cb(params, cbarg);
	OSSL_PARAM_free(params);
	return ok;
}

/*
 * A copy that may change on its own (a plain key's point can be set), of
 * the parts `selection` names: a copy of only the parameters must not
 * carry the original's private half.
 */
struct agent_key *
prov_plain_dup(const struct agent_key *k, int selection)
{
	struct agent_key *c = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	int sel = evp_selection(k, selection);

	if (!EVP_PKEY_todata(k->pub, sel, &params) ||
	    (ctx = EVP_PKEY_CTX_new_from_pkey(k->prov->libctx, k->pub, PROV_INTERNAL_PROPQ)) ==
		NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 || EVP_PKEY_fromdata(ctx, &pkey, sel, params) <= 0)
		goto out;
	if ((c = agent_key_new(k->prov, k->type)) == NULL)
		goto out;
	c->pub = pkey;
	c->bits = (unsigned int)EVP_PKEY_get_bits(pkey);
	c->plain_private = sel == EVP_PKEY_KEYPAIR;
	pkey = NULL;
out:
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return c;
}
