/*
 * provider.c - the mtls-agent OpenSSL provider: entry point, algorithm
 * tables, errors, and the mtls-agent: URI syntax.
 */
#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/x509.h>

#include "mtls-agent.h"
#include "provider.h"

/*
 * The keymgmt names must make EVP_PKEY_is_a(key, "RSA") / ("EC") true, and
 * libssl also looks keys up by the short name of the NID (rsaEncryption,
 * id-ecPublicKey).
 */
static const OSSL_ALGORITHM keymgmt_algs[] = { { "RSA:rsaEncryption", "provider=" PROV_NAME,
						 prov_rsa_keymgmt_functions, "mtls-agent RSA key" },
					       { "EC:id-ecPublicKey", "provider=" PROV_NAME,
						 prov_ec_keymgmt_functions, "mtls-agent EC key" },
					       { NULL, NULL, NULL, NULL } };

static const OSSL_ALGORITHM signature_algs[] = {
	{ "RSA:rsaEncryption", "provider=" PROV_NAME, prov_rsa_signature_functions,
	  "RSA signatures made by mtls-agent" },
	{ "ECDSA", "provider=" PROV_NAME, prov_ecdsa_signature_functions,
	  "ECDSA signatures made by mtls-agent" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM store_algs[] = { { PROV_URI_SCHEME, "provider=" PROV_NAME,
					       prov_store_functions,
					       "identities of a running mtls-agent" },
					     { NULL, NULL, NULL, NULL } };

/* Key files: PEM in, an agent-backed key of the decoder's type out. */
static const OSSL_ALGORITHM decoder_algs[] = {
	{ "RSA:rsaEncryption", "provider=" PROV_NAME ",input=pem", prov_rsa_decoder_functions,
	  "mtls-agent key file (RSA identity)" },
	{ "EC:id-ecPublicKey", "provider=" PROV_NAME ",input=pem", prov_ec_decoder_functions,
	  "mtls-agent key file (EC identity)" },
	{ NULL, NULL, NULL, NULL }
};

/* Reason strings, filled once: the agent's texts come from strerror. */
static OSSL_ITEM reason_strings[-MTLS_ERR_LAST_ + (PROV_R_MAX_ - PROV_R_NOT_AGENT_KEY) + 1];
static pthread_once_t reason_once = PTHREAD_ONCE_INIT;

static void
fill_reason_strings(void)
{
	static const char *const own[] = {
		[PROV_R_NOT_AGENT_KEY - PROV_R_NOT_AGENT_KEY] = "key has no agent identity",
		[PROV_R_UNSUPPORTED_DIGEST - PROV_R_NOT_AGENT_KEY] =
		    "digest not supported for this key",
		[PROV_R_UNSUPPORTED_PADDING - PROV_R_NOT_AGENT_KEY] = "unsupported RSA padding",
		[PROV_R_UNSUPPORTED_SALTLEN - PROV_R_NOT_AGENT_KEY] =
		    "PSS salt length must equal the hash length",
		[PROV_R_MGF1_MISMATCH - PROV_R_NOT_AGENT_KEY] =
		    "MGF1 digest must equal the signature digest",
		[PROV_R_BUFFER_TOO_SMALL - PROV_R_NOT_AGENT_KEY] = "signature buffer too small",
		[PROV_R_CONTENT_TOO_LARGE - PROV_R_NOT_AGENT_KEY] =
		    "content too large for the agent",
		[PROV_R_BAD_URI - PROV_R_NOT_AGENT_KEY] = "malformed mtls-agent: URI",
		[PROV_R_BAD_CERTIFICATE - PROV_R_NOT_AGENT_KEY] = "identity certificate unusable",
		[PROV_R_OPERATION_UNSUPPORTED - PROV_R_NOT_AGENT_KEY] =
		    "operation not supported by mtls-agent keys",
		[PROV_R_INTERNAL - PROV_R_NOT_AGENT_KEY] = "internal error",
	};
	size_t n = 0;
	int i;

	for (i = 1; i <= -MTLS_ERR_LAST_; i++) {
		reason_strings[n].id = (unsigned int)i;
		reason_strings[n].ptr = (void *)mtls_agent_strerror(-i);
		n++;
	}
	for (i = PROV_R_NOT_AGENT_KEY; i < PROV_R_MAX_; i++) {
		reason_strings[n].id = (unsigned int)i;
		reason_strings[n].ptr = (void *)own[i - PROV_R_NOT_AGENT_KEY];
		n++;
	}
	reason_strings[n].id = 0;
	reason_strings[n].ptr = NULL;
}

void
prov_raise(const struct prov_ctx *p, int reason, const char *file, int line, const char *func,
	   const char *fmt, ...)
{
	va_list ap;

	if (p == NULL || p->new_error == NULL || p->vset_error == NULL)
		return;
	va_start(ap, fmt);
	p->new_error(p->handle);
	if (p->set_error_debug != NULL)
		p->set_error_debug(p->handle, file, line, func);
	p->vset_error(p->handle, (uint32_t)reason, fmt, ap);
	va_end(ap);
}

static const OSSL_ALGORITHM *
query_operation(void *provctx, int operation_id, int *no_cache)
{
	*no_cache = 0;
	switch (operation_id) {
	case OSSL_OP_KEYMGMT: return keymgmt_algs;
	case OSSL_OP_SIGNATURE: return signature_algs;
	case OSSL_OP_STORE: return store_algs;
	case OSSL_OP_DECODER: return decoder_algs;
	}
	return NULL;
}

static const OSSL_PARAM *
gettable_params(void *provctx)
{
	static const OSSL_PARAM params[] = {
		OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
		OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
		OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
		OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0), OSSL_PARAM_END
	};

	return params;
}

static int
get_params(void *provctx, OSSL_PARAM params[])
{
	OSSL_PARAM *q;

	if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL &&
	    !OSSL_PARAM_set_utf8_ptr(q, "mtls-agent provider"))
		return 0;
	if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL &&
	    !OSSL_PARAM_set_utf8_ptr(q, PACKAGE_VERSION))
		return 0;
	if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO)) != NULL &&
	    !OSSL_PARAM_set_utf8_ptr(q, PACKAGE_STRING))
		return 0;
	if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL &&
	    !OSSL_PARAM_set_int(q, 1))
		return 0;
	return 1;
}

static const OSSL_ITEM *
get_reason_strings(void *provctx)
{
	return reason_strings;
}

static void
prov_ctx_free(struct prov_ctx *p)
{
	if (p == NULL)
		return;
	if (p->deflt != NULL)
		OSSL_PROVIDER_unload(p->deflt);
	OSSL_LIB_CTX_free(p->libctx);
	free(p);
}

static void
teardown(void *provctx)
{
	prov_ctx_free(provctx);
}

static const OSSL_DISPATCH provider_functions[] = {
	{ OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))teardown },
	{ OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))gettable_params },
	{ OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))get_params },
	{ OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))query_operation },
	{ OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))get_reason_strings },
	{ OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))prov_get_capabilities },
	{ 0, NULL }
};

int
mtls_agent_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
			 const OSSL_DISPATCH **out, void **provctx)
{
	struct prov_ctx *p;

	*provctx = NULL;
	if (pthread_once(&reason_once, fill_reason_strings) != 0)
		return 0;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return 0;
	p->handle = handle;
	for (; in != NULL && in->function_id != 0; in++) {
		switch (in->function_id) {
		case OSSL_FUNC_CORE_NEW_ERROR: p->new_error = OSSL_FUNC_core_new_error(in); break;
		case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
			p->set_error_debug = OSSL_FUNC_core_set_error_debug(in);
			break;
		case OSSL_FUNC_CORE_VSET_ERROR:
			p->vset_error = OSSL_FUNC_core_vset_error(in);
			break;
		case OSSL_FUNC_BIO_READ_EX: p->bio_read_ex = OSSL_FUNC_BIO_read_ex(in); break;
		}
	}
	/*
	 * Certificates and public keys are handled in a library context of
	 * our own with only the default provider: a fetch there can never
	 * land back in this provider, whatever the caller's context holds.
	 * Only public-key work happens there; the private key stays with
	 * the agent.
	 */
	if ((p->libctx = OSSL_LIB_CTX_new()) == NULL ||
	    (p->deflt = OSSL_PROVIDER_load(p->libctx, "default")) == NULL) {
		prov_ctx_free(p);
		return 0;
	}
	*out = provider_functions;
	*provctx = p;
	return 1;
}

X509 *
prov_cert_from_der(OSSL_LIB_CTX *libctx, const unsigned char *der, size_t len)
{
	const unsigned char *q = der;
	X509 *x;

	if (der == NULL || len == 0 || len > LONG_MAX)
		return NULL;
	if ((x = X509_new_ex(libctx, NULL)) == NULL)
		return NULL;
	if (d2i_X509(&x, &q, (long)len) == NULL || q != der + len) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Decodes %XX escapes of s[0..len) into a new string; NUL is refused. */
static int
unescape(const char *s, size_t len, char **out)
{
	char *d;
	size_t i, n = 0;
	int hi, lo;

	*out = NULL;
	if ((d = malloc(len + 1)) == NULL)
		return MTLS_ERR_ALLOC;
	for (i = 0; i < len; i++) {
		if (s[i] != '%') {
			d[n++] = s[i];
			continue;
		}
		if (i + 2 >= len || (hi = OPENSSL_hexchar2int((unsigned char)s[i + 1])) < 0 ||
		    (lo = OPENSSL_hexchar2int((unsigned char)s[i + 2])) < 0 || (hi == 0 && lo == 0))
			goto bad;
		d[n++] = (char)(hi << 4 | lo);
		i += 2;
	}
	d[n] = '\0';
	*out = d;
	return 0;
bad:
	free(d);
	return MTLS_ERR_INVALID_ARGUMENT;
}

int
prov_uri_parse(const char *uri, char **namep, char **socketp)
{
	static const char scheme[] = PROV_URI_SCHEME ":";
	const char *p, *q, *attr, *end;
	char *name = NULL, *sock = NULL;
	int r = MTLS_ERR_INVALID_ARGUMENT;

	*namep = NULL;
	*socketp = NULL;
	if (uri == NULL || strncasecmp(uri, scheme, sizeof(scheme) - 1) != 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	p = uri + sizeof(scheme) - 1;
	/* Tolerate the authority-style "mtls-agent://NAME" some tools write. */
	if (strncmp(p, "//", 2) == 0)
		p += 2;
	q = strchr(p, '?');
	end = q != NULL ? q : p + strlen(p);
	if (end > p && (r = unescape(p, (size_t)(end - p), &name)) != 0)
		goto out;
	r = MTLS_ERR_INVALID_ARGUMENT;
	/* Query: attributes separated by '&'; only socket= is known. */
	for (attr = q != NULL ? q + 1 : NULL; attr != NULL && *attr != '\0';) {
		const char *amp = strchr(attr, '&');
		size_t alen = amp != NULL ? (size_t)(amp - attr) : strlen(attr);

		if (alen > 7 && strncmp(attr, "socket=", 7) == 0 && sock == NULL) {
			if ((r = unescape(attr + 7, alen - 7, &sock)) != 0)
				goto out;
			r = MTLS_ERR_INVALID_ARGUMENT;
			if (sock[0] != '/')
				goto out;
		} else {
			goto out;
		}
		attr = amp != NULL ? amp + 1 : NULL;
	}
	if (name != NULL && name[0] == '\0') {
		free(name);
		name = NULL;
	}
	*namep = name;
	*socketp = sock;
	name = sock = NULL;
	r = 0;
out:
	free(name);
	free(sock);
	return r;
}
