/*
 * provider.h - the mtls-agent OpenSSL 3 provider, internal interface.
 *
 * The provider offers key management for RSA and EC keys whose private
 * half stays with the agent, "RSA" and "ECDSA" signatures that hand the
 * whole to-be-signed content to the agent (so its purpose binding sees the
 * TLS context string), and a store loader for "mtls-agent:" URIs.  See
 * mtls-agent-provider(7).
 *
 * Everything here is internal to libmtls-agent; only
 * mtls_agent_provider_init() and mtls_agent_ssl_ctx_use_identity() are
 * public.
 */
#ifndef MTLS_PROVIDER_H
#define MTLS_PROVIDER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>

#include "mtls-agent.h"

#define PROV_NAME	"mtls-agent"
#define PROV_URI_SCHEME "mtls-agent"

/*
 * Property query for the provider's own public-key work (parsing
 * certificates, comparing and exporting public keys): never ourselves.
 */
#define PROV_INTERNAL_PROPQ "provider!=" PROV_NAME

/*
 * Reason codes.  1 .. -MTLS_ERR_LAST_ are the agent's error codes negated
 * (reason text = mtls_agent_strerror), so an agent refusal keeps its
 * meaning on the OpenSSL error queue; the provider's own reasons follow.
 */
enum prov_reason {
	PROV_R_NOT_AGENT_KEY = 100,   /* key has no agent identity */
	PROV_R_UNSUPPORTED_DIGEST,    /* digest the agent cannot sign with */
	PROV_R_UNSUPPORTED_PADDING,   /* RSA padding other than PKCS#1/PSS */
	PROV_R_UNSUPPORTED_SALTLEN,   /* PSS salt length != hash length */
	PROV_R_MGF1_MISMATCH,	      /* MGF1 digest != signature digest */
	PROV_R_BUFFER_TOO_SMALL,      /* signature buffer too small */
	PROV_R_CONTENT_TOO_LARGE,     /* over MTLS_AGENT_CONTENT_MAX */
	PROV_R_BAD_URI,		      /* malformed mtls-agent: URI */
	PROV_R_BAD_CERTIFICATE,	      /* identity certificate unusable */
	PROV_R_OPERATION_UNSUPPORTED, /* e.g. verify, plain sign */
	PROV_R_INTERNAL,	      /* an OpenSSL call failed */
	PROV_R_MAX_
};

/* One provider instance (per library context it is loaded into). */
struct prov_ctx {
	const OSSL_CORE_HANDLE *handle;
	/* Private library context with the default provider, for public-key
	 * work that must never come back into this provider. */
	OSSL_LIB_CTX *libctx;
	OSSL_PROVIDER *deflt; /* the default provider in libctx */
	OSSL_FUNC_core_new_error_fn *new_error;
	OSSL_FUNC_core_set_error_debug_fn *set_error_debug;
	OSSL_FUNC_core_vset_error_fn *vset_error;
	OSSL_FUNC_BIO_read_ex_fn *bio_read_ex; /* the decoder reads key files */
};

#define AGENT_KEY_MAGIC	   0x6d746c73U /* "mtls" */
#define AGENT_KEY_POOL_MAX 8

/*
 * A key object.  Reference counted: the store hands references to it
 * through OSSL_OBJECT_PARAM_REFERENCE and keymgmt load() takes one more.
 * Public-only keys (identity == NULL) come from import(), which libcrypto
 * uses to compare a certificate's key with ours.
 */
struct agent_key {
	uint32_t magic;
	int refs; /* atomic */
	struct prov_ctx *prov;
	int type;	   /* MTLS_AGENT_KEY_RSA or _EC */
	char *identity;	   /* NULL: public key only */
	char *socket;	   /* agent socket; NULL = the default */
	EVP_PKEY *pub;	   /* public key, in prov->libctx */
	unsigned int bits; /* modulus or curve size */
	int plain_private; /* no identity, and pub holds a private half we
			      generated (an ephemeral ECDHE key) */
	/* Idle agent connections, so parallel handshakes sign in parallel. */
	pthread_mutex_t lock;
	mtls_agent *pool[AGENT_KEY_POOL_MAX];
	size_t n_pool;
};

/* Raises an error on OpenSSL's queue through the core; fmt may be NULL. */
void prov_raise(const struct prov_ctx *p, int reason, const char *file, int line, const char *func,
		const char *fmt, ...) __attribute__((format(printf, 6, 7)));
#define PROV_RAISE(p, reason, ...)                                                                 \
	prov_raise((p), (reason), OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, __VA_ARGS__)
/* An agent error code (negative MTLS_ERR_*) with the agent's text. */
#define PROV_RAISE_AGENT(p, err, what)                                                             \
	prov_raise((p), -(err), OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, "%s: %s%s%s", (what),    \
		   mtls_agent_strerror(err), *mtls_agent_last_message() != '\0' ? ": " : "",       \
		   mtls_agent_last_message())

/* Key objects (provider_keymgmt.c). */
struct agent_key *agent_key_new(struct prov_ctx *p, int type);
/* An agent-backed key for identity `id`, reached at `socket` (NULL =
 * default).  Sets *err to an MTLS_ERR_* code on failure. */
struct agent_key *agent_key_from_identity(struct prov_ctx *p, const struct mtls_agent_identity *id,
					  const char *socket, int *err);
int agent_key_up_ref(struct agent_key *k);
void agent_key_free(struct agent_key *k);
/* Signs through a pooled connection; returns 0 or MTLS_ERR_*, and leaves
 * the agent's text in mtls_agent_last_message(). */
__attribute__((warn_unused_result)) int agent_key_sign(struct agent_key *k, uint16_t scheme,
						       int purpose, const unsigned char *content,
						       size_t len, unsigned char **sig,
						       size_t *sig_len);
/* max-size: largest signature (ECDSA: DER). */
size_t agent_key_max_size(const struct agent_key *k);

/* Parses an identity's certificate (DER) in `libctx`. */
X509 *prov_cert_from_der(OSSL_LIB_CTX *libctx, const unsigned char *der, size_t len);

/*
 * Parses "mtls-agent:[NAME][?socket=PATH]" (percent-escapes decoded).
 * *name is NULL for "every identity", *socket NULL for the default.
 * Returns 0, MTLS_ERR_INVALID_ARGUMENT or MTLS_ERR_ALLOC.
 */
__attribute__((warn_unused_result)) int prov_uri_parse(const char *uri, char **name, char **socket);

/*
 * Plain EC keys, those without an identity (provider_plain.c): what libssl
 * needs of the "EC" keymgmt for its ephemeral ECDHE keys when it fetches
 * ours.  Generation and ECDH are the default provider's work.
 */
int prov_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg);
void *prov_ec_gen_init(void *provctx, int selection, const OSSL_PARAM params[]);
int prov_ec_gen_set_params(void *genctx, const OSSL_PARAM params[]);
const OSSL_PARAM *prov_ec_gen_settable_params(void *genctx, void *provctx);
int prov_ec_gen_set_template(void *genctx, void *templ);
void *prov_ec_gen(void *genctx, OSSL_CALLBACK *cb, void *cbarg);
void prov_ec_gen_cleanup(void *genctx);
int prov_ec_set_params(void *keydata, const OSSL_PARAM params[]);
const OSSL_PARAM *prov_ec_settable_params(void *provctx);
/* Export of a plain key, private half included if it has one. */
int prov_plain_export(const struct agent_key *k, int selection, OSSL_CALLBACK *cb, void *cbarg);
/* A separate copy of a plain key's `selection`; NULL on failure. */
struct agent_key *prov_plain_dup(const struct agent_key *k, int selection);

extern const OSSL_DISPATCH prov_rsa_keymgmt_functions[];
extern const OSSL_DISPATCH prov_ec_keymgmt_functions[];
extern const OSSL_DISPATCH prov_rsa_signature_functions[];
extern const OSSL_DISPATCH prov_ecdsa_signature_functions[];
extern const OSSL_DISPATCH prov_store_functions[];
/* Key files ("MTLS AGENT KEY" PEM blocks), provider_decoder.c. */
extern const OSSL_DISPATCH prov_rsa_decoder_functions[];
extern const OSSL_DISPATCH prov_ec_decoder_functions[];

#endif
