/*
 * fuzz_msg - every message codec, as the agent and the library meet them.
 *
 * Input: one frame body, i.e. a type byte and a payload.  The type byte
 * picks the decoder exactly as the agent's dispatch (requests) and the
 * library (replies) do; there is no token behind it.  Whatever decodes
 * must encode again, and what that encodes must decode to the same
 * message: the codecs are canonical, so the bytes must be equal as well
 * (except for ERROR, whose out-of-range retry counts decode to -1).  A
 * decoded SIGN request also goes through the content checks the agent
 * would run.
 */
#include "config.h"

#include <string.h>

#include "fuzz.h"
#include "proto.h"
#include "purpose.h"

/* Encodes with put(), then checks the bytes equal the input body. */
static void
check_same_bytes(const struct wbuf *enc, const uint8_t *data, size_t size)
{
	FUZZ_CHECK(wbuf_len(enc) == size);
	FUZZ_CHECK(memcmp(wbuf_ptr(enc), data, size) == 0);
}

/* Positions a decoder on the payload of an encoded body. */
static struct wbuf *
reparse(const struct wbuf *enc, uint8_t type)
{
	struct wbuf *b;
	uint8_t t;

	FUZZ_CHECK((b = wbuf_from(wbuf_ptr(enc), wbuf_len(enc))) != NULL);
	FUZZ_CHECK(wbuf_get_u8(b, &t) == 0 && t == type);
	return b;
}

static int
streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static int
memeq(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void
fuzz_hello_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_hello_req m, m2;
	struct wbuf *b;

	if (msg_hello_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.client == NULL);
		return;
	}
	FUZZ_CHECK(m.min_version <= m.max_version && m.client != NULL);
	FUZZ_CHECK(msg_hello_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_HELLO);
	FUZZ_CHECK(msg_hello_req_get(b, &m2) == 0);
	FUZZ_CHECK(m2.min_version == m.min_version && m2.max_version == m.max_version &&
		   streq(m2.client, m.client));
	msg_hello_req_clear(&m2);
	msg_hello_req_clear(&m);
	wbuf_free(b);
}

static void
fuzz_hello_resp(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_hello_resp m, m2;
	struct wbuf *b;

	if (msg_hello_resp_get(in, &m) != 0) {
		FUZZ_CHECK(m.agent == NULL);
		return;
	}
	FUZZ_CHECK(msg_hello_resp_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_HELLO | MSG_REPLY);
	FUZZ_CHECK(msg_hello_resp_get(b, &m2) == 0);
	FUZZ_CHECK(m2.version == m.version && streq(m2.agent, m.agent));
	msg_hello_resp_clear(&m2);
	msg_hello_resp_clear(&m);
	wbuf_free(b);
}

static int
identity_eq(const struct mtls_agent_identity *a, const struct mtls_agent_identity *b)
{
	size_t i;

	if (!streq(a->name, b->name) || !streq(a->token_label, b->token_label) ||
	    !streq(a->key_label, b->key_label) ||
	    !memeq(a->key_id, a->key_id_len, b->key_id, b->key_id_len) ||
	    a->key_type != b->key_type || a->key_bits != b->key_bits || a->flags != b->flags ||
	    a->purposes != b->purposes ||
	    !memeq(a->schemes, a->n_schemes * sizeof(*a->schemes), b->schemes,
		   b->n_schemes * sizeof(*b->schemes)) ||
	    !memeq(a->cert_der, a->cert_der_len, b->cert_der, b->cert_der_len) ||
	    a->n_chain != b->n_chain)
		return 0;
	for (i = 0; i < a->n_chain; i++)
		if (!memeq(a->chain_der[i], a->chain_der_len[i], b->chain_der[i],
			   b->chain_der_len[i]))
			return 0;
	return 1;
}

static void
fuzz_list_resp(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_list_resp m, m2;
	struct wbuf *b;
	size_t i;

	if (msg_list_resp_get(in, &m) != 0) {
		FUZZ_CHECK(m.ids == NULL && m.n == 0);
		return;
	}
	FUZZ_CHECK(m.n <= MTLS_IDS_MAX && (m.n == 0) == (m.ids == NULL));
	for (i = 0; i < m.n; i++) {
		FUZZ_CHECK(m.ids[i].n_schemes <= MTLS_SCHEMES_MAX);
		FUZZ_CHECK(m.ids[i].n_chain <= MTLS_CHAIN_MAX);
		FUZZ_CHECK((m.ids[i].cert_der == NULL) == (m.ids[i].cert_der_len == 0));
	}
	FUZZ_CHECK(msg_list_resp_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_LIST | MSG_REPLY);
	FUZZ_CHECK(msg_list_resp_get(b, &m2) == 0);
	FUZZ_CHECK(m2.n == m.n);
	for (i = 0; i < m.n; i++)
		FUZZ_CHECK(identity_eq(&m.ids[i], &m2.ids[i]));
	msg_list_resp_clear(&m2);
	msg_list_resp_clear(&m);
	wbuf_free(b);
}

static void
fuzz_sign_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_sign_req m, m2;
	const struct scheme_info *s;
	char why[256];
	struct wbuf *b;
	int r;

	if (msg_sign_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.identity == NULL && m.content == NULL);
		return;
	}
	FUZZ_CHECK(m.identity != NULL && m.content_len <= MTLS_CONTENT_MAX);
	FUZZ_CHECK(msg_sign_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_SIGN);
	FUZZ_CHECK(msg_sign_req_get(b, &m2) == 0);
	FUZZ_CHECK(streq(m2.identity, m.identity) && m2.scheme == m.scheme &&
		   m2.purpose == m.purpose &&
		   memeq(m2.content, m2.content_len, m.content, m.content_len));
	/* What the agent does next, short of the token. */
	s = scheme_lookup(m.scheme);
	r = purpose_check(m.purpose, s, m.content, m.content_len, why, sizeof(why));
	FUZZ_CHECK(r == 0 || r == MTLS_ERR_CONTENT_REJECTED || r == MTLS_ERR_UNSUPPORTED_SCHEME);
	FUZZ_CHECK(r != 0 || s != NULL);
	FUZZ_CHECK(memchr(why, '\0', sizeof(why)) != NULL);
	msg_sign_req_clear(&m2);
	msg_sign_req_clear(&m);
	wbuf_free(b);
}

static void
fuzz_sign_resp(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_sign_resp m, m2;
	struct wbuf *b;

	if (msg_sign_resp_get(in, &m) != 0) {
		FUZZ_CHECK(m.sig == NULL && m.sig_len == 0);
		return;
	}
	FUZZ_CHECK(m.sig_len > 0 && m.sig_len <= MTLS_SIG_MAX);
	FUZZ_CHECK(msg_sign_resp_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_SIGN | MSG_REPLY);
	FUZZ_CHECK(msg_sign_resp_get(b, &m2) == 0);
	FUZZ_CHECK(memeq(m2.sig, m2.sig_len, m.sig, m.sig_len));
	msg_sign_resp_clear(&m2);
	msg_sign_resp_clear(&m);
	wbuf_free(b);
}

static void
fuzz_login_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_login_req m, m2;
	struct wbuf *b;

	if (msg_login_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.identity == NULL && m.pin == NULL);
		return;
	}
	FUZZ_CHECK(m.pin != NULL && strlen(m.pin) > 0 && strlen(m.pin) <= MTLS_PIN_MAX);
	FUZZ_CHECK(msg_login_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_LOGIN);
	FUZZ_CHECK(msg_login_req_get(b, &m2) == 0);
	FUZZ_CHECK(streq(m2.identity, m.identity) && streq(m2.pin, m.pin));
	FUZZ_CHECK(m2.flags == m.flags && (m.flags & ~LOGIN_FLAGS_KNOWN) == 0);
	msg_login_req_clear(&m2);
	msg_login_req_clear(&m);
	wbuf_free(b);
}

static void
fuzz_set_pin_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_set_pin_req m, m2;
	struct wbuf *b;

	if (msg_set_pin_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.identity == NULL && m.old_pin == NULL && m.new_pin == NULL);
		return;
	}
	FUZZ_CHECK(m.mode == SET_PIN_CHANGE || m.mode == SET_PIN_UNBLOCK);
	FUZZ_CHECK(msg_set_pin_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_SET_PIN);
	FUZZ_CHECK(msg_set_pin_req_get(b, &m2) == 0);
	FUZZ_CHECK(streq(m2.identity, m.identity) && m2.mode == m.mode &&
		   streq(m2.old_pin, m.old_pin) && streq(m2.new_pin, m.new_pin));
	msg_set_pin_req_clear(&m2);
	msg_set_pin_req_clear(&m);
	wbuf_free(b);
}

static void
fuzz_logout_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_logout_req m, m2;
	struct wbuf *b;

	if (msg_logout_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.identity == NULL);
		return;
	}
	FUZZ_CHECK(msg_logout_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_LOGOUT);
	FUZZ_CHECK(msg_logout_req_get(b, &m2) == 0);
	FUZZ_CHECK(streq(m2.identity, m.identity));
	msg_logout_req_clear(&m2);
	msg_logout_req_clear(&m);
	wbuf_free(b);
}

static void
fuzz_login_prompt_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_login_prompt_req m, m2;
	struct wbuf *b;

	if (msg_login_prompt_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.identity == NULL);
		return;
	}
	FUZZ_CHECK(msg_login_prompt_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_LOGIN_PROMPT);
	FUZZ_CHECK(msg_login_prompt_req_get(b, &m2) == 0);
	FUZZ_CHECK(streq(m2.identity, m.identity));
	msg_login_prompt_req_clear(&m2);
	msg_login_prompt_req_clear(&m);
	wbuf_free(b);
}

static void
fuzz_status_resp(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct mtls_agent_status m, m2;
	struct wbuf *b;

	if (msg_status_resp_get(in, &m) != 0) {
		FUZZ_CHECK(m.version == NULL);
		return;
	}
	FUZZ_CHECK(msg_status_resp_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_STATUS | MSG_REPLY);
	FUZZ_CHECK(msg_status_resp_get(b, &m2) == 0);
	FUZZ_CHECK(streq(m2.version, m.version) && m2.pid == m.pid && m2.uptime == m.uptime &&
		   m2.connections == m.connections && m2.identities == m.identities &&
		   m2.tokens_present == m.tokens_present &&
		   m2.tokens_logged_in == m.tokens_logged_in);
	mtls_agent_status_clear(&m2);
	mtls_agent_status_clear(&m);
	wbuf_free(b);
}

static void
fuzz_error(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_error m, m2;
	struct wbuf *b;

	if (msg_error_get(in, &m) != 0) {
		FUZZ_CHECK(m.message == NULL);
		return;
	}
	FUZZ_CHECK(m.code < 0 && m.code >= MTLS_ERR_LAST_);
	FUZZ_CHECK(m.retries >= -1 && m.retries <= 1000);
	FUZZ_CHECK(mtls_agent_strerror(m.code) != NULL);
	FUZZ_CHECK(msg_error_put(enc, &m) == 0);
	/* Retry counts past 1000 (other than "unknown") decode to -1. */
	if (m.retries >= 0)
		check_same_bytes(enc, d, n);
	b = reparse(enc, MSG_ERROR);
	FUZZ_CHECK(msg_error_get(b, &m2) == 0);
	FUZZ_CHECK(m2.code == m.code && m2.retries == m.retries && streq(m2.message, m.message));
	msg_error_clear(&m2);
	msg_error_clear(&m);
	wbuf_free(b);
}

/* Empty messages: LIST and STATUS requests, the LOGIN/LOGOUT/SET_PIN
 * replies.  Accepted exactly when nothing follows the type byte. */
static void
fuzz_empty(struct wbuf *in, uint8_t type, size_t n)
{
	struct wbuf *enc;
	int r;

	r = type == MSG_LIST ? msg_list_req_get(in) : msg_empty_get(in);
	FUZZ_CHECK((r == 0) == (n == 1));
	if (r != 0)
		return;
	FUZZ_CHECK((enc = wbuf_new()) != NULL);
	switch (type) {
	case MSG_LIST: FUZZ_CHECK(msg_list_req_put(enc) == 0); break;
	case MSG_STATUS: FUZZ_CHECK(msg_status_req_put(enc) == 0); break;
	default: FUZZ_CHECK(msg_empty_resp_put(enc, type & ~MSG_REPLY) == 0); break;
	}
	FUZZ_CHECK(wbuf_len(enc) == 1 && wbuf_ptr(enc)[0] == type);
	wbuf_free(enc);
}

static void
fuzz_keygen_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_keygen_req m;

	if (msg_keygen_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.token == NULL && m.label == NULL);
		return;
	}
	FUZZ_CHECK(msg_keygen_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	msg_keygen_req_clear(&m);
}

static void
fuzz_keygen_resp(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_keygen_resp m;

	if (msg_keygen_resp_get(in, &m) != 0) {
		FUZZ_CHECK(m.name == NULL && m.spki == NULL && m.key_id == NULL);
		return;
	}
	FUZZ_CHECK(m.spki_len > 0 && m.spki_len <= MTLS_SPKI_MAX);
	FUZZ_CHECK(msg_keygen_resp_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	msg_keygen_resp_clear(&m);
}

static void
fuzz_import_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_import_req m;

	if (msg_import_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.cert == NULL);
		return;
	}
	FUZZ_CHECK(msg_import_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	msg_import_req_clear(&m);
}

static void
fuzz_import_resp(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_import_resp m;

	if (msg_import_resp_get(in, &m) != 0) {
		FUZZ_CHECK(m.name == NULL);
		return;
	}
	FUZZ_CHECK(msg_import_resp_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	msg_import_resp_clear(&m);
}

static void
fuzz_delete_key_req(struct wbuf *in, struct wbuf *enc, const uint8_t *d, size_t n)
{
	struct msg_delete_key_req m;

	if (msg_delete_key_req_get(in, &m) != 0) {
		FUZZ_CHECK(m.identity == NULL);
		return;
	}
	FUZZ_CHECK(msg_delete_key_req_put(enc, &m) == 0);
	check_same_bytes(enc, d, n);
	msg_delete_key_req_clear(&m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wbuf *in, *enc;
	uint8_t type;

	/* What frame_read() would never deliver. */
	if (size == 0 || size > MTLS_FRAME_MAX)
		return 0;
	if ((in = wbuf_from(data, size)) == NULL || (enc = wbuf_new()) == NULL)
		abort();
	FUZZ_CHECK(wbuf_get_u8(in, &type) == 0);
	switch (type) {
	case MSG_HELLO: fuzz_hello_req(in, enc, data, size); break;
	case MSG_HELLO | MSG_REPLY: fuzz_hello_resp(in, enc, data, size); break;
	case MSG_LIST | MSG_REPLY: fuzz_list_resp(in, enc, data, size); break;
	case MSG_SIGN: fuzz_sign_req(in, enc, data, size); break;
	case MSG_SIGN | MSG_REPLY: fuzz_sign_resp(in, enc, data, size); break;
	case MSG_LOGIN: fuzz_login_req(in, enc, data, size); break;
	case MSG_SET_PIN: fuzz_set_pin_req(in, enc, data, size); break;
	case MSG_LOGOUT: fuzz_logout_req(in, enc, data, size); break;
	case MSG_LOGIN_PROMPT: fuzz_login_prompt_req(in, enc, data, size); break;
	case MSG_STATUS | MSG_REPLY: fuzz_status_resp(in, enc, data, size); break;
	case MSG_ERROR: fuzz_error(in, enc, data, size); break;
	case MSG_KEYGEN: fuzz_keygen_req(in, enc, data, size); break;
	case MSG_KEYGEN | MSG_REPLY: fuzz_keygen_resp(in, enc, data, size); break;
	case MSG_IMPORT_CERT: fuzz_import_req(in, enc, data, size); break;
	case MSG_IMPORT_CERT | MSG_REPLY: fuzz_import_resp(in, enc, data, size); break;
	case MSG_DELETE_KEY: fuzz_delete_key_req(in, enc, data, size); break;
	case MSG_DELETE_KEY | MSG_REPLY: fuzz_empty(in, type, size); break;
	case MSG_LIST:
	case MSG_STATUS:
	case MSG_LOGIN | MSG_REPLY:
	case MSG_LOGOUT | MSG_REPLY:
	case MSG_LOGIN_PROMPT | MSG_REPLY:
	case MSG_SET_PIN | MSG_REPLY: fuzz_empty(in, type, size); break;
	}
	wbuf_free(enc);
	wbuf_free(in);
	return 0;
}
