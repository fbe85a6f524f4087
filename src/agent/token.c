/*
 * token.c - the token layer: libp11 over p11-kit.  See token.h.
 *
 * An identity is a certificate (from the token, matched to the private key
 * by CKA_ID, or from a file) plus the private key with that CKA_ID.  The
 * certificate is public and visible before login, so identities are listed
 * before the PIN is given; the private key is looked up after login and
 * must match the certificate's public key.
 */
#include "config.h"

#include <dlfcn.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libp11.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <p11-kit/uri.h>

#include "log.h"
#include "mtls-agent.h"
#include "confirm.h"
#include "policy.h"
#include "secmem.h"
#include "token.h"

/* PKCS#11 return values we act on (libp11 reports them as the reason). */
#define RV_DEVICE_ERROR		    0x30UL
#define RV_DEVICE_REMOVED	    0x32UL
#define RV_PIN_INCORRECT	    0xA0UL
#define RV_PIN_INVALID		    0xA1UL
#define RV_PIN_LEN_RANGE	    0xA2UL
#define RV_PIN_EXPIRED		    0xA3UL
#define RV_PIN_LOCKED		    0xA4UL
#define RV_SESSION_HANDLE_INVALID   0xB3UL
#define RV_TOKEN_NOT_PRESENT	    0xE0UL
#define RV_USER_NOT_LOGGED_IN	    0x101UL
#define RV_USER_PIN_NOT_INITIALIZED 0x102UL

struct ident {
	char *name;
	unsigned char *id; /* CKA_ID of key (and certificate) */
	size_t id_len;
	char *key_label;   /* CKA_LABEL to match when there is no id */
	P11KitUri *uri;	   /* key URI: token and object selection */
	char *token_label; /* token the identity was found on */
	char *token_serial;
	int present; /* token seen at the last scan */
	X509 *cert;
	unsigned char *cert_der;
	size_t cert_der_len;
	unsigned char **chain_der;
	size_t *chain_der_len;
	size_t n_chain;
	int key_type;
	unsigned int key_bits;
	uint32_t purposes;
	EVP_PKEY *pkey;			  /* token-backed private key once logged in */
	int key_mismatch;		  /* the key at its id is not the certificate's */
	const struct config_identity *ci; /* its policy; NULL if discovered */
	time_t attached_at;		  /* when pkey was attached (lifetime) */
	time_t last_used;		  /* last signature (idle-logout) */
	double bucket;			  /* rate-limit tokens left */
	struct timespec bucket_at;
};

struct tokenset {
	pthread_rwlock_t lock;
	const struct config *cfg;
	PKCS11_CTX *p11;
	void *dl;		 /* our own handle on the module libp11 loaded */
	CK_FUNCTION_LIST_PTR fl; /* its function list, for fresh token flags */
	int fl_own;		 /* we initialised fl (p11-kit-proxy): finalise it */
	PKCS11_SLOT *slots;
	unsigned int nslots;
	struct ident *ids;
	size_t n;
	time_t *login_time; /* per slot index: when it was logged in, 0 = no */
	int stale;	    /* a signature saw the token vanish: rescan */
	/*
	 * Hang detection: signatures in flight and when the oldest began
	 * (CLOCK_MONOTONIC seconds); set `hung` when one outlives
	 * token-timeout, cleared when none is left.  While hung, new
	 * signatures are refused at once instead of piling up in the module.
	 */
	unsigned int inflight;
	long inflight_oldest;
	int hung;
	/*
	 * Module restarts (finalize + initialize, see module_restart()):
	 * since when the module fails for a known token (CLOCK_MONOTONIC s,
	 * 0 = it does not), when it was last restarted, `lost` while a
	 * restart left identities absent (SoftHSM2 sees a returning token
	 * only after another one), `module_down` if it could not be loaded
	 * again (then no libp11 call is made until it can).
	 */
	long failing_since;
	long restarted_at;
	int lost;
	int module_down;
	pthread_mutex_t stat_mu; /* last_used and rate buckets of identities */
};

/* The PKCS#11 return value libp11 left on the OpenSSL error queue. */
static unsigned long
last_rv(void)
{
	unsigned long e = ERR_peek_last_error();

	return e == 0 ? 0 : (unsigned long)ERR_GET_REASON(e);
}

static void
ident_clear(struct ident *id)
{
	size_t i;

	free(id->name);
	free(id->id);
	free(id->key_label);
	if (id->uri != NULL)
		p11_kit_uri_free(id->uri);
	free(id->token_label);
	free(id->token_serial);
	X509_free(id->cert);
	free(id->cert_der);
	for (i = 0; i < id->n_chain; i++)
		free(id->chain_der[i]);
	free(id->chain_der);
	free(id->chain_der_len);
	EVP_PKEY_free(id->pkey);
	memset(id, 0, sizeof(*id));
}

static void
idents_free(struct ident *ids, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		ident_clear(&ids[i]);
	free(ids);
}

/* Space-padded copy for CK_TOKEN_INFO matching. */
static void
pad_copy(unsigned char *dst, size_t dst_len, const char *src)
{
	size_t n = src == NULL ? 0 : strlen(src);

	memset(dst, ' ', dst_len);
	memcpy(dst, src == NULL ? "" : src, n > dst_len ? dst_len : n);
}

static int
token_matches(P11KitUri *uri, const PKCS11_TOKEN *tok)
{
	CK_TOKEN_INFO info;

	memset(&info, 0, sizeof(info));
	pad_copy(info.label, sizeof(info.label), tok->label);
	pad_copy(info.manufacturerID, sizeof(info.manufacturerID), tok->manufacturer);
	pad_copy(info.model, sizeof(info.model), tok->model);
	pad_copy(info.serialNumber, sizeof(info.serialNumber), tok->serialnr);
	return p11_kit_uri_match_token_info(uri, &info);
}

static int
valid_name(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > 64)
		return 0;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* Key type and size from a certificate; MTLS_ERR_UNSUPPORTED_SCHEME for
 * keys we cannot sign with (only RSA 2048-16384 and EC P-256/P-384). */
static int
cert_key_info(X509 *cert, int *type, unsigned int *bits)
{
	EVP_PKEY *pub = X509_get0_pubkey(cert);
	char group[64];
	size_t glen = 0;

	if (pub == NULL)
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	if (EVP_PKEY_is_a(pub, "RSA")) {
		*type = MTLS_AGENT_KEY_RSA;
		*bits = (unsigned int)EVP_PKEY_get_bits(pub);
		return *bits >= 2048 && *bits <= 16384 ? 0 : MTLS_ERR_UNSUPPORTED_SCHEME;
	}
	if (EVP_PKEY_is_a(pub, "EC") &&
	    EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof(group), &glen)) {
		*type = MTLS_AGENT_KEY_EC;
		if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
			*bits = 256;
		else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
			*bits = 384;
		else
			return MTLS_ERR_UNSUPPORTED_SCHEME;
		return 0;
	}
	return MTLS_ERR_UNSUPPORTED_SCHEME;
}

static int
set_cert(struct ident *id, X509 *cert)
{
	unsigned char *der = NULL;
	int len, r;

	if ((r = cert_key_info(cert, &id->key_type, &id->key_bits)) != 0)
		return r;
	if ((len = i2d_X509(cert, &der)) <= 0)
		return MTLS_ERR_INTERNAL;
	if ((id->cert = X509_dup(cert)) == NULL) {
		OPENSSL_free(der);
		return MTLS_ERR_ALLOC;
	}
	if ((id->cert_der = malloc((size_t)len)) == NULL) {
		OPENSSL_free(der);
		return MTLS_ERR_ALLOC;
	}
	memcpy(id->cert_der, der, (size_t)len);
	id->cert_der_len = (size_t)len;
	OPENSSL_free(der);
	return 0;
}

static X509 *
read_cert_file(const char *path)
{
	X509 *x = NULL;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return NULL;
	x = PEM_read_X509(f, NULL, NULL, NULL);
	if (x == NULL) {
		rewind(f);
		ERR_clear_error();
		x = d2i_X509_fp(f, NULL);
	}
	fclose(f);
	return x;
}

static int
load_chain(struct ident *id, const char *path, char *err, size_t err_len)
{
	X509 *x;
	FILE *f;
	int len;
	unsigned char *der;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, err_len, "identity %s: chain %s: %s", id->name, path,
			 strerror(errno));
		return MTLS_ERR_CONFIG;
	}
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
		if (id->n_chain >= MTLS_CHAIN_MAX) {
			X509_free(x);
			fclose(f);
			snprintf(err, err_len, "identity %s: chain %s: more than %d certificates",
				 id->name, path, MTLS_CHAIN_MAX);
			return MTLS_ERR_CONFIG;
		}
		der = NULL;
		len = i2d_X509(x, &der);
		X509_free(x);
		if (len <= 0)
			break;
		if (id->chain_der == NULL &&
		    ((id->chain_der = calloc(MTLS_CHAIN_MAX, sizeof(*id->chain_der))) == NULL ||
		     (id->chain_der_len = calloc(MTLS_CHAIN_MAX, sizeof(*id->chain_der_len))) ==
			 NULL)) {
			OPENSSL_free(der);
			fclose(f);
			return MTLS_ERR_ALLOC;
		}
		if ((id->chain_der[id->n_chain] = malloc((size_t)len)) == NULL) {
			OPENSSL_free(der);
			fclose(f);
			return MTLS_ERR_ALLOC;
		}
		memcpy(id->chain_der[id->n_chain], der, (size_t)len);
		id->chain_der_len[id->n_chain++] = (size_t)len;
		OPENSSL_free(der);
	}
	ERR_clear_error();
	fclose(f);
	if (id->n_chain == 0) {
		snprintf(err, err_len, "identity %s: chain %s: no PEM certificate", id->name, path);
		return MTLS_ERR_CONFIG;
	}
	return 0;
}

static int
id_matches(const struct ident *id, const unsigned char *oid, size_t oid_len, const char *label)
{
	if (id->id_len > 0)
		return oid_len == id->id_len && memcmp(oid, id->id, oid_len) == 0;
	return id->key_label != NULL && label != NULL && strcmp(id->key_label, label) == 0;
}

static int
grow(struct ident **ids, size_t n, size_t *cap)
{
	struct ident *nv;

	if (n < *cap)
		return 0;
	if ((nv = reallocarray(*ids, *cap == 0 ? 8 : *cap * 2, sizeof(**ids))) == NULL)
		return MTLS_ERR_ALLOC;
	memset(nv + *cap, 0, ((*cap == 0 ? 8 : *cap * 2) - *cap) * sizeof(**ids));
	*ids = nv;
	*cap = *cap == 0 ? 8 : *cap * 2;
	return 0;
}

static int
bind_token(struct ident *id, const PKCS11_TOKEN *tok)
{
	if ((id->token_label = strdup(tok->label ? tok->label : "")) == NULL ||
	    (id->token_serial = strdup(tok->serialnr ? tok->serialnr : "")) == NULL)
		return MTLS_ERR_ALLOC;
	id->present = 1;
	return 0;
}

/* Discovery: every certificate with a usable label on matching tokens. */
static int
discover(struct tokenset *ts, P11KitUri *turi, struct ident **idsp, size_t *np)
{
	struct ident *ids = NULL;
	size_t n = 0, cap = 0, k;
	unsigned int i, c, ncerts;
	PKCS11_CERT *certs;
	int r = 0;

	for (i = 0; i < ts->nslots; i++) {
		PKCS11_TOKEN *tok = ts->slots[i].token;

		if (tok == NULL || !tok->initialized || !token_matches(turi, tok))
			continue;
		if (PKCS11_enumerate_certs(tok, &certs, &ncerts) != 0) {
			warn("token %s: cannot list certificates", tok->label);
			ERR_clear_error();
			continue;
		}
		for (c = 0; c < ncerts; c++) {
			PKCS11_CERT *pc = &certs[c];
			int dup = 0;

			if (pc->x509 == NULL) {
				/* A certificate object that does not parse. */
				warn("token %s: certificate object \"%s\" does not parse; skipped",
				     tok->label, pc->label ? pc->label : "");
				continue;
			}
			if (pc->label == NULL || !valid_name(pc->label) || pc->id_len == 0) {
				warn("token %s: certificate without a usable label or id; skipped",
				     tok->label);
				continue;
			}
			for (k = 0; k < n; k++)
				if (strcmp(ids[k].name, pc->label) == 0)
					dup = 1;
			if (dup) {
				warn("token %s: second certificate labelled %s; skipped",
				     tok->label, pc->label);
				continue;
			}
			if ((r = grow(&ids, n, &cap)) != 0)
				goto out;
			if ((ids[n].name = strdup(pc->label)) == NULL ||
			    (ids[n].id = malloc(pc->id_len)) == NULL) {
				n++;
				r = MTLS_ERR_ALLOC;
				goto out;
			}
			memcpy(ids[n].id, pc->id, pc->id_len);
			ids[n].id_len = pc->id_len;
			ids[n].purposes = ts->cfg->default_purposes;
			n++;
			if ((r = bind_token(&ids[n - 1], tok)) != 0)
				goto out;
			if ((r = set_cert(&ids[n - 1], pc->x509)) != 0) {
				warn("identity %s: unsupported key type; skipped", pc->label);
				ident_clear(&ids[--n]);
				r = 0;
			}
		}
	}
out:
	if (r != 0) {
		idents_free(ids, n);
		return r;
	}
	*idsp = ids;
	*np = n;
	return 0;
}

/* Configured identities: each names its key by URI. */
static int
configured(struct tokenset *ts, struct ident **idsp, size_t *np, char *err, size_t err_len)
{
	const struct config *cfg = ts->cfg;
	struct ident *ids;
	size_t k, n;
	unsigned int i, c, ncerts;
	int r = 0;

	if ((ids = calloc(cfg->n_identities, sizeof(*ids))) == NULL)
		return MTLS_ERR_ALLOC;
	for (k = 0; k < cfg->n_identities; k++) {
		const struct config_identity *ci = &cfg->identities[k];
		struct ident *id = &ids[k];
		CK_ATTRIBUTE_PTR attr;
		X509 *filecert = NULL;

		if ((id->name = strdup(ci->name)) == NULL) {
			r = MTLS_ERR_ALLOC;
			goto out;
		}
		id->purposes = ci->purposes;
		id->ci = ci;
		if ((id->uri = p11_kit_uri_new()) == NULL) {
			r = MTLS_ERR_ALLOC;
			goto out;
		}
		if (p11_kit_uri_parse(ci->key_uri, P11_KIT_URI_FOR_ANY, id->uri) !=
		    P11_KIT_URI_OK) {
			snprintf(err, err_len, "identity %s: bad key URI", ci->name);
			r = MTLS_ERR_CONFIG;
			goto out;
		}
		if ((attr = p11_kit_uri_get_attribute(id->uri, CKA_ID)) != NULL &&
		    attr->ulValueLen > 0) {
			if ((id->id = malloc(attr->ulValueLen)) == NULL) {
				r = MTLS_ERR_ALLOC;
				goto out;
			}
			memcpy(id->id, attr->pValue, attr->ulValueLen);
			id->id_len = attr->ulValueLen;
		}
		if ((attr = p11_kit_uri_get_attribute(id->uri, CKA_LABEL)) != NULL &&
		    attr->ulValueLen > 0) {
			if ((id->key_label = strndup(attr->pValue, attr->ulValueLen)) == NULL) {
				r = MTLS_ERR_ALLOC;
				goto out;
			}
		}
		if (id->id_len == 0 && id->key_label == NULL) {
			snprintf(err, err_len,
				 "identity %s: key URI names neither id= nor object=", ci->name);
			r = MTLS_ERR_CONFIG;
			goto out;
		}
		if (ci->cert_file != NULL) {
			if ((filecert = read_cert_file(ci->cert_file)) == NULL) {
				snprintf(err, err_len, "identity %s: cannot read certificate %s",
					 ci->name, ci->cert_file);
				r = MTLS_ERR_CONFIG;
				goto out;
			}
			r = set_cert(id, filecert);
			X509_free(filecert);
			if (r != 0) {
				snprintf(err, err_len, "identity %s: %s: unsupported key type",
					 ci->name, ci->cert_file);
				r = MTLS_ERR_CONFIG;
				goto out;
			}
		}
		if (ci->chain_file != NULL &&
		    (r = load_chain(id, ci->chain_file, err, err_len)) != 0)
			goto out;
		/* Find the token, and the certificate on it if none was given. */
		for (i = 0; i < ts->nslots && !id->present; i++) {
			PKCS11_TOKEN *tok = ts->slots[i].token;
			PKCS11_CERT *certs;

			if (tok == NULL || !tok->initialized || !token_matches(id->uri, tok))
				continue;
			if (id->cert == NULL) {
				if (PKCS11_enumerate_certs(tok, &certs, &ncerts) != 0) {
					ERR_clear_error();
					continue;
				}
				for (c = 0; c < ncerts && id->cert == NULL; c++) {
					if (certs[c].x509 == NULL ||
					    !id_matches(id, certs[c].id, certs[c].id_len,
							certs[c].label))
						continue;
					if ((r = set_cert(id, certs[c].x509)) != 0)
						warn("identity %s: unsupported key type", id->name);
				}
				if (id->cert == NULL)
					continue;
			}
			if ((r = bind_token(id, tok)) != 0)
				goto out;
		}
		if (id->cert == NULL) {
			/* Its card may come later: offered once it is seen. */
			warn("identity %s: no token with its certificate is present and no "
			     "certificate file is given; waiting for the token",
			     ci->name);
		} else if (!id->present) {
			warn("identity %s: its token is not present", id->name);
		}
	}
out:
	if (r != 0) {
		idents_free(ids, cfg->n_identities);
		return r;
	}
	/* Keep only identities whose certificate is known. */
	for (k = 0, n = 0; k < cfg->n_identities; k++) {
		if (ids[k].cert == NULL) {
			ident_clear(&ids[k]);
			continue;
		}
		if (n != k) {
			ids[n] = ids[k];
			memset(&ids[k], 0, sizeof(ids[k]));
		}
		n++;
	}
	*idsp = ids;
	*np = n;
	return 0;
}

/* The slot currently holding the identity's token, or NULL. */
static PKCS11_SLOT *
ident_slot(struct tokenset *ts, const struct ident *id, unsigned int *idx)
{
	unsigned int i;

	for (i = 0; i < ts->nslots; i++) {
		PKCS11_TOKEN *tok = ts->slots[i].token;

		if (tok == NULL || id->token_label == NULL)
			continue;
		if (strcmp(tok->label ? tok->label : "", id->token_label) == 0 &&
		    strcmp(tok->serialnr ? tok->serialnr : "", id->token_serial) == 0) {
			if (idx != NULL)
				*idx = i;
			return &ts->slots[i];
		}
	}
	return NULL;
}

static int
slot_logged_in(PKCS11_SLOT *slot)
{
	int res = 0;

	if (PKCS11_is_logged_in(slot, 0, &res) != 0)
		return 0;
	return res;
}

/* After login: find each identity's private key on this slot and check it
 * belongs to the certificate. */
static void
attach_keys(struct tokenset *ts, PKCS11_SLOT *slot)
{
	PKCS11_KEY *keys;
	unsigned int nkeys, k;
	size_t i;

	if (PKCS11_enumerate_keys(slot->token, &keys, &nkeys) != 0) {
		warn("token %s: cannot list private keys", slot->token->label);
		ERR_clear_error();
		return;
	}
	for (i = 0; i < ts->n; i++) {
		struct ident *id = &ts->ids[i];
		EVP_PKEY *pk;

		if (id->pkey != NULL || ident_slot(ts, id, NULL) != slot)
			continue;
		for (k = 0; k < nkeys; k++) {
			if (!keys[k].isPrivate ||
			    !id_matches(id, keys[k].id, keys[k].id_len, keys[k].label))
				continue;
			if ((pk = PKCS11_get_private_key(&keys[k])) == NULL) {
				ERR_clear_error();
				continue;
			}
			/*
			 * A key that is not the certificate's is never used:
			 * type, size or curve and value must all be the same.
			 * EVP_PKEY_eq() says -1 for keys of different types and
			 * -2 when it cannot compare; only 1 is a match.
			 */
			if (EVP_PKEY_eq(pk, X509_get0_pubkey(id->cert)) != 1) {
				warn("identity %s: private key on the token does not match its "
				     "certificate; not used",
				     id->name);
				id->key_mismatch = 1;
				EVP_PKEY_free(pk);
				ERR_clear_error();
				continue;
			}
			ERR_clear_error();
			id->key_mismatch = 0;
			id->pkey = pk;
			id->attached_at = id->last_used = time(NULL);
			break;
		}
		if (id->pkey == NULL && !id->key_mismatch)
			warn("identity %s: no private key found on token %s", id->name,
			     slot->token->label);
	}
}

static void
detach_keys(struct tokenset *ts, PKCS11_SLOT *slot)
{
	size_t i;

	for (i = 0; i < ts->n; i++) {
		if (ts->ids[i].pkey != NULL && ident_slot(ts, &ts->ids[i], NULL) == slot) {
			EVP_PKEY_free(ts->ids[i].pkey);
			ts->ids[i].pkey = NULL;
		}
	}
}

static struct ident *
find_ident(struct tokenset *ts, const char *name)
{
	size_t i;

	for (i = 0; i < ts->n; i++)
		if (strcmp(ts->ids[i].name, name) == 0)
			return &ts->ids[i];
	return NULL;
}

/*
 * What a module answers about a token it cannot reach any more (SoftHSM2
 * says CKR_GENERAL_ERROR for a token whose files went away, and goes on
 * saying it after they came back, until it is initialised again).  Such
 * a token counts as absent, and the module is restarted when it keeps
 * answering so (token_poll()).
 */
static int
module_failing_rv(CK_RV rv)
{
	return rv == CKR_GENERAL_ERROR || rv == CKR_DEVICE_ERROR || rv == CKR_FUNCTION_FAILED ||
	       rv == CKR_SLOT_ID_INVALID || rv == CKR_CRYPTOKI_NOT_INITIALIZED;
}

/*
 * Fresh token information straight from the module: libp11 caches token
 * flags at enumeration, and its PKCS11_update_slots() is unusable in
 * 0.4.12 (it indexes the slot array wrongly when there are 2+ slots).
 * The module is already initialised by libp11 in this process.
 */
static int
token_info(struct tokenset *ts, PKCS11_SLOT *slot, CK_TOKEN_INFO *info)
{
	CK_RV rv;

	if (ts->fl == NULL)
		return MTLS_ERR_TOKEN;
	rv = ts->fl->C_GetTokenInfo(PKCS11_get_slotid_from_slot(slot), info);
	if (rv == CKR_OK)
		return 0;
	return rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED ||
		       rv == CKR_TOKEN_NOT_RECOGNIZED || module_failing_rv(rv)
		   ? MTLS_ERR_TOKEN_ABSENT
		   : MTLS_ERR_TOKEN;
}

/* Refreshes which identities' tokens are present. */
static void
rescan(struct tokenset *ts)
{
	CK_TOKEN_INFO info;
	PKCS11_SLOT *slot;
	size_t i;

	for (i = 0; i < ts->n; i++) {
		slot = ident_slot(ts, &ts->ids[i], NULL);
		ts->ids[i].present = slot != NULL && token_info(ts, slot, &info) == 0;
	}
}

/*
 * The one mapping of a failed PIN operation (login, SO login, C_SetPIN,
 * C_InitPIN) to an MTLS_ERR_* and a reason; the token flags are re-read
 * because they say how many tries are left.  `what` names the secret.
 */
static int
pin_error(struct tokenset *ts, PKCS11_SLOT *slot, CK_RV rv, int so, int *retries, const char *what,
	  char *why, size_t why_len)
{
	CK_TOKEN_INFO info;
	CK_FLAGS locked = so ? CKF_SO_PIN_LOCKED : CKF_USER_PIN_LOCKED;
	CK_FLAGS final = so ? CKF_SO_PIN_FINAL_TRY : CKF_USER_PIN_FINAL_TRY;
	CK_FLAGS low = so ? CKF_SO_PIN_COUNT_LOW : CKF_USER_PIN_COUNT_LOW;
	const char *label = slot->token->label;
	char tries[32];

	*retries = -1;
	if (token_info(ts, slot, &info) == 0)
		*retries = (info.flags & locked) ? 0 : (info.flags & final) ? 1 : -1;
	else
		info.flags = 0;
	switch (rv) {
	case RV_PIN_INCORRECT:
		if (info.flags & locked) {
			snprintf(why, why_len, "token %s: %s incorrect; it is now locked", label,
				 what);
			return MTLS_ERR_PIN_LOCKED;
		}
		/* The code already says "PIN incorrect": the text adds the
		 * token, which secret (unless the user PIN) and the tries. */
		tries[0] = '\0';
		if (*retries >= 0)
			snprintf(tries, sizeof(tries), "%d tr%s left", *retries,
				 *retries == 1 ? "y" : "ies");
		else if (info.flags & low)
			snprintf(tries, sizeof(tries), "few tries left");
		if (strcmp(what, "PIN") == 0)
			snprintf(why, why_len, "token %s%s%s", label, *tries != '\0' ? ": " : "",
				 tries);
		else
			snprintf(why, why_len, "token %s: %s incorrect%s%s", label, what,
				 *tries != '\0' ? ", " : "", tries);
		return MTLS_ERR_PIN_INCORRECT;
	case RV_PIN_LOCKED:
		*retries = 0;
		snprintf(why, why_len, "token %s: %s locked", label, what);
		return MTLS_ERR_PIN_LOCKED;
	case RV_PIN_INVALID:
	case RV_PIN_LEN_RANGE:
		snprintf(why, why_len, "token %s: %s has a length or characters the token refuses",
			 label, what);
		return MTLS_ERR_PIN_INVALID;
	case RV_PIN_EXPIRED:
		snprintf(why, why_len, "token %s: %s expired; change it with the token's tools",
			 label, what);
		return MTLS_ERR_PIN_LOCKED;
	case RV_TOKEN_NOT_PRESENT:
	case RV_DEVICE_REMOVED:
		snprintf(why, why_len, "token %s: removed", label);
		return MTLS_ERR_TOKEN_ABSENT;
	}
	snprintf(why, why_len, "token %s: %s operation failed (PKCS#11 error 0x%lx)", label, what,
		 (unsigned long)rv);
	return MTLS_ERR_TOKEN;
}

static int inflight_enter(struct tokenset *ts);
static void inflight_leave(struct tokenset *ts);

/* The reason given for a refusal while the module counts as hung. */
static int
hung_why(const struct tokenset *ts, char *why, size_t why_len)
{
	why_printf(why, why_len, "the PKCS#11 module has not answered for over %u s",
		   ts->cfg->token_timeout);
	return MTLS_ERR_TIMEOUT;
}

/*
 * The one place the user PIN goes to the module.  Straight to C_Login on a
 * session of our own: libp11 0.4.12's PKCS11_login() keeps a heap copy of
 * the PIN (to log in again after a fork) that PKCS11_logout() never frees.
 * libp11 is then told of the login with an empty PIN, which the module
 * answers with CKR_USER_ALREADY_LOGGED_IN without checking it (as in
 * reenumerate()), so the copy libp11 keeps is "".  libp11's session stays
 * open in its pool, so closing ours does not end the login.  Write lock
 * held; returns CKR_OK or the module's answer.
 */
static CK_RV
user_login(struct tokenset *ts, PKCS11_SLOT *slot, const char *pin)
{
	CK_SESSION_HANDLE sess;
	CK_RV rv;

	if (ts->fl == NULL)
		return CKR_FUNCTION_NOT_SUPPORTED;
	rv = ts->fl->C_OpenSession(PKCS11_get_slotid_from_slot(slot), CKF_SERIAL_SESSION, NULL,
				   NULL, &sess);
	if (rv != CKR_OK)
		return rv;
	rv = ts->fl->C_Login(sess, CKU_USER, (CK_UTF8CHAR_PTR)pin, (CK_ULONG)strlen(pin));
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
		ERR_clear_error();
		rv = CKR_OK;
		if (PKCS11_login(slot, 0, "") != 0) {
			rv = last_rv() != 0 ? last_rv() : CKR_GENERAL_ERROR;
			ERR_clear_error();
			(void)ts->fl->C_Logout(sess);
		}
	}
	(void)ts->fl->C_CloseSession(sess);
	return rv;
}

/* Logs in `slot` with pin; write lock held. */
static int
login_slot(struct tokenset *ts, PKCS11_SLOT *slot, unsigned int idx, const char *pin, int *retries,
	   char *why, size_t why_len)
{
	CK_TOKEN_INFO info;
	unsigned long rv;
	char label[64];
	int r;

	*retries = -1;
	snprintf(label, sizeof(label), "%s", slot->token->label);
	if ((r = token_info(ts, slot, &info)) != 0) {
		snprintf(why, why_len, "token %s: %s", label, mtls_agent_strerror(r));
		return r;
	}
	/* A locked PIN is reported, never tried: each try may count. */
	if (info.flags & CKF_USER_PIN_LOCKED) {
		*retries = 0;
		snprintf(why, why_len, "token %s: user PIN is locked; not trying", label);
		return MTLS_ERR_PIN_LOCKED;
	}
	if (slot_logged_in(slot)) {
		/* The token does not check a PIN twice (C_Login answers
		 * CKR_USER_ALREADY_LOGGED_IN): say so rather than pretend. */
		attach_keys(ts, slot);
		info("token %s: already logged in; PIN not checked again", label);
		return 0;
	}
	ERR_clear_error();
	/* Counted as a call in the module: a login that hangs makes the
	 * module hung after token-timeout, as a signature does. */
	if (inflight_enter(ts) != 0)
		return hung_why(ts, why, why_len);
	rv = user_login(ts, slot, pin);
	inflight_leave(ts);
	if (rv == CKR_OK) {
		ts->login_time[idx] = time(NULL);
		attach_keys(ts, slot);
		info("token %s: logged in", label);
		return 0;
	}
	return pin_error(ts, slot, rv, 0, retries, "PIN", why, why_len);
}

static int
build(struct tokenset *ts, struct ident **ids, size_t *n, char *err, size_t err_len)
{
	P11KitUri *turi;
	int r;

	if (ts->cfg->n_identities > 0)
		return configured(ts, ids, n, err, err_len);
	if ((turi = p11_kit_uri_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if (p11_kit_uri_parse(ts->cfg->token_uri ? ts->cfg->token_uri : "pkcs11:",
			      P11_KIT_URI_FOR_TOKEN, turi) != P11_KIT_URI_OK) {
		p11_kit_uri_free(turi);
		snprintf(err, err_len, "bad token URI %s", ts->cfg->token_uri);
		return MTLS_ERR_CONFIG;
	}
	r = discover(ts, turi, ids, n);
	p11_kit_uri_free(turi);
	return r;
}

/* Logs in identities that have a PIN file (unattended use). */
static int
pin_file_logins(struct tokenset *ts, char *err, size_t err_len)
{
	size_t k;

	for (k = 0; k < ts->cfg->n_identities; k++) {
		const struct config_identity *ci = &ts->cfg->identities[k];
		struct ident *id = find_ident(ts, ci->name);
		PKCS11_SLOT *slot;
		unsigned int idx;
		char *pin = NULL, why[256];
		int r, retries;

		if (ci->pin_file == NULL || id == NULL)
			continue;
		if ((slot = ident_slot(ts, id, &idx)) == NULL) {
			warn("identity %s: token absent; PIN file not used", id->name);
			continue;
		}
		if ((r = config_read_pin_file(ci->pin_file, &pin, err, err_len)) != 0)
			return r;
		r = login_slot(ts, slot, idx, pin, &retries, why, sizeof(why));
		mtls_secure_free(pin);
		if (r != 0) {
			/* A wrong PIN in a file must not burn the card's tries
			 * again at every restart without someone noticing. */
			snprintf(err, err_len, "identity %s: login with PIN file %s failed: %s",
				 id->name, ci->pin_file, why);
			return r;
		}
	}
	return 0;
}

/*
 * The module must resolve (realpath) to a regular file inside one of the
 * allowed directories, owned by root or by us, writable by no one else:
 * a configuration or command line cannot make the agent load a library
 * from anywhere.  A bare name is looked up in the allowed directories.
 */
static int
module_allowed(const char *module, const char *dirs, char *resolved, size_t res_len, char *err,
	       size_t err_len)
{
	char *copy = NULL, *dir, *save = NULL, *rp = NULL, *rd, cand[PATH_MAX];
	struct stat st;
	int r = MTLS_ERR_CONFIG, ok = 0;

	if (dirs == NULL)
		dirs = CONFIG_DEFAULT_MODULE_DIRS;
	if (strchr(module, '/') == NULL) {
		if ((copy = strdup(dirs)) == NULL)
			return MTLS_ERR_ALLOC;
		for (dir = strtok_r(copy, ":", &save); dir != NULL && rp == NULL;
		     dir = strtok_r(NULL, ":", &save)) {
			snprintf(cand, sizeof(cand), "%s/%s", dir, module);
			rp = realpath(cand, NULL);
		}
		free(copy);
		copy = NULL;
	} else {
		rp = realpath(module, NULL);
	}
	if (rp == NULL) {
		snprintf(err, err_len, "PKCS#11 module %s: not found (module-dirs %s)", module,
			 dirs);
		return MTLS_ERR_CONFIG;
	}
	if ((copy = strdup(dirs)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (dir = strtok_r(copy, ":", &save); dir != NULL && !ok;
	     dir = strtok_r(NULL, ":", &save)) {
		size_t n;

		if ((rd = realpath(dir, NULL)) == NULL)
			continue;
		n = strlen(rd);
		ok = strncmp(rp, rd, n) == 0 && (rp[n] == '/' || (n == 1 && rd[0] == '/'));
		free(rd);
	}
	if (!ok) {
		snprintf(err, err_len,
			 "PKCS#11 module %s (%s) is outside the allowed directories %s", module, rp,
			 dirs);
		goto out;
	}
	if (stat(rp, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, err_len, "PKCS#11 module %s is not a regular file", rp);
		goto out;
	}
	if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022) != 0) {
		snprintf(err, err_len,
			 "PKCS#11 module %s may be written by others (owner uid %u, mode %04o)", rp,
			 (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (strlen(rp) >= res_len) {
		snprintf(err, err_len, "PKCS#11 module path too long");
		goto out;
	}
	memcpy(resolved, rp, strlen(rp) + 1);
	r = 0;
out:
	free(copy);
	free(rp);
	return r;
}

static void unpad(char *dst, size_t dst_len, const unsigned char *src, size_t src_len);

/*
 * Our own function list of the module libp11 loaded, for the calls libp11
 * has no API for (fresh token flags, the slot poll, session state, SO
 * login).  A plain module hands every caller the one list libp11 already
 * initialised and answers a second C_Initialize with ALREADY_INITIALIZED.
 * p11-kit-proxy (the default) hands out a new, uninitialised instance on
 * every C_GetFunctionList: that one we initialise, and finalise in
 * raw_close(); the modules behind it stay loaded once per process, so
 * logins and sessions are shared with libp11's instance.
 */
static int
raw_open(struct tokenset *ts, const char *module, char *err, size_t err_len)
{
	CK_C_INITIALIZE_ARGS args;
	CK_C_GetFunctionList gfl;
	CK_RV rv;

	if ((ts->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(err, err_len, "cannot load PKCS#11 module %s: %s", module, dlerror());
		return MTLS_ERR_TOKEN;
	}
	*(void **)&gfl = dlsym(ts->dl, "C_GetFunctionList");
	if (gfl == NULL || gfl(&ts->fl) != CKR_OK || ts->fl == NULL) {
		snprintf(err, err_len, "PKCS#11 module %s has no usable C_GetFunctionList", module);
		ts->fl = NULL;
		return MTLS_ERR_TOKEN;
	}
	memset(&args, 0, sizeof(args));
	/* Connection threads and the main loop's poll call it at once. */
	args.flags = CKF_OS_LOCKING_OK;
	rv = ts->fl->C_Initialize(&args);
	if (rv == CKR_OK) {
		ts->fl_own = 1;
		return 0;
	}
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return 0;
	snprintf(err, err_len, "PKCS#11 module %s: C_Initialize failed (0x%lx)", module,
		 (unsigned long)rv);
	ts->fl = NULL;
	return MTLS_ERR_TOKEN;
}

/* Undoes raw_open(); safe on a half-opened or closed set. */
static void
raw_close(struct tokenset *ts)
{
	if (ts->fl != NULL && ts->fl_own)
		(void)ts->fl->C_Finalize(NULL);
	ts->fl = NULL;
	ts->fl_own = 0;
	if (ts->dl != NULL)
		dlclose(ts->dl);
	ts->dl = NULL;
}

/*
 * Slot IDs are per instance with p11-kit-proxy.  Two instances number the
 * same modules' slots alike, but if ours disagreed with libp11's, every
 * fresh flag would describe another token: refuse to start rather than
 * report the wrong token's state.
 */
static int
raw_check_slots(struct tokenset *ts, char *err, size_t err_len)
{
	CK_TOKEN_INFO info;
	char label[33];
	unsigned int i;

	for (i = 0; i < ts->nslots; i++) {
		PKCS11_TOKEN *tok = ts->slots[i].token;

		if (tok == NULL || !tok->initialized)
			continue;
		if (ts->fl->C_GetTokenInfo(PKCS11_get_slotid_from_slot(&ts->slots[i]), &info) !=
		    CKR_OK)
			continue; /* pulled meanwhile: the poll sees it */
		unpad(label, sizeof(label), info.label, sizeof(info.label));
		if (strcmp(tok->label ? tok->label : "", label) != 0) {
			snprintf(err, err_len,
				 "PKCS#11 module %s numbers its slots differently for each caller "
				 "(slot %lu is token '%s' and '%s')",
				 ts->cfg->module, PKCS11_get_slotid_from_slot(&ts->slots[i]),
				 tok->label ? tok->label : "", label);
			return MTLS_ERR_TOKEN;
		}
	}
	return 0;
}

int
token_open(const struct config *cfg, struct tokenset **out, char *err, size_t err_len)
{
	char module[PATH_MAX];
	struct tokenset *ts;
	int r;

	*out = NULL;
	if ((r = module_allowed(cfg->module, cfg->module_dirs, module, sizeof(module), err,
				err_len)) != 0)
		return r;
	if ((ts = calloc(1, sizeof(*ts))) == NULL)
		return MTLS_ERR_ALLOC;
	pthread_rwlock_init(&ts->lock, NULL);
	pthread_mutex_init(&ts->stat_mu, NULL);
	ts->cfg = cfg;
	if ((ts->p11 = PKCS11_CTX_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if (PKCS11_CTX_load(ts->p11, module) != 0) {
		snprintf(err, err_len, "cannot load PKCS#11 module %s", cfg->module);
		ERR_clear_error();
		PKCS11_CTX_free(ts->p11);
		ts->p11 = NULL;
		r = MTLS_ERR_TOKEN;
		goto out;
	}
	if ((r = raw_open(ts, module, err, err_len)) != 0)
		goto out;
	if (PKCS11_enumerate_slots(ts->p11, &ts->slots, &ts->nslots) != 0) {
		snprintf(err, err_len, "cannot list the slots of %s", cfg->module);
		ERR_clear_error();
		r = MTLS_ERR_TOKEN;
		goto out;
	}
	if ((r = raw_check_slots(ts, err, err_len)) != 0)
		goto out;
	if ((ts->login_time = calloc(ts->nslots + 1, sizeof(time_t))) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = build(ts, &ts->ids, &ts->n, err, err_len)) != 0)
		goto out;
	if ((r = pin_file_logins(ts, err, err_len)) != 0)
		goto out;
	info("%zu identit%s on %u slot%s of %s", ts->n, ts->n == 1 ? "y" : "ies", ts->nslots,
	     ts->nslots == 1 ? "" : "s", cfg->module);
	*out = ts;
	ts = NULL;
	r = 0;
out:
	token_close(ts);
	return r;
}

/*
 * Identities rebuilt by a reload or a token rescan keep the lifetime and
 * idle clocks of the keys they had, so neither restarts them.
 */
static void
carry_timers(const struct ident *old, size_t n_old, struct ident *ids, size_t n)
{
	size_t i, k;

	for (i = 0; i < n; i++) {
		if (ids[i].pkey == NULL)
			continue;
		for (k = 0; k < n_old; k++) {
			if (old[k].name == NULL || strcmp(old[k].name, ids[i].name) != 0 ||
			    old[k].attached_at == 0)
				continue;
			ids[i].attached_at = old[k].attached_at;
			ids[i].last_used = old[k].last_used;
			ids[i].bucket = old[k].bucket;
			ids[i].bucket_at = old[k].bucket_at;
		}
	}
}

/*
 * The token state's lock, taken in 200 ms steps.  A call stuck in a hung
 * module holds it for ever (a signature the read lock, a login the write
 * lock); rather than wait behind it (the main thread, for a reload), give
 * up with TIMEOUT as soon as the module counts as hung.
 */
static int
timed_lock(struct tokenset *ts, int write, char *why, size_t why_len)
{
	struct timespec until;
	int hung;

	for (;;) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 200 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if ((write ? pthread_rwlock_timedwrlock(&ts->lock, &until)
			   : pthread_rwlock_timedrdlock(&ts->lock, &until)) == 0)
			return 0;
		token_check_hang(ts);
		pthread_mutex_lock(&ts->stat_mu);
		hung = ts->hung;
		pthread_mutex_unlock(&ts->stat_mu);
		if (hung)
			return hung_why(ts, why, why_len);
	}
}

/* For what changes the token state: login, PIN change, logout, reload. */
static int
write_lock(struct tokenset *ts, char *why, size_t why_len)
{
	return timed_lock(ts, 1, why, why_len);
}

/* For what reads it while clients wait: signatures, LIST, STATUS. */
static int
read_lock(struct tokenset *ts, char *why, size_t why_len)
{
	return timed_lock(ts, 0, why, why_len);
}

static void merge_absent(struct tokenset *ts, struct ident **idsp, size_t *np);

int
token_reload(struct tokenset *ts, const struct config *cfg, char *err, size_t err_len)
{
	const struct config *old = ts->cfg;
	struct ident *ids = NULL, *old_ids;
	size_t n = 0, old_n;
	unsigned int i;
	int r;

	if (strcmp(cfg->module, old->module) != 0) {
		snprintf(err, err_len, "module changed (%s -> %s): restart the agent", old->module,
			 cfg->module);
		return MTLS_ERR_CONFIG;
	}
	if ((r = write_lock(ts, err, err_len)) != 0)
		return r;
	rescan(ts);
	ts->cfg = cfg;
	if ((r = build(ts, &ids, &n, err, err_len)) != 0) {
		ts->cfg = old;
		goto out;
	}
	/* Discovered identities of a token that is away stay listed (as
	 * absent) across a reload, as across a rescan. */
	if (cfg->n_identities == 0 && old->n_identities == 0)
		merge_absent(ts, &ids, &n);
	old_ids = ts->ids;
	old_n = ts->n;
	ts->ids = ids;
	ts->n = n;
	for (i = 0; i < ts->nslots; i++)
		if (ts->slots[i].token != NULL && slot_logged_in(&ts->slots[i]))
			attach_keys(ts, &ts->slots[i]);
	carry_timers(old_ids, old_n, ts->ids, ts->n);
	idents_free(old_ids, old_n);
	/* PIN files of new identities: errors are logged, not fatal here. */
	if (pin_file_logins(ts, err, err_len) != 0)
		warn("reload: %s", err);
	r = 0;
out:
	pthread_rwlock_unlock(&ts->lock);
	return r;
}

void
token_close(struct tokenset *ts)
{
	unsigned int i;

	if (ts == NULL)
		return;
	idents_free(ts->ids, ts->n);
	if (ts->p11 != NULL) {
		for (i = 0; i < ts->nslots; i++) {
			if (ts->slots[i].token != NULL && slot_logged_in(&ts->slots[i])) {
				if (PKCS11_logout(&ts->slots[i]) != 0)
					ERR_clear_error();
			}
		}
		if (ts->slots != NULL)
			PKCS11_release_all_slots(ts->p11, ts->slots, ts->nslots);
		if (!ts->module_down)
			PKCS11_CTX_unload(ts->p11);
		PKCS11_CTX_free(ts->p11);
	}
	raw_close(ts);
	free(ts->login_time);
	pthread_rwlock_destroy(&ts->lock);
	pthread_mutex_destroy(&ts->stat_mu);
	free(ts);
}

static uint32_t
ident_flags(struct tokenset *ts, const struct ident *id)
{
	PKCS11_SLOT *slot = ident_slot(ts, id, NULL);
	CK_TOKEN_INFO info;
	uint32_t f = 0;

	if (slot == NULL || token_info(ts, slot, &info) != 0)
		return 0;
	f |= MTLS_AGENT_ID_TOKEN_PRESENT;
	if (slot_logged_in(slot))
		f |= MTLS_AGENT_ID_LOGGED_IN;
	if (id->pkey != NULL)
		f |= MTLS_AGENT_ID_KEY_FOUND;
	else if (id->key_mismatch)
		f |= MTLS_AGENT_ID_KEY_MISMATCH;
	if (info.flags & CKF_USER_PIN_COUNT_LOW)
		f |= MTLS_AGENT_ID_PIN_COUNT_LOW;
	if (info.flags & CKF_USER_PIN_FINAL_TRY)
		f |= MTLS_AGENT_ID_PIN_FINAL_TRY;
	if (info.flags & CKF_USER_PIN_LOCKED)
		f |= MTLS_AGENT_ID_PIN_LOCKED;
	if (info.flags & CKF_PROTECTED_AUTHENTICATION_PATH)
		f |= MTLS_AGENT_ID_PROTECTED_AUTH;
	return f;
}

static void *
dup_mem(const void *p, size_t len)
{
	void *d;

	if (len == 0)
		return NULL;
	if ((d = malloc(len)) != NULL)
		memcpy(d, p, len);
	return d;
}

static int
copy_ident(struct tokenset *ts, const struct ident *id, struct mtls_agent_identity *o)
{
	const struct scheme_info *s;
	size_t i;

	if ((o->name = strdup(id->name)) == NULL ||
	    (o->token_label = strdup(id->token_label ? id->token_label : "")) == NULL ||
	    (o->key_label = strdup(id->key_label ? id->key_label : id->name)) == NULL)
		return MTLS_ERR_ALLOC;
	if (id->id_len > 0 && (o->key_id = dup_mem(id->id, id->id_len)) == NULL)
		return MTLS_ERR_ALLOC;
	o->key_id_len = id->id_len;
	o->key_type = id->key_type;
	o->key_bits = id->key_bits;
	o->flags = ident_flags(ts, id);
	o->purposes = id->purposes;
	if ((o->schemes = calloc(MTLS_SCHEMES_MAX, sizeof(*o->schemes))) == NULL)
		return MTLS_ERR_ALLOC;
	for (i = 0; (s = scheme_at(i)) != NULL && o->n_schemes < MTLS_SCHEMES_MAX; i++) {
		if (s->key_type == id->key_type && (s->ec_bits == 0 || s->ec_bits == id->key_bits))
			o->schemes[o->n_schemes++] = s->code;
	}
	if ((o->cert_der = dup_mem(id->cert_der, id->cert_der_len)) == NULL)
		return MTLS_ERR_ALLOC;
	o->cert_der_len = id->cert_der_len;
	if (id->n_chain > 0) {
		if ((o->chain_der = calloc(id->n_chain, sizeof(*o->chain_der))) == NULL ||
		    (o->chain_der_len = calloc(id->n_chain, sizeof(*o->chain_der_len))) == NULL)
			return MTLS_ERR_ALLOC;
		for (i = 0; i < id->n_chain; i++) {
			if ((o->chain_der[i] = dup_mem(id->chain_der[i], id->chain_der_len[i])) ==
			    NULL)
				return MTLS_ERR_ALLOC;
			o->chain_der_len[i] = id->chain_der_len[i];
			o->n_chain = i + 1;
		}
	}
	return 0;
}

/* A token vanished under a signature: catch up before answering. */
static void
catch_up(struct tokenset *ts)
{
	if (__atomic_load_n(&ts->stale, __ATOMIC_RELAXED))
		token_poll(ts);
}

int
token_list(struct tokenset *ts, struct mtls_agent_identity **idsp, size_t *np, char *why,
	   size_t why_len)
{
	struct mtls_agent_identity *ids = NULL;
	size_t i, n, done = 0;
	int r = 0;

	*idsp = NULL;
	*np = 0;
	catch_up(ts);
	if ((r = read_lock(ts, why, why_len)) != 0)
		return r;
	n = ts->n > MTLS_IDS_MAX ? MTLS_IDS_MAX : ts->n;
	if (n > 0 && (ids = calloc(n, sizeof(*ids))) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (i = 0; i < n; i++) {
		done = i + 1;
		if ((r = copy_ident(ts, &ts->ids[i], &ids[i])) != 0)
			goto out;
	}
out:
	pthread_rwlock_unlock(&ts->lock);
	if (r != 0) {
		mtls_agent_identities_free(ids, done);
		return r;
	}
	*idsp = ids;
	*np = n;
	return 0;
}

static int pick_slot(struct tokenset *ts, const char *name, PKCS11_SLOT **slotp, unsigned int *idxp,
		     char *why, size_t why_len);

int
token_login(struct tokenset *ts, const char *name, const char *pin, int *retries, char *why,
	    size_t why_len)
{
	PKCS11_SLOT *slot = NULL;
	unsigned int idx = 0;
	int r;

	*retries = -1;
	catch_up(ts);
	if ((r = write_lock(ts, why, why_len)) != 0)
		return r;
	if ((r = pick_slot(ts, name, &slot, &idx, why, why_len)) == 0)
		r = login_slot(ts, slot, idx, pin, retries, why, why_len);
	pthread_rwlock_unlock(&ts->lock);
	return r;
}

/*
 * LOGIN with LOGIN_VERIFY: the token must check this PIN even when it is
 * logged in already (a second C_Login is answered CKR_USER_ALREADY_LOGGED_IN
 * without looking at the PIN).  So the session ends first and the token
 * logs in afresh: a wrong PIN counts against the token's retry counter and
 * leaves it logged out.  Write lock held, so signatures of every identity
 * on the token wait for the new login instead of failing in between;
 * login_slot() attaches all their keys again.
 */
static int
relogin_slot(struct tokenset *ts, PKCS11_SLOT *slot, unsigned int idx, const char *pin,
	     int *retries, char *why, size_t why_len)
{
	CK_TOKEN_INFO info;
	char label[64];
	int r, was_in;

	*retries = -1;
	snprintf(label, sizeof(label), "%s", slot->token->label);
	/* A locked PIN is reported by login_slot() without logging out. */
	if (token_info(ts, slot, &info) == 0 && (info.flags & CKF_USER_PIN_LOCKED))
		return login_slot(ts, slot, idx, pin, retries, why, why_len);
	if ((was_in = slot_logged_in(slot))) {
		if (inflight_enter(ts) != 0)
			return hung_why(ts, why, why_len);
		detach_keys(ts, slot);
		if (PKCS11_logout(slot) != 0)
			ERR_clear_error();
		inflight_leave(ts);
		ts->login_time[idx] = 0;
	}
	r = login_slot(ts, slot, idx, pin, retries, why, why_len);
	if (r != 0 && was_in) {
		size_t len = strlen(why);

		snprintf(why + len, why_len - len, "; the token is logged out now");
		info("token %s: logged out after a PIN check that failed", label);
	}
	return r;
}

int
token_relogin(struct tokenset *ts, const char *name, const char *pin, int *retries, char *why,
	      size_t why_len)
{
	PKCS11_SLOT *slot = NULL;
	unsigned int idx = 0;
	int r;

	*retries = -1;
	catch_up(ts);
	if ((r = write_lock(ts, why, why_len)) != 0)
		return r;
	if ((r = pick_slot(ts, name, &slot, &idx, why, why_len)) == 0)
		r = relogin_slot(ts, slot, idx, pin, retries, why, why_len);
	pthread_rwlock_unlock(&ts->lock);
	return r;
}

/* The slot of identity `name`, or of the only token ("" ); write lock held. */
static int
pick_slot(struct tokenset *ts, const char *name, PKCS11_SLOT **slotp, unsigned int *idxp, char *why,
	  size_t why_len)
{
	PKCS11_SLOT *slot = NULL, *s;
	unsigned int idx = 0, sidx;
	struct ident *id;
	size_t i;
	int r = 0;

	rescan(ts);
	if (name[0] != '\0') {
		if ((id = find_ident(ts, name)) == NULL) {
			snprintf(why, why_len, "no identity named %s", name);
			r = MTLS_ERR_NO_IDENTITY;
			goto out;
		}
		/* present: the module answers for the token (rescan()). */
		if ((slot = ident_slot(ts, id, &idx)) == NULL || !id->present) {
			snprintf(why, why_len, "the token of %s is not present", name);
			r = MTLS_ERR_TOKEN_ABSENT;
			goto out;
		}
	} else {
		/* No name: the one token that holds identities. */
		for (i = 0; i < ts->n; i++) {
			if (!ts->ids[i].present || (s = ident_slot(ts, &ts->ids[i], &sidx)) == NULL)
				continue;
			if (slot != NULL && s != slot) {
				snprintf(why, why_len, "identities on several tokens: name one");
				r = MTLS_ERR_INVALID_ARGUMENT;
				goto out;
			}
			slot = s;
			idx = sidx;
		}
		if (slot == NULL) {
			snprintf(why, why_len, "no token with identities is present");
			r = ts->n == 0 ? MTLS_ERR_NO_IDENTITY : MTLS_ERR_TOKEN_ABSENT;
			goto out;
		}
	}
	*slotp = slot;
	*idxp = idx;
out:
	return r;
}

/*
 * PIN changes go straight to the module on a session of their own: libp11
 * 0.4.12 hands out read-only sessions from its pool (C_SetPIN then fails
 * with CKR_SESSION_READ_ONLY), and an SO login through libp11 would leave
 * libp11 holding a copy of the SO PIN.
 */
static CK_RV
rw_session(struct tokenset *ts, PKCS11_SLOT *slot, CK_SESSION_HANDLE *s)
{
	if (ts->fl == NULL)
		return CKR_FUNCTION_NOT_SUPPORTED;
	return ts->fl->C_OpenSession(PKCS11_get_slotid_from_slot(slot),
				     CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s);
}

int
token_set_pin(struct tokenset *ts, const char *name, int mode, const char *old, const char *new_pin,
	      int *retries, char *why, size_t why_len)
{
	CK_SESSION_HANDLE sess = CK_INVALID_HANDLE;
	PKCS11_SLOT *slot = NULL;
	unsigned int idx = 0;
	int r, in_module = 0;
	CK_RV rv;

	*retries = -1;
	if ((r = write_lock(ts, why, why_len)) != 0)
		return r;
	if ((r = pick_slot(ts, name, &slot, &idx, why, why_len)) != 0)
		goto out;
	if (inflight_enter(ts) != 0) {
		r = hung_why(ts, why, why_len);
		goto out;
	}
	in_module = 1;
	if (mode == SET_PIN_UNBLOCK) {
		/* The user session must end before the SO may log in. */
		detach_keys(ts, slot);
		if (slot_logged_in(slot) && PKCS11_logout(slot) != 0)
			ERR_clear_error();
		ts->login_time[idx] = 0;
		/* PKCS#11 refuses an SO login while read-only sessions exist
		 * (CKR_SESSION_READ_ONLY_EXISTS): turn libp11's pool to R/W,
		 * which closes its sessions. */
		if (PKCS11_open_session(slot, 1) != 0)
			ERR_clear_error();
	}
	if ((rv = rw_session(ts, slot, &sess)) != CKR_OK) {
		r = pin_error(ts, slot, rv, 0, retries, "PIN", why, why_len);
		goto out;
	}
	if (mode == SET_PIN_CHANGE) {
		rv = ts->fl->C_SetPIN(sess, (CK_UTF8CHAR_PTR)old, strlen(old),
				      (CK_UTF8CHAR_PTR)new_pin, strlen(new_pin));
		if (rv != CKR_OK) {
			r = pin_error(ts, slot, rv, 0, retries, "PIN", why, why_len);
			goto out;
		}
		info("token %s: user PIN changed", slot->token->label);
		goto out;
	}
	rv = ts->fl->C_Login(sess, CKU_SO, (CK_UTF8CHAR_PTR)old, strlen(old));
	if (rv != CKR_OK) {
		r = pin_error(ts, slot, rv, 1, retries, "unblocking code (SO PIN)", why, why_len);
		goto out;
	}
	rv = ts->fl->C_InitPIN(sess, (CK_UTF8CHAR_PTR)new_pin, strlen(new_pin));
	(void)ts->fl->C_Logout(sess);
	if (rv != CKR_OK) {
		r = pin_error(ts, slot, rv, 0, retries, "new PIN", why, why_len);
		goto out;
	}
	(void)ts->fl->C_CloseSession(sess);
	sess = CK_INVALID_HANDLE;
	info("token %s: user PIN unblocked and set", slot->token->label);
	/* login_slot() counts its own call. */
	inflight_leave(ts);
	in_module = 0;
	r = login_slot(ts, slot, idx, new_pin, retries, why, why_len);
out:
	if (sess != CK_INVALID_HANDLE)
		(void)ts->fl->C_CloseSession(sess);
	if (in_module)
		inflight_leave(ts);
	pthread_rwlock_unlock(&ts->lock);
	return r;
}

int
token_logout(struct tokenset *ts, const char *name, char *why, size_t why_len)
{
	struct ident *id = NULL;
	unsigned int i;
	int r = 0;

	if ((r = write_lock(ts, why, why_len)) != 0)
		return r;
	if (name[0] != '\0' && (id = find_ident(ts, name)) == NULL) {
		r = MTLS_ERR_NO_IDENTITY;
		goto out;
	}
	for (i = 0; i < ts->nslots; i++) {
		PKCS11_SLOT *slot = &ts->slots[i];

		if (slot->token == NULL || (id != NULL && ident_slot(ts, id, NULL) != slot))
			continue;
		detach_keys(ts, slot);
		if (slot_logged_in(slot)) {
			if (PKCS11_logout(slot) != 0)
				ERR_clear_error();
			info("token %s: logged out", slot->token->label);
		}
		ts->login_time[i] = 0;
	}
out:
	pthread_rwlock_unlock(&ts->lock);
	return r;
}

/* 1 if the identity's key is past its lifetime or idle too long. */
static int
key_expired(struct tokenset *ts, struct ident *id, time_t now)
{
	time_t used;

	if (id->pkey == NULL || id->ci == NULL)
		return 0;
	if (id->ci->lifetime > 0 && now - id->attached_at >= (time_t)id->ci->lifetime)
		return 1;
	pthread_mutex_lock(&ts->stat_mu);
	used = id->last_used;
	pthread_mutex_unlock(&ts->stat_mu);
	return id->ci->idle_logout > 0 && now - used >= (time_t)id->ci->idle_logout;
}

/* Drops keys past lifetime/idle-logout; a token none of whose identities
 * keeps a key is logged out. */
static void
expire_keys(struct tokenset *ts, time_t now)
{
	unsigned int i;
	size_t k;
	int due = 0;

	pthread_rwlock_rdlock(&ts->lock);
	for (k = 0; k < ts->n && !due; k++)
		due = key_expired(ts, &ts->ids[k], now);
	pthread_rwlock_unlock(&ts->lock);
	if (!due)
		return;
	pthread_rwlock_wrlock(&ts->lock);
	for (k = 0; k < ts->n; k++) {
		struct ident *id = &ts->ids[k];

		if (!key_expired(ts, id, now))
			continue;
		info("identity %s: %s; key dropped", id->name,
		     id->ci->lifetime > 0 && now - id->attached_at >= (time_t)id->ci->lifetime
			 ? "lifetime over"
			 : "idle too long");
		EVP_PKEY_free(id->pkey);
		id->pkey = NULL;
	}
	for (i = 0; i < ts->nslots; i++) {
		PKCS11_SLOT *slot = &ts->slots[i];
		int used = 0;

		if (slot->token == NULL || !slot_logged_in(slot))
			continue;
		for (k = 0; k < ts->n && !used; k++)
			used = ts->ids[k].pkey != NULL && ident_slot(ts, &ts->ids[k], NULL) == slot;
		/* Identities with a policy went; any without one keeps it. */
		for (k = 0; k < ts->n && !used; k++)
			used = ts->ids[k].ci == NULL && ident_slot(ts, &ts->ids[k], NULL) == slot;
		if (used)
			continue;
		if (PKCS11_logout(slot) != 0)
			ERR_clear_error();
		ts->login_time[i] = 0;
		info("token %s: logged out (no identity uses it any more)", slot->token->label);
	}
	pthread_rwlock_unlock(&ts->lock);
}

void
token_expire(struct tokenset *ts, time_t now)
{
	unsigned int i;
	int due = 0;

	expire_keys(ts, now);
	if (ts->cfg->login_timeout == 0)
		return;
	pthread_rwlock_rdlock(&ts->lock);
	for (i = 0; i < ts->nslots; i++)
		if (ts->login_time[i] != 0 &&
		    now - ts->login_time[i] >= (time_t)ts->cfg->login_timeout)
			due = 1;
	pthread_rwlock_unlock(&ts->lock);
	if (!due)
		return;
	pthread_rwlock_wrlock(&ts->lock);
	for (i = 0; i < ts->nslots; i++) {
		PKCS11_SLOT *slot = &ts->slots[i];

		if (ts->login_time[i] == 0 ||
		    now - ts->login_time[i] < (time_t)ts->cfg->login_timeout)
			continue;
		ts->login_time[i] = 0;
		if (slot->token == NULL)
			continue;
		detach_keys(ts, slot);
		if (slot_logged_in(slot) && PKCS11_logout(slot) != 0)
			ERR_clear_error();
		info("token %s: login timeout, logged out", slot->token->label);
	}
	pthread_rwlock_unlock(&ts->lock);
}

static int
map_sign_error(unsigned long rv, char *why, size_t why_len)
{
	switch (rv) {
	case RV_USER_NOT_LOGGED_IN:
		snprintf(why, why_len, "token is not logged in");
		return MTLS_ERR_LOGIN_REQUIRED;
	case RV_TOKEN_NOT_PRESENT:
	case RV_DEVICE_REMOVED:
	case RV_SESSION_HANDLE_INVALID:
		snprintf(why, why_len, "token removed");
		return MTLS_ERR_TOKEN_ABSENT;
	}
	snprintf(why, why_len, "token signature failed (PKCS#11 error 0x%lx)", rv);
	return MTLS_ERR_TOKEN;
}

/*
 * The digests the schemes use, fetched once: a fetch per signature takes
 * the provider store's lock and a lookup every time.
 */
static const char *const digest_names[] = { "SHA256", "SHA384", "SHA512" };
static EVP_MD *digests[sizeof(digest_names) / sizeof(digest_names[0])];
static pthread_once_t digests_once = PTHREAD_ONCE_INIT;

static void
fetch_digests(void)
{
	size_t i;

	for (i = 0; i < sizeof(digests) / sizeof(digests[0]); i++)
		digests[i] = EVP_MD_fetch(NULL, digest_names[i], NULL);
}

/* A digest for `name`: the fetched-once one (*owned 0), or a new fetch. */
static EVP_MD *
digest_get(const char *name, int *owned)
{
	size_t i;

	(void)pthread_once(&digests_once, fetch_digests);
	*owned = 0;
	for (i = 0; i < sizeof(digests) / sizeof(digests[0]); i++)
		if (digests[i] != NULL && strcmp(name, digest_names[i]) == 0)
			return digests[i];
	*owned = 1;
	return EVP_MD_fetch(NULL, name, NULL);
}

/* Hashes (unless the content is the digest) and signs with the token key. */
static int
sign_with(EVP_PKEY *pkey, const struct scheme_info *s, int purpose, const unsigned char *content,
	  size_t len, unsigned char **sigp, size_t *sig_len, char *why, size_t why_len)
{
	unsigned char md[EVP_MAX_MD_SIZE], *sig = NULL;
	const unsigned char *tbs = md;
	unsigned int md_len = 0;
	EVP_PKEY_CTX *pctx = NULL;
	EVP_MD *dgst = NULL;
	size_t slen = 0, tbs_len;
	int r = MTLS_ERR_INTERNAL, dgst_owned = 0, max;

	if ((dgst = digest_get(s->digest, &dgst_owned)) == NULL)
		goto out;
	if (purpose == MTLS_AGENT_PURPOSE_RAW_DIGEST) {
		tbs = content;
		tbs_len = len;
	} else {
		if (EVP_Digest(content, len, md, &md_len, dgst, NULL) != 1)
			goto out;
		tbs_len = md_len;
	}
	ERR_clear_error();
	if ((pctx = EVP_PKEY_CTX_new(pkey, NULL)) == NULL || EVP_PKEY_sign_init(pctx) != 1)
		goto out;
	if (s->key_type == MTLS_AGENT_KEY_RSA) {
		if (EVP_PKEY_CTX_set_rsa_padding(pctx, s->pss ? RSA_PKCS1_PSS_PADDING
							      : RSA_PKCS1_PADDING) != 1 ||
		    (s->pss && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
			goto out;
	}
	if (EVP_PKEY_CTX_set_signature_md(pctx, dgst) != 1)
		goto out;
	/* The largest signature the key makes (an ECDSA one may be shorter). */
	max = EVP_PKEY_get_size(pkey);
	slen = max > 0 ? (size_t)max : 0;
	if (slen == 0 || slen > MTLS_SIG_MAX || (sig = malloc(slen)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if (EVP_PKEY_sign(pctx, sig, &slen, tbs, tbs_len) != 1) {
		r = map_sign_error(last_rv(), why, why_len);
		goto out;
	}
	*sigp = sig;
	*sig_len = slen;
	sig = NULL;
	r = 0;
out:
	if (r == MTLS_ERR_INTERNAL && why[0] == '\0')
		snprintf(why, why_len, "signature setup failed");
	ERR_clear_error();
	free(sig);
	EVP_PKEY_CTX_free(pctx);
	if (dgst_owned)
		EVP_MD_free(dgst);
	mtls_wipe(md, sizeof(md));
	return r;
}

/*
 * Rate limit: a bucket of `rate` signatures refilled at rate/60 a second.
 * Returns 1 if this signature may go ahead.
 */
static int
rate_ok(struct tokenset *ts, struct ident *id, unsigned int rate)
{
	struct timespec now;
	double elapsed;
	int ok;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&ts->stat_mu);
	if (id->bucket_at.tv_sec == 0 && id->bucket_at.tv_nsec == 0) {
		id->bucket = rate;
	} else {
		elapsed = (double)(now.tv_sec - id->bucket_at.tv_sec) +
			  (double)(now.tv_nsec - id->bucket_at.tv_nsec) / 1e9;
		id->bucket += elapsed * rate / 60.0;
		if (id->bucket > rate)
			id->bucket = rate;
	}
	id->bucket_at = now;
	ok = id->bucket >= 1.0;
	if (ok)
		id->bucket -= 1.0;
	pthread_mutex_unlock(&ts->stat_mu);
	return ok;
}

/*
 * Phase 1 (read lock held): every decision that needs no token; *idp is
 * the identity, valid while the lock is held.  `charge` counts the request
 * against the rate limit (not again when re-deciding after a confirmation).
 */
static int
sign_decide(struct tokenset *ts, const struct sign_peer *peer, const char *name, uint16_t scheme,
	    int purpose, const unsigned char *content, size_t len, int charge, struct ident **idp,
	    int *confirm, char *why, size_t why_len)
{
	const struct scheme_info *s;
	struct ident *id;
	int r;

	*confirm = 0;
	*idp = NULL;
	if ((id = find_ident(ts, name)) == NULL) {
		snprintf(why, why_len, "no identity named %s", name);
		return MTLS_ERR_NO_IDENTITY;
	}
	if (id->ci != NULL && id->ci->n_peers > 0 &&
	    !policy_peer_matches(id->ci->peers, id->ci->n_peers, peer->uid, peer->gid, peer->exe)) {
		snprintf(why, why_len, "peer uid %u gid %u exe %s may not use identity %s",
			 (unsigned)peer->uid, (unsigned)peer->gid, peer->exe, name);
		return MTLS_ERR_POLICY_DENIED;
	}
	if ((r = policy_check_sign(id->purposes, id->key_type, id->key_bits, scheme, purpose,
				   content, len, &s, why, why_len)) != 0)
		return r;
	if (charge && id->ci != NULL && id->ci->rate_limit > 0 &&
	    !rate_ok(ts, id, id->ci->rate_limit)) {
		snprintf(why, why_len, "identity %s: more than %u signatures a minute", name,
			 id->ci->rate_limit);
		warn("rate limit hit: identity %s (%u a minute), peer pid %ld", name,
		     id->ci->rate_limit, (long)peer->pid);
		return MTLS_ERR_RATE_LIMITED;
	}
	*confirm = id->ci != NULL && id->ci->confirm;
	*idp = id;
	return 0;
}

/*
 * Asks for confirmation with no lock held (other clients go on meanwhile),
 * then takes the read lock again and decides again: a reload may have
 * removed or renamed the identity, changed its policy or given the name
 * another certificate (and so another key) meanwhile.  On success the read
 * lock is held and *idp is the identity as it is now.
 */
static int
sign_confirm(struct tokenset *ts, const struct sign_peer *peer, const char *name, uint16_t scheme,
	     int purpose, const unsigned char *content, size_t len, struct ident **idp, char *why,
	     size_t why_len)
{
	unsigned char *cert = NULL;
	size_t cert_len = (*idp)->cert_der_len;
	char prompt[512];
	int r, confirm = 0;

	/* The confirmed key is the certificate's: remember which one. */
	if ((cert = malloc(cert_len)) == NULL) {
		pthread_rwlock_unlock(&ts->lock);
		return MTLS_ERR_ALLOC;
	}
	memcpy(cert, (*idp)->cert_der, cert_len);
	*idp = NULL;
	pthread_rwlock_unlock(&ts->lock);
	snprintf(prompt, sizeof(prompt),
		 "Allow %s (executable as the kernel reports it; pid %ld, uid %u) to sign a %s "
		 "with the key \"%s\"?",
		 peer->exe, (long)peer->pid, (unsigned)peer->uid, mtls_agent_purpose_name(purpose),
		 name);
	if ((r = confirm_ask(ts->cfg->askpass, ts->cfg->confirm_timeout, prompt, why, why_len)) !=
	    0)
		goto out;
	if ((r = read_lock(ts, why, why_len)) != 0)
		goto out;
	r = sign_decide(ts, peer, name, scheme, purpose, content, len, 0, idp, &confirm, why,
			why_len);
	if (r == 0 &&
	    ((*idp)->cert_der_len != cert_len || memcmp((*idp)->cert_der, cert, cert_len) != 0)) {
		snprintf(why, why_len,
			 "identity %s was reconfigured while its use was being confirmed", name);
		r = MTLS_ERR_CONFIRM_DENIED;
	}
	if (r != 0) {
		*idp = NULL;
		pthread_rwlock_unlock(&ts->lock);
	}
out:
	free(cert);
	return r;
}

static long
mono_seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)t.tv_sec;
}

/* Registers a signature about to call the module; refused while hung. */
static int
inflight_enter(struct tokenset *ts)
{
	int r = 0;

	pthread_mutex_lock(&ts->stat_mu);
	if (ts->hung) {
		r = MTLS_ERR_TIMEOUT;
	} else {
		if (ts->inflight++ == 0)
			ts->inflight_oldest = mono_seconds();
	}
	pthread_mutex_unlock(&ts->stat_mu);
	return r;
}

static void
inflight_leave(struct tokenset *ts)
{
	pthread_mutex_lock(&ts->stat_mu);
	if (--ts->inflight == 0) {
		if (ts->hung)
			info("the PKCS#11 module answers again");
		ts->hung = 0;
	} else {
		/* Not exact (the oldest may be the one leaving), but it only
		 * makes the hang verdict later, never earlier. */
		ts->inflight_oldest = mono_seconds();
	}
	pthread_mutex_unlock(&ts->stat_mu);
}

void
token_check_hang(struct tokenset *ts)
{
	pthread_mutex_lock(&ts->stat_mu);
	if (!ts->hung && ts->inflight > 0 &&
	    mono_seconds() - ts->inflight_oldest >= (long)ts->cfg->token_timeout) {
		ts->hung = 1;
		error("the PKCS#11 module has not answered a signature for %u s: refusing new "
		      "signatures until it does",
		      ts->cfg->token_timeout);
	}
	pthread_mutex_unlock(&ts->stat_mu);
}

int
token_sign(struct tokenset *ts, const struct sign_peer *peer, const char *name, uint16_t scheme,
	   int purpose, const unsigned char *content, size_t len, unsigned char **sig,
	   size_t *sig_len, char *why, size_t why_len)
{
	const struct scheme_info *s;
	struct ident *id;
	int r, confirm = 0;

	*sig = NULL;
	*sig_len = 0;
	why[0] = '\0';
	catch_up(ts);
	if ((r = read_lock(ts, why, why_len)) != 0)
		return r;
	/* Decided and signed under one read lock, so a reload cannot take
	 * the identity away in between; only a confirmation lets go of it. */
	r = sign_decide(ts, peer, name, scheme, purpose, content, len, 1, &id, &confirm, why,
			why_len);
	if (r != 0)
		goto out;
	if (confirm && (r = sign_confirm(ts, peer, name, scheme, purpose, content, len, &id, why,
					 why_len)) != 0)
		return r; /* no lock held */
	s = scheme_lookup(scheme);
	if (!id->present) {
		snprintf(why, why_len, "the token of %s is not present", name);
		r = MTLS_ERR_TOKEN_ABSENT;
		goto out;
	}
	if (id->pkey == NULL) {
		PKCS11_SLOT *slot = ident_slot(ts, id, NULL);
		CK_TOKEN_INFO info;

		if (slot == NULL || token_info(ts, slot, &info) == MTLS_ERR_TOKEN_ABSENT) {
			snprintf(why, why_len, "the token of %s is not present", name);
			r = MTLS_ERR_TOKEN_ABSENT;
			goto out;
		}
		if (id->key_mismatch) {
			snprintf(why, why_len,
				 "identity %s: key does not match certificate (the private key "
				 "at its id is another key); nothing is signed with it",
				 name);
			r = MTLS_ERR_TOKEN;
			goto out;
		}
		if (slot != NULL && slot_logged_in(slot)) {
			/* Logged in, yet no usable key: say so, not "log in". */
			snprintf(why, why_len,
				 "no private key for %s on its token, or one that does not match "
				 "its certificate",
				 name);
			r = MTLS_ERR_TOKEN;
			goto out;
		}
		snprintf(why, why_len, "log in to the token of %s first", name);
		r = MTLS_ERR_LOGIN_REQUIRED;
		goto out;
	}
	if (inflight_enter(ts) != 0) {
		snprintf(why, why_len,
			 "the PKCS#11 module has not answered a signature for over %u s",
			 ts->cfg->token_timeout);
		r = MTLS_ERR_TIMEOUT;
		goto out;
	}
	r = sign_with(id->pkey, s, purpose, content, len, sig, sig_len, why, why_len);
	inflight_leave(ts);
	if (r == 0) {
		pthread_mutex_lock(&ts->stat_mu);
		id->last_used = time(NULL);
		pthread_mutex_unlock(&ts->stat_mu);
	} else if (r == MTLS_ERR_TOKEN || r == MTLS_ERR_TOKEN_ABSENT) {
		/* A failure may mean the token went away under the key:
		 * answer "absent" if so, and have the poller rescan. */
		PKCS11_SLOT *slot = ident_slot(ts, id, NULL);
		CK_TOKEN_INFO info;

		if (slot == NULL || token_info(ts, slot, &info) != 0) {
			snprintf(why, why_len, "the token of %s was removed", name);
			r = MTLS_ERR_TOKEN_ABSENT;
			__atomic_store_n(&ts->stale, 1, __ATOMIC_RELAXED);
		}
	}
out:
	pthread_rwlock_unlock(&ts->lock);
	return r;
}

/* Trimmed copy of a space-padded PKCS#11 string. */
static void
unpad(char *dst, size_t dst_len, const unsigned char *src, size_t src_len)
{
	while (src_len > 0 && src[src_len - 1] == ' ')
		src_len--;
	if (src_len >= dst_len)
		src_len = dst_len - 1;
	memcpy(dst, src, src_len);
	dst[src_len] = '\0';
}

/*
 * 1 if the module's present tokens differ from what libp11 enumerated
 * (a token removed, inserted, or replaced); read lock held.
 */
static int
tokens_changed(struct tokenset *ts)
{
	CK_SLOT_ID ids[64];
	CK_ULONG n = sizeof(ids) / sizeof(ids[0]), k;
	CK_TOKEN_INFO info;
	unsigned int i, known = 0, seen = 0;
	char label[33], serial[17];

	if (ts->fl == NULL)
		return 0;
	if (ts->fl->C_GetSlotList(CK_TRUE, ids, &n) != CKR_OK)
		return 1;
	for (i = 0; i < ts->nslots; i++) {
		PKCS11_TOKEN *tok = ts->slots[i].token;

		if (tok == NULL || !tok->initialized)
			continue;
		known++;
		if (token_info(ts, &ts->slots[i], &info) != 0)
			return 1; /* gone */
	}
	for (k = 0; k < n; k++) {
		int found = 0;

		if (ts->fl->C_GetTokenInfo(ids[k], &info) != CKR_OK ||
		    !(info.flags & CKF_TOKEN_INITIALIZED))
			continue;
		seen++;
		unpad(label, sizeof(label), info.label, sizeof(info.label));
		unpad(serial, sizeof(serial), info.serialNumber, sizeof(info.serialNumber));
		for (i = 0; i < ts->nslots && !found; i++) {
			PKCS11_TOKEN *tok = ts->slots[i].token;

			found = tok != NULL && tok->initialized &&
				PKCS11_get_slotid_from_slot(&ts->slots[i]) == ids[k] &&
				strcmp(tok->label ? tok->label : "", label) == 0 &&
				strcmp(tok->serialnr ? tok->serialnr : "", serial) == 0;
		}
		if (!found)
			return 1; /* new or replaced */
	}
	return seen != known;
}

/* Is this slot's token logged in, whatever libp11 remembers? */
static int
token_says_logged_in(struct tokenset *ts, PKCS11_SLOT *slot)
{
	CK_SESSION_HANDLE sess;
	CK_SESSION_INFO si;
	int in = 0;

	if (ts->fl->C_OpenSession(PKCS11_get_slotid_from_slot(slot), CKF_SERIAL_SESSION, NULL, NULL,
				  &sess) != CKR_OK)
		return 0;
	if (ts->fl->C_GetSessionInfo(sess, &si) == CKR_OK)
		in = si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS;
	(void)ts->fl->C_CloseSession(sess);
	return in;
}

/*
 * Identities whose token was pulled stay listed (as absent, so a caller
 * hears "token absent", not "no such identity") until it comes back.
 */
static void
merge_absent(struct tokenset *ts, struct ident **idsp, size_t *np)
{
	struct ident *ids = *idsp, *nv;
	size_t i, k, n = *np;

	for (i = 0; i < ts->n; i++) {
		int kept = 0;

		for (k = 0; k < n && !kept; k++)
			kept = strcmp(ids[k].name, ts->ids[i].name) == 0;
		if (kept || ident_slot(ts, &ts->ids[i], NULL) != NULL)
			continue;
		if ((nv = reallocarray(ids, n + 1, sizeof(*ids))) == NULL)
			break;
		ids = nv;
		ids[n] = ts->ids[i];
		ids[n].present = 0;
		/* Moved, not copied: the old slot forgets it. */
		memset(&ts->ids[i], 0, sizeof(ts->ids[i]));
		ts->ids[i].name = NULL;
		n++;
	}
	*idsp = ids;
	*np = n;
}

/*
 * Re-enumerates slots and identities after a token came or went; write
 * lock held.  Keys of removed tokens are dropped (and with them libp11's
 * session state); a token that stayed logged in is taken up again
 * without a PIN (C_Login answers CKR_USER_ALREADY_LOGGED_IN, which libp11
 * takes as success); a reinserted token needs a login again.
 */
static void
reenumerate(struct tokenset *ts)
{
	struct ident *ids = NULL, *old_ids = NULL;
	size_t old_n = 0;
	PKCS11_SLOT *slots = NULL;
	unsigned int nslots = 0, i;
	size_t n = 0;
	time_t *lt;
	char err[256] = "";

	for (i = 0; i < ts->n; i++) {
		EVP_PKEY_free(ts->ids[i].pkey);
		ts->ids[i].pkey = NULL;
	}
	if (PKCS11_enumerate_slots(ts->p11, &slots, &nslots) != 0) {
		warn("token rescan: cannot list slots (PKCS#11 error 0x%lx); will retry",
		     last_rv());
		ERR_clear_error();
		return;
	}
	if ((lt = calloc(nslots + 1, sizeof(time_t))) == NULL) {
		PKCS11_release_all_slots(ts->p11, slots, nslots);
		return;
	}
	PKCS11_release_all_slots(ts->p11, ts->slots, ts->nslots);
	ts->slots = slots;
	ts->nslots = nslots;
	free(ts->login_time);
	ts->login_time = lt;
	if (build(ts, &ids, &n, err, sizeof(err)) != 0) {
		warn("token rescan: %s; keeping the identities without keys", err);
	} else {
		merge_absent(ts, &ids, &n);
		old_ids = ts->ids;
		old_n = ts->n;
		ts->ids = ids;
		ts->n = n;
	}
	rescan(ts);
	for (i = 0; i < ts->nslots; i++) {
		PKCS11_SLOT *slot = &ts->slots[i];

		if (slot->token == NULL || !slot->token->initialized ||
		    !token_says_logged_in(ts, slot))
			continue;
		ERR_clear_error();
		if (PKCS11_login(slot, 0, "") == 0) {
			ts->login_time[i] = time(NULL);
			attach_keys(ts, slot);
		}
		ERR_clear_error();
	}
	if (old_ids != NULL) {
		carry_timers(old_ids, old_n, ts->ids, ts->n);
		idents_free(old_ids, old_n);
	}
	info("tokens changed: %zu identit%s now", ts->n, ts->n == 1 ? "y" : "ies");
}

/* 1 if the module answers "failing" (not "absent") for a token it had;
 * read lock held. */
static int
module_failing(struct tokenset *ts)
{
	CK_TOKEN_INFO info;
	unsigned int i;

	if (ts->module_down)
		return 1;
	if (ts->fl == NULL)
		return 0;
	for (i = 0; i < ts->nslots; i++) {
		PKCS11_TOKEN *tok = ts->slots[i].token;

		if (tok != NULL && tok->initialized &&
		    module_failing_rv(
			ts->fl->C_GetTokenInfo(PKCS11_get_slotid_from_slot(&ts->slots[i]), &info)))
			return 1;
	}
	return 0;
}

/*
 * Finalizes and initializes the module again, then re-reads slots and
 * identities (a module stuck on a token that went and came back, like
 * SoftHSM2, only sees it again this way); write lock held.  Every session
 * and login of the module ends.  Identities whose token is still missing
 * stay listed as absent (reenumerate()).
 */
static int
module_restart(struct tokenset *ts, int quiet)
{
	char module[PATH_MAX], err[256];
	unsigned int i;
	size_t k;

	if (module_allowed(ts->cfg->module, ts->cfg->module_dirs, module, sizeof(module), err,
			   sizeof(err)) != 0) {
		warn("module restart: %s", err);
		return MTLS_ERR_CONFIG;
	}
	for (k = 0; k < ts->n; k++) {
		EVP_PKEY_free(ts->ids[k].pkey);
		ts->ids[k].pkey = NULL;
	}
	if (!ts->module_down) {
		PKCS11_release_all_slots(ts->p11, ts->slots, ts->nslots);
		ts->slots = NULL;
		ts->nslots = 0;
		/* Our own instance first: through p11-kit-proxy, the module
		 * behind it is finalized only when no instance is left. */
		raw_close(ts);
		PKCS11_CTX_unload(ts->p11);
		ts->module_down = 1;
	}
	/* PKCS11_CTX_load() sets these again without freeing them. */
	OPENSSL_free(ts->p11->manufacturer);
	OPENSSL_free(ts->p11->description);
	ts->p11->manufacturer = ts->p11->description = NULL;
	ts->restarted_at = mono_seconds();
	if (PKCS11_CTX_load(ts->p11, module) != 0) {
		error("the PKCS#11 module %s could not be initialized again (PKCS#11 error "
		      "0x%lx); its tokens count as absent, retrying",
		      module, last_rv());
		ERR_clear_error();
		return MTLS_ERR_TOKEN;
	}
	if (raw_open(ts, module, err, sizeof(err)) != 0) {
		error("the PKCS#11 module %s could not be initialized again (%s); its tokens count "
		      "as absent, retrying",
		      module, err);
		raw_close(ts);
		PKCS11_CTX_unload(ts->p11);
		return MTLS_ERR_TOKEN;
	}
	ts->module_down = 0;
	reenumerate(ts);
	rescan(ts);
	ts->lost = 0;
	for (k = 0; k < ts->n; k++)
		if (!ts->ids[k].present)
			ts->lost = 1;
	for (i = 0; i < ts->nslots; i++)
		if (ts->login_time[i] != 0)
			ts->lost = 0; /* a restart would log it out: wait */
	/* While a token is lost this runs every few seconds: once is news. */
	if (quiet && ts->lost)
		debug("the PKCS#11 module was initialized again: %zu identit%s", ts->n,
		      ts->n == 1 ? "y" : "ies");
	else
		info("the PKCS#11 module was initialized again: %zu identit%s", ts->n,
		     ts->n == 1 ? "y" : "ies");
	return 0;
}

/* Seconds a module may fail for a known token before it is restarted, and
 * between restarts while identities are lost. */
#define RESTART_AFTER_FAILING 3
#define RESTART_LOST_EVERY    3

/* Restart the module now?  Write lock held. */
static int
restart_due(struct tokenset *ts, int failing)
{
	unsigned int i;

	if (ts->module_down)
		return mono_seconds() - ts->restarted_at >= RESTART_LOST_EVERY;
	if (!failing) {
		ts->failing_since = 0;
	} else {
		if (ts->failing_since == 0)
			ts->failing_since = mono_seconds();
		if (mono_seconds() - ts->failing_since >= RESTART_AFTER_FAILING)
			return 1;
	}
	if (!ts->lost || mono_seconds() - ts->restarted_at < RESTART_LOST_EVERY)
		return 0;
	for (i = 0; i < ts->nslots; i++)
		if (ts->slots[i].token != NULL && slot_logged_in(&ts->slots[i]))
			return 0;
	return 1;
}

void
token_poll(struct tokenset *ts)
{
	int changed, failing;

	pthread_rwlock_rdlock(&ts->lock);
	failing = module_failing(ts);
	changed = failing || ts->failing_since != 0 || ts->lost ||
		  __atomic_load_n(&ts->stale, __ATOMIC_RELAXED) || tokens_changed(ts);
	pthread_rwlock_unlock(&ts->lock);
	if (!changed)
		return;
	pthread_rwlock_wrlock(&ts->lock);
	failing = module_failing(ts);
	if (restart_due(ts, failing)) {
		if (failing && !ts->module_down)
			warn("the PKCS#11 module keeps failing for a token it had: finalizing "
			     "and initializing it again");
		ts->failing_since = 0;
		__atomic_store_n(&ts->stale, 0, __ATOMIC_RELAXED);
		(void)module_restart(ts, !failing || ts->module_down);
	} else if (!failing &&
		   (__atomic_exchange_n(&ts->stale, 0, __ATOMIC_RELAXED) || tokens_changed(ts))) {
		/* Stale: a token vanished under a signature, and may be back
		 * by now with its sessions and login gone: start afresh. */
		reenumerate(ts);
	}
	pthread_rwlock_unlock(&ts->lock);
}

int
token_status(struct tokenset *ts, struct mtls_agent_status *st, char *why, size_t why_len)
{
	unsigned int i;
	int r;

	if ((r = read_lock(ts, why, why_len)) != 0)
		return r;
	st->identities = (uint32_t)ts->n;
	st->tokens_present = st->tokens_logged_in = 0;
	for (i = 0; i < ts->nslots; i++) {
		CK_TOKEN_INFO info;

		/* Asked of the module: libp11's slots are from the last scan. */
		if (ts->slots[i].token == NULL || !ts->slots[i].token->initialized ||
		    token_info(ts, &ts->slots[i], &info) != 0)
			continue;
		st->tokens_present++;
		if (slot_logged_in(&ts->slots[i]))
			st->tokens_logged_in++;
	}
	pthread_rwlock_unlock(&ts->lock);
	return 0;
}
