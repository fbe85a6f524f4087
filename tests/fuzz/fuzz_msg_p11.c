/*
 * fuzz_msg_p11 - the agent <-> mtls-agent-p11 codecs (msg_p11.c), as the
 * helper meets requests and the agent meets replies.
 *
 * Input: one frame body (type byte + payload).  Whatever decodes must
 * encode to the same bytes, and decode again to the same message: every
 * codec is canonical.
 */
#include "config.h"

#include <string.h>

#include "fuzz.h"
#include "msg_p11.h"

static void
same_bytes(const struct wbuf *enc, const uint8_t *data, size_t size)
{
	FUZZ_CHECK(wbuf_len(enc) == size);
	FUZZ_CHECK(memcmp(wbuf_ptr(enc), data, size) == 0);
}

static void
fuzz_tokens(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_tokens_resp m;

	if (msg_p11_tokens_resp_get(in, &m) != 0) {
		FUZZ_CHECK(m.t == NULL && m.n == 0);
		return;
	}
	FUZZ_CHECK(m.n <= P11_SLOTS_MAX);
	FUZZ_CHECK(msg_p11_tokens_resp_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_tokens_resp_clear(&m);
}

static void
fuzz_objects(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_objects_resp m;
	size_t i;

	if (msg_p11_objects_resp_get(in, &m) != 0) {
		FUZZ_CHECK(m.o == NULL && m.n == 0);
		return;
	}
	for (i = 0; i < m.n; i++)
		FUZZ_CHECK(m.o[i].kind != P11_OBJ_CERT || m.o[i].b_len == 0);
	FUZZ_CHECK(msg_p11_objects_resp_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_objects_resp_clear(&m);
}

static void
fuzz_slot(struct wbuf *in, struct wbuf *enc, uint8_t type, const uint8_t *d, size_t n)
{
	struct msg_p11_slot_req m;

	if (msg_p11_slot_req_get(in, &m) != 0)
		return;
	FUZZ_CHECK(msg_p11_slot_req_put(enc, type, &m) == 0);
	same_bytes(enc, d, n);
}

static void
fuzz_login(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_login_req m;

	if (msg_p11_login_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.pin == NULL);
		return;
	}
	FUZZ_CHECK(msg_p11_login_req_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_login_req_clear(&m);
}

static void
fuzz_set_pin(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_set_pin_req m;

	if (msg_p11_set_pin_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.old_pin == NULL && m.new_pin == NULL);
		return;
	}
	FUZZ_CHECK(msg_p11_set_pin_req_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_set_pin_req_clear(&m);
}

static void
fuzz_sign(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_sign_req m;

	if (msg_p11_sign_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.data == NULL);
		return;
	}
	FUZZ_CHECK(m.data_len <= P11_DATA_MAX);
	FUZZ_CHECK(msg_p11_sign_req_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_sign_req_clear(&m);
}

static void
fuzz_sign_resp(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_sign_resp m;

	if (msg_sign_resp_get(in, &m) != 0)
		return;
	FUZZ_CHECK(msg_p11_sign_resp_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_sign_resp_clear(&m);
}

static void
fuzz_error(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_error m;

	if (msg_p11_error_get(in, &m) != 0) {
		FUZZ_CHECK(m.message == NULL);
		return;
	}
	FUZZ_CHECK(m.code < 0 && m.code >= MTLS_ERR_LAST_);
	FUZZ_CHECK(msg_p11_error_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_error_clear(&m);
}

static void
fuzz_keygen(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_keygen_req m;

	if (msg_p11_keygen_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.label == NULL);
		return;
	}
	FUZZ_CHECK(m.kind >= MTLS_AGENT_KEYGEN_EC_P256 && m.kind <= MTLS_AGENT_KEYGEN_RSA_4096);
	FUZZ_CHECK(msg_p11_keygen_req_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_keygen_req_clear(&m);
}

static void
fuzz_keygen_resp(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct p11_object o;

	if (msg_p11_keygen_resp_get(in, &o) != 0) {
		FUZZ_CHECK(o.id == NULL && o.a == NULL && o.b == NULL && o.label == NULL);
		return;
	}
	FUZZ_CHECK(o.a_len > 0 && o.b_len > 0 && o.id_len > 0);
	FUZZ_CHECK(msg_p11_keygen_resp_put(enc, &o) == 0);
	same_bytes(enc, d, n);
	msg_p11_object_clear(&o);
}

static void
fuzz_import(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_import_req m;

	if (msg_p11_import_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.cert == NULL && m.id == NULL && m.subject == NULL);
		return;
	}
	FUZZ_CHECK(m.cert_len > 0 && m.cert_len <= MTLS_CERT_MAX);
	FUZZ_CHECK(msg_p11_import_req_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_import_req_clear(&m);
}

static void
fuzz_delete(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_p11_delete_req m;

	if (msg_p11_delete_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.id == NULL);
		return;
	}
	FUZZ_CHECK(m.id_len > 0);
	FUZZ_CHECK(msg_p11_delete_req_put(enc, &m) == 0);
	same_bytes(enc, d, n);
	msg_p11_delete_req_clear(&m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wbuf *in, *enc;
	uint8_t type;

	if (size == 0 || size > MTLS_FRAME_MAX)
		return 0;
	if ((in = wbuf_from(data, size)) == NULL || (enc = wbuf_new()) == NULL)
		abort();
	FUZZ_CHECK(wbuf_get_u8(in, &type) == 0);
	switch (type) {
	case P11_TOKENS | MSG_REPLY: fuzz_tokens(in, enc, data, size); break;
	case P11_OBJECTS | MSG_REPLY: fuzz_objects(in, enc, data, size); break;
	case P11_OBJECTS:
	case P11_LOGOUT: fuzz_slot(in, enc, type, data, size); break;
	case P11_LOGIN: fuzz_login(in, enc, data, size); break;
	case P11_SET_PIN: fuzz_set_pin(in, enc, data, size); break;
	case P11_SIGN: fuzz_sign(in, enc, data, size); break;
	case P11_SIGN | MSG_REPLY: fuzz_sign_resp(in, enc, data, size); break;
	case P11_ERROR: fuzz_error(in, enc, data, size); break;
	case P11_KEYGEN: fuzz_keygen(in, enc, data, size); break;
	case P11_KEYGEN | MSG_REPLY: fuzz_keygen_resp(in, enc, data, size); break;
	case P11_IMPORT_CERT: fuzz_import(in, enc, data, size); break;
	case P11_DELETE: fuzz_delete(in, enc, data, size); break;
	}
	wbuf_free(enc);
	wbuf_free(in);
	return 0;
}
