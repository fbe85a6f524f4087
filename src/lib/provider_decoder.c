/*
 * provider_decoder.c - key files for programs that only take a file name.
 *
 * `mtls-agentctl key-file NAME` writes a PEM block labelled
 * "MTLS AGENT KEY" whose body is the identity's mtls-agent: URI; no key is
 * in it.  When the provider is loaded through openssl.cnf, every
 * PEM_read_bio_PrivateKey() / SSL_CTX_use_PrivateKey_file() of that file
 * (curl, python's ssl, nginx, HAProxy...) meets this decoder, which asks
 * the agent for the identity and yields the same agent-backed key the
 * store does for the URI.  Anything else in the file is left to the other
 * decoders.  There is one decoder per key type, because the key's type
 * names the decoder: each yields only keys of its own type.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include "mtls-agent.h"
#include "provider.h"

#define KEY_FILE_LABEL "MTLS AGENT KEY"
/* A key file is a few lines; more is not one of ours. */
#define KEY_FILE_MAX 16384
#define URI_MAX	     8192

struct dec_ctx {
	struct prov_ctx *prov;
	int key_type; /* MTLS_AGENT_KEY_* this decoder yields */
};

static void *
dec_newctx(struct prov_ctx *p, int key_type)
{
	struct dec_ctx *d = calloc(1, sizeof(*d));

	if (d != NULL) {
		d->prov = p;
		d->key_type = key_type;
	}
	return d;
}

static void *
dec_newctx_rsa(void *provctx)
{
	return dec_newctx(provctx, MTLS_AGENT_KEY_RSA);
}

static void *
dec_newctx_ec(void *provctx)
{
	return dec_newctx(provctx, MTLS_AGENT_KEY_EC);
}

static void
dec_freectx(void *ctx)
{
	free(ctx);
}

static int
dec_does_selection(void *provctx, int selection)
{
	return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
}

/* The whole input (up to KEY_FILE_MAX) through the core's BIO upcalls. */
static int
read_input(const struct prov_ctx *p, OSSL_CORE_BIO *cin, unsigned char *buf, size_t *len)
{
	size_t got;

	*len = 0;
	if (p->bio_read_ex == NULL)
		return 0;
	while (*len < KEY_FILE_MAX) {
		got = 0;
		if (!p->bio_read_ex(cin, buf + *len, KEY_FILE_MAX - *len, &got) || got == 0)
			break;
		*len += got;
	}
	return 1;
}

/*
 * The URI of our PEM block in buf, as a new string; NULL (with *ours 0)
 * when the input holds no such block.  The body must be one printable
 * mtls-agent: URI, nothing else.
 */
static char *
key_file_uri(const unsigned char *buf, size_t len, int *ours)
{
	static const char begin[] = "-----BEGIN " KEY_FILE_LABEL "-----";
	char *name = NULL, *header = NULL, *uri = NULL;
	unsigned char *data = NULL;
	long data_len = 0, i;
	BIO *b = NULL;

	*ours = 0;
	if (len == 0 || memmem(buf, len, begin, sizeof(begin) - 1) == NULL)
		return NULL;
	*ours = 1;
	if ((b = BIO_new_mem_buf(buf, (int)len)) == NULL)
		goto out;
	/* Skip other blocks (a certificate may come first). */
	for (;;) {
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(data);
		name = header = NULL;
		data = NULL;
		if (PEM_read_bio(b, &name, &header, &data, &data_len) != 1)
			goto out;
		if (strcmp(name, KEY_FILE_LABEL) == 0)
			break;
	}
	if (header[0] != '\0' || data_len <= 0 || data_len > URI_MAX)
		goto out;
	for (i = 0; i < data_len; i++)
		if (data[i] < 0x21 || data[i] > 0x7e)
			goto out;
	if ((uri = malloc((size_t)data_len + 1)) == NULL)
		goto out;
	memcpy(uri, data, (size_t)data_len);
	uri[data_len] = '\0';
out:
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	BIO_free(b);
	return uri;
}

/* Our identity, found through the agent the URI names. */
static struct agent_key *
key_for_uri(struct dec_ctx *d, const char *uri)
{
	struct mtls_agent_identity *ids = NULL;
	struct agent_key *k = NULL;
	char *name = NULL, *sock = NULL;
	mtls_agent *a = NULL;
	size_t n = 0, i;
	int r;

	if (prov_uri_parse(uri, &name, &sock) != 0 || name == NULL) {
		PROV_RAISE(d->prov, PROV_R_BAD_URI, "key file: %s names no identity", uri);
		goto out;
	}
	if ((r = mtls_agent_connect(sock, &a)) != 0) {
		PROV_RAISE_AGENT(d->prov, r, sock != NULL ? sock : "agent socket");
		goto out;
	}
	if ((r = mtls_agent_list(a, &ids, &n)) != 0) {
		PROV_RAISE_AGENT(d->prov, r, "listing identities");
		goto out;
	}
	for (i = 0; i < n; i++)
		if (strcmp(ids[i].name, name) == 0)
			break;
	if (i == n) {
		PROV_RAISE(d->prov, -MTLS_ERR_NO_IDENTITY, "key file names %s", name);
		goto out;
	}
	if (ids[i].key_type == d->key_type)
		k = agent_key_from_identity(d->prov, &ids[i], sock, &r);
out:
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	free(name);
	free(sock);
	return k;
}

static int
dec_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb, void *data_cbarg,
	   OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	struct dec_ctx *d = ctx;
	unsigned char *buf = NULL;
	struct agent_key *k = NULL;
	OSSL_PARAM params[4];
	int type = OSSL_OBJECT_PKEY, ours = 0, ret = 1;
	char *uri = NULL;
	size_t len;

	/* Returning 1 without an object lets the other decoders try. */
	if ((buf = malloc(KEY_FILE_MAX)) == NULL || !read_input(d->prov, cin, buf, &len))
		goto out;
	if ((uri = key_file_uri(buf, len, &ours)) == NULL) {
		if (ours)
			PROV_RAISE(d->prov, PROV_R_BAD_URI,
				   "malformed " KEY_FILE_LABEL " block (one mtls-agent: URI)");
		ret = !ours;
		goto out;
	}
	if ((k = key_for_uri(d, uri)) == NULL)
		goto out; /* the other type's decoder, or an error raised */
	params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
	params[1] = OSSL_PARAM_construct_utf8_string(
	    OSSL_OBJECT_PARAM_DATA_TYPE, (char *)(k->type == MTLS_AGENT_KEY_RSA ? "RSA" : "EC"), 0);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &k, sizeof(k));
	params[3] = OSSL_PARAM_construct_end();
	ret = data_cb(params, data_cbarg);
out:
	agent_key_free(k);
	free(uri);
	free(buf);
	return ret;
}

const OSSL_DISPATCH prov_rsa_decoder_functions[] = {
	{ OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx_rsa },
	{ OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx },
	{ OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))dec_does_selection },
	{ OSSL_FUNC_DECODER_DECODE, (void (*)(void))dec_decode },
	{ 0, NULL }
};

const OSSL_DISPATCH prov_ec_decoder_functions[] = {
	{ OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx_ec },
	{ OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx },
	{ OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))dec_does_selection },
	{ OSSL_FUNC_DECODER_DECODE, (void (*)(void))dec_decode },
	{ 0, NULL }
};
