/*
 * enroll.c - KEYGEN and IMPORT_CERT in the agent: pick the token, apply
 * the configuration's `read-only`, require a login, ask the helper
 * (P11_KEYGEN, P11_IMPORT_CERT), then re-read the token so the running
 * agent lists the new identity at once.  See enroll.h.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "enroll.h"
#include "log.h"
#include "msg_p11.h"
#include "token_int.h"

/* The one slot `uri` ("" = any) names; write lock held. */
static int
pick_token(struct tokenset *ts, const char *uri, struct slot **slotp, char *why, size_t why_len)
{
	P11KitUri *u = NULL;
	size_t i, found = 0;
	int r = 0;

	*slotp = NULL;
	if ((u = p11_kit_uri_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if (p11_kit_uri_parse(uri[0] ? uri : "pkcs11:", P11_KIT_URI_FOR_TOKEN, u) !=
	    P11_KIT_URI_OK) {
		snprintf(why, why_len, "not a pkcs11: token URI");
		r = MTLS_ERR_INVALID_ARGUMENT;
		goto out;
	}
	for (i = 0; i < ts->nslots; i++) {
		if (!(ts->slots[i].flags & CKF_TOKEN_INITIALIZED) ||
		    !tk_token_matches(u, &ts->slots[i]) || !tk_offered(ts, &ts->slots[i]))
			continue;
		found++;
		*slotp = &ts->slots[i];
	}
	if (found == 0) {
		snprintf(why, why_len, "no token matches %s", uri[0] ? uri : "(any)");
		r = MTLS_ERR_NO_IDENTITY;
	} else if (found > 1) {
		snprintf(why, why_len, "%zu tokens match: name one with --token", found);
		r = MTLS_ERR_INVALID_ARGUMENT;
	}
out:
	if (r != 0)
		*slotp = NULL;
	p11_kit_uri_free(u);
	return r;
}

/* `read-only` in the configuration, for the whole agent or an identity
 * on this token; and a write-protected token. */
static int
writable(struct tokenset *ts, const struct slot *slot, char *why, size_t why_len)
{
	uint32_t flags;
	size_t i;
	int r, in;

	if (ts->cfg->read_only) {
		snprintf(why, why_len, "the configuration says read-only = yes");
		return MTLS_ERR_READ_ONLY;
	}
	for (i = 0; i < ts->n; i++) {
		const struct ident *id = &ts->ids[i];

		if (id->ci != NULL && id->ci->read_only && tk_ident_slot(ts, id) == slot) {
			snprintf(why, why_len, "identity %s on token %s is read-only", id->name,
				 slot->label);
			return MTLS_ERR_READ_ONLY;
		}
	}
	if ((r = tk_slot_flags(ts, slot, &flags, &in)) != 0) {
		snprintf(why, why_len, "token %s: %s", slot->label, mtls_agent_strerror(r));
		return r;
	}
	if (flags & CKF_WRITE_PROTECTED) {
		snprintf(why, why_len, "token %s is write-protected", slot->label);
		return MTLS_ERR_READ_ONLY;
	}
	if (!in) {
		snprintf(why, why_len, "token %s: log in first", slot->label);
		return MTLS_ERR_LOGIN_REQUIRED;
	}
	return 0;
}

/* Copies the helper's failure text into why; returns r. */
static int
helper_failed(int r, const struct msg_p11_error *fail, const char *what, char *why, size_t why_len)
{
	snprintf(why, why_len, "%s: %s", what,
		 fail->message != NULL && fail->message[0] ? fail->message
							   : mtls_agent_strerror(r));
	return r;
}

static int
spki_of(EVP_PKEY *pub, struct msg_keygen_resp *resp)
{
	unsigned char *der = NULL;
	int len = i2d_PUBKEY(pub, &der);

	if (len > 0 && (size_t)len > MTLS_SPKI_MAX) {
		OPENSSL_free(der);
		return MTLS_ERR_INTERNAL;
	}
	return tk_der_keep(der, len, &resp->spki, &resp->spki_len);
}

int
token_keygen(struct tokenset *ts, const struct msg_keygen_req *req, struct msg_keygen_resp *resp,
	     char *why, size_t why_len)
{
	struct msg_p11_keygen_req kr = { .kind = req->kind, .label = req->label };
	struct wbuf *b = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_error fail;
	struct p11_object o;
	struct slot *slot;
	EVP_PKEY *pub = NULL;
	int r;

	memset(resp, 0, sizeof(*resp));
	memset(&fail, 0, sizeof(fail));
	memset(&o, 0, sizeof(o));
	if (b == NULL || reply == NULL) {
		wbuf_free(b);
		wbuf_free(reply);
		return MTLS_ERR_ALLOC;
	}
	if (!tk_valid_name(req->label)) {
		snprintf(why, why_len, "label must be 1-64 of A-Z a-z 0-9 . _ -");
		wbuf_free(b);
		wbuf_free(reply);
		return MTLS_ERR_INVALID_ARGUMENT;
	}
	/* [identity] sections name their keys by URI and keep only those with
	 * a certificate: a new key could never sign its request. */
	if (ts->cfg->n_identities > 0) {
		snprintf(why, why_len,
			 "enrollment needs discovered identities: the configuration has "
			 "[identity] sections");
		wbuf_free(b);
		wbuf_free(reply);
		return MTLS_ERR_CONFIG;
	}
	tk_catch_up(ts);
	if ((r = tk_write_lock(ts)) != 0)
		goto out_free;
	if ((r = pick_token(ts, req->token, &slot, why, why_len)) != 0 ||
	    (r = writable(ts, slot, why, why_len)) != 0)
		goto out;
	if (tk_find_ident(ts, req->label) != NULL) {
		snprintf(why, why_len, "an identity named %s exists", req->label);
		r = MTLS_ERR_DUPLICATE;
		goto out;
	}
	kr.slot = slot->id;
	if ((r = msg_p11_keygen_req_put(b, &kr)) != 0)
		goto out;
	if ((r = tk_call(ts, b, reply, &fail)) != 0) {
		helper_failed(r, &fail, "key generation", why, why_len);
		goto out;
	}
	if ((r = msg_p11_keygen_resp_get(reply, &o)) != 0)
		goto out;
	if ((pub = tk_object_pubkey(&o)) == NULL) {
		snprintf(why, why_len, "the token's new public key does not parse");
		r = MTLS_ERR_TOKEN;
		goto out;
	}
	if ((r = spki_of(pub, resp)) != 0 || (resp->name = strdup(req->label)) == NULL ||
	    (resp->key_id = malloc(o.id_len)) == NULL) {
		r = r != 0 ? r : MTLS_ERR_ALLOC;
		goto out;
	}
	memcpy(resp->key_id, o.id, o.id_len);
	resp->key_id_len = o.id_len;
	info("token %s: generated key pair %s", slot->label, req->label);
	tk_reenumerate(ts);
out:
	pthread_rwlock_unlock(&ts->lock);
out_free:
	if (r != 0)
		msg_keygen_resp_clear(resp);
	EVP_PKEY_free(pub);
	msg_p11_object_clear(&o);
	msg_p11_error_clear(&fail);
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}

/* What is on the slot for this certificate: its key, and certificates. */
struct found {
	const struct p11_object *key;
	int duplicate;	 /* this very certificate is there */
	int other;	 /* another certificate with the key's id */
	int other_later; /* ... that ends no earlier than this one */
};

static void
find_for_cert(const struct msg_p11_objects_resp *objs, X509 *x, const unsigned char *der,
	      size_t len, struct found *f)
{
	EVP_PKEY *pub = X509_get0_pubkey(x);
	size_t i;

	memset(f, 0, sizeof(*f));
	for (i = 0; i < objs->n && f->key == NULL; i++)
		if (objs->o[i].kind != P11_OBJ_CERT && tk_key_is(pub, &objs->o[i]))
			f->key = &objs->o[i];
	for (i = 0; i < objs->n; i++) {
		const struct p11_object *c = &objs->o[i];
		const unsigned char *p = c->a;
		X509 *old;

		if (c->kind != P11_OBJ_CERT)
			continue;
		if (c->a_len == len && memcmp(c->a, der, len) == 0) {
			f->duplicate = 1;
			continue;
		}
		if (f->key == NULL || c->id_len != f->key->id_len ||
		    memcmp(c->id, f->key->id, c->id_len) != 0)
			continue;
		f->other = 1;
		if ((old = d2i_X509(NULL, &p, (long)c->a_len)) != NULL &&
		    ASN1_TIME_compare(X509_get0_notAfter(old), X509_get0_notAfter(x)) >= 0)
			f->other_later = 1;
		X509_free(old);
	}
}

static int
write_cert(struct tokenset *ts, const struct slot *slot, const struct p11_object *key, X509 *x,
	   const struct msg_import_req *req, int replace, char *why, size_t why_len)
{
	struct msg_p11_import_req ir = { .slot = slot->id,
					 .flags = replace ? P11_IMPORT_REPLACE : 0,
					 .id = key->id,
					 .id_len = key->id_len,
					 .label = key->label,
					 .cert = req->cert,
					 .cert_len = req->cert_len };
	struct wbuf *b = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_error fail;
	unsigned char *subj = NULL;
	int len, r;

	memset(&fail, 0, sizeof(fail));
	if (b == NULL || reply == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((len = i2d_X509_NAME(X509_get_subject_name(x), &subj)) <= 0) {
		r = MTLS_ERR_CERT_INVALID;
		goto out;
	}
	ir.subject = subj;
	ir.subject_len = (size_t)len;
	if ((r = msg_p11_import_req_put(b, &ir)) != 0)
		goto out;
	if ((r = tk_call(ts, b, reply, &fail)) != 0) {
		helper_failed(r, &fail, "certificate import", why, why_len);
		goto out;
	}
	r = wbuf_expect_end(reply);
out:
	OPENSSL_free(subj);
	msg_p11_error_clear(&fail);
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}

int
token_import_cert(struct tokenset *ts, const struct msg_import_req *req, char **name, char *why,
		  size_t why_len)
{
	const unsigned char *p = req->cert;
	struct msg_p11_objects_resp objs;
	struct found f;
	X509 *x;
	size_t i;
	int r = 0, any_in = 0, force = (req->flags & MTLS_AGENT_IMPORT_FORCE) != 0;

	*name = NULL;
	memset(&objs, 0, sizeof(objs));
	if ((x = d2i_X509(NULL, &p, (long)req->cert_len)) == NULL ||
	    p != req->cert + req->cert_len) {
		X509_free(x);
		ERR_clear_error();
		snprintf(why, why_len, "not one DER certificate");
		return MTLS_ERR_CERT_INVALID;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0 && !force) {
		X509_free(x);
		snprintf(why, why_len, "the certificate has expired (--force imports it anyway)");
		return MTLS_ERR_CERT_EXPIRED;
	}
	tk_catch_up(ts);
	if ((r = tk_write_lock(ts)) != 0)
		goto out_free;
	r = MTLS_ERR_KEY_NOT_FOUND;
	snprintf(why, why_len, "no logged-in token holds the private key of this certificate");
	for (i = 0; i < ts->nslots; i++) {
		struct slot *slot = &ts->slots[i];
		uint32_t flags;
		int in;

		if (tk_slot_flags(ts, slot, &flags, &in) != 0 || !in)
			continue;
		any_in = 1;
		if (tk_list_objects(ts, slot->id, &objs) != 0)
			continue;
		find_for_cert(&objs, x, req->cert, req->cert_len, &f);
		if (f.key == NULL) {
			msg_p11_objects_resp_clear(&objs);
			continue;
		}
		if (f.duplicate) {
			snprintf(why, why_len, "token %s has this certificate already",
				 slot->label);
			r = MTLS_ERR_DUPLICATE;
		} else if (f.other_later && !force) {
			snprintf(why, why_len,
				 "key %s has a certificate that ends no earlier (--force replaces "
				 "it)",
				 f.key->label);
			r = MTLS_ERR_DUPLICATE;
		} else if (!tk_valid_name(f.key->label)) {
			snprintf(why, why_len, "the key has no usable label");
			r = MTLS_ERR_INVALID_ARGUMENT;
		} else if ((r = writable(ts, slot, why, why_len)) == 0 &&
			   (r = write_cert(ts, slot, f.key, x, req, f.other, why, why_len)) == 0 &&
			   (*name = strdup(f.key->label)) == NULL) {
			r = MTLS_ERR_ALLOC;
		}
		if (r == 0)
			info("token %s: certificate imported for key %s%s", slot->label,
			     f.key->label, f.other ? " (replacing the old one)" : "");
		msg_p11_objects_resp_clear(&objs);
		break;
	}
	if (r == MTLS_ERR_KEY_NOT_FOUND && !any_in) {
		snprintf(why, why_len, "no token is logged in: log in first");
		r = MTLS_ERR_LOGIN_REQUIRED;
	}
	if (r == 0)
		tk_reenumerate(ts);
	pthread_rwlock_unlock(&ts->lock);
out_free:
	X509_free(x);
	return r;
}

int
token_delete_key(struct tokenset *ts, const struct msg_delete_key_req *req, char *why,
		 size_t why_len)
{
	struct wbuf *b = wbuf_new(), *reply = wbuf_new();
	struct msg_p11_delete_req dr = { 0 };
	struct msg_p11_error fail;
	struct ident *id;
	struct slot *slot;
	int r;

	memset(&fail, 0, sizeof(fail));
	if (b == NULL || reply == NULL) {
		wbuf_free(b);
		wbuf_free(reply);
		return MTLS_ERR_ALLOC;
	}
	tk_catch_up(ts);
	if ((r = tk_write_lock(ts)) != 0)
		goto out_free;
	if ((id = tk_find_ident(ts, req->identity)) == NULL) {
		snprintf(why, why_len, "no identity named %s", req->identity);
		r = MTLS_ERR_NO_IDENTITY;
		goto out;
	}
	if ((slot = tk_ident_slot(ts, id)) == NULL || !id->present) {
		snprintf(why, why_len, "the token of %s is not present", req->identity);
		r = MTLS_ERR_TOKEN_ABSENT;
		goto out;
	}
	if (id->id_len == 0) {
		snprintf(why, why_len, "identity %s has no key id", req->identity);
		r = MTLS_ERR_INVALID_ARGUMENT;
		goto out;
	}
	/* A key whose certificate still works is in use: only on purpose. */
	if (id->cert != NULL && X509_cmp_current_time(X509_get0_notAfter(id->cert)) > 0 &&
	    !(req->flags & MTLS_AGENT_DELETE_FORCE)) {
		snprintf(why, why_len,
			 "identity %s has a valid certificate (--force deletes the key anyway)",
			 req->identity);
		r = MTLS_ERR_POLICY_DENIED;
		goto out;
	}
	if ((r = writable(ts, slot, why, why_len)) != 0)
		goto out;
	dr.slot = slot->id;
	dr.id = id->id;
	dr.id_len = id->id_len;
	if ((r = msg_p11_delete_req_put(b, &dr)) != 0)
		goto out;
	if ((r = tk_call(ts, b, reply, &fail)) != 0) {
		helper_failed(r, &fail, "deleting the key", why, why_len);
		goto out;
	}
	if ((r = wbuf_expect_end(reply)) != 0)
		goto out;
	info("token %s: key pair %s deleted", slot->label, req->identity);
	tk_reenumerate(ts);
out:
	pthread_rwlock_unlock(&ts->lock);
out_free:
	msg_p11_error_clear(&fail);
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}
