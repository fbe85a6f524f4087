/*
 * test_msg.c - unit tests of the message codecs (src/common/msg_*.c) and
 * of frame I/O (src/common/frame.c).
 *
 * Every decoder faces a hostile peer, so besides round trips each one is
 * fed every truncation of a valid encoding, one trailing byte, and each
 * field just over its bound; a refused message must leave the struct
 * cleared so that callers can free it on every path.  Over-limit messages
 * are built by hand with the wbuf putters, since the encoders refuse them.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "proto.h"

/* ---------- helpers ---------- */

static struct wbuf *
newbuf(void)
{
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	return b;
}

/* A string of `len` copies of `c`, malloc'd. */
static char *
filled(size_t len, char c)
{
	char *s = malloc(len + 1);

	assert_non_null(s);
	memset(s, c, len);
	s[len] = '\0';
	return s;
}

static void
put_filled_string(struct wbuf *b, size_t len, char c)
{
	char *s = filled(len, c);

	assert_int_equal(wbuf_put_string(b, s, len), 0);
	free(s);
}

static int
all_zero(const void *p, size_t len)
{
	const unsigned char *c = p;
	size_t i;

	for (i = 0; i < len; i++)
		if (c[i] != 0)
			return 0;
	return 1;
}

/*
 * One decoder seen generically.  Wrappers rather than casts of function
 * pointers, which would be undefined behaviour.
 */
struct codec {
	const char *name;
	uint8_t type; /* type byte the encoder writes */
	size_t msize; /* size of the struct (0: no struct) */
	int (*get)(struct wbuf *b, void *m);
	void (*clear)(void *m);
};

static int
get_hello_req(struct wbuf *b, void *m)
{
	return msg_hello_req_get(b, m);
}
static void
clear_hello_req(void *m)
{
	msg_hello_req_clear(m);
}
static int
get_hello_resp(struct wbuf *b, void *m)
{
	return msg_hello_resp_get(b, m);
}
static void
clear_hello_resp(void *m)
{
	msg_hello_resp_clear(m);
}
static int
get_list_req(struct wbuf *b, void *m)
{
	(void)m;
	return msg_list_req_get(b);
}
static void
clear_nothing(void *m)
{
	(void)m;
}
static int
get_list_resp(struct wbuf *b, void *m)
{
	return msg_list_resp_get(b, m);
}
static void
clear_list_resp(void *m)
{
	msg_list_resp_clear(m);
}
static int
get_sign_req(struct wbuf *b, void *m)
{
	return msg_sign_req_get(b, m);
}
static void
clear_sign_req(void *m)
{
	msg_sign_req_clear(m);
}
static int
get_sign_resp(struct wbuf *b, void *m)
{
	return msg_sign_resp_get(b, m);
}
static void
clear_sign_resp(void *m)
{
	msg_sign_resp_clear(m);
}
static int
get_login_req(struct wbuf *b, void *m)
{
	return msg_login_req_get(b, m);
}
static void
clear_login_req(void *m)
{
	msg_login_req_clear(m);
}
static int
get_logout_req(struct wbuf *b, void *m)
{
	return msg_logout_req_get(b, m);
}
static void
clear_logout_req(void *m)
{
	msg_logout_req_clear(m);
}
static int
get_login_prompt_req(struct wbuf *b, void *m)
{
	return msg_login_prompt_req_get(b, m);
}
static void
clear_login_prompt_req(void *m)
{
	msg_login_prompt_req_clear(m);
}
static int
get_empty(struct wbuf *b, void *m)
{
	(void)m;
	return msg_empty_get(b);
}
static int
get_status_resp(struct wbuf *b, void *m)
{
	return msg_status_resp_get(b, m);
}
static void
clear_status_resp(void *m)
{
	mtls_agent_status_clear(m);
}
static int
get_error(struct wbuf *b, void *m)
{
	return msg_error_get(b, m);
}
static void
clear_error(void *m)
{
	msg_error_clear(m);
}

static const struct codec C_HELLO_REQ = { "hello_req", MSG_HELLO, sizeof(struct msg_hello_req),
					  get_hello_req, clear_hello_req };
static const struct codec C_HELLO_RESP = { "hello_resp", MSG_HELLO | MSG_REPLY,
					   sizeof(struct msg_hello_resp), get_hello_resp,
					   clear_hello_resp };
static const struct codec C_LIST_REQ = { "list_req", MSG_LIST, 0, get_list_req, clear_nothing };
static const struct codec C_LIST_RESP = { "list_resp", MSG_LIST | MSG_REPLY,
					  sizeof(struct msg_list_resp), get_list_resp,
					  clear_list_resp };
static const struct codec C_SIGN_REQ = { "sign_req", MSG_SIGN, sizeof(struct msg_sign_req),
					 get_sign_req, clear_sign_req };
static const struct codec C_SIGN_RESP = { "sign_resp", MSG_SIGN | MSG_REPLY,
					  sizeof(struct msg_sign_resp), get_sign_resp,
					  clear_sign_resp };
static const struct codec C_LOGIN_REQ = { "login_req", MSG_LOGIN, sizeof(struct msg_login_req),
					  get_login_req, clear_login_req };
static const struct codec C_LOGOUT_REQ = { "logout_req", MSG_LOGOUT, sizeof(struct msg_logout_req),
					   get_logout_req, clear_logout_req };
static int
get_set_pin_req(struct wbuf *b, void *m)
{
	return msg_set_pin_req_get(b, m);
}

static void
clear_set_pin_req(void *m)
{
	msg_set_pin_req_clear(m);
}

static const struct codec C_SET_PIN_REQ = { "set_pin_req", MSG_SET_PIN,
					    sizeof(struct msg_set_pin_req), get_set_pin_req,
					    clear_set_pin_req };
static const struct codec C_STATUS_REQ = { "status_req", MSG_STATUS, 0, get_empty, clear_nothing };
static const struct codec C_STATUS_RESP = { "status_resp", MSG_STATUS | MSG_REPLY,
					    sizeof(struct mtls_agent_status), get_status_resp,
					    clear_status_resp };
static const struct codec C_ERROR = { "error", MSG_ERROR, sizeof(struct msg_error), get_error,
				      clear_error };

/* Big enough for any of the message structs. */
union any_msg {
	struct msg_hello_req hello_req;
	struct msg_hello_resp hello_resp;
	struct msg_list_resp list_resp;
	struct msg_sign_req sign_req;
	struct msg_sign_resp sign_resp;
	struct msg_login_req login_req;
	struct msg_logout_req logout_req;
	struct msg_login_prompt_req login_prompt_req;
	struct msg_set_pin_req set_pin_req;
	struct mtls_agent_status status;
	struct msg_error error;
};

/*
 * Decodes the body p[0..len) (type byte first) with codec c into m.  The
 * struct is filled with garbage first so a decoder that forgets to clear
 * it on failure is caught.  Returns the decoder's result; on failure
 * asserts the struct came back all zero.
 */
static int
decode(const struct codec *c, const unsigned char *p, size_t len, void *m)
{
	struct wbuf *b = wbuf_from(p, len);
	uint8_t type;
	int r;

	assert_non_null(b);
	if (len == 0) {
		/* Not even the type byte. */
		assert_int_equal(wbuf_get_u8(b, &type), MTLS_ERR_TRUNCATED);
		wbuf_free(b);
		return MTLS_ERR_TRUNCATED;
	}
	assert_int_equal(wbuf_get_u8(b, &type), 0);
	assert_int_equal(type, c->type);
	if (c->msize > 0)
		memset(m, 0xa5, c->msize);
	r = c->get(b, m);
	if (r != 0 && c->msize > 0) {
		if (!all_zero(m, c->msize))
			fail_msg("%s: struct not cleared after error %d", c->name, r);
	}
	if (r == 0)
		assert_int_equal(wbuf_len(b), 0);
	wbuf_free(b);
	return r;
}

static int
decode_buf(const struct codec *c, const struct wbuf *enc, void *m)
{
	return decode(c, wbuf_ptr(enc), wbuf_len(enc), m);
}

/* Decodes enc expecting exactly `want` (which must be an error). */
static void
expect_refused(const struct codec *c, const struct wbuf *enc, int want)
{
	union any_msg m;
	int r = decode_buf(c, enc, &m);

	if (r != want)
		fail_msg("%s: got %d (%s), want %d (%s)", c->name, r, mtls_agent_strerror(r), want,
			 mtls_agent_strerror(want));
}

/*
 * Every proper prefix of a valid encoding fails with a negative code and
 * leaves the struct cleared; one extra byte is MTLS_ERR_TRAILING_DATA.
 */
static void
check_truncations_and_trailing(const struct codec *c, const struct wbuf *enc)
{
	const unsigned char *p = wbuf_ptr(enc);
	size_t len = wbuf_len(enc), n;
	unsigned char *longer;
	union any_msg m;
	int r;

	assert_true(len >= 1);
	for (n = 0; n < len; n++) {
		r = decode(c, p, n, &m);
		if (r >= 0)
			fail_msg("%s: prefix of %zu/%zu bytes accepted (%d)", c->name, n, len, r);
	}
	longer = malloc(len + 1);
	assert_non_null(longer);
	memcpy(longer, p, len);
	longer[len] = 0x00;
	r = decode(c, longer, len + 1, &m);
	if (r != MTLS_ERR_TRAILING_DATA)
		fail_msg("%s: trailing byte gave %d, want MTLS_ERR_TRAILING_DATA", c->name, r);
	free(longer);
	/* And the untouched encoding still decodes. */
	assert_int_equal(decode(c, p, len, &m), 0);
	c->clear(&m);
}

/* ---------- HELLO ---------- */

static void
test_hello(void **state)
{
	static const unsigned char want_req[] = { MSG_HELLO, 0, 0, 0, 1,   0,	0,   0,	 3,
						  0,	     0, 0, 4, 't', 'e', 's', 't' };
	struct msg_hello_req rq = { 1, 3, (char *)"test" }, rq2;
	struct msg_hello_resp rs = { 1, (char *)"mtls-agent 0.1.0" }, rs2;
	struct wbuf *b = newbuf();

	(void)state;
	assert_int_equal(msg_hello_req_put(b, &rq), 0);
	/* Layout as documented in msg_hello.c. */
	assert_int_equal(wbuf_len(b), sizeof(want_req));
	assert_memory_equal(wbuf_ptr(b), want_req, sizeof(want_req));
	assert_int_equal(decode_buf(&C_HELLO_REQ, b, &rq2), 0);
	assert_int_equal(rq2.min_version, 1);
	assert_int_equal(rq2.max_version, 3);
	assert_string_equal(rq2.client, "test");
	msg_hello_req_clear(&rq2);
	assert_null(rq2.client);
	msg_hello_req_clear(&rq2); /* twice is fine */
	check_truncations_and_trailing(&C_HELLO_REQ, b);
	wbuf_free(b);

	/* min == max is fine; NULL client goes out as "". */
	b = newbuf();
	rq.min_version = rq.max_version = 7;
	rq.client = NULL;
	assert_int_equal(msg_hello_req_put(b, &rq), 0);
	assert_int_equal(decode_buf(&C_HELLO_REQ, b, &rq2), 0);
	assert_int_equal(rq2.min_version, 7);
	assert_string_equal(rq2.client, "");
	msg_hello_req_clear(&rq2);
	wbuf_free(b);

	b = newbuf();
	assert_int_equal(msg_hello_resp_put(b, &rs), 0);
	assert_int_equal(wbuf_ptr(b)[0], MSG_HELLO | MSG_REPLY);
	assert_int_equal(decode_buf(&C_HELLO_RESP, b, &rs2), 0);
	assert_int_equal(rs2.version, 1);
	assert_string_equal(rs2.agent, "mtls-agent 0.1.0");
	msg_hello_resp_clear(&rs2);
	assert_null(rs2.agent);
	check_truncations_and_trailing(&C_HELLO_RESP, b);
	wbuf_free(b);
}

static void
test_hello_refused(void **state)
{
	struct msg_hello_req rq = { 3, 2, (char *)"x" };
	struct wbuf *b = newbuf();

	(void)state;
	/* min > max */
	assert_int_equal(msg_hello_req_put(b, &rq), 0);
	expect_refused(&C_HELLO_REQ, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);

	/* client name over MTLS_NAME_MAX; exactly the max is fine. */
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_HELLO), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	put_filled_string(b, MTLS_NAME_MAX + 1, 'c');
	expect_refused(&C_HELLO_REQ, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_HELLO), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	put_filled_string(b, MTLS_NAME_MAX, 'c');
	{
		struct msg_hello_req ok;

		assert_int_equal(decode_buf(&C_HELLO_REQ, b, &ok), 0);
		assert_int_equal(strlen(ok.client), MTLS_NAME_MAX);
		msg_hello_req_clear(&ok);
	}
	wbuf_free(b);

	/* client with an embedded NUL */
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_HELLO), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	assert_int_equal(wbuf_put_string(b, "a\0b", 3), 0);
	expect_refused(&C_HELLO_REQ, b, MTLS_ERR_STRING_NUL);
	wbuf_free(b);

	/* agent text over MTLS_TEXT_MAX */
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_HELLO | MSG_REPLY), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	put_filled_string(b, MTLS_TEXT_MAX + 1, 'v');
	expect_refused(&C_HELLO_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
}

/* ---------- LIST ---------- */

static const unsigned char cert_a[] = { 0x30, 0x82, 0x01, 0x0a, 0x02, 0x01, 0x00, 0xff };
static const unsigned char cert_b[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
static const unsigned char cert_c[] = { 0x30, 0x00 };

/* Fills three identities: one with a certificate and a two-certificate
 * chain, one without a certificate, one with every string empty. */
static void
make_identities(struct mtls_agent_identity ids[3], uint16_t schemes0[3], uint16_t schemes1[1],
		unsigned char *chain[2], size_t chain_len[2])
{
	static unsigned char key_id0[] = { 0x00, 0x01, 0xfe, 0x00 };
	static unsigned char key_id1[] = { 0x42 };

	memset(ids, 0, 3 * sizeof(ids[0]));
	schemes0[0] = MTLS_AGENT_RSA_PSS_RSAE_SHA256;
	schemes0[1] = MTLS_AGENT_RSA_PSS_RSAE_SHA384;
	schemes0[2] = MTLS_AGENT_RSA_PKCS1_SHA256;
	schemes1[0] = MTLS_AGENT_ECDSA_SECP256R1_SHA256;
	chain[0] = (unsigned char *)cert_b;
	chain_len[0] = sizeof(cert_b);
	chain[1] = (unsigned char *)cert_c;
	chain_len[1] = sizeof(cert_c);

	ids[0].name = (char *)"rsa-client";
	ids[0].token_label = (char *)"token one";
	ids[0].key_label = (char *)"client key";
	ids[0].key_id = key_id0;
	ids[0].key_id_len = sizeof(key_id0);
	ids[0].key_type = MTLS_AGENT_KEY_RSA;
	ids[0].key_bits = 3072;
	ids[0].flags = MTLS_AGENT_ID_TOKEN_PRESENT | MTLS_AGENT_ID_KEY_FOUND;
	ids[0].purposes =
	    (1u << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV) | (1u << MTLS_AGENT_PURPOSE_PAM_CHALLENGE);
	ids[0].schemes = schemes0;
	ids[0].n_schemes = 3;
	ids[0].cert_der = (unsigned char *)cert_a;
	ids[0].cert_der_len = sizeof(cert_a);
	ids[0].chain_der = chain;
	ids[0].chain_der_len = chain_len;
	ids[0].n_chain = 2;

	ids[1].name = (char *)"ec";
	ids[1].token_label = (char *)"token two";
	ids[1].key_label = (char *)"";
	ids[1].key_id = key_id1;
	ids[1].key_id_len = sizeof(key_id1);
	ids[1].key_type = MTLS_AGENT_KEY_EC;
	ids[1].key_bits = 256;
	ids[1].flags = 0xffffffff;
	ids[1].purposes = 0;
	ids[1].schemes = schemes1;
	ids[1].n_schemes = 1;

	ids[2].key_type = MTLS_AGENT_KEY_EC;
	ids[2].key_bits = 384;
}

static void
assert_identity_equal(const struct mtls_agent_identity *a, const struct mtls_agent_identity *b)
{
	size_t i;

	assert_string_equal(a->name == NULL ? "" : a->name, b->name);
	assert_string_equal(a->token_label == NULL ? "" : a->token_label, b->token_label);
	assert_string_equal(a->key_label == NULL ? "" : a->key_label, b->key_label);
	assert_int_equal(a->key_id_len, b->key_id_len);
	if (a->key_id_len > 0)
		assert_memory_equal(a->key_id, b->key_id, a->key_id_len);
	assert_int_equal(a->key_type, b->key_type);
	assert_int_equal(a->key_bits, b->key_bits);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->purposes, b->purposes);
	assert_int_equal(a->n_schemes, b->n_schemes);
	for (i = 0; i < a->n_schemes; i++)
		assert_int_equal(a->schemes[i], b->schemes[i]);
	assert_int_equal(a->cert_der_len, b->cert_der_len);
	if (a->cert_der_len > 0) {
		assert_non_null(b->cert_der);
		assert_memory_equal(a->cert_der, b->cert_der, a->cert_der_len);
	} else {
		/* No certificate comes back as NULL, not as an empty block. */
		assert_null(b->cert_der);
	}
	assert_int_equal(a->n_chain, b->n_chain);
	for (i = 0; i < a->n_chain; i++) {
		assert_int_equal(a->chain_der_len[i], b->chain_der_len[i]);
		assert_memory_equal(a->chain_der[i], b->chain_der[i], a->chain_der_len[i]);
	}
}

static void
test_list(void **state)
{
	struct mtls_agent_identity ids[3];
	uint16_t s0[3], s1[1];
	unsigned char *chain[2];
	size_t chain_len[2], i;
	struct msg_list_resp rs, rs2;
	struct wbuf *b = newbuf();
	union any_msg m;

	(void)state;
	/* The request is the bare type byte. */
	assert_int_equal(msg_list_req_put(b), 0);
	assert_int_equal(wbuf_len(b), 1);
	assert_int_equal(wbuf_ptr(b)[0], MSG_LIST);
	check_truncations_and_trailing(&C_LIST_REQ, b);
	assert_int_equal(decode_buf(&C_LIST_REQ, b, &m), 0);
	wbuf_free(b);

	make_identities(ids, s0, s1, chain, chain_len);
	rs.ids = ids;
	rs.n = 3;
	b = newbuf();
	assert_int_equal(msg_list_resp_put(b, &rs), 0);
	assert_int_equal(wbuf_ptr(b)[0], MSG_LIST | MSG_REPLY);
	assert_int_equal(decode_buf(&C_LIST_RESP, b, &rs2), 0);
	assert_int_equal(rs2.n, 3);
	assert_non_null(rs2.ids);
	for (i = 0; i < 3; i++)
		assert_identity_equal(&ids[i], &rs2.ids[i]);
	msg_list_resp_clear(&rs2);
	assert_null(rs2.ids);
	assert_int_equal(rs2.n, 0);
	msg_list_resp_clear(&rs2);
	check_truncations_and_trailing(&C_LIST_RESP, b);
	wbuf_free(b);

	/* Empty list. */
	rs.n = 0;
	rs.ids = NULL;
	b = newbuf();
	assert_int_equal(msg_list_resp_put(b, &rs), 0);
	assert_int_equal(decode_buf(&C_LIST_RESP, b, &rs2), 0);
	assert_int_equal(rs2.n, 0);
	msg_list_resp_clear(&rs2);
	check_truncations_and_trailing(&C_LIST_RESP, b);
	wbuf_free(b);

	/* mtls_agent_identities_free accepts NULL. */
	mtls_agent_identities_free(NULL, 5);
	identity_clear(NULL);
}

/* A hand-built identity following the layout documented in msg_list.c. */
struct raw_id {
	size_t name_len, token_len, label_len, key_id_len;
	uint8_t key_type;
	uint32_t key_bits;
	uint32_t n_schemes;
	size_t cert_len;
	uint32_t n_chain;
	size_t chain_len;
};

static const struct raw_id RAW_OK = { 4, 5, 6, 2, MTLS_AGENT_KEY_RSA, 2048, 2, 10, 1, 7 };

static void
put_raw_identity(struct wbuf *b, const struct raw_id *r)
{
	uint32_t i;

	put_filled_string(b, r->name_len, 'n');
	put_filled_string(b, r->token_len, 't');
	put_filled_string(b, r->label_len, 'l');
	put_filled_string(b, r->key_id_len, 'k');
	assert_int_equal(wbuf_put_u8(b, r->key_type), 0);
	assert_int_equal(wbuf_put_u32(b, r->key_bits), 0);
	assert_int_equal(wbuf_put_u32(b, MTLS_AGENT_ID_TOKEN_PRESENT), 0);
	assert_int_equal(wbuf_put_u32(b, 0x1e), 0);
	assert_int_equal(wbuf_put_u32(b, r->n_schemes), 0);
	for (i = 0; i < r->n_schemes; i++)
		assert_int_equal(wbuf_put_u16(b, MTLS_AGENT_RSA_PSS_RSAE_SHA256), 0);
	put_filled_string(b, r->cert_len, 'C');
	assert_int_equal(wbuf_put_u32(b, r->n_chain), 0);
	for (i = 0; i < r->n_chain; i++)
		put_filled_string(b, r->chain_len, 'H');
}

static struct wbuf *
raw_list(uint32_t count, size_t n_ids, const struct raw_id *r)
{
	struct wbuf *b = newbuf();
	size_t i;

	assert_int_equal(wbuf_put_u8(b, MSG_LIST | MSG_REPLY), 0);
	assert_int_equal(wbuf_put_u32(b, count), 0);
	for (i = 0; i < n_ids; i++)
		put_raw_identity(b, r);
	return b;
}

static void
expect_raw_list(const struct raw_id *r, int want)
{
	struct wbuf *b = raw_list(1, 1, r);
	struct msg_list_resp rs;

	if (want == 0) {
		assert_int_equal(decode_buf(&C_LIST_RESP, b, &rs), 0);
		assert_int_equal(rs.n, 1);
		assert_int_equal(rs.ids[0].n_schemes, r->n_schemes);
		assert_int_equal(rs.ids[0].n_chain, r->n_chain);
		assert_int_equal(strlen(rs.ids[0].name), r->name_len);
		msg_list_resp_clear(&rs);
	} else {
		expect_refused(&C_LIST_RESP, b, want);
	}
	wbuf_free(b);
}

static void
test_list_refused(void **state)
{
	struct raw_id r;
	struct wbuf *b;
	struct msg_list_resp rs;
	struct mtls_agent_identity many[MTLS_IDS_MAX + 1];

	(void)state;
	/* The hand encoding is what the decoder expects. */
	expect_raw_list(&RAW_OK, 0);

	/* Every name-like field: max accepted, max + 1 refused. */
	r = RAW_OK;
	r.name_len = MTLS_NAME_MAX;
	expect_raw_list(&r, 0);
	r.name_len = MTLS_NAME_MAX + 1;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.token_len = MTLS_NAME_MAX + 1;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.label_len = MTLS_NAME_MAX + 1;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.key_id_len = MTLS_NAME_MAX + 1;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);

	/* Bad key types and sizes. */
	r = RAW_OK;
	r.key_type = 0;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.key_type = 3;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.key_type = 0xff;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.key_type = MTLS_AGENT_KEY_EC;
	expect_raw_list(&r, 0);
	r = RAW_OK;
	r.key_bits = 16385;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.key_bits = 0xffffffff;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);

	/* Schemes and chain: max accepted, one more refused. */
	r = RAW_OK;
	r.n_schemes = MTLS_SCHEMES_MAX;
	expect_raw_list(&r, 0);
	r.n_schemes = MTLS_SCHEMES_MAX + 1;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.n_chain = MTLS_CHAIN_MAX;
	expect_raw_list(&r, 0);
	r.n_chain = MTLS_CHAIN_MAX + 1;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	/* (Scheme and chain counts of 0xffffffff: test_list_huge_counts.) */

	/* Certificates: over MTLS_CERT_MAX refused; empty chain entry refused. */
	r = RAW_OK;
	r.cert_len = MTLS_CERT_MAX;
	expect_raw_list(&r, 0);
	r.cert_len = MTLS_CERT_MAX + 1;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.chain_len = MTLS_CERT_MAX + 1;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);
	r = RAW_OK;
	r.chain_len = 0;
	expect_raw_list(&r, MTLS_ERR_BAD_REQUEST);

	/* No certificate at all decodes to NULL. */
	r = RAW_OK;
	r.cert_len = 0;
	r.n_chain = 0;
	b = raw_list(1, 1, &r);
	assert_int_equal(decode_buf(&C_LIST_RESP, b, &rs), 0);
	assert_null(rs.ids[0].cert_der);
	assert_int_equal(rs.ids[0].cert_der_len, 0);
	assert_null(rs.ids[0].chain_der);
	msg_list_resp_clear(&rs);
	wbuf_free(b);

	/* Identity counts: MTLS_IDS_MAX accepted, one more refused even with
	 * all identities present. */
	r = RAW_OK;
	r.n_chain = 0;
	r.n_schemes = 0;
	r.cert_len = 0;
	b = raw_list(MTLS_IDS_MAX, MTLS_IDS_MAX, &r);
	assert_int_equal(decode_buf(&C_LIST_RESP, b, &rs), 0);
	assert_int_equal(rs.n, MTLS_IDS_MAX);
	msg_list_resp_clear(&rs);
	wbuf_free(b);
	b = raw_list(MTLS_IDS_MAX + 1, MTLS_IDS_MAX + 1, &r);
	expect_refused(&C_LIST_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);

	/* Counts the frame cannot hold are refused before allocating. */
	b = raw_list(200, 1, &RAW_OK);
	expect_refused(&C_LIST_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	b = raw_list(0xffffffff, 1, &RAW_OK);
	expect_refused(&C_LIST_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	b = raw_list(1, 0, &RAW_OK);
	expect_refused(&C_LIST_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	/* Two announced, one present and enough bytes for the count check. */
	b = raw_list(2, 1, &RAW_OK);
	{
		union any_msg m;

		assert_true(decode_buf(&C_LIST_RESP, b, &m) < 0);
	}
	wbuf_free(b);

	/* Second identity bad after a good first: all of it is freed and the
	 * struct cleared (checked by decode()). */
	b = raw_list(2, 1, &RAW_OK);
	r = RAW_OK;
	r.key_type = 9;
	put_raw_identity(b, &r);
	expect_refused(&C_LIST_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);

	/* The encoder refuses what the decoder would refuse. */
	memset(many, 0, sizeof(many));
	rs.ids = many;
	rs.n = MTLS_IDS_MAX + 1;
	b = newbuf();
	assert_int_equal(msg_list_resp_put(b, &rs), MTLS_ERR_INVALID_ARGUMENT);
	rs.n = 1;
	many[0].n_schemes = MTLS_SCHEMES_MAX + 1;
	wbuf_reset(b);
	assert_int_equal(msg_list_resp_put(b, &rs), MTLS_ERR_INVALID_ARGUMENT);
	many[0].n_schemes = 0;
	many[0].n_chain = MTLS_CHAIN_MAX + 1;
	wbuf_reset(b);
	assert_int_equal(msg_list_resp_put(b, &rs), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(b);
}

/* Scheme and chain counts of 0xffffffff with nothing behind them. */
static void
test_list_huge_counts(void **state)
{
	struct wbuf *b = newbuf();
	size_t i;

	(void)state;
	assert_int_equal(wbuf_put_u8(b, MSG_LIST | MSG_REPLY), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	for (i = 0; i < 4; i++)
		put_filled_string(b, 3, 'x');
	assert_int_equal(wbuf_put_u8(b, MTLS_AGENT_KEY_RSA), 0);
	assert_int_equal(wbuf_put_u32(b, 2048), 0);
	assert_int_equal(wbuf_put_u32(b, 0), 0);
	assert_int_equal(wbuf_put_u32(b, 0), 0);
	assert_int_equal(wbuf_put_u32(b, 0xffffffff), 0);
	/* Pad so the identity-count check passes and the scheme count is
	 * what gets judged. */
	for (i = 0; i < 40; i++)
		assert_int_equal(wbuf_put_u8(b, 0), 0);
	expect_refused(&C_LIST_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);

	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_LIST | MSG_REPLY), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	for (i = 0; i < 4; i++)
		put_filled_string(b, 3, 'x');
	assert_int_equal(wbuf_put_u8(b, MTLS_AGENT_KEY_RSA), 0);
	assert_int_equal(wbuf_put_u32(b, 2048), 0);
	assert_int_equal(wbuf_put_u32(b, 0), 0);
	assert_int_equal(wbuf_put_u32(b, 0), 0);
	assert_int_equal(wbuf_put_u32(b, 0), 0);	  /* no schemes */
	put_filled_string(b, 0, 'C');			  /* no cert */
	assert_int_equal(wbuf_put_u32(b, 0xffffffff), 0); /* chain count */
	for (i = 0; i < 40; i++)
		assert_int_equal(wbuf_put_u8(b, 0), 0);
	expect_refused(&C_LIST_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
}

/* ---------- SIGN ---------- */

static void
test_sign(void **state)
{
	static const unsigned char content[] = { 0x20, 0x20, 0x00, 0xff, 0x01 };
	static const unsigned char want[] = { MSG_SIGN, 0, 0, 0, 2,    'i',  'd',  0x08, 0x04, 1,
					      0,	0, 0, 5, 0x20, 0x20, 0x00, 0xff, 0x01 };
	struct msg_sign_req rq = { (char *)"id", MTLS_AGENT_RSA_PSS_RSAE_SHA256,
				   MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, (unsigned char *)content,
				   sizeof(content) },
			    rq2;
	static unsigned char sig[] = { 0x30, 0x45, 0x02, 0x21, 0x00, 0x99 };
	struct msg_sign_resp rs = { sig, sizeof(sig) }, rs2;
	struct wbuf *b = newbuf();

	(void)state;
	assert_int_equal(msg_sign_req_put(b, &rq), 0);
	assert_int_equal(wbuf_len(b), sizeof(want));
	assert_memory_equal(wbuf_ptr(b), want, sizeof(want));
	assert_int_equal(decode_buf(&C_SIGN_REQ, b, &rq2), 0);
	assert_string_equal(rq2.identity, "id");
	assert_int_equal(rq2.scheme, MTLS_AGENT_RSA_PSS_RSAE_SHA256);
	assert_int_equal(rq2.purpose, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV);
	assert_int_equal(rq2.content_len, sizeof(content));
	assert_memory_equal(rq2.content, content, sizeof(content));
	msg_sign_req_clear(&rq2);
	assert_null(rq2.identity);
	assert_null(rq2.content);
	msg_sign_req_clear(&rq2);
	check_truncations_and_trailing(&C_SIGN_REQ, b);
	wbuf_free(b);

	b = newbuf();
	assert_int_equal(msg_sign_resp_put(b, &rs), 0);
	assert_int_equal(wbuf_ptr(b)[0], MSG_SIGN | MSG_REPLY);
	assert_int_equal(decode_buf(&C_SIGN_RESP, b, &rs2), 0);
	assert_int_equal(rs2.sig_len, sizeof(sig));
	assert_memory_equal(rs2.sig, sig, sizeof(sig));
	msg_sign_resp_clear(&rs2);
	assert_null(rs2.sig);
	check_truncations_and_trailing(&C_SIGN_RESP, b);
	wbuf_free(b);
}

static struct wbuf *
raw_sign_req(size_t id_len, size_t content_len)
{
	struct wbuf *b = newbuf();

	assert_int_equal(wbuf_put_u8(b, MSG_SIGN), 0);
	put_filled_string(b, id_len, 'i');
	assert_int_equal(wbuf_put_u16(b, MTLS_AGENT_ECDSA_SECP256R1_SHA256), 0);
	assert_int_equal(wbuf_put_u8(b, MTLS_AGENT_PURPOSE_RAW_DIGEST), 0);
	put_filled_string(b, content_len, 'x');
	return b;
}

static void
test_sign_refused(void **state)
{
	struct msg_sign_req rq, big = { (char *)"id", 0, 0, NULL, MTLS_CONTENT_MAX + 1 };
	struct msg_sign_resp rs;
	struct wbuf *b;

	(void)state;
	/* Content exactly at the bound is accepted ... */
	b = raw_sign_req(3, MTLS_CONTENT_MAX);
	assert_int_equal(decode_buf(&C_SIGN_REQ, b, &rq), 0);
	assert_int_equal(rq.content_len, MTLS_CONTENT_MAX);
	msg_sign_req_clear(&rq);
	wbuf_free(b);
	/* ... one byte more is not, from the decoder or the encoder. */
	b = raw_sign_req(3, MTLS_CONTENT_MAX + 1);
	expect_refused(&C_SIGN_REQ, b, MTLS_ERR_BAD_REQUEST);
	wbuf_reset(b);
	assert_true(msg_sign_req_put(b, &big) < 0);
	assert_int_equal(wbuf_len(b), 0);
	wbuf_free(b);

	/* Identity name bound and NUL. */
	b = raw_sign_req(MTLS_NAME_MAX + 1, 32);
	expect_refused(&C_SIGN_REQ, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	b = raw_sign_req(MTLS_NAME_MAX, 32);
	assert_int_equal(decode_buf(&C_SIGN_REQ, b, &rq), 0);
	msg_sign_req_clear(&rq);
	wbuf_free(b);
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_SIGN), 0);
	assert_int_equal(wbuf_put_string(b, "a\0", 2), 0);
	assert_int_equal(wbuf_put_u16(b, MTLS_AGENT_ECDSA_SECP256R1_SHA256), 0);
	assert_int_equal(wbuf_put_u8(b, MTLS_AGENT_PURPOSE_RAW_DIGEST), 0);
	put_filled_string(b, 32, 'x');
	expect_refused(&C_SIGN_REQ, b, MTLS_ERR_STRING_NUL);
	wbuf_free(b);

	/* Signature: MTLS_SIG_MAX accepted, one more refused, empty refused. */
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_SIGN | MSG_REPLY), 0);
	put_filled_string(b, MTLS_SIG_MAX, 's');
	assert_int_equal(decode_buf(&C_SIGN_RESP, b, &rs), 0);
	assert_int_equal(rs.sig_len, MTLS_SIG_MAX);
	msg_sign_resp_clear(&rs);
	wbuf_free(b);
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_SIGN | MSG_REPLY), 0);
	put_filled_string(b, MTLS_SIG_MAX + 1, 's');
	expect_refused(&C_SIGN_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_SIGN | MSG_REPLY), 0);
	assert_int_equal(wbuf_put_string(b, NULL, 0), 0);
	expect_refused(&C_SIGN_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
}

/* ---------- LOGIN / LOGOUT ---------- */

/* LOGIN_PROMPT (14): one identity string, nothing after it. */
static void
test_login_prompt(void **state)
{
	static const struct codec c = { "login_prompt_req", MSG_LOGIN_PROMPT,
					sizeof(struct msg_login_prompt_req), get_login_prompt_req,
					clear_login_prompt_req };
	static const unsigned char nul[] = { 0, 0, 0, 3, 'a', 0, 'b' };
	struct msg_login_prompt_req m = { (char *)"p256" }, m2;
	struct wbuf *b = newbuf();

	assert_int_equal(msg_login_prompt_req_put(b, &m), 0);
	assert_int_equal(wbuf_ptr(b)[0], MSG_LOGIN_PROMPT);
	assert_int_equal(decode_buf(&c, b, &m2), 0);
	assert_string_equal(m2.identity, "p256");
	msg_login_prompt_req_clear(&m2);
	assert_null(m2.identity);
	check_truncations_and_trailing(&c, b);
	wbuf_free(b);
	/* An embedded NUL in the name is refused. */
	b = wbuf_from(nul, sizeof(nul));
	assert_non_null(b);
	assert_int_equal(msg_login_prompt_req_get(b, &m2), MTLS_ERR_STRING_NUL);
	assert_null(m2.identity);
	wbuf_free(b);
	/* The reply is the empty one. */
	b = newbuf();
	assert_int_equal(msg_empty_resp_put(b, MSG_LOGIN_PROMPT), 0);
	assert_int_equal(wbuf_ptr(b)[0], MSG_LOGIN_PROMPT | MSG_REPLY);
	wbuf_free(b);
}

static void
test_login_logout(void **state)
{
	static const unsigned char want[] = { MSG_LOGIN, 0, 0, 0, 3,   't', 'o', 'k',
					      0,	 0, 0, 4, '1', '2', '3', '4' };
	struct msg_login_req rq = { (char *)"tok", (char *)"1234", 0 }, rq2;
	struct msg_logout_req lo = { (char *)"tok" }, lo2;
	struct wbuf *b = newbuf();
	union any_msg m;

	(void)state;
	assert_int_equal(msg_login_req_put(b, &rq), 0);
	assert_int_equal(wbuf_len(b), sizeof(want));
	assert_memory_equal(wbuf_ptr(b), want, sizeof(want));
	assert_int_equal(decode_buf(&C_LOGIN_REQ, b, &rq2), 0);
	assert_string_equal(rq2.identity, "tok");
	assert_non_null(rq2.pin);
	assert_string_equal(rq2.pin, "1234");
	msg_login_req_clear(&rq2);
	assert_null(rq2.pin);
	assert_null(rq2.identity);
	msg_login_req_clear(&rq2);
	check_truncations_and_trailing(&C_LOGIN_REQ, b);
	wbuf_free(b);

	/* The verify flag: one byte after the PIN, sent only when set. */
	b = newbuf();
	rq.flags = LOGIN_VERIFY;
	assert_int_equal(msg_login_req_put(b, &rq), 0);
	assert_int_equal(wbuf_len(b), sizeof(want) + 1);
	assert_memory_equal(wbuf_ptr(b), want, sizeof(want));
	assert_int_equal(wbuf_ptr(b)[sizeof(want)], LOGIN_VERIFY);
	assert_int_equal(decode_buf(&C_LOGIN_REQ, b, &rq2), 0);
	assert_int_equal(rq2.flags, LOGIN_VERIFY);
	assert_string_equal(rq2.pin, "1234");
	msg_login_req_clear(&rq2);
	{
		unsigned char v[sizeof(want) + 2];

		memcpy(v, want, sizeof(want));
		/* A zero flags byte is never sent: trailing data. */
		v[sizeof(want)] = 0x00;
		assert_int_equal(decode(&C_LOGIN_REQ, v, sizeof(want) + 1, &m),
				 MTLS_ERR_TRAILING_DATA);
		/* Unknown flags are refused, not ignored. */
		v[sizeof(want)] = 0x02;
		assert_int_equal(decode(&C_LOGIN_REQ, v, sizeof(want) + 1, &m),
				 MTLS_ERR_BAD_REQUEST);
		v[sizeof(want)] = 0x80 | LOGIN_VERIFY;
		assert_int_equal(decode(&C_LOGIN_REQ, v, sizeof(want) + 1, &m),
				 MTLS_ERR_BAD_REQUEST);
		/* Nothing after the flags. */
		v[sizeof(want)] = LOGIN_VERIFY;
		v[sizeof(want) + 1] = 0x00;
		assert_int_equal(decode(&C_LOGIN_REQ, v, sizeof(want) + 2, &m),
				 MTLS_ERR_TRAILING_DATA);
	}
	wbuf_free(b);
	b = newbuf();
	rq.flags = 0x02;
	assert_int_equal(msg_login_req_put(b, &rq), MTLS_ERR_INVALID_ARGUMENT);
	rq.flags = 0;
	wbuf_free(b);

	/* "" identity (the only token) and a PIN of exactly MTLS_PIN_MAX. */
	rq.identity = NULL;
	rq.pin = filled(MTLS_PIN_MAX, '9');
	b = newbuf();
	assert_int_equal(msg_login_req_put(b, &rq), 0);
	assert_int_equal(decode_buf(&C_LOGIN_REQ, b, &rq2), 0);
	assert_string_equal(rq2.identity, "");
	assert_string_equal(rq2.pin, rq.pin);
	msg_login_req_clear(&rq2);
	wbuf_free(b);
	free(rq.pin);

	b = newbuf();
	assert_int_equal(msg_logout_req_put(b, &lo), 0);
	assert_int_equal(wbuf_ptr(b)[0], MSG_LOGOUT);
	assert_int_equal(decode_buf(&C_LOGOUT_REQ, b, &lo2), 0);
	assert_string_equal(lo2.identity, "tok");
	msg_logout_req_clear(&lo2);
	assert_null(lo2.identity);
	check_truncations_and_trailing(&C_LOGOUT_REQ, b);
	wbuf_free(b);

	/* Empty replies for LOGIN and LOGOUT: just the reply type byte. */
	b = newbuf();
	assert_int_equal(msg_empty_resp_put(b, MSG_LOGIN), 0);
	assert_int_equal(wbuf_len(b), 1);
	assert_int_equal(wbuf_ptr(b)[0], MSG_LOGIN | MSG_REPLY);
	wbuf_free(b);
	b = newbuf();
	assert_int_equal(msg_empty_resp_put(b, MSG_LOGOUT), 0);
	assert_int_equal(wbuf_len(b), 1);
	assert_int_equal(wbuf_ptr(b)[0], MSG_LOGOUT | MSG_REPLY);
	{
		const struct codec c = { "logout_resp", MSG_LOGOUT | MSG_REPLY, 0, get_empty,
					 clear_nothing };

		check_truncations_and_trailing(&c, b);
		assert_int_equal(decode_buf(&c, b, &m), 0);
	}
	wbuf_free(b);
}

static struct wbuf *
raw_login(const void *id, size_t id_len, const void *pin, size_t pin_len)
{
	struct wbuf *b = newbuf();

	assert_int_equal(wbuf_put_u8(b, MSG_LOGIN), 0);
	assert_int_equal(wbuf_put_string(b, id, id_len), 0);
	assert_int_equal(wbuf_put_string(b, pin, pin_len), 0);
	return b;
}

static void
test_login_refused(void **state)
{
	struct msg_login_req rq = { (char *)"", NULL, 0 };
	struct wbuf *b;
	char *s;
	int r;

	(void)state;
	/* Empty PIN, PIN with a NUL anywhere. */
	b = raw_login("", 0, "", 0);
	expect_refused(&C_LOGIN_REQ, b, MTLS_ERR_PIN_INVALID);
	wbuf_free(b);
	b = raw_login("", 0,
		      "12\0"
		      "34",
		      5);
	expect_refused(&C_LOGIN_REQ, b, MTLS_ERR_PIN_INVALID);
	wbuf_free(b);
	b = raw_login("x", 1, "\0", 1);
	expect_refused(&C_LOGIN_REQ, b, MTLS_ERR_PIN_INVALID);
	wbuf_free(b);
	b = raw_login("x", 1, "1234\0", 5);
	expect_refused(&C_LOGIN_REQ, b, MTLS_ERR_PIN_INVALID);
	wbuf_free(b);

	/* PIN over MTLS_PIN_MAX: refused as an invalid PIN. */
	s = filled(MTLS_PIN_MAX + 1, '7');
	b = raw_login("", 0, s, MTLS_PIN_MAX + 1);
	{
		union any_msg m;

		r = decode_buf(&C_LOGIN_REQ, b, &m);
		assert_int_equal(r, MTLS_ERR_PIN_INVALID);
	}
	wbuf_free(b);

	/* Identity over MTLS_NAME_MAX or with a NUL. */
	b = raw_login(s, MTLS_NAME_MAX + 1, "1234", 4);
	expect_refused(&C_LOGIN_REQ, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	b = raw_login("a\0b", 3, "1234", 4);
	expect_refused(&C_LOGIN_REQ, b, MTLS_ERR_STRING_NUL);
	wbuf_free(b);

	/* The encoder refuses what the decoder would refuse. */
	b = newbuf();
	assert_int_equal(msg_login_req_put(b, &rq), MTLS_ERR_PIN_INVALID);
	rq.pin = (char *)"";
	assert_int_equal(msg_login_req_put(b, &rq), MTLS_ERR_PIN_INVALID);
	rq.pin = s;
	assert_int_equal(msg_login_req_put(b, &rq), MTLS_ERR_PIN_INVALID);
	assert_int_equal(wbuf_len(b), 0);
	wbuf_free(b);

	/* Logout identity bounds. */
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_LOGOUT), 0);
	assert_int_equal(wbuf_put_string(b, s, MTLS_NAME_MAX + 1), 0);
	expect_refused(&C_LOGOUT_REQ, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_LOGOUT), 0);
	assert_int_equal(wbuf_put_string(b, "\0", 1), 0);
	expect_refused(&C_LOGOUT_REQ, b, MTLS_ERR_STRING_NUL);
	wbuf_free(b);
	free(s);
}

/* ---------- STATUS ---------- */

static void
test_status(void **state)
{
	struct mtls_agent_status st = { (char *)"mtls-agent 0.1.0", 1234, 0xfffffffe, 3, 4, 5, 6 },
				 st2;
	struct wbuf *b = newbuf();
	union any_msg m;
	size_t i;

	(void)state;
	assert_int_equal(msg_status_req_put(b), 0);
	assert_int_equal(wbuf_len(b), 1);
	assert_int_equal(wbuf_ptr(b)[0], MSG_STATUS);
	check_truncations_and_trailing(&C_STATUS_REQ, b);
	assert_int_equal(decode_buf(&C_STATUS_REQ, b, &m), 0);
	wbuf_free(b);

	b = newbuf();
	assert_int_equal(msg_status_resp_put(b, &st), 0);
	assert_int_equal(wbuf_ptr(b)[0], MSG_STATUS | MSG_REPLY);
	assert_int_equal(decode_buf(&C_STATUS_RESP, b, &st2), 0);
	assert_string_equal(st2.version, "mtls-agent 0.1.0");
	assert_int_equal(st2.pid, 1234);
	assert_int_equal(st2.uptime, 0xfffffffe);
	assert_int_equal(st2.connections, 3);
	assert_int_equal(st2.identities, 4);
	assert_int_equal(st2.tokens_present, 5);
	assert_int_equal(st2.tokens_logged_in, 6);
	mtls_agent_status_clear(&st2);
	assert_null(st2.version);
	mtls_agent_status_clear(&st2);
	mtls_agent_status_clear(NULL);
	check_truncations_and_trailing(&C_STATUS_RESP, b);
	wbuf_free(b);

	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_STATUS | MSG_REPLY), 0);
	put_filled_string(b, MTLS_TEXT_MAX + 1, 'v');
	for (i = 0; i < 6; i++)
		assert_int_equal(wbuf_put_u32(b, 0), 0);
	expect_refused(&C_STATUS_RESP, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
}

/* ---------- ERROR ---------- */

static void
test_error(void **state)
{
	struct msg_error e = { MTLS_ERR_PIN_INCORRECT, 2, (char *)"wrong PIN" }, e2;
	struct wbuf *b = newbuf();
	static const unsigned char want[] = { MSG_ERROR, 0,   0,   0,	8,   0,	  0,   0,
					      2,	 0,   0,   0,	9,   'w', 'r', 'o',
					      'n',	 'g', ' ', 'P', 'I', 'N' };
	int code;

	(void)state;
	assert_int_equal(msg_error_put(b, &e), 0);
	assert_int_equal(wbuf_len(b), sizeof(want));
	assert_memory_equal(wbuf_ptr(b), want, sizeof(want));
	assert_int_equal(decode_buf(&C_ERROR, b, &e2), 0);
	assert_int_equal(e2.code, MTLS_ERR_PIN_INCORRECT);
	assert_int_equal(e2.retries, 2);
	assert_string_equal(e2.message, "wrong PIN");
	msg_error_clear(&e2);
	assert_null(e2.message);
	msg_error_clear(&e2);
	check_truncations_and_trailing(&C_ERROR, b);
	wbuf_free(b);

	/* Retries unknown, NULL message, and every known code round trips. */
	for (code = -1; code >= MTLS_ERR_LAST_; code--) {
		e.code = code;
		e.retries = -1;
		e.message = NULL;
		b = newbuf();
		assert_int_equal(msg_error_put(b, &e), 0);
		/* Unknown retries go out as 0xffffffff. */
		assert_memory_equal(wbuf_ptr(b) + 5, "\xff\xff\xff\xff", 4);
		assert_int_equal(decode_buf(&C_ERROR, b, &e2), 0);
		assert_int_equal(e2.code, code);
		assert_int_equal(e2.retries, -1);
		assert_string_equal(e2.message, "");
		msg_error_clear(&e2);
		wbuf_free(b);
	}

	/* Zero retries known is not "unknown". */
	e.code = MTLS_ERR_PIN_LOCKED;
	e.retries = 0;
	b = newbuf();
	assert_int_equal(msg_error_put(b, &e), 0);
	assert_int_equal(decode_buf(&C_ERROR, b, &e2), 0);
	assert_int_equal(e2.retries, 0);
	msg_error_clear(&e2);
	wbuf_free(b);

	/* The encoder refuses codes that are not errors. */
	b = newbuf();
	e.code = 0;
	assert_int_equal(msg_error_put(b, &e), MTLS_ERR_INVALID_ARGUMENT);
	e.code = 5;
	assert_int_equal(msg_error_put(b, &e), MTLS_ERR_INVALID_ARGUMENT);
	e.code = MTLS_ERR_LAST_ - 1;
	assert_int_equal(msg_error_put(b, &e), MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(wbuf_len(b), 0);
	wbuf_free(b);
}

static struct wbuf *
raw_error(uint32_t code, uint32_t retries, size_t msg_len)
{
	struct wbuf *b = newbuf();

	assert_int_equal(wbuf_put_u8(b, MSG_ERROR), 0);
	assert_int_equal(wbuf_put_u32(b, code), 0);
	assert_int_equal(wbuf_put_u32(b, retries), 0);
	put_filled_string(b, msg_len, 'm');
	return b;
}

static void
test_error_refused(void **state)
{
	static const uint32_t bad[] = { 0, (uint32_t)-MTLS_ERR_LAST_ + 1, 1000, 0x80000000,
					0xffffffff };
	struct msg_error e;
	struct wbuf *b;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b = raw_error(bad[i], 0, 3);
		expect_refused(&C_ERROR, b, MTLS_ERR_BAD_REQUEST);
		wbuf_free(b);
	}
	b = raw_error(1, 0, MTLS_TEXT_MAX + 1);
	expect_refused(&C_ERROR, b, MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
	b = newbuf();
	assert_int_equal(wbuf_put_u8(b, MSG_ERROR), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	assert_int_equal(wbuf_put_u32(b, 0), 0);
	assert_int_equal(wbuf_put_string(b, "a\0", 2), 0);
	expect_refused(&C_ERROR, b, MTLS_ERR_STRING_NUL);
	wbuf_free(b);

	/* Implausible retry counts read as unknown rather than as huge. */
	b = raw_error(8, 0x7fffffff, 0);
	assert_int_equal(decode_buf(&C_ERROR, b, &e), 0);
	assert_int_equal(e.code, MTLS_ERR_PIN_INCORRECT);
	assert_int_equal(e.retries, -1);
	msg_error_clear(&e);
	wbuf_free(b);
	b = raw_error(8, 10, MTLS_TEXT_MAX);
	assert_int_equal(decode_buf(&C_ERROR, b, &e), 0);
	assert_int_equal(e.retries, 10);
	assert_int_equal(strlen(e.message), MTLS_TEXT_MAX);
	msg_error_clear(&e);
	wbuf_free(b);
}

/* ---------- frame I/O ---------- */

static int sv[2] = { -1, -1 };

/* The reading end's stash, fresh for every test. */
static struct frame_rx rx;

static int
setup_pair(void **state)
{
	(void)state;
	frame_rx_reset(&rx);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return -1;
	return 0;
}

static int
teardown_pair(void **state)
{
	(void)state;
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	sv[0] = sv[1] = -1;
	return 0;
}

static void
close_writer(void)
{
	assert_int_equal(close(sv[0]), 0);
	sv[0] = -1;
}

static void
write_raw(const void *p, size_t len)
{
	assert_int_equal(send(sv[0], p, len, MSG_NOSIGNAL), (ssize_t)len);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Nothing is waiting to be read on fd. */
static void
assert_nothing_pending(int fd)
{
	unsigned char c;

	assert_int_equal(recv(fd, &c, 1, MSG_DONTWAIT), -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void
test_frame_roundtrip(void **state)
{
	struct wbuf *out = newbuf(), *in = newbuf();
	struct msg_sign_req rq;
	struct msg_hello_req hq = { 1, 1, (char *)"frame" };
	unsigned char raw[4 + 64];
	uint8_t type;

	(void)state;
	memset(raw, 0x33, sizeof(raw));
	assert_int_equal(msg_hello_req_put(out, &hq), 0);
	assert_int_equal(frame_write(sv[0], out, 1000), 0);
	/* Two frames back to back are read one at a time. */
	assert_int_equal(frame_write(sv[0], out, 1000), 0);
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000), 0);
	assert_int_equal(wbuf_len(in), wbuf_len(out));
	assert_memory_equal(wbuf_ptr(in), wbuf_ptr(out), wbuf_len(out));
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000), 0);
	assert_int_equal(wbuf_len(in), wbuf_len(out));
	assert_memory_equal(wbuf_ptr(in), wbuf_ptr(out), wbuf_len(out));
	assert_nothing_pending(sv[1]);

	/* The header is the big-endian body length. */
	assert_int_equal(frame_write(sv[0], out, 1000), 0);
	assert_int_equal(recv(sv[1], raw, 4 + wbuf_len(out), MSG_WAITALL),
			 (ssize_t)(4 + wbuf_len(out)));
	assert_int_equal(raw[0], 0);
	assert_int_equal(raw[1], 0);
	assert_int_equal(raw[2], 0);
	assert_int_equal(raw[3], wbuf_len(out));
	assert_memory_equal(raw + 4, wbuf_ptr(out), wbuf_len(out));

	/* A frame read into a buffer that held something replaces it; and it
	 * decodes. */
	wbuf_reset(out);
	rq.identity = (char *)"x";
	rq.scheme = MTLS_AGENT_RSA_PSS_RSAE_SHA256;
	rq.purpose = MTLS_AGENT_PURPOSE_RAW_DIGEST;
	rq.content = raw;
	rq.content_len = 32;
	assert_int_equal(msg_sign_req_put(out, &rq), 0);
	assert_int_equal(frame_write(sv[0], out, 1000), 0);
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000), 0);
	assert_int_equal(wbuf_get_u8(in, &type), 0);
	assert_int_equal(type, MSG_SIGN);
	assert_int_equal(msg_sign_req_get(in, &rq), 0);
	assert_string_equal(rq.identity, "x");
	assert_int_equal(rq.content_len, 32);
	msg_sign_req_clear(&rq);

	/* frame_write refuses an empty body and writes nothing. */
	wbuf_reset(out);
	assert_true(frame_write(sv[0], out, 1000) < 0);
	assert_nothing_pending(sv[1]);
	wbuf_free(out);
	wbuf_free(in);
}

/* A frame of exactly MTLS_FRAME_MAX, larger than the socket buffer, so
 * both sides go through their wait-and-retry paths. */
static void
test_frame_max_size(void **state)
{
	struct wbuf *out = newbuf(), *in = newbuf();
	unsigned char *p;
	size_t i;
	pid_t pid;
	int status;

	(void)state;
	assert_int_equal(wbuf_reserve(out, MTLS_FRAME_MAX, &p), 0);
	for (i = 0; i < MTLS_FRAME_MAX; i++)
		p[i] = (unsigned char)(i * 7 + (i >> 11));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int r;

		close(sv[1]);
		r = frame_write(sv[0], out, 5000);
		/* Freed so valgrind's leak check passes in the child too. */
		wbuf_free(out);
		wbuf_free(in);
		_exit(r == 0 ? 0 : 1);
	}
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 5000, 5000), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(wbuf_len(in), MTLS_FRAME_MAX);
	assert_memory_equal(wbuf_ptr(in), wbuf_ptr(out), MTLS_FRAME_MAX);

	/* One byte more cannot even be written. */
	assert_int_equal(wbuf_put_u8(out, 0), 0);
	assert_int_equal(frame_write(sv[0], out, 1000), MTLS_ERR_FRAME_TOO_LARGE);
	assert_nothing_pending(sv[1]);
	wbuf_free(out);
	wbuf_free(in);
}

/*
 * A header announcing too much is refused from the header alone: only the
 * 4 header bytes are sent, so a reader that waited for the body would
 * time out instead.
 */
static void
test_frame_too_large(void **state)
{
	static const unsigned char over[] = { 0x00, 0x10, 0x00, 0x01 }; /* FRAME_MAX + 1 */
	static const unsigned char huge[] = { 0xff, 0xff, 0xff, 0xff };
	static const unsigned char hundred_one[] = { 0, 0, 0, 101 };
	struct wbuf *in = newbuf();
	double t0;

	(void)state;
	assert_int_equal(MTLS_FRAME_MAX + 1, 0x00100001);
	write_raw(over, 4);
	t0 = now_s();
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 3000, 3000),
			 MTLS_ERR_FRAME_TOO_LARGE);
	assert_true(now_s() - t0 < 1.0);
	assert_int_equal(wbuf_len(in), 0);

	write_raw(huge, 4);
	t0 = now_s();
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 3000, 3000),
			 MTLS_ERR_FRAME_TOO_LARGE);
	assert_true(now_s() - t0 < 1.0);

	/* The caller's own, smaller limit counts too. */
	write_raw(hundred_one, 4);
	t0 = now_s();
	assert_int_equal(frame_read(sv[1], &rx, in, 100, 3000, 3000), MTLS_ERR_FRAME_TOO_LARGE);
	assert_true(now_s() - t0 < 1.0);
	wbuf_free(in);
}

static void
test_frame_zero_length(void **state)
{
	static const unsigned char zero[] = { 0, 0, 0, 0 };
	struct wbuf *in = newbuf();

	(void)state;
	write_raw(zero, 4);
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000),
			 MTLS_ERR_BAD_REQUEST);
	assert_int_equal(wbuf_len(in), 0);
	wbuf_free(in);
}

static void
test_frame_closed_before_any_byte(void **state)
{
	struct wbuf *in = newbuf();

	(void)state;
	close_writer();
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000),
			 MTLS_ERR_CONNECTION_CLOSED);
	assert_int_equal(wbuf_len(in), 0);
	wbuf_free(in);
}

static void
test_frame_closed_mid_body(void **state)
{
	static const unsigned char part[] = { 0, 0, 0, 10, MSG_HELLO, 1, 2, 3 };
	struct wbuf *in = newbuf();

	(void)state;
	/* Leftovers from before are dropped even on failure. */
	assert_int_equal(wbuf_put(in, "old", 3), 0);
	write_raw(part, sizeof(part));
	close_writer();
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000),
			 MTLS_ERR_TRUNCATED);
	assert_int_equal(wbuf_len(in), 0);
	wbuf_free(in);
}

static void
test_frame_closed_mid_header(void **state)
{
	static const unsigned char part[] = { 0, 0 };
	struct wbuf *in = newbuf();

	(void)state;
	write_raw(part, sizeof(part));
	close_writer();
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000),
			 MTLS_ERR_TRUNCATED);
	wbuf_free(in);
}

static void
test_frame_timeout_mid_header(void **state)
{
	static const unsigned char part[] = { 0, 0 };
	struct wbuf *in = newbuf();
	double t0, dt;

	(void)state;
	write_raw(part, sizeof(part));
	t0 = now_s();
	/* Once a frame has started the per-chunk timeout applies, not the
	 * (much longer) idle limit. */
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 5000, 200), MTLS_ERR_TIMEOUT);
	dt = now_s() - t0;
	assert_true(dt >= 0.15);
	assert_true(dt < 1.0);
	wbuf_free(in);
}

static void
test_frame_timeout_mid_body(void **state)
{
	static const unsigned char part[] = { 0, 0, 0, 10, MSG_HELLO };
	struct wbuf *in = newbuf();
	double t0, dt;

	(void)state;
	write_raw(part, sizeof(part));
	t0 = now_s();
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 5000, 200), MTLS_ERR_TIMEOUT);
	dt = now_s() - t0;
	assert_true(dt >= 0.15);
	assert_true(dt < 1.0);
	assert_int_equal(wbuf_len(in), 0);
	wbuf_free(in);
}

static void
test_frame_idle_timeout(void **state)
{
	struct wbuf *in = newbuf();
	double t0, dt;

	(void)state;
	t0 = now_s();
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 100, -1), MTLS_ERR_TIMEOUT);
	dt = now_s() - t0;
	assert_true(dt >= 0.05);
	assert_true(dt < 1.0);
	wbuf_free(in);
}

/*
 * frame_read_timed(): the blocking recv ends at the socket's SO_RCVTIMEO
 * (a silent peer is a TIMEOUT, not a hang: without the option set the
 * read would block until the suite's alarm); a frame, one that is larger
 * than the stash, and EOF come out as from frame_read(); a frame that
 * stops half-way is bounded by timeout_ms.
 */
static void
test_frame_read_timed(void **state)
{
	static unsigned char wire[4 + FRAME_RX_SIZE * 2];
	static const unsigned char part[] = { 0, 0, 0, 10, MSG_HELLO };
	struct wbuf *in = newbuf();
	double t0, dt;
	size_t len = FRAME_RX_SIZE * 2, i;

	(void)state;
	assert_int_equal(frame_set_rcvtimeo(sv[1], 0), MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(frame_set_rcvtimeo(sv[1], 150), 0);
	t0 = now_s();
	assert_int_equal(frame_read_timed(sv[1], &rx, in, MTLS_FRAME_MAX, 150), MTLS_ERR_TIMEOUT);
	dt = now_s() - t0;
	assert_true(dt >= 0.1);
	assert_true(dt < 1.0);
	wire[0] = 0;
	wire[1] = 0;
	wire[2] = (unsigned char)(len >> 8);
	wire[3] = (unsigned char)len;
	for (i = 0; i < len; i++)
		wire[4 + i] = (unsigned char)i;
	write_raw(wire, sizeof(wire));
	assert_int_equal(frame_read_timed(sv[1], &rx, in, MTLS_FRAME_MAX, 150), 0);
	assert_int_equal(wbuf_len(in), len);
	assert_memory_equal(wbuf_ptr(in), wire + 4, len);
	write_raw(part, sizeof(part));
	t0 = now_s();
	assert_int_equal(frame_read_timed(sv[1], &rx, in, MTLS_FRAME_MAX, 150), MTLS_ERR_TIMEOUT);
	dt = now_s() - t0;
	assert_true(dt >= 0.1);
	assert_true(dt < 1.0);
	assert_int_equal(wbuf_len(in), 0);
	close_writer();
	assert_int_equal(frame_read_timed(sv[1], &rx, in, MTLS_FRAME_MAX, 150),
			 MTLS_ERR_CONNECTION_CLOSED);
	wbuf_free(in);
}

/* Frames that arrive in one piece are handed out one at a time, in order,
 * and a frame larger than the stash still arrives whole. */
static void
test_frame_pipelined(void **state)
{
	static unsigned char wire[3 * 4 + 10 + 1 + FRAME_RX_SIZE * 2];
	size_t lens[3] = { 10, 1, FRAME_RX_SIZE * 2 }, off = 0, i, j;
	struct wbuf *in = newbuf();

	(void)state;
	for (i = 0; i < 3; i++) {
		wire[off++] = 0;
		wire[off++] = (unsigned char)(lens[i] >> 16);
		wire[off++] = (unsigned char)(lens[i] >> 8);
		wire[off++] = (unsigned char)lens[i];
		for (j = 0; j < lens[i]; j++)
			wire[off++] = (unsigned char)(i * 50 + j);
	}
	assert_int_equal(send(sv[0], wire, off, 0), (ssize_t)off);
	off = 0;
	for (i = 0; i < 3; i++) {
		assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000), 0);
		assert_int_equal(wbuf_len(in), lens[i]);
		assert_memory_equal(wbuf_ptr(in), wire + off + 4, lens[i]);
		off += 4 + lens[i];
	}
	assert_int_equal(rx.end - rx.start, 0);
	assert_nothing_pending(sv[1]);
	wbuf_free(in);
}

/* A frame's bytes (a PIN, say) do not stay behind in the stash. */
static void
test_frame_stash_wiped(void **state)
{
	static const unsigned char secret[] = "pin-0123456789-pin";
	unsigned char wire[4 + sizeof(secret)] = { 0, 0, 0, sizeof(secret) };
	struct wbuf *in = newbuf();
	size_t i;

	(void)state;
	memcpy(wire + 4, secret, sizeof(secret));
	/* Twice: the second frame is handed out of the stash. */
	assert_int_equal(send(sv[0], wire, sizeof(wire), 0), (ssize_t)sizeof(wire));
	assert_int_equal(send(sv[0], wire, sizeof(wire), 0), (ssize_t)sizeof(wire));
	assert_int_equal(frame_spin(sv[1], &rx, 100000), 1);
	for (i = 0; i < 2; i++) {
		assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000), 0);
		assert_memory_equal(wbuf_ptr(in), secret, sizeof(secret));
	}
	for (i = 0; i + 8 <= sizeof(rx.buf); i++)
		assert_false(memcmp(rx.buf + i, secret, 8) == 0);
	wbuf_free(in);
}

static long long
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* frame_spin: waits its time and no longer; returns at once when there is
 * something to read, or an EOF; 0 microseconds does not wait at all. */
static void
test_frame_spin(void **state)
{
	struct wbuf *out = newbuf(), *in = newbuf();
	struct msg_hello_req hq = { 1, 1, (char *)"spin" };
	long long t0;

	(void)state;
	t0 = mono_us();
	assert_int_equal(frame_spin(sv[1], &rx, 3000), 0);
	assert_true(mono_us() - t0 >= 3000);
	assert_true(mono_us() - t0 < 2000000);
	assert_int_equal(frame_spin(sv[1], &rx, 0), 0);

	assert_int_equal(msg_hello_req_put(out, &hq), 0);
	assert_int_equal(frame_write(sv[0], out, 1000), 0);
	t0 = mono_us();
	assert_int_equal(frame_spin(sv[1], &rx, 10000000), 1);
	assert_true(mono_us() - t0 < 5000000);
	/* Already in the stash: no wait even with 0. */
	assert_int_equal(frame_spin(sv[1], &rx, 0), 1);
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000), 0);
	assert_memory_equal(wbuf_ptr(in), wbuf_ptr(out), wbuf_len(out));

	close(sv[0]);
	sv[0] = -1;
	assert_int_equal(frame_spin(sv[1], &rx, 10000000), 1);
	assert_int_equal(frame_read(sv[1], &rx, in, MTLS_FRAME_MAX, 1000, 1000),
			 MTLS_ERR_CONNECTION_CLOSED);
	wbuf_free(out);
	wbuf_free(in);
}

static void
test_frame_write_to_closed(void **state)
{
	struct wbuf *out = newbuf();

	(void)state;
	assert_int_equal(msg_list_req_put(out), 0);
	assert_int_equal(close(sv[1]), 0);
	sv[1] = -1;
	/* An error, not SIGPIPE (which would kill this test program). */
	assert_int_equal(frame_write(sv[0], out, 1000), MTLS_ERR_CONNECTION_CLOSED);
	wbuf_free(out);
}

static void
test_set_pin(void **state)
{
	static const unsigned char want[] = { MSG_SET_PIN, 0,	0,   0, 1, 'a', 2, 0,	0,   0,
					      2,	   '1', '2', 0, 0, 0,	3, '3', '4', '5' };
	struct msg_set_pin_req rq = { (char *)"a", SET_PIN_UNBLOCK, (char *)"12", (char *)"345" },
			       rq2;
	struct wbuf *b = newbuf();
	char *s;

	(void)state;
	assert_int_equal(msg_set_pin_req_put(b, &rq), 0);
	assert_int_equal(wbuf_len(b), sizeof(want));
	assert_memory_equal(wbuf_ptr(b), want, sizeof(want));
	assert_int_equal(decode_buf(&C_SET_PIN_REQ, b, &rq2), 0);
	assert_string_equal(rq2.identity, "a");
	assert_int_equal(rq2.mode, SET_PIN_UNBLOCK);
	assert_string_equal(rq2.old_pin, "12");
	assert_string_equal(rq2.new_pin, "345");
	msg_set_pin_req_clear(&rq2);
	assert_null(rq2.old_pin);
	assert_null(rq2.new_pin);
	check_truncations_and_trailing(&C_SET_PIN_REQ, b);
	wbuf_free(b);

	/* Encoder refusals: bad mode, empty or overlong PINs. */
	b = newbuf();
	rq.mode = 3;
	assert_int_equal(msg_set_pin_req_put(b, &rq), MTLS_ERR_INVALID_ARGUMENT);
	rq.mode = SET_PIN_CHANGE;
	rq.new_pin = (char *)"";
	assert_int_equal(msg_set_pin_req_put(b, &rq), MTLS_ERR_PIN_INVALID);
	s = filled(MTLS_PIN_MAX + 1, '4');
	rq.new_pin = s;
	assert_int_equal(msg_set_pin_req_put(b, &rq), MTLS_ERR_PIN_INVALID);
	free(s);
	wbuf_free(b);

	/* Decoder refusals: unknown mode, empty new PIN, NUL in a PIN. */
	{
		static const unsigned char bad_mode[] = { 0, 0,	  0, 0, 9, 0, 0,  0,
							  1, '1', 0, 0, 0, 1, '2' };
		static const unsigned char empty_new[] = { 0, 0, 0,   0, 1, 0, 0,
							   0, 1, '1', 0, 0, 0, 0 };
		static const unsigned char nul_old[] = { 0, 0,	 0, 0, 1, 0, 0, 0,
							 2, '1', 0, 0, 0, 0, 1, '2' };

		b = wbuf_from(bad_mode, sizeof(bad_mode));
		assert_int_equal(msg_set_pin_req_get(b, &rq2), MTLS_ERR_BAD_REQUEST);
		assert_null(rq2.old_pin);
		wbuf_free(b);
		b = wbuf_from(empty_new, sizeof(empty_new));
		assert_int_equal(msg_set_pin_req_get(b, &rq2), MTLS_ERR_PIN_INVALID);
		assert_null(rq2.old_pin);
		wbuf_free(b);
		b = wbuf_from(nul_old, sizeof(nul_old));
		assert_int_equal(msg_set_pin_req_get(b, &rq2), MTLS_ERR_PIN_INVALID);
		wbuf_free(b);
	}
}

#define FRAME_TEST(f) cmocka_unit_test_setup_teardown(f, setup_pair, teardown_pair)

int
main(void)
{
	const struct CMUnitTest codec_tests[] = {
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_hello_refused),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_list_refused),
		cmocka_unit_test(test_list_huge_counts),
		cmocka_unit_test(test_sign),
		cmocka_unit_test(test_sign_refused),
		cmocka_unit_test(test_login_logout),
		cmocka_unit_test(test_login_prompt),
		cmocka_unit_test(test_login_refused),
		cmocka_unit_test(test_set_pin),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_error),
		cmocka_unit_test(test_error_refused),
	};
	const struct CMUnitTest frame_tests[] = {
		FRAME_TEST(test_frame_roundtrip),
		FRAME_TEST(test_frame_max_size),
		FRAME_TEST(test_frame_too_large),
		FRAME_TEST(test_frame_zero_length),
		FRAME_TEST(test_frame_closed_before_any_byte),
		FRAME_TEST(test_frame_closed_mid_body),
		FRAME_TEST(test_frame_closed_mid_header),
		FRAME_TEST(test_frame_timeout_mid_header),
		FRAME_TEST(test_frame_timeout_mid_body),
		FRAME_TEST(test_frame_idle_timeout),
		FRAME_TEST(test_frame_read_timed),
		FRAME_TEST(test_frame_write_to_closed),
		FRAME_TEST(test_frame_pipelined),
		FRAME_TEST(test_frame_stash_wiped),
		FRAME_TEST(test_frame_spin),
	};
	int r;

	/* A frame test that waits for bytes that never come must not hang
	 * the suite: the default SIGALRM action kills us. */
	alarm(120);
	r = cmocka_run_group_tests_name("msg codecs", codec_tests, NULL, NULL);
	r += cmocka_run_group_tests_name("frame I/O", frame_tests, NULL, NULL);
	return r;
}
