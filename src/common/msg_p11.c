/*
 * msg_p11.c - the agent ↔ mtls-agent-p11 messages (docs/PROTOCOL.md,
 * "Internal protocol").  Slots and handles are u64 (two u32, high first).
 *
 * TOKENS    request: (empty)
 *           reply:   u32 n, n x { u64 slot, string label, string manufacturer,
 *                    string model, string serial, u32 flags, u8 logged_in }
 * OBJECTS   request: u64 slot
 *           reply:   u32 n, n x { u8 kind, u64 handle, string id,
 *                    string label, string a, string b }
 * LOGIN     request: u64 slot, u8 flags, string pin          reply: (empty)
 * LOGOUT    request: u64 slot                                reply: (empty)
 * SET_PIN   request: u64 slot, u8 mode, string old, string new  reply: (empty)
 * SIGN      request: u64 slot, u64 key, u8 mech, u8 hash, string data
 *           reply:   string signature
 * REINIT    request: (empty)                                 reply: (empty)
 * KEYGEN    request: u64 slot, u8 kind, string label
 *           reply:   one object as in OBJECTS (kind RSA or EC)
 * IMPORT_CERT request: u64 slot, u8 flags, string id, string label,
 *           string subject, string certificate             reply: (empty)
 * DELETE    request: u64 slot, string id                      reply: (empty)
 * ERROR     reply:   u32 code, u32 retries, u32 rv, string message
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "msg_p11.h"
#include "secmem.h"

#define RETRIES_UNKNOWN 0xffffffffU

static int
put_u64(struct wbuf *b, uint64_t v)
{
	int r;

	if ((r = wbuf_put_u32(b, (uint32_t)(v >> 32))) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)v)) != 0)
		return r;
	return 0;
}

static int
get_u64(struct wbuf *b, uint64_t *v)
{
	uint32_t hi, lo;
	int r;

	*v = 0;
	if ((r = wbuf_get_u32(b, &hi)) != 0 || (r = wbuf_get_u32(b, &lo)) != 0)
		return r;
	*v = (uint64_t)hi << 32 | lo;
	return 0;
}

int
msg_p11_empty_req_put(struct wbuf *b, uint8_t type)
{
	return wbuf_put_u8(b, type);
}

/* ---- TOKENS ---------------------------------------------------------- */

static void
token_clear(struct p11_token *t)
{
	free(t->label);
	free(t->manufacturer);
	free(t->model);
	free(t->serial);
	memset(t, 0, sizeof(*t));
}

int
msg_p11_tokens_resp_put(struct wbuf *b, const struct msg_p11_tokens_resp *m)
{
	const struct p11_token *t;
	size_t i;
	int r;

	if (m->n > P11_SLOTS_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_TOKENS | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)m->n)) != 0)
		return r;
	for (i = 0; i < m->n; i++) {
		t = &m->t[i];
		if (t->logged_in > 1)
			return MTLS_ERR_INVALID_ARGUMENT;
		if ((r = put_u64(b, t->slot)) != 0 || (r = wbuf_put_cstring(b, t->label)) != 0 ||
		    (r = wbuf_put_cstring(b, t->manufacturer)) != 0 ||
		    (r = wbuf_put_cstring(b, t->model)) != 0 ||
		    (r = wbuf_put_cstring(b, t->serial)) != 0 ||
		    (r = wbuf_put_u32(b, t->flags)) != 0 || (r = wbuf_put_u8(b, t->logged_in)) != 0)
			return r;
	}
	return 0;
}

int
msg_p11_tokens_resp_get(struct wbuf *b, struct msg_p11_tokens_resp *m)
{
	struct p11_token *t;
	uint32_t n, i;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_u32(b, &n)) != 0)
		goto out;
	if (n > P11_SLOTS_MAX) {
		r = MTLS_ERR_BAD_REQUEST;
		goto out;
	}
	if (n > 0 && (m->t = calloc(n, sizeof(*m->t))) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (i = 0; i < n; i++) {
		t = &m->t[i];
		m->n = i + 1;
		if ((r = get_u64(b, &t->slot)) != 0 ||
		    (r = wbuf_get_cstring(b, &t->label, MTLS_NAME_MAX)) != 0 ||
		    (r = wbuf_get_cstring(b, &t->manufacturer, MTLS_NAME_MAX)) != 0 ||
		    (r = wbuf_get_cstring(b, &t->model, MTLS_NAME_MAX)) != 0 ||
		    (r = wbuf_get_cstring(b, &t->serial, MTLS_NAME_MAX)) != 0 ||
		    (r = wbuf_get_u32(b, &t->flags)) != 0 ||
		    (r = wbuf_get_u8(b, &t->logged_in)) != 0)
			goto out;
		if (t->logged_in > 1) {
			r = MTLS_ERR_BAD_REQUEST;
			goto out;
		}
	}
	r = wbuf_expect_end(b);
out:
	if (r != 0)
		msg_p11_tokens_resp_clear(m);
	return r;
}

void
msg_p11_tokens_resp_clear(struct msg_p11_tokens_resp *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		token_clear(&m->t[i]);
	free(m->t);
	memset(m, 0, sizeof(*m));
}

/* ---- OBJECTS, LOGOUT (slot requests) ---------------------------------- */

int
msg_p11_slot_req_put(struct wbuf *b, uint8_t type, const struct msg_p11_slot_req *m)
{
	int r;

	if (type != P11_OBJECTS && type != P11_LOGOUT)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, type)) != 0 || (r = put_u64(b, m->slot)) != 0)
		return r;
	return 0;
}

int
msg_p11_slot_req_get(struct wbuf *b, struct msg_p11_slot_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = get_u64(b, &m->slot)) != 0 || (r = wbuf_expect_end(b)) != 0)
		memset(m, 0, sizeof(*m));
	return r;
}

static int
kind_known(uint8_t kind)
{
	return kind == P11_OBJ_CERT || kind == P11_OBJ_RSA || kind == P11_OBJ_EC;
}

static size_t
a_max(uint8_t kind)
{
	return kind == P11_OBJ_CERT ? MTLS_CERT_MAX : P11_ATTR_MAX;
}

/* One object as OBJECTS and KEYGEN replies carry it: the lengths each kind
 * may have (a certificate has no second value). */
static int
object_ok(const struct p11_object *o)
{
	return kind_known(o->kind) && o->id_len <= P11_ATTR_MAX && o->a_len <= a_max(o->kind) &&
	       o->b_len <= P11_ATTR_MAX && (o->kind != P11_OBJ_CERT || o->b_len == 0);
}

static int
object_put(struct wbuf *b, const struct p11_object *o)
{
	int r;

	if ((r = wbuf_put_u8(b, o->kind)) != 0 || (r = put_u64(b, o->handle)) != 0 ||
	    (r = wbuf_put_string(b, o->id, o->id_len)) != 0 ||
	    (r = wbuf_put_cstring(b, o->label)) != 0 ||
	    (r = wbuf_put_string(b, o->a, o->a_len)) != 0 ||
	    (r = wbuf_put_string(b, o->b, o->b_len)) != 0)
		return r;
	return 0;
}

/* Reads one object into o (zeroed by the caller); on failure the caller
 * frees what was read with msg_p11_object_clear(). */
static int
object_get(struct wbuf *b, struct p11_object *o)
{
	int r;

	if ((r = wbuf_get_u8(b, &o->kind)) != 0)
		return r;
	if (!kind_known(o->kind))
		return MTLS_ERR_BAD_REQUEST;
	if ((r = get_u64(b, &o->handle)) != 0 ||
	    (r = wbuf_get_string(b, &o->id, &o->id_len, P11_ATTR_MAX)) != 0 ||
	    (r = wbuf_get_cstring(b, &o->label, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_string(b, &o->a, &o->a_len, a_max(o->kind))) != 0 ||
	    (r = wbuf_get_string(b, &o->b, &o->b_len, P11_ATTR_MAX)) != 0)
		return r;
	if (o->kind == P11_OBJ_CERT && o->b_len != 0)
		return MTLS_ERR_BAD_REQUEST;
	return 0;
}

int
msg_p11_objects_resp_put(struct wbuf *b, const struct msg_p11_objects_resp *m)
{
	const struct p11_object *o;
	size_t i;
	int r;

	if (m->n > P11_OBJECTS_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_OBJECTS | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)m->n)) != 0)
		return r;
	for (i = 0; i < m->n; i++) {
		o = &m->o[i];
		if (!object_ok(o))
			return MTLS_ERR_INVALID_ARGUMENT;
		if ((r = object_put(b, o)) != 0)
			return r;
	}
	return 0;
}

int
msg_p11_objects_resp_get(struct wbuf *b, struct msg_p11_objects_resp *m)
{
	struct p11_object *o;
	uint32_t n, i;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_u32(b, &n)) != 0)
		goto out;
	if (n > P11_OBJECTS_MAX) {
		r = MTLS_ERR_BAD_REQUEST;
		goto out;
	}
	if (n > 0 && (m->o = calloc(n, sizeof(*m->o))) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (i = 0; i < n; i++) {
		o = &m->o[i];
		m->n = i + 1;
		if ((r = object_get(b, o)) != 0)
			goto out;
	}
	r = wbuf_expect_end(b);
out:
	if (r != 0)
		msg_p11_objects_resp_clear(m);
	return r;
}

void
msg_p11_objects_resp_clear(struct msg_p11_objects_resp *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		msg_p11_object_clear(&m->o[i]);
	free(m->o);
	memset(m, 0, sizeof(*m));
}

/* ---- LOGIN, SET_PIN --------------------------------------------------- */

int
msg_p11_login_req_put(struct wbuf *b, const struct msg_p11_login_req *m)
{
	int r;

	if ((m->flags & ~P11_LOGIN_VERIFY) != 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_LOGIN)) != 0 || (r = put_u64(b, m->slot)) != 0 ||
	    (r = wbuf_put_u8(b, m->flags)) != 0 || (r = msg_pin_put(b, m->pin)) != 0)
		return r;
	return 0;
}

int
msg_p11_login_req_get(struct wbuf *b, struct msg_p11_login_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = get_u64(b, &m->slot)) != 0 || (r = wbuf_get_u8(b, &m->flags)) != 0 ||
	    (r = msg_pin_get(b, &m->pin)) != 0 || (r = wbuf_expect_end(b)) != 0)
		goto out;
	if ((m->flags & ~P11_LOGIN_VERIFY) != 0)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_p11_login_req_clear(m);
	return r;
}

void
msg_p11_login_req_clear(struct msg_p11_login_req *m)
{
	mtls_secure_free(m->pin);
	memset(m, 0, sizeof(*m));
}

int
msg_p11_set_pin_req_put(struct wbuf *b, const struct msg_p11_set_pin_req *m)
{
	int r;

	if (m->mode != SET_PIN_CHANGE && m->mode != SET_PIN_UNBLOCK)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_SET_PIN)) != 0 || (r = put_u64(b, m->slot)) != 0 ||
	    (r = wbuf_put_u8(b, m->mode)) != 0 || (r = msg_pin_put(b, m->old_pin)) != 0 ||
	    (r = msg_pin_put(b, m->new_pin)) != 0)
		return r;
	return 0;
}

int
msg_p11_set_pin_req_get(struct wbuf *b, struct msg_p11_set_pin_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = get_u64(b, &m->slot)) != 0 || (r = wbuf_get_u8(b, &m->mode)) != 0)
		goto out;
	if (m->mode != SET_PIN_CHANGE && m->mode != SET_PIN_UNBLOCK) {
		r = MTLS_ERR_BAD_REQUEST;
		goto out;
	}
	if ((r = msg_pin_get(b, &m->old_pin)) != 0 || (r = msg_pin_get(b, &m->new_pin)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
out:
	if (r != 0)
		msg_p11_set_pin_req_clear(m);
	return r;
}

void
msg_p11_set_pin_req_clear(struct msg_p11_set_pin_req *m)
{
	mtls_secure_free(m->old_pin);
	mtls_secure_free(m->new_pin);
	memset(m, 0, sizeof(*m));
}

/* ---- SIGN ------------------------------------------------------------- */

/* The data lengths each mechanism accepts (a DigestInfo is 19 + hash). */
static int
sign_shape_ok(uint8_t mech, uint8_t hash, size_t len)
{
	switch (mech) {
	case P11_MECH_RSA_PKCS:
		return hash == 0 && (len == 19 + 32 || len == 19 + 48 || len == 19 + 64);
	case P11_MECH_RSA_PSS:
		return (hash == P11_HASH_SHA256 && len == 32) ||
		       (hash == P11_HASH_SHA384 && len == 48) ||
		       (hash == P11_HASH_SHA512 && len == 64);
	case P11_MECH_ECDSA: return hash == 0 && (len == 32 || len == 48 || len == 64);
	default: return 0;
	}
}

int
msg_p11_sign_req_put(struct wbuf *b, const struct msg_p11_sign_req *m)
{
	int r;

	if (!sign_shape_ok(m->mech, m->hash, m->data_len))
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_SIGN)) != 0 || (r = put_u64(b, m->slot)) != 0 ||
	    (r = put_u64(b, m->key)) != 0 || (r = wbuf_put_u8(b, m->mech)) != 0 ||
	    (r = wbuf_put_u8(b, m->hash)) != 0 ||
	    (r = wbuf_put_string(b, m->data, m->data_len)) != 0)
		return r;
	return 0;
}

int
msg_p11_sign_req_get(struct wbuf *b, struct msg_p11_sign_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = get_u64(b, &m->slot)) != 0 || (r = get_u64(b, &m->key)) != 0 ||
	    (r = wbuf_get_u8(b, &m->mech)) != 0 || (r = wbuf_get_u8(b, &m->hash)) != 0 ||
	    (r = wbuf_get_string(b, &m->data, &m->data_len, P11_DATA_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (!sign_shape_ok(m->mech, m->hash, m->data_len))
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_p11_sign_req_clear(m);
	return r;
}

void
msg_p11_sign_req_clear(struct msg_p11_sign_req *m)
{
	mtls_freezero(m->data, m->data_len);
	memset(m, 0, sizeof(*m));
}

int
msg_p11_sign_resp_put(struct wbuf *b, const struct msg_sign_resp *m)
{
	int r;

	if (m->sig_len == 0 || m->sig_len > MTLS_SIG_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_SIGN | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_string(b, m->sig, m->sig_len)) != 0)
		return r;
	return 0;
}

/* ---- KEYGEN, IMPORT_CERT -------------------------------------------- */

int
msg_p11_keygen_req_put(struct wbuf *b, const struct msg_p11_keygen_req *m)
{
	int r;

	if (!msg_keygen_kind_known(m->kind) || m->label == NULL || m->label[0] == '\0' ||
	    strlen(m->label) > MTLS_NAME_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_KEYGEN)) != 0 || (r = put_u64(b, m->slot)) != 0 ||
	    (r = wbuf_put_u8(b, m->kind)) != 0 || (r = wbuf_put_cstring(b, m->label)) != 0)
		return r;
	return 0;
}

int
msg_p11_keygen_req_get(struct wbuf *b, struct msg_p11_keygen_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = get_u64(b, &m->slot)) != 0 || (r = wbuf_get_u8(b, &m->kind)) != 0 ||
	    (r = wbuf_get_cstring(b, &m->label, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (!msg_keygen_kind_known(m->kind) || m->label[0] == '\0')
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_p11_keygen_req_clear(m);
	return r;
}

void
msg_p11_keygen_req_clear(struct msg_p11_keygen_req *m)
{
	free(m->label);
	memset(m, 0, sizeof(*m));
}

int
msg_p11_keygen_resp_put(struct wbuf *b, const struct p11_object *o)
{
	int r;

	if ((o->kind != P11_OBJ_RSA && o->kind != P11_OBJ_EC) || o->id_len == 0 || o->a_len == 0 ||
	    o->b_len == 0 || !object_ok(o))
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_KEYGEN | MSG_REPLY)) != 0 || (r = object_put(b, o)) != 0)
		return r;
	return 0;
}

int
msg_p11_keygen_resp_get(struct wbuf *b, struct p11_object *o)
{
	int r;

	memset(o, 0, sizeof(*o));
	if ((r = object_get(b, o)) != 0 || (r = wbuf_expect_end(b)) != 0)
		goto out;
	/* Both public values are needed: the agent builds the key from them. */
	if ((o->kind != P11_OBJ_RSA && o->kind != P11_OBJ_EC) || o->id_len == 0 || o->a_len == 0 ||
	    o->b_len == 0)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_p11_object_clear(o);
	return r;
}

void
msg_p11_object_clear(struct p11_object *o)
{
	free(o->id);
	free(o->label);
	free(o->a);
	free(o->b);
	memset(o, 0, sizeof(*o));
}

int
msg_p11_import_req_put(struct wbuf *b, const struct msg_p11_import_req *m)
{
	int r;

	if ((m->flags & ~P11_IMPORT_REPLACE) != 0 || m->id_len == 0 || m->id_len > P11_ATTR_MAX ||
	    m->label == NULL || strlen(m->label) > MTLS_NAME_MAX || m->subject_len == 0 ||
	    m->subject_len > P11_ATTR_MAX || m->cert_len == 0 || m->cert_len > MTLS_CERT_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_IMPORT_CERT)) != 0 || (r = put_u64(b, m->slot)) != 0 ||
	    (r = wbuf_put_u8(b, m->flags)) != 0 ||
	    (r = wbuf_put_string(b, m->id, m->id_len)) != 0 ||
	    (r = wbuf_put_cstring(b, m->label)) != 0 ||
	    (r = wbuf_put_string(b, m->subject, m->subject_len)) != 0 ||
	    (r = wbuf_put_string(b, m->cert, m->cert_len)) != 0)
		return r;
	return 0;
}

int
msg_p11_import_req_get(struct wbuf *b, struct msg_p11_import_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = get_u64(b, &m->slot)) != 0 || (r = wbuf_get_u8(b, &m->flags)) != 0 ||
	    (r = wbuf_get_string(b, &m->id, &m->id_len, P11_ATTR_MAX)) != 0 ||
	    (r = wbuf_get_cstring(b, &m->label, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_string(b, &m->subject, &m->subject_len, P11_ATTR_MAX)) != 0 ||
	    (r = wbuf_get_string(b, &m->cert, &m->cert_len, MTLS_CERT_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	if ((m->flags & ~P11_IMPORT_REPLACE) != 0 || m->id_len == 0 || m->subject_len == 0 ||
	    m->cert_len == 0)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_p11_import_req_clear(m);
	return r;
}

void
msg_p11_import_req_clear(struct msg_p11_import_req *m)
{
	free(m->id);
	free(m->label);
	free(m->subject);
	free(m->cert);
	memset(m, 0, sizeof(*m));
}

int
msg_p11_delete_req_put(struct wbuf *b, const struct msg_p11_delete_req *m)
{
	int r;

	if (m->id_len == 0 || m->id_len > P11_ATTR_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_DELETE)) != 0 || (r = put_u64(b, m->slot)) != 0 ||
	    (r = wbuf_put_string(b, m->id, m->id_len)) != 0)
		return r;
	return 0;
}

int
msg_p11_delete_req_get(struct wbuf *b, struct msg_p11_delete_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = get_u64(b, &m->slot)) != 0 ||
	    (r = wbuf_get_string(b, &m->id, &m->id_len, P11_ATTR_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	/* An empty id would match objects with no id: never all of them. */
	if (m->id_len == 0)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_p11_delete_req_clear(m);
	return r;
}

void
msg_p11_delete_req_clear(struct msg_p11_delete_req *m)
{
	free(m->id);
	memset(m, 0, sizeof(*m));
}

/* ---- ERROR ------------------------------------------------------------ */

int
msg_p11_error_put(struct wbuf *b, const struct msg_p11_error *m)
{
	int r;

	if (m->code >= 0 || m->code < MTLS_ERR_LAST_ || m->retries < -1 || m->retries > 1000)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, P11_ERROR)) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)-m->code)) != 0 ||
	    (r = wbuf_put_u32(b, m->retries < 0 ? RETRIES_UNKNOWN : (uint32_t)m->retries)) != 0 ||
	    (r = wbuf_put_u32(b, m->rv)) != 0 || (r = wbuf_put_cstring(b, m->message)) != 0)
		return r;
	return 0;
}

int
msg_p11_error_get(struct wbuf *b, struct msg_p11_error *m)
{
	uint32_t code, retries;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_u32(b, &code)) != 0 || (r = wbuf_get_u32(b, &retries)) != 0 ||
	    (r = wbuf_get_u32(b, &m->rv)) != 0 ||
	    (r = wbuf_get_cstring(b, &m->message, MTLS_TEXT_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	/* Unlike a client's ERROR, nothing is mapped: a helper that sends a
	 * code or count we do not know is broken, and is restarted for it. */
	if (code == 0 || code > (uint32_t)-MTLS_ERR_LAST_ ||
	    (retries != RETRIES_UNKNOWN && retries > 1000)) {
		r = MTLS_ERR_BAD_REQUEST;
		goto out;
	}
	m->code = -(int)code;
	m->retries = retries == RETRIES_UNKNOWN ? -1 : (int)retries;
out:
	if (r != 0)
		msg_p11_error_clear(m);
	return r;
}

void
msg_p11_error_clear(struct msg_p11_error *m)
{
	free(m->message);
	memset(m, 0, sizeof(*m));
}
