/*
 * provider_store.c - the store loader for "mtls-agent:" URIs.
 *
 *	mtls-agent:			every identity of the agent
 *	mtls-agent:NAME			the identity named NAME
 *	mtls-agent:NAME?socket=PATH	... of the agent listening at PATH
 *
 * (percent-escapes such as %2F are decoded; see mtls-agent-provider(7)).
 * For each identity the loader yields the private key, as a reference to a
 * key object that our keymgmt's load() picks up, then the certificate and
 * the chain certificates, as DER.  The agent is asked once, at open().
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>
#include <openssl/store.h>

#include "mtls-agent.h"
#include "provider.h"

struct store_ctx {
	struct prov_ctx *prov;
	char *name;   /* NULL: every identity */
	char *socket; /* NULL: the default socket */
	struct mtls_agent_identity *ids;
	size_t n;
	size_t idx;  /* identity being returned */
	size_t step; /* 0: key, 1: certificate, 2..: chain */
	int expect;  /* OSSL_STORE_INFO_*, 0: anything */
};

static void
store_ctx_free(struct store_ctx *s)
{
	if (s == NULL)
		return;
	mtls_agent_identities_free(s->ids, s->n);
	free(s->name);
	free(s->socket);
	free(s);
}

static void *
store_open(void *provctx, const char *uri)
{
	struct prov_ctx *p = provctx;
	struct store_ctx *s = NULL, *ret = NULL;
	mtls_agent *a = NULL;
	size_t i, found = 0;
	int r;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		goto out;
	s->prov = p;
	if ((r = prov_uri_parse(uri, &s->name, &s->socket)) != 0) {
		PROV_RAISE(p, PROV_R_BAD_URI,
			   "%s (expected " PROV_URI_SCHEME ":[NAME][?socket=PATH])",
			   uri != NULL ? uri : "(null)");
		goto out;
	}
	if ((r = mtls_agent_connect(s->socket, &a)) != 0) {
		PROV_RAISE_AGENT(p, r, s->socket != NULL ? s->socket : "agent socket");
		goto out;
	}
	if ((r = mtls_agent_list(a, &s->ids, &s->n)) != 0) {
		PROV_RAISE_AGENT(p, r, "listing identities");
		goto out;
	}
	for (i = 0; s->name != NULL && i < s->n; i++)
		if (strcmp(s->ids[i].name, s->name) == 0)
			found++;
	if (s->name != NULL && found == 0) {
		PROV_RAISE(p, -MTLS_ERR_NO_IDENTITY, "%s", s->name);
		goto out;
	}
	ret = s;
	s = NULL;
out:
	mtls_agent_free(a);
	store_ctx_free(s);
	return ret;
}

static const OSSL_PARAM *
store_settable_ctx_params(void *provctx)
{
	static const OSSL_PARAM params[] = { OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
					     OSSL_PARAM_END };

	return params;
}

static int
store_set_ctx_params(void *ctx, const OSSL_PARAM params[])
{
	struct store_ctx *s = ctx;
	const OSSL_PARAM *p;

	if (params == NULL)
		return 1;
	if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT)) != NULL &&
	    !OSSL_PARAM_get_int(p, &s->expect))
		return 0;
	/* Other criteria (subject, fingerprint...) are not offered; the
	 * store filters what we return by type itself. */
	return 1;
}

static int
wanted(const struct store_ctx *s, int type)
{
	return s->expect == 0 || s->expect == type;
}

static int
emit_key(struct store_ctx *s, const struct mtls_agent_identity *id, OSSL_CALLBACK *object_cb,
	 void *object_cbarg, int *emitted)
{
	struct agent_key *k;
	OSSL_PARAM params[5];
	int type = OSSL_OBJECT_PKEY, r, ok;

	*emitted = 0;
	if ((k = agent_key_from_identity(s->prov, id, s->socket, &r)) == NULL) {
		/* An identity without a usable certificate has no key we can
		 * describe; the certificate step says why, if it is asked. */
		return 1;
	}
	params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
	params[1] = OSSL_PARAM_construct_utf8_string(
	    OSSL_OBJECT_PARAM_DATA_TYPE, (char *)(k->type == MTLS_AGENT_KEY_RSA ? "RSA" : "EC"), 0);
	/* The reference is the object itself; our keymgmt's load() takes a
	 * reference of its own, the one we made here is dropped below. */
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &k, sizeof(k));
	params[3] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC, id->name, 0);
	params[4] = OSSL_PARAM_construct_end();
	ok = object_cb(params, object_cbarg);
	agent_key_free(k);
	*emitted = 1;
	return ok;
}

static int
emit_cert(struct store_ctx *s, const struct mtls_agent_identity *id, const unsigned char *der,
	  size_t len, OSSL_CALLBACK *object_cb, void *object_cbarg)
{
	OSSL_PARAM params[4];
	int type = OSSL_OBJECT_CERT;

	params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, (void *)der, len);
	params[2] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC, id->name, 0);
	params[3] = OSSL_PARAM_construct_end();
	return object_cb(params, object_cbarg);
}

/* Returns one object per call; 0 with eof() true when there are no more. */
static int
store_load(void *ctx, OSSL_CALLBACK *object_cb, void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb,
	   void *pw_cbarg)
{
	struct store_ctx *s = ctx;
	const struct mtls_agent_identity *id;
	size_t step;
	int emitted;

	while (s->idx < s->n) {
		id = &s->ids[s->idx];
		step = s->step++;
		/* A key enrollment made, with no certificate yet: the key only
		 * (its public key as the agent lists it); an agent from before
		 * lists none, and the key cannot be used. */
		if (s->name != NULL && strcmp(id->name, s->name) == 0 && id->cert_der == NULL &&
		    id->spki_der == NULL && step == 0)
			PROV_RAISE(s->prov, PROV_R_BAD_CERTIFICATE,
				   "%s has no certificate and the agent lists no public key for it",
				   id->name);
		if ((s->name != NULL && strcmp(id->name, s->name) != 0) ||
		    step >= 2 + id->n_chain ||
		    (id->cert_der == NULL && (id->spki_der == NULL || step > 0))) {
			s->idx++;
			s->step = 0;
			continue;
		}
		if (step == 0) {
			if (!wanted(s, OSSL_STORE_INFO_PKEY))
				continue;
			if (!emit_key(s, id, object_cb, object_cbarg, &emitted))
				return 0;
			if (emitted)
				return 1;
			continue;
		}
		if (!wanted(s, OSSL_STORE_INFO_CERT))
			continue;
		if (step == 1)
			return emit_cert(s, id, id->cert_der, id->cert_der_len, object_cb,
					 object_cbarg);
		return emit_cert(s, id, id->chain_der[step - 2], id->chain_der_len[step - 2],
				 object_cb, object_cbarg);
	}
	return 0;
}

static int
store_eof(void *ctx)
{
	struct store_ctx *s = ctx;

	return s->idx >= s->n;
}

static int
store_close(void *ctx)
{
	store_ctx_free(ctx);
	return 1;
}

const OSSL_DISPATCH prov_store_functions[] = {
	{ OSSL_FUNC_STORE_OPEN, (void (*)(void))store_open },
	{ OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))store_settable_ctx_params },
	{ OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))store_set_ctx_params },
	{ OSSL_FUNC_STORE_LOAD, (void (*)(void))store_load },
	{ OSSL_FUNC_STORE_EOF, (void (*)(void))store_eof },
	{ OSSL_FUNC_STORE_CLOSE, (void (*)(void))store_close },
	{ 0, NULL }
};
