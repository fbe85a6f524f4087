/*
 * token.c - the token layer: identities, logins, PIN changes and hot-plug
 * on the PKCS#11 tokens of one module, which runs in its own process,
 * mtls-agent-p11 (src/agent/helper.c, docs/PROTOCOL.md section 12).
 * No module code runs in the agent.  The pipeline of a signature is
 * sign.c; what the two share is in token_int.h.
 *
 * An identity is a certificate (from the token, matched to the private key
 * by CKA_ID, or from a file) plus the private key with that CKA_ID.  The
 * certificate is public and visible before login, so identities are listed
 * before the PIN is given; the private key is looked up after login and
 * must match the certificate's public key (its numbers, as the helper read
 * them).
 *
 * Locking: a read-write lock over the agent's own tables.  Every helper
 * call ends within token-timeout (helper.c kills a helper that does not
 * answer), so no lock here is held longer than that; a restarted helper
 * (a new generation) has lost every login, which the next request notices
 * (tk_catch_up) and answers with LOGIN_REQUIRED after re-reading the tokens.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "helper.h"
#include "log.h"
#include "mtls-agent.h"
#include "msg_p11.h"
#include "secmem.h"
#include "token.h"
#include "token_int.h"

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
	EVP_PKEY_free(id->pub);
	free(id->cert_der);
	for (i = 0; i < id->n_chain; i++)
		free(id->chain_der[i]);
	free(id->chain_der);
	free(id->chain_der_len);
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

static void
slots_free(struct slot *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(s[i].label);
		free(s[i].serial);
		free(s[i].manufacturer);
		free(s[i].model);
	}
	free(s);
}

/* ---- requests to the helper ------------------------------------------ */

/* One request; *fail is cleared by the caller (msg_p11_error_clear). */
int
tk_call(struct tokenset *ts, struct wbuf *req, struct wbuf *reply, struct msg_p11_error *fail)
{
	int r;

	r = helper_call(ts->hp, req, reply, fail, NULL);
	wbuf_reset(req);
	return r;
}

/* The tokens the module has now, fresh flags. */
static int
list_tokens(struct tokenset *ts, struct msg_p11_tokens_resp *toks)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_error fail;
	int r;

	memset(toks, 0, sizeof(*toks));
	if (req == NULL || reply == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_p11_empty_req_put(req, P11_TOKENS)) != 0 ||
	    (r = tk_call(ts, req, reply, &fail)) != 0 ||
	    (r = msg_p11_tokens_resp_get(reply, toks)) != 0)
		goto out;
out:
	msg_p11_error_clear(&fail);
	wbuf_free(req);
	wbuf_free(reply);
	return r;
}

static int
list_objects(struct tokenset *ts, uint64_t slot, struct msg_p11_objects_resp *objs)
{
	struct wbuf *req = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_slot_req sr = { .slot = slot };
	struct msg_p11_error fail;
	int r;

	memset(objs, 0, sizeof(*objs));
	memset(&fail, 0, sizeof(fail));
	if (req == NULL || reply == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_p11_slot_req_put(req, P11_OBJECTS, &sr)) != 0 ||
	    (r = tk_call(ts, req, reply, &fail)) != 0 ||
	    (r = msg_p11_objects_resp_get(reply, objs)) != 0)
		goto out;
out:
	msg_p11_error_clear(&fail);
	wbuf_free(req);
	wbuf_free(reply);
	return r;
}

/* A request with an empty reply (LOGOUT, LOGIN, SET_PIN, REINIT). */
static int
call_empty(struct tokenset *ts, struct wbuf *req, struct msg_p11_error *fail)
{
	struct wbuf *reply = wbuf_new();
	int r;

	memset(fail, 0, sizeof(*fail));
	fail->retries = -1;
	if (reply == NULL)
		return MTLS_ERR_ALLOC;
	r = tk_call(ts, req, reply, fail);
	if (r == 0)
		r = wbuf_expect_end(reply);
	else if (fail->code == 0)
		fail->code = r; /* no answer from the module (timeout, helper gone) */
	wbuf_free(reply);
	return r;
}

static void
helper_logout(struct tokenset *ts, uint64_t slot)
{
	struct wbuf *req = wbuf_new();
	struct msg_p11_slot_req sr = { .slot = slot };
	struct msg_p11_error fail;

	if (req == NULL)
		return;
	if (msg_p11_slot_req_put(req, P11_LOGOUT, &sr) == 0)
		(void)call_empty(ts, req, &fail);
	msg_p11_error_clear(&fail);
	wbuf_free(req);
}

/* Copies the helper's token list into the slot table. */
static int
take_slots(struct tokenset *ts, struct msg_p11_tokens_resp *toks)
{
	struct slot *s = NULL;
	size_t i;

	if (toks->n > 0 && (s = calloc(toks->n, sizeof(*s))) == NULL)
		return MTLS_ERR_ALLOC;
	for (i = 0; i < toks->n; i++) {
		s[i].id = toks->t[i].slot;
		s[i].flags = toks->t[i].flags;
		s[i].label = toks->t[i].label;
		s[i].serial = toks->t[i].serial;
		s[i].manufacturer = toks->t[i].manufacturer;
		s[i].model = toks->t[i].model;
		toks->t[i].label = toks->t[i].serial = NULL;
		toks->t[i].manufacturer = toks->t[i].model = NULL;
		/* Logged in, but not by this agent's request: still counts. */
		s[i].login_time = toks->t[i].logged_in ? time(NULL) : 0;
	}
	slots_free(ts->slots, ts->nslots);
	ts->slots = s;
	ts->nslots = toks->n;
	return 0;
}

/* The fresh entry of `slot` in toks, or NULL (the token is gone). */
static const struct p11_token *
fresh(const struct msg_p11_tokens_resp *toks, const struct slot *slot)
{
	size_t i;

	for (i = 0; i < toks->n; i++)
		if (toks->t[i].slot == slot->id && strcmp(toks->t[i].label, slot->label) == 0 &&
		    strcmp(toks->t[i].serial, slot->serial) == 0)
			return &toks->t[i];
	return NULL;
}

/* ---- identities ------------------------------------------------------- */

/* Space-padded copy for CK_TOKEN_INFO matching. */
static void
pad_copy(unsigned char *dst, size_t dst_len, const char *src)
{
	size_t n = src == NULL ? 0 : strlen(src);

	memset(dst, ' ', dst_len);
	memcpy(dst, src == NULL ? "" : src, n > dst_len ? dst_len : n);
}

static int
token_matches(P11KitUri *uri, const struct slot *s)
{
	CK_TOKEN_INFO info;

	memset(&info, 0, sizeof(info));
	pad_copy(info.label, sizeof(info.label), s->label);
	pad_copy(info.manufacturerID, sizeof(info.manufacturerID), s->manufacturer);
	pad_copy(info.model, sizeof(info.model), s->model);
	pad_copy(info.serialNumber, sizeof(info.serialNumber), s->serial);
	return p11_kit_uri_match_token_info(uri, &info);
}

int
tk_valid_name(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > CONFIG_MAX_NAME)
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
static int key_info(EVP_PKEY *pub, int *type, unsigned int *bits);

static int
cert_key_info(X509 *cert, int *type, unsigned int *bits)
{
	return key_info(X509_get0_pubkey(cert), type, bits);
}

static int
key_info(EVP_PKEY *pub, int *type, unsigned int *bits)
{
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

int
tk_der_keep(unsigned char *der, int len, unsigned char **out, size_t *out_len)
{
	int r = 0;

	if (len <= 0)
		r = MTLS_ERR_INTERNAL;
	else if ((*out = malloc((size_t)len)) == NULL)
		r = MTLS_ERR_ALLOC;
	else {
		memcpy(*out, der, (size_t)len);
		*out_len = (size_t)len;
	}
	OPENSSL_free(der);
	return r;
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
	if ((id->cert = X509_dup(cert)) == NULL || (id->pub = X509_get_pubkey(id->cert)) == NULL) {
		OPENSSL_free(der);
		return MTLS_ERR_ALLOC;
	}
	return tk_der_keep(der, len, &id->cert_der, &id->cert_der_len);
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
bind_token(struct ident *id, const struct slot *s)
{
	if ((id->token_label = strdup(s->label)) == NULL ||
	    (id->token_serial = strdup(s->serial)) == NULL)
		return MTLS_ERR_ALLOC;
	id->present = 1;
	return 0;
}

/* A certificate object's X509, or NULL if it does not parse. */
static X509 *
object_cert(const struct p11_object *o)
{
	const unsigned char *p = o->a;

	if (o->kind != P11_OBJ_CERT || o->a_len == 0)
		return NULL;
	return d2i_X509(NULL, &p, (long)o->a_len);
}

/* Whether objs hold a certificate with this id. */
static int
has_cert_with_id(const struct msg_p11_objects_resp *objs, const unsigned char *id, size_t len)
{
	size_t i;

	for (i = 0; i < objs->n; i++)
		if (objs->o[i].kind == P11_OBJ_CERT && objs->o[i].id_len == len &&
		    memcmp(objs->o[i].id, id, len) == 0)
			return 1;
	return 0;
}

/*
 * Enrollment: on a logged-in token (private keys are listed only then),
 * a private key with a usable label and no certificate yet is an identity
 * too, so that a certificate request can be signed for it (purpose csr,
 * allowed by default for such a key only).
 */
static int
discover_keys(const struct config *cfg, const struct slot *s,
	      const struct msg_p11_objects_resp *objs, struct ident **idsp, size_t *np,
	      size_t *capp)
{
	size_t c, k;
	int r;

	for (c = 0; c < objs->n; c++) {
		const struct p11_object *o = &objs->o[c];
		struct ident *id;
		EVP_PKEY *pub;
		int dup = 0;

		if (o->kind == P11_OBJ_CERT || !tk_valid_name(o->label) || o->id_len == 0 ||
		    has_cert_with_id(objs, o->id, o->id_len))
			continue;
		for (k = 0; k < *np; k++)
			if (strcmp((*idsp)[k].name, o->label) == 0)
				dup = 1;
		if (dup || (pub = tk_object_pubkey(o)) == NULL)
			continue;
		if ((r = grow(idsp, *np, capp)) != 0) {
			EVP_PKEY_free(pub);
			return r;
		}
		id = &(*idsp)[(*np)++];
		id->pub = pub;
		if ((id->name = strdup(o->label)) == NULL || (id->id = malloc(o->id_len)) == NULL)
			return MTLS_ERR_ALLOC;
		memcpy(id->id, o->id, o->id_len);
		id->id_len = o->id_len;
		id->purposes = cfg->default_purposes | (1U << MTLS_AGENT_PURPOSE_CSR);
		if ((r = bind_token(id, s)) != 0)
			return r;
		if (key_info(pub, &id->key_type, &id->key_bits) != 0)
			ident_clear(&(*idsp)[--(*np)]);
	}
	return 0;
}

/* Discovery: every certificate with a usable label on matching tokens. */
static int
discover(struct tokenset *ts, const struct config *cfg, P11KitUri *turi, struct ident **idsp,
	 size_t *np)
{
	struct msg_p11_objects_resp objs;
	struct ident *ids = NULL;
	size_t n = 0, cap = 0, k, i, c;
	int r = 0;

	for (i = 0; i < ts->nslots; i++) {
		const struct slot *s = &ts->slots[i];

		if (!(s->flags & CKF_TOKEN_INITIALIZED) || !token_matches(turi, s))
			continue;
		if (list_objects(ts, s->id, &objs) != 0) {
			warn("token %s: cannot list certificates", s->label);
			continue;
		}
		for (c = 0; c < objs.n; c++) {
			const struct p11_object *pc = &objs.o[c];
			X509 *x;
			int dup = 0;

			if (pc->kind != P11_OBJ_CERT)
				continue;
			if ((x = object_cert(pc)) == NULL) {
				warn("token %s: certificate object \"%s\" does not parse; skipped",
				     s->label, pc->label);
				continue;
			}
			if (!tk_valid_name(pc->label) || pc->id_len == 0) {
				warn("token %s: certificate without a usable label or id; skipped",
				     s->label);
				X509_free(x);
				continue;
			}
			for (k = 0; k < n; k++)
				if (strcmp(ids[k].name, pc->label) == 0)
					dup = 1;
			if (dup) {
				warn("token %s: second certificate labelled %s; skipped", s->label,
				     pc->label);
				X509_free(x);
				continue;
			}
			if ((r = grow(&ids, n, &cap)) != 0 ||
			    (ids[n].name = strdup(pc->label)) == NULL ||
			    (ids[n].id = malloc(pc->id_len)) == NULL) {
				if (r == 0)
					n++;
				r = r != 0 ? r : MTLS_ERR_ALLOC;
				X509_free(x);
				msg_p11_objects_resp_clear(&objs);
				goto out;
			}
			memcpy(ids[n].id, pc->id, pc->id_len);
			ids[n].id_len = pc->id_len;
			ids[n].purposes = cfg->default_purposes;
			n++;
			if ((r = bind_token(&ids[n - 1], s)) != 0) {
				X509_free(x);
				msg_p11_objects_resp_clear(&objs);
				goto out;
			}
			if ((r = set_cert(&ids[n - 1], x)) != 0) {
				warn("identity %s: unsupported key type; skipped", pc->label);
				ident_clear(&ids[--n]);
				r = 0;
			}
			X509_free(x);
		}
		r = discover_keys(cfg, s, &objs, &ids, &n, &cap);
		msg_p11_objects_resp_clear(&objs);
		if (r != 0)
			goto out;
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

/* Finds the token of a configured identity (and its certificate). */
static int
configured_find(struct tokenset *ts, struct ident *id)
{
	struct msg_p11_objects_resp objs;
	size_t i, c;
	int r = 0;

	for (i = 0; i < ts->nslots && !id->present; i++) {
		const struct slot *s = &ts->slots[i];

		if (!(s->flags & CKF_TOKEN_INITIALIZED) || !token_matches(id->uri, s))
			continue;
		if (id->cert == NULL) {
			if (list_objects(ts, s->id, &objs) != 0)
				continue;
			for (c = 0; c < objs.n && id->cert == NULL; c++) {
				X509 *x;

				if (objs.o[c].kind != P11_OBJ_CERT ||
				    !id_matches(id, objs.o[c].id, objs.o[c].id_len,
						objs.o[c].label) ||
				    (x = object_cert(&objs.o[c])) == NULL)
					continue;
				if (set_cert(id, x) != 0)
					warn("identity %s: unsupported key type", id->name);
				X509_free(x);
			}
			msg_p11_objects_resp_clear(&objs);
			if (id->cert == NULL)
				continue;
		}
		if ((r = bind_token(id, s)) != 0)
			return r;
	}
	return 0;
}

/* Configured identities: each names its key by URI. */
static int
configured(struct tokenset *ts, const struct config *cfg, struct ident **idsp, size_t *np,
	   char *err, size_t err_len)
{
	struct ident *ids;
	size_t k, n;
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
		if ((r = configured_find(ts, id)) != 0)
			goto out;
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
struct slot *
tk_ident_slot(struct tokenset *ts, const struct ident *id)
{
	size_t i;

	if (id->token_label == NULL)
		return NULL;
	for (i = 0; i < ts->nslots; i++)
		if (strcmp(ts->slots[i].label, id->token_label) == 0 &&
		    strcmp(ts->slots[i].serial, id->token_serial) == 0)
			return &ts->slots[i];
	return NULL;
}

/* Is the RSA key with these numbers the certificate's key? */
static int
rsa_is(EVP_PKEY *pub, const struct p11_object *o)
{
	BIGNUM *n = NULL, *e = NULL, *kn = NULL, *ke = NULL;
	int same = 0;

	if (!EVP_PKEY_is_a(pub, "RSA") || !EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) ||
	    !EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_E, &e))
		goto out;
	if ((kn = BN_bin2bn(o->a, (int)o->a_len, NULL)) == NULL ||
	    (ke = BN_bin2bn(o->b, (int)o->b_len, NULL)) == NULL)
		goto out;
	same = BN_cmp(n, kn) == 0 && BN_cmp(e, ke) == 0;
out:
	BN_free(n);
	BN_free(e);
	BN_free(kn);
	BN_free(ke);
	return same;
}

/* Is the EC key with these parameters and point the certificate's key?
 * CKA_EC_POINT is a DER OCTET STRING around the point (some modules give
 * the bare point); with no public key object, the point is unknown and
 * the curve has to do. */
static int
ec_is(EVP_PKEY *pub, const struct p11_object *o)
{
	unsigned char enc[256];
	size_t enc_len = 0, len;
	const unsigned char *p = o->a, *pt;
	ASN1_OBJECT *oid = NULL;
	ASN1_OCTET_STRING *os = NULL;
	char group[64], want[64];
	int same = 0;

	if (!EVP_PKEY_is_a(pub, "EC") ||
	    !EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					    NULL) ||
	    !EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, enc,
					     sizeof(enc), &enc_len))
		return 0;
	if ((oid = d2i_ASN1_OBJECT(NULL, &p, (long)o->a_len)) == NULL)
		return 0;
	if (OBJ_obj2nid(oid) == NID_undef || strcmp(OBJ_nid2sn(OBJ_obj2nid(oid)), group) != 0) {
		/* Names differ between OpenSSL spellings: compare nids. */
		snprintf(want, sizeof(want), "%s", group);
		if (OBJ_obj2nid(oid) != OBJ_sn2nid(want) && OBJ_obj2nid(oid) != OBJ_ln2nid(want))
			goto out;
	}
	if (o->b_len == 0) {
		same = 1;
		goto out;
	}
	p = o->b;
	if ((os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)o->b_len)) != NULL &&
	    p == o->b + o->b_len) {
		pt = ASN1_STRING_get0_data(os);
		len = (size_t)ASN1_STRING_length(os);
	} else {
		pt = o->b;
		len = o->b_len;
	}
	same = len == enc_len && memcmp(pt, enc, len) == 0;
out:
	ASN1_OBJECT_free(oid);
	ASN1_OCTET_STRING_free(os);
	return same;
}

static int
key_is_certs(const struct ident *id, const struct p11_object *o)
{
	EVP_PKEY *pub = id->pub;

	if (pub == NULL)
		return 0;
	if (o->kind == P11_OBJ_RSA)
		return rsa_is(pub, o);
	if (o->kind == P11_OBJ_EC)
		return ec_is(pub, o);
	return 0;
}

/* After login: find each identity's private key on this slot and check it
 * belongs to the certificate. */
static void
attach_keys_in(struct tokenset *ts, struct ident *ids, size_t n, struct slot *slot)
{
	struct msg_p11_objects_resp objs;
	size_t i, k;
	int found_other;

	if (list_objects(ts, slot->id, &objs) != 0) {
		warn("token %s: cannot list private keys", slot->label);
		return;
	}
	for (i = 0; i < n; i++) {
		struct ident *id = &ids[i];

		if (id->has_key || tk_ident_slot(ts, id) != slot)
			continue;
		found_other = 0;
		for (k = 0; k < objs.n; k++) {
			const struct p11_object *o = &objs.o[k];

			if (o->kind == P11_OBJ_CERT || !id_matches(id, o->id, o->id_len, o->label))
				continue;
			/* A key that is not the certificate's is never used:
			 * type, size or curve and value must all be the same. */
			if (!key_is_certs(id, o)) {
				found_other = 1;
				continue;
			}
			id->key_mismatch = 0;
			id->has_key = 1;
			id->key = o->handle;
			id->attached_at = id->last_used = time(NULL);
			break;
		}
		if (!id->has_key && found_other) {
			warn("identity %s: private key on the token does not match its "
			     "certificate; not used",
			     id->name);
			id->key_mismatch = 1;
		} else if (!id->has_key) {
			warn("identity %s: no private key found on token %s", id->name,
			     slot->label);
		}
	}
	msg_p11_objects_resp_clear(&objs);
}

static void
attach_keys(struct tokenset *ts, struct slot *slot)
{
	attach_keys_in(ts, ts->ids, ts->n, slot);
}

static void
detach_keys(struct tokenset *ts, const struct slot *slot)
{
	size_t i;

	for (i = 0; i < ts->n; i++)
		if (ts->ids[i].has_key && tk_ident_slot(ts, &ts->ids[i]) == slot)
			ts->ids[i].has_key = 0;
}

struct ident *
tk_find_ident(struct tokenset *ts, const char *name)
{
	size_t i;

	for (i = 0; i < ts->n; i++)
		if (strcmp(ts->ids[i].name, name) == 0)
			return &ts->ids[i];
	return NULL;
}

/* ---- login and PIN ---------------------------------------------------- */

/* The fresh flags of `slot` (0 if the token is gone or not answering). */
int
tk_slot_flags(struct tokenset *ts, const struct slot *slot, uint32_t *flags, int *logged_in)
{
	struct msg_p11_tokens_resp toks;
	const struct p11_token *t;
	int r;

	*flags = 0;
	if (logged_in != NULL)
		*logged_in = 0;
	if ((r = list_tokens(ts, &toks)) != 0)
		return r;
	if ((t = fresh(&toks, slot)) == NULL) {
		r = MTLS_ERR_TOKEN_ABSENT;
	} else {
		*flags = t->flags;
		if (logged_in != NULL)
			*logged_in = t->logged_in;
	}
	msg_p11_tokens_resp_clear(&toks);
	return r;
}

/*
 * The one mapping of a failed PIN operation (login, SO login, C_SetPIN,
 * C_InitPIN) to an MTLS_ERR_* and a reason; the token flags are re-read
 * because they say how many tries are left.  `what` names the secret.
 */
static int
pin_error(struct tokenset *ts, const struct slot *slot, const struct msg_p11_error *fail, int so,
	  int *retries, const char *what, char *why, size_t why_len)
{
	CK_FLAGS locked = so ? CKF_SO_PIN_LOCKED : CKF_USER_PIN_LOCKED;
	CK_FLAGS final = so ? CKF_SO_PIN_FINAL_TRY : CKF_USER_PIN_FINAL_TRY;
	CK_FLAGS low = so ? CKF_SO_PIN_COUNT_LOW : CKF_USER_PIN_COUNT_LOW;
	const char *label = slot->label;
	uint32_t flags = 0;
	char tries[32];

	*retries = -1;
	if (fail->code == MTLS_ERR_TIMEOUT || fail->rv == 0) {
		/* The helper did not answer (or broke): no PIN verdict. */
		snprintf(why, why_len, "token %s: %s", label,
			 fail->code == MTLS_ERR_TIMEOUT
			     ? "the PKCS#11 module has not answered; it is started again"
			     : (fail->message != NULL && *fail->message != '\0'
				    ? fail->message
				    : mtls_agent_strerror(fail->code)));
		return fail->code;
	}
	if (tk_slot_flags(ts, slot, &flags, NULL) == 0)
		*retries = (flags & locked) ? 0 : (flags & final) ? 1 : -1;
	switch (fail->rv) {
	case CKR_PIN_INCORRECT:
		if (flags & locked) {
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
		else if (flags & low)
			snprintf(tries, sizeof(tries), "few tries left");
		if (strcmp(what, "PIN") == 0)
			snprintf(why, why_len, "token %s%s%s", label, *tries != '\0' ? ": " : "",
				 tries);
		else
			snprintf(why, why_len, "token %s: %s incorrect%s%s", label, what,
				 *tries != '\0' ? ", " : "", tries);
		return MTLS_ERR_PIN_INCORRECT;
	case CKR_PIN_LOCKED:
		*retries = 0;
		snprintf(why, why_len, "token %s: %s locked", label, what);
		return MTLS_ERR_PIN_LOCKED;
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
		snprintf(why, why_len, "token %s: %s has a length or characters the token refuses",
			 label, what);
		return MTLS_ERR_PIN_INVALID;
	case CKR_PIN_EXPIRED:
		snprintf(why, why_len, "token %s: %s expired; change it with the token's tools",
			 label, what);
		return MTLS_ERR_PIN_LOCKED;
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_REMOVED:
		snprintf(why, why_len, "token %s: removed", label);
		return MTLS_ERR_TOKEN_ABSENT;
	}
	snprintf(why, why_len, "token %s: %s operation failed (PKCS#11 error 0x%lx)", label, what,
		 (unsigned long)fail->rv);
	return MTLS_ERR_TOKEN;
}

/* The one place the user PIN goes to the helper. */
static int
helper_login(struct tokenset *ts, const struct slot *slot, const char *pin, int verify,
	     struct msg_p11_error *fail)
{
	struct msg_p11_login_req lr = { .slot = slot->id,
					.flags = verify ? P11_LOGIN_VERIFY : 0,
					.pin = (char *)pin };
	struct wbuf *req = wbuf_new();
	int r;

	memset(fail, 0, sizeof(*fail));
	if (req == NULL)
		return MTLS_ERR_ALLOC;
	if ((r = msg_p11_login_req_put(req, &lr)) == 0)
		r = call_empty(ts, req, fail);
	wbuf_free(req); /* wiped */
	return r;
}

/* Logs in `slot` with pin; write lock held.  verify: LOGIN_VERIFY. */
static int
login_slot(struct tokenset *ts, struct slot *slot, const char *pin, int verify, int *retries,
	   char *why, size_t why_len)
{
	struct msg_p11_error fail;
	uint32_t flags;
	int r, in;

	*retries = -1;
	if ((r = tk_slot_flags(ts, slot, &flags, &in)) != 0) {
		snprintf(why, why_len, "token %s: %s", slot->label, mtls_agent_strerror(r));
		return r;
	}
	/* A locked PIN is reported, never tried: each try may count. */
	if (flags & CKF_USER_PIN_LOCKED) {
		*retries = 0;
		snprintf(why, why_len, "token %s: user PIN is locked; not trying", slot->label);
		return MTLS_ERR_PIN_LOCKED;
	}
	if (in && !verify) {
		/* The token does not check a PIN twice (C_Login answers
		 * CKR_USER_ALREADY_LOGGED_IN): say so rather than pretend. */
		if (slot->login_time == 0)
			slot->login_time = time(NULL);
		attach_keys(ts, slot);
		info("token %s: already logged in; PIN not checked again", slot->label);
		return 0;
	}
	if (verify && in) {
		detach_keys(ts, slot);
		slot->login_time = 0;
	}
	r = helper_login(ts, slot, pin, verify, &fail);
	if (r == 0) {
		slot->login_time = time(NULL);
		attach_keys(ts, slot);
		info("token %s: logged in", slot->label);
	} else {
		r = pin_error(ts, slot, &fail, 0, retries, "PIN", why, why_len);
		if (verify && in) {
			size_t len = strlen(why);

			snprintf(why + len, why_len - len, "; the token is logged out now");
			info("token %s: logged out after a PIN check that failed", slot->label);
		}
	}
	msg_p11_error_clear(&fail);
	return r;
}

/* ---- the token set ---------------------------------------------------- */

static int
build(struct tokenset *ts, const struct config *cfg, struct ident **ids, size_t *n, char *err,
      size_t err_len)
{
	P11KitUri *turi;
	int r;

	if (cfg->n_identities > 0)
		return configured(ts, cfg, ids, n, err, err_len);
	if ((turi = p11_kit_uri_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if (p11_kit_uri_parse(cfg->token_uri ? cfg->token_uri : "pkcs11:", P11_KIT_URI_FOR_TOKEN,
			      turi) != P11_KIT_URI_OK) {
		p11_kit_uri_free(turi);
		snprintf(err, err_len, "bad token URI %s", cfg->token_uri);
		return MTLS_ERR_CONFIG;
	}
	r = discover(ts, cfg, turi, ids, n);
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
		struct ident *id = tk_find_ident(ts, ci->name);
		struct slot *slot;
		char *pin = NULL, why[256];
		int r, retries;

		if (ci->pin_file == NULL || id == NULL)
			continue;
		if ((slot = tk_ident_slot(ts, id)) == NULL) {
			warn("identity %s: token absent; PIN file not used", id->name);
			continue;
		}
		if ((r = config_read_pin_file(ci->pin_file, &pin, err, err_len)) != 0)
			return r;
		r = login_slot(ts, slot, pin, 0, &retries, why, sizeof(why));
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

/* Reads the slots afresh; write lock held (or not shared yet). */
static int
read_slots(struct tokenset *ts)
{
	struct msg_p11_tokens_resp toks;
	int r;

	ts->gen = helper_generation(ts->hp);
	if ((r = list_tokens(ts, &toks)) != 0)
		return r;
	r = take_slots(ts, &toks);
	msg_p11_tokens_resp_clear(&toks);
	return r;
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
	if ((r = helper_start(NULL, module, HELPER_CHANNELS, (int)cfg->token_timeout * 1000,
			      &ts->hp, err, err_len)) != 0)
		goto out;
	if ((r = read_slots(ts)) != 0) {
		snprintf(err, err_len, "cannot list the tokens of %s: %s", cfg->module,
			 mtls_agent_strerror(r));
		goto out;
	}
	if ((r = build(ts, ts->cfg, &ts->ids, &ts->n, err, err_len)) != 0)
		goto out;
	if ((r = pin_file_logins(ts, err, err_len)) != 0)
		goto out;
	info("%zu identit%s on %zu slot%s of %s", ts->n, ts->n == 1 ? "y" : "ies", ts->nslots,
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
		if (!ids[i].has_key)
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

/* Every helper call ends within token-timeout: plain locks will do. */
static int
write_lock(struct tokenset *ts, char *why, size_t why_len)
{
	(void)why;
	(void)why_len;
	pthread_rwlock_wrlock(&ts->lock);
	return 0;
}

int
tk_read_lock(struct tokenset *ts, char *why, size_t why_len)
{
	(void)why;
	(void)why_len;
	pthread_rwlock_rdlock(&ts->lock);
	return 0;
}

/* Which identities' tokens are present, from one fresh token list. */
static void
rescan(struct tokenset *ts)
{
	struct msg_p11_tokens_resp toks;
	const struct slot *s;
	size_t i;

	if (list_tokens(ts, &toks) != 0)
		memset(&toks, 0, sizeof(toks));
	for (i = 0; i < ts->n; i++) {
		s = tk_ident_slot(ts, &ts->ids[i]);
		ts->ids[i].present = s != NULL && fresh(&toks, s) != NULL;
	}
	msg_p11_tokens_resp_clear(&toks);
}

static void merge_absent(struct tokenset *ts, struct ident **idsp, size_t *np);
static void reenumerate(struct tokenset *ts);

int
token_reload(struct tokenset *ts, const struct config *cfg, char *err, size_t err_len)
{
	const struct config *old = ts->cfg;
	struct ident *ids = NULL, *old_ids;
	size_t n = 0, old_n, i;
	unsigned int gen;
	int r;

	if (strcmp(cfg->module, old->module) != 0) {
		snprintf(err, err_len, "module changed (%s -> %s): restart the agent", old->module,
			 cfg->module);
		return MTLS_ERR_CONFIG;
	}
	/*
	 * The new identities and their keys are read from the helper under
	 * the read lock, so signatures go on meanwhile; the write lock is
	 * held only to put them in place.
	 */
	if ((r = tk_read_lock(ts, err, err_len)) != 0)
		return r;
	gen = ts->gen;
	r = build(ts, cfg, &ids, &n, err, err_len);
	if (r == 0)
		for (i = 0; i < ts->nslots; i++)
			if (ts->slots[i].login_time != 0)
				attach_keys_in(ts, ids, n, &ts->slots[i]);
	pthread_rwlock_unlock(&ts->lock);
	if (r != 0)
		return r;
	if ((r = write_lock(ts, err, err_len)) != 0) {
		idents_free(ids, n);
		return r;
	}
	if (ts->gen != gen) {
		/* The slots were read again meanwhile: the keys found are
		 * of the old table.  Look again under the write lock. */
		for (i = 0; i < n; i++)
			ids[i].has_key = 0;
		for (i = 0; i < ts->nslots; i++)
			if (ts->slots[i].login_time != 0)
				attach_keys_in(ts, ids, n, &ts->slots[i]);
	}
	ts->cfg = cfg;
	/* Discovered identities of a token that is away stay listed (as
	 * absent) across a reload, as across a rescan. */
	if (cfg->n_identities == 0 && old->n_identities == 0)
		merge_absent(ts, &ids, &n);
	old_ids = ts->ids;
	old_n = ts->n;
	ts->ids = ids;
	ts->n = n;
	carry_timers(old_ids, old_n, ts->ids, ts->n);
	idents_free(old_ids, old_n);
	/* PIN files of new identities: errors are logged, not fatal here. */
	if (pin_file_logins(ts, err, err_len) != 0)
		warn("reload: %s", err);
	pthread_rwlock_unlock(&ts->lock);
	return 0;
}

void
token_close(struct tokenset *ts)
{
	size_t i;

	if (ts == NULL)
		return;
	if (ts->hp != NULL)
		for (i = 0; i < ts->nslots; i++)
			if (ts->slots[i].login_time != 0)
				helper_logout(ts, ts->slots[i].id);
	helper_free(ts->hp);
	idents_free(ts->ids, ts->n);
	slots_free(ts->slots, ts->nslots);
	pthread_rwlock_destroy(&ts->lock);
	pthread_mutex_destroy(&ts->stat_mu);
	free(ts);
}

static uint32_t
ident_flags(struct tokenset *ts, const struct msg_p11_tokens_resp *toks, const struct ident *id)
{
	const struct slot *slot = tk_ident_slot(ts, id);
	const struct p11_token *t;
	uint32_t f = 0;

	if (slot == NULL || (t = fresh(toks, slot)) == NULL)
		return 0;
	f |= MTLS_AGENT_ID_TOKEN_PRESENT;
	if (t->logged_in)
		f |= MTLS_AGENT_ID_LOGGED_IN;
	if (id->has_key)
		f |= MTLS_AGENT_ID_KEY_FOUND;
	else if (id->key_mismatch)
		f |= MTLS_AGENT_ID_KEY_MISMATCH;
	if (t->flags & CKF_USER_PIN_COUNT_LOW)
		f |= MTLS_AGENT_ID_PIN_COUNT_LOW;
	if (t->flags & CKF_USER_PIN_FINAL_TRY)
		f |= MTLS_AGENT_ID_PIN_FINAL_TRY;
	if (t->flags & CKF_USER_PIN_LOCKED)
		f |= MTLS_AGENT_ID_PIN_LOCKED;
	if (t->flags & CKF_PROTECTED_AUTHENTICATION_PATH)
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
copy_ident(struct tokenset *ts, const struct msg_p11_tokens_resp *toks, const struct ident *id,
	   struct mtls_agent_identity *o)
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
	o->flags = ident_flags(ts, toks, id);
	o->purposes = id->purposes;
	if ((o->schemes = calloc(MTLS_SCHEMES_MAX, sizeof(*o->schemes))) == NULL)
		return MTLS_ERR_ALLOC;
	for (i = 0; (s = scheme_at(i)) != NULL && o->n_schemes < MTLS_SCHEMES_MAX; i++) {
		if (s->key_type == id->key_type && (s->ec_bits == 0 || s->ec_bits == id->key_bits))
			o->schemes[o->n_schemes++] = s->code;
	}
	/* A key with no certificate yet (enrollment) has none to copy: its
	 * public key is sent instead, for certificate requests. */
	if (id->cert_der_len > 0 && (o->cert_der = dup_mem(id->cert_der, id->cert_der_len)) == NULL)
		return MTLS_ERR_ALLOC;
	if (id->cert_der_len == 0 && id->pub != NULL) {
		unsigned char *der = NULL;
		int len = i2d_PUBKEY(id->pub, &der);

		if (len <= 0 || (size_t)len > MTLS_SPKI_MAX ||
		    (o->spki_der = dup_mem(der, (size_t)len)) == NULL) {
			OPENSSL_free(der);
			return MTLS_ERR_ALLOC;
		}
		o->spki_der_len = (size_t)len;
		OPENSSL_free(der);
	}
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

/* A token vanished under a request, or the helper was started again:
 * catch up before answering. */
void
tk_catch_up(struct tokenset *ts)
{
	if (__atomic_load_n(&ts->stale, __ATOMIC_RELAXED) ||
	    helper_generation(ts->hp) != __atomic_load_n(&ts->gen, __ATOMIC_RELAXED))
		token_poll(ts);
}

int
token_list(struct tokenset *ts, struct mtls_agent_identity **idsp, size_t *np, char *why,
	   size_t why_len)
{
	struct mtls_agent_identity *ids = NULL;
	struct msg_p11_tokens_resp toks;
	size_t i, n, done = 0;
	int r = 0;

	*idsp = NULL;
	*np = 0;
	tk_catch_up(ts);
	if ((r = tk_read_lock(ts, why, why_len)) != 0)
		return r;
	/* One fresh token list for every identity's flags. */
	if (list_tokens(ts, &toks) != 0)
		memset(&toks, 0, sizeof(toks));
	n = ts->n > MTLS_IDS_MAX ? MTLS_IDS_MAX : ts->n;
	if (n > 0 && (ids = calloc(n, sizeof(*ids))) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (i = 0; i < n; i++) {
		done = i + 1;
		if ((r = copy_ident(ts, &toks, &ts->ids[i], &ids[i])) != 0)
			goto out;
	}
out:
	msg_p11_tokens_resp_clear(&toks);
	pthread_rwlock_unlock(&ts->lock);
	if (r != 0) {
		mtls_agent_identities_free(ids, done);
		return r;
	}
	*idsp = ids;
	*np = n;
	return 0;
}

/* Whether a logged-in slot has a private key with no certificate that is
 * no identity yet (discover_keys() would add it). */
static int
new_keys_on(struct tokenset *ts, const struct slot *slot)
{
	struct msg_p11_objects_resp objs;
	size_t i;
	int found = 0;

	if (list_objects(ts, slot->id, &objs) != 0)
		return 0;
	for (i = 0; i < objs.n && !found; i++) {
		const struct p11_object *o = &objs.o[i];

		found = o->kind != P11_OBJ_CERT && tk_valid_name(o->label) && o->id_len > 0 &&
			!has_cert_with_id(&objs, o->id, o->id_len) &&
			tk_find_ident(ts, o->label) == NULL;
	}
	msg_p11_objects_resp_clear(&objs);
	return found;
}

/* Whether the configuration offers the token in slot s (discovery's
 * `token =`; with [identity] sections, any token an identity names). */
static int
offered(struct tokenset *ts, const struct slot *s)
{
	P11KitUri *u;
	size_t i;
	int yes = 0;

	if (ts->cfg->n_identities > 0) {
		for (i = 0; i < ts->cfg->n_identities && !yes; i++) {
			if ((u = p11_kit_uri_new()) == NULL)
				return 0;
			if (p11_kit_uri_parse(ts->cfg->identities[i].key_uri, P11_KIT_URI_FOR_ANY,
					      u) == P11_KIT_URI_OK)
				yes = token_matches(u, s);
			p11_kit_uri_free(u);
		}
		return yes;
	}
	if ((u = p11_kit_uri_new()) == NULL)
		return 0;
	if (p11_kit_uri_parse(ts->cfg->token_uri ? ts->cfg->token_uri : "pkcs11:",
			      P11_KIT_URI_FOR_TOKEN, u) == P11_KIT_URI_OK)
		yes = token_matches(u, s);
	p11_kit_uri_free(u);
	return yes;
}

/* The slot of identity `name`, or of the only token (""); write lock held. */
static int
pick_slot(struct tokenset *ts, const char *name, struct slot **slotp, char *why, size_t why_len)
{
	struct slot *slot = NULL, *s;
	struct ident *id;
	size_t i;

	rescan(ts);
	if (name[0] != '\0') {
		if ((id = tk_find_ident(ts, name)) == NULL) {
			snprintf(why, why_len, "no identity named %s", name);
			return MTLS_ERR_NO_IDENTITY;
		}
		if ((slot = tk_ident_slot(ts, id)) == NULL || !id->present) {
			snprintf(why, why_len, "the token of %s is not present", name);
			return MTLS_ERR_TOKEN_ABSENT;
		}
	} else {
		/* No name: the one token that holds identities. */
		for (i = 0; i < ts->n; i++) {
			if (!ts->ids[i].present || (s = tk_ident_slot(ts, &ts->ids[i])) == NULL)
				continue;
			if (slot != NULL && s != slot) {
				snprintf(why, why_len, "identities on several tokens: name one");
				return MTLS_ERR_INVALID_ARGUMENT;
			}
			slot = s;
		}
		/* A token with nothing on it yet (enrollment): the only one
		 * the configuration offers. */
		for (i = 0; ts->n == 0 && i < ts->nslots; i++) {
			if (!(ts->slots[i].flags & CKF_TOKEN_INITIALIZED) ||
			    !offered(ts, &ts->slots[i]))
				continue;
			if (slot != NULL) {
				snprintf(why, why_len,
					 "several tokens and no identities: name one");
				return MTLS_ERR_NO_IDENTITY;
			}
			slot = &ts->slots[i];
		}
		if (slot == NULL) {
			snprintf(why, why_len, "no token with identities is present");
			return ts->n == 0 ? MTLS_ERR_NO_IDENTITY : MTLS_ERR_TOKEN_ABSENT;
		}
	}
	*slotp = slot;
	return 0;
}

int
token_login(struct tokenset *ts, const char *name, const char *pin, int verify, int *retries,
	    char *why, size_t why_len)
{
	struct slot *slot = NULL;
	int r;

	*retries = -1;
	tk_catch_up(ts);
	if ((r = write_lock(ts, why, why_len)) != 0)
		return r;
	if ((r = pick_slot(ts, name, &slot, why, why_len)) == 0)
		r = login_slot(ts, slot, pin, verify, retries, why, why_len);
	/* Keys with no certificate yet are seen only now (enrollment). */
	if (r == 0 && ts->cfg->n_identities == 0 && new_keys_on(ts, slot))
		reenumerate(ts);
	pthread_rwlock_unlock(&ts->lock);
	return r;
}

int
token_set_pin(struct tokenset *ts, const char *name, int mode, const char *old, const char *new_pin,
	      int *retries, char *why, size_t why_len)
{
	struct msg_p11_set_pin_req sp = { .mode = (uint8_t)mode,
					  .old_pin = (char *)old,
					  .new_pin = (char *)new_pin };
	struct msg_p11_error fail;
	struct wbuf *req = NULL;
	struct slot *slot = NULL;
	int r;

	*retries = -1;
	memset(&fail, 0, sizeof(fail));
	tk_catch_up(ts);
	if ((r = write_lock(ts, why, why_len)) != 0)
		return r;
	if ((r = pick_slot(ts, name, &slot, why, why_len)) != 0)
		goto out;
	if ((req = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	sp.slot = slot->id;
	if (mode == SET_PIN_UNBLOCK) {
		/* The user session ends before the SO logs in. */
		detach_keys(ts, slot);
		slot->login_time = 0;
	}
	if ((r = msg_p11_set_pin_req_put(req, &sp)) != 0)
		goto out;
	if ((r = call_empty(ts, req, &fail)) != 0) {
		if (mode == SET_PIN_CHANGE)
			r = pin_error(ts, slot, &fail, 0, retries, "PIN", why, why_len);
		else if (fail.rv == CKR_PIN_INVALID || fail.rv == CKR_PIN_LEN_RANGE)
			r = pin_error(ts, slot, &fail, 0, retries, "new PIN", why, why_len);
		else
			r = pin_error(ts, slot, &fail, 1, retries, "unblocking code (SO PIN)", why,
				      why_len);
		goto out;
	}
	if (mode == SET_PIN_CHANGE) {
		info("token %s: user PIN changed", slot->label);
		goto out;
	}
	info("token %s: user PIN unblocked and set", slot->label);
	/* The helper logged the token in with the new PIN. */
	slot->login_time = time(NULL);
	attach_keys(ts, slot);
	info("token %s: logged in", slot->label);
out:
	msg_p11_error_clear(&fail);
	wbuf_free(req);
	pthread_rwlock_unlock(&ts->lock);
	return r;
}

int
token_logout(struct tokenset *ts, const char *name, char *why, size_t why_len)
{
	struct ident *id = NULL;
	size_t i;
	int r = 0, in;
	uint32_t flags;

	tk_catch_up(ts);
	if ((r = write_lock(ts, why, why_len)) != 0)
		return r;
	if (name[0] != '\0' && (id = tk_find_ident(ts, name)) == NULL) {
		r = MTLS_ERR_NO_IDENTITY;
		goto out;
	}
	for (i = 0; i < ts->nslots; i++) {
		struct slot *slot = &ts->slots[i];

		if (id != NULL && tk_ident_slot(ts, id) != slot)
			continue;
		detach_keys(ts, slot);
		in = 0;
		if (slot->login_time != 0 || (tk_slot_flags(ts, slot, &flags, &in) == 0 && in)) {
			helper_logout(ts, slot->id);
			info("token %s: logged out", slot->label);
		}
		slot->login_time = 0;
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

	if (!id->has_key || id->ci == NULL)
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
	size_t i, k;
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
		id->has_key = 0;
	}
	for (i = 0; i < ts->nslots; i++) {
		struct slot *slot = &ts->slots[i];
		int used = 0;

		if (slot->login_time == 0)
			continue;
		for (k = 0; k < ts->n && !used; k++)
			used = ts->ids[k].has_key && tk_ident_slot(ts, &ts->ids[k]) == slot;
		/* Identities with a policy went; any without one keeps it. */
		for (k = 0; k < ts->n && !used; k++)
			used = ts->ids[k].ci == NULL && tk_ident_slot(ts, &ts->ids[k]) == slot;
		if (used)
			continue;
		helper_logout(ts, slot->id);
		slot->login_time = 0;
		info("token %s: logged out (no identity uses it any more)", slot->label);
	}
	pthread_rwlock_unlock(&ts->lock);
}

void
token_expire(struct tokenset *ts, time_t now)
{
	size_t i;
	int due = 0;

	expire_keys(ts, now);
	tk_expiry_warn(ts, now);
	if (ts->cfg->login_timeout == 0)
		return;
	pthread_rwlock_rdlock(&ts->lock);
	for (i = 0; i < ts->nslots; i++)
		if (ts->slots[i].login_time != 0 &&
		    now - ts->slots[i].login_time >= (time_t)ts->cfg->login_timeout)
			due = 1;
	pthread_rwlock_unlock(&ts->lock);
	if (!due)
		return;
	pthread_rwlock_wrlock(&ts->lock);
	for (i = 0; i < ts->nslots; i++) {
		struct slot *slot = &ts->slots[i];

		if (slot->login_time == 0 ||
		    now - slot->login_time < (time_t)ts->cfg->login_timeout)
			continue;
		slot->login_time = 0;
		detach_keys(ts, slot);
		helper_logout(ts, slot->id);
		info("token %s: login timeout, logged out", slot->label);
	}
	pthread_rwlock_unlock(&ts->lock);
}

/* ---- hot-plug ----------------------------------------------------------- */

static long
mono_seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)t.tv_sec;
}

/*
 * 1 if the module's present tokens differ from the slot table (a token
 * removed, inserted, or replaced); read lock held.
 */
static int
tokens_changed(struct tokenset *ts)
{
	struct msg_p11_tokens_resp toks;
	size_t i, seen = 0;
	int changed = 0;

	if (list_tokens(ts, &toks) != 0)
		return 1;
	for (i = 0; i < ts->nslots && !changed; i++)
		if (fresh(&toks, &ts->slots[i]) == NULL)
			changed = 1; /* gone */
	for (i = 0; i < toks.n; i++)
		if (toks.t[i].flags & CKF_TOKEN_INITIALIZED)
			seen++;
	for (i = 0; i < ts->nslots; i++)
		if (!(ts->slots[i].flags & CKF_TOKEN_INITIALIZED))
			seen++;
	if (seen != toks.n || toks.n != ts->nslots)
		changed = 1;
	msg_p11_tokens_resp_clear(&toks);
	return changed;
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
		if (kept || tk_ident_slot(ts, &ts->ids[i]) != NULL)
			continue;
		if ((nv = reallocarray(ids, n + 1, sizeof(*ids))) == NULL)
			break;
		ids = nv;
		ids[n] = ts->ids[i];
		ids[n].present = 0;
		ids[n].has_key = 0;
		/* Moved, not copied: the old slot forgets it. */
		memset(&ts->ids[i], 0, sizeof(ts->ids[i]));
		ts->ids[i].name = NULL;
		n++;
	}
	*idsp = ids;
	*np = n;
}

/*
 * Re-reads slots and identities after a token came or went, or a new
 * helper was started; write lock held.  Keys are found again on tokens
 * that are (still) logged in; a reinserted token, and every token of a
 * new helper, needs a login again.
 */
static void
reenumerate(struct tokenset *ts)
{
	struct ident *ids = NULL, *old_ids = NULL;
	struct slot *old_slots = ts->slots;
	size_t old_n = 0, n = 0, old_nslots = ts->nslots, i, k;
	char err[256] = "";

	for (i = 0; i < ts->n; i++)
		ts->ids[i].has_key = 0;
	/* The slot table is replaced: identities point into it by label, so
	 * merge_absent() below still finds their old slot in old_slots. */
	ts->slots = NULL;
	ts->nslots = 0;
	if (read_slots(ts) != 0) {
		warn("token rescan: cannot list the tokens; will retry");
		ts->slots = old_slots;
		ts->nslots = old_nslots;
		__atomic_store_n(&ts->stale, 1, __ATOMIC_RELAXED);
		return;
	}
	/* A token that stayed logged in in the same helper keeps its clock. */
	for (i = 0; i < ts->nslots; i++)
		for (k = 0; k < old_nslots; k++)
			if (ts->slots[i].login_time != 0 && old_slots[k].login_time != 0 &&
			    strcmp(ts->slots[i].label, old_slots[k].label) == 0 &&
			    strcmp(ts->slots[i].serial, old_slots[k].serial) == 0)
				ts->slots[i].login_time = old_slots[k].login_time;
	slots_free(old_slots, old_nslots);
	if (build(ts, ts->cfg, &ids, &n, err, sizeof(err)) != 0) {
		warn("token rescan: %s; keeping the identities without keys", err);
	} else {
		merge_absent(ts, &ids, &n);
		old_ids = ts->ids;
		old_n = ts->n;
		ts->ids = ids;
		ts->n = n;
	}
	rescan(ts);
	for (i = 0; i < ts->nslots; i++)
		if (ts->slots[i].login_time != 0)
			attach_keys(ts, &ts->slots[i]);
	if (old_ids != NULL) {
		carry_timers(old_ids, old_n, ts->ids, ts->n);
		idents_free(old_ids, old_n);
	}
	info("tokens changed: %zu identit%s now", ts->n, ts->n == 1 ? "y" : "ies");
}

/* Seconds between module re-initialisations while identities are lost. */
#define RESTART_LOST_EVERY 3

/*
 * Re-initialises the module in the helper (a module stuck on a token that
 * went and came back, like SoftHSM2, only sees it again this way), then
 * re-reads everything; write lock held.  Every session and login ends.
 */
static void
module_reinit(struct tokenset *ts, int quiet)
{
	struct msg_p11_error fail;
	struct wbuf *req = wbuf_new();
	size_t k;
	int r;

	ts->restarted_at = mono_seconds();
	if (req == NULL)
		return;
	if ((r = msg_p11_empty_req_put(req, P11_REINIT)) == 0)
		r = call_empty(ts, req, &fail);
	msg_p11_error_clear(&fail);
	wbuf_free(req);
	if (r != 0)
		warn("the PKCS#11 module could not be initialized again: %s",
		     mtls_agent_strerror(r));
	for (k = 0; k < ts->nslots; k++)
		ts->slots[k].login_time = 0;
	reenumerate(ts);
	ts->lost = 0;
	for (k = 0; k < ts->n; k++)
		if (!ts->ids[k].present)
			ts->lost = 1;
	/* While a token is lost this runs every few seconds: once is news. */
	if (quiet && ts->lost)
		debug("the PKCS#11 module was initialized again: %zu identit%s", ts->n,
		      ts->n == 1 ? "y" : "ies");
	else
		info("the PKCS#11 module was initialized again: %zu identit%s", ts->n,
		     ts->n == 1 ? "y" : "ies");
}

/* Re-initialise now?  Write lock held: identities are lost (their token
 * is not listed) and nothing is logged in, every few seconds. */
static int
reinit_due(struct tokenset *ts)
{
	size_t i;

	if (!ts->lost || mono_seconds() - ts->restarted_at < RESTART_LOST_EVERY)
		return 0;
	for (i = 0; i < ts->nslots; i++)
		if (ts->slots[i].login_time != 0)
			return 0;
	return 1;
}

void
token_poll(struct tokenset *ts)
{
	int changed, restarted;
	size_t k;

	pthread_rwlock_rdlock(&ts->lock);
	restarted = helper_generation(ts->hp) != ts->gen;
	changed = restarted || ts->lost || __atomic_load_n(&ts->stale, __ATOMIC_RELAXED) ||
		  tokens_changed(ts);
	pthread_rwlock_unlock(&ts->lock);
	if (!changed)
		return;
	pthread_rwlock_wrlock(&ts->lock);
	if (helper_generation(ts->hp) != ts->gen) {
		/* A new helper: every login is gone with the old one. */
		for (k = 0; k < ts->nslots; k++)
			ts->slots[k].login_time = 0;
		__atomic_store_n(&ts->stale, 0, __ATOMIC_RELAXED);
		reenumerate(ts);
	} else if (reinit_due(ts)) {
		__atomic_store_n(&ts->stale, 0, __ATOMIC_RELAXED);
		if (ts->failing_since == 0) {
			/* Said once per loss; the retries every few seconds are
			 * debug lines. */
			ts->failing_since = mono_seconds();
			warn("the PKCS#11 module lists no token for identities it had (it keeps "
			     "failing for a token it had, as SoftHSM2 does for one that went and "
			     "came back): finalizing and initializing it again");
		}
		module_reinit(ts, 1);
	} else if (__atomic_exchange_n(&ts->stale, 0, __ATOMIC_RELAXED) || tokens_changed(ts)) {
		/* Stale: a token vanished under a signature, and may be back
		 * by now with its sessions and login gone: start afresh. */
		reenumerate(ts);
	}
	ts->lost = 0;
	for (k = 0; k < ts->n; k++)
		if (!ts->ids[k].present)
			ts->lost = 1;
	if (!ts->lost)
		ts->failing_since = 0;
	pthread_rwlock_unlock(&ts->lock);
}

int
token_status(struct tokenset *ts, struct mtls_agent_status *st, char *why, size_t why_len)
{
	struct msg_p11_tokens_resp toks;
	size_t i;
	int r;

	tk_catch_up(ts);
	if ((r = tk_read_lock(ts, why, why_len)) != 0)
		return r;
	st->identities = (uint32_t)ts->n;
	st->identities_expiring = tk_expiring(ts, time(NULL));
	st->tokens_present = st->tokens_logged_in = 0;
	if (list_tokens(ts, &toks) == 0) {
		for (i = 0; i < toks.n; i++) {
			if (!(toks.t[i].flags & CKF_TOKEN_INITIALIZED))
				continue;
			st->tokens_present++;
			if (toks.t[i].logged_in)
				st->tokens_logged_in++;
		}
		msg_p11_tokens_resp_clear(&toks);
	}
	pthread_rwlock_unlock(&ts->lock);
	return 0;
}

/* ---- for enrollment (enroll.c) ---------------------------------------- */

int
tk_write_lock(struct tokenset *ts)
{
	return write_lock(ts, NULL, 0);
}

int
tk_list_objects(struct tokenset *ts, uint64_t slot, struct msg_p11_objects_resp *objs)
{
	return list_objects(ts, slot, objs);
}

int
tk_token_matches(P11KitUri *uri, const struct slot *s)
{
	return token_matches(uri, s);
}

int
tk_offered(struct tokenset *ts, const struct slot *s)
{
	return offered(ts, s);
}

void
tk_reenumerate(struct tokenset *ts)
{
	reenumerate(ts);
}

int
tk_key_is(EVP_PKEY *pub, const struct p11_object *o)
{
	if (o->kind == P11_OBJ_RSA)
		return rsa_is(pub, o);
	if (o->kind == P11_OBJ_EC)
		return o->b_len > 0 && ec_is(pub, o);
	return 0;
}

/* An EC point as the token gives it: a DER OCTET STRING, or bare. */
static int
ec_point_bytes(const struct p11_object *o, unsigned char *out, size_t *len)
{
	const unsigned char *p = o->b;
	ASN1_OCTET_STRING *os;

	if ((os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)o->b_len)) != NULL &&
	    p == o->b + o->b_len && (size_t)ASN1_STRING_length(os) <= *len) {
		*len = (size_t)ASN1_STRING_length(os);
		memcpy(out, ASN1_STRING_get0_data(os), *len);
		ASN1_OCTET_STRING_free(os);
		return 0;
	}
	ASN1_OCTET_STRING_free(os);
	if (o->b_len > *len)
		return -1;
	*len = o->b_len;
	memcpy(out, o->b, o->b_len);
	return 0;
}

EVP_PKEY *
tk_object_pubkey(const struct p11_object *o)
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	BIGNUM *n = NULL, *e = NULL;
	ASN1_OBJECT *oid = NULL;
	unsigned char pt[256];
	size_t pt_len = sizeof(pt);
	const unsigned char *p = o->a;
	int nid;

	if ((bld = OSSL_PARAM_BLD_new()) == NULL)
		goto out;
	if (o->kind == P11_OBJ_RSA) {
		if ((n = BN_bin2bn(o->a, (int)o->a_len, NULL)) == NULL ||
		    (e = BN_bin2bn(o->b, (int)o->b_len, NULL)) == NULL ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
			goto out;
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	} else if (o->kind == P11_OBJ_EC && o->b_len > 0) {
		if ((oid = d2i_ASN1_OBJECT(NULL, &p, (long)o->a_len)) == NULL ||
		    (nid = OBJ_obj2nid(oid)) == NID_undef || ec_point_bytes(o, pt, &pt_len) != 0 ||
		    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
						     OBJ_nid2sn(nid), 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, pt_len))
			goto out;
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	} else {
		goto out;
	}
	if (ctx == NULL || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
out:
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(ctx);
	BN_free(n);
	BN_free(e);
	ASN1_OBJECT_free(oid);
	ERR_clear_error();
	return pkey;
}
