/*
 * test_msg_p11.c - unit tests of the agent <-> mtls-agent-p11 codecs
 * (src/common/msg_p11.c).
 *
 * Each message goes round trip; each decoder is fed every truncation of a
 * valid encoding and one trailing byte, and must leave its struct cleared
 * when it refuses; fields over their bounds, unknown kinds, flags and
 * mechanisms, and sign data of the wrong length for the mechanism are
 * refused on both sides.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msg_p11.h"
#include "secmem.h"

/* The codecs take char *, the test data are literals. */
#define S(s) ((char *)(s))

typedef int (*get_fn)(struct wbuf *, void *);

static struct wbuf *
newbuf(void)
{
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	return b;
}

/* A decoder positioned after the type byte of enc's body. */
static struct wbuf *
payload(const struct wbuf *enc, size_t len, uint8_t type)
{
	struct wbuf *b = wbuf_from(wbuf_ptr(enc), len);
	uint8_t t;

	assert_non_null(b);
	assert_int_equal(wbuf_get_u8(b, &t), 0);
	assert_int_equal(t, type);
	return b;
}

/* Every truncation and one trailing byte must be refused, struct cleared. */
static void
check_hostile(const struct wbuf *enc, uint8_t type, get_fn get, void *m, size_t m_size,
	      void (*clear)(void *))
{
	unsigned char zero[512];
	struct wbuf *b, *longer;
	size_t len;

	assert_true(m_size <= sizeof(zero));
	memset(zero, 0, sizeof(zero));
	for (len = 1; len < wbuf_len(enc); len++) {
		b = payload(enc, len, type);
		assert_int_not_equal(get(b, m), 0);
		assert_memory_equal(m, zero, m_size);
		wbuf_free(b);
	}
	longer = newbuf();
	assert_int_equal(wbuf_put(longer, wbuf_ptr(enc), wbuf_len(enc)), 0);
	assert_int_equal(wbuf_put_u8(longer, 0), 0);
	b = payload(longer, wbuf_len(longer), type);
	assert_int_equal(get(b, m), MTLS_ERR_TRAILING_DATA);
	assert_memory_equal(m, zero, m_size);
	wbuf_free(b);
	wbuf_free(longer);
	/* The whole encoding decodes. */
	b = payload(enc, wbuf_len(enc), type);
	assert_int_equal(get(b, m), 0);
	clear(m);
	wbuf_free(b);
}

static int
tokens_get(struct wbuf *b, void *m)
{
	return msg_p11_tokens_resp_get(b, m);
}
static void
tokens_clear(void *m)
{
	msg_p11_tokens_resp_clear(m);
}

static void
test_tokens(void **state)
{
	struct p11_token t[2] = {
		{ .slot = 0x123456789aULL,
		  .label = S("mtls-test"),
		  .manufacturer = S("SoftHSM"),
		  .model = S("v2"),
		  .serial = S("abc"),
		  .flags = 0x40d,
		  .logged_in = 1 },
		{ .slot = 7,
		  .label = S(""),
		  .manufacturer = S(""),
		  .model = S(""),
		  .serial = S("") },
	};
	struct msg_p11_tokens_resp m = { t, 2 }, got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	assert_int_equal(msg_p11_tokens_resp_put(enc, &m), 0);
	b = payload(enc, wbuf_len(enc), P11_TOKENS | MSG_REPLY);
	assert_int_equal(msg_p11_tokens_resp_get(b, &got), 0);
	assert_int_equal(got.n, 2);
	assert_true(got.t[0].slot == 0x123456789aULL);
	assert_string_equal(got.t[0].label, "mtls-test");
	assert_string_equal(got.t[0].serial, "abc");
	assert_int_equal(got.t[0].flags, 0x40d);
	assert_int_equal(got.t[0].logged_in, 1);
	assert_int_equal(got.t[1].slot, 7);
	msg_p11_tokens_resp_clear(&got);
	wbuf_free(b);
	check_hostile(enc, P11_TOKENS | MSG_REPLY, tokens_get, &got, sizeof(got), tokens_clear);
	wbuf_free(enc);

	/* logged_in is a boolean on the wire too. */
	t[1].logged_in = 2;
	enc = newbuf();
	assert_int_equal(msg_p11_tokens_resp_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
	/* A count over the limit is refused before anything is allocated. */
	enc = newbuf();
	assert_int_equal(wbuf_put_u32(enc, P11_SLOTS_MAX + 1), 0);
	assert_int_equal(msg_p11_tokens_resp_get(enc, &got), MTLS_ERR_BAD_REQUEST);
	assert_null(got.t);
	wbuf_free(enc);
}

static int
objects_get(struct wbuf *b, void *m)
{
	return msg_p11_objects_resp_get(b, m);
}
static void
objects_clear(void *m)
{
	msg_p11_objects_resp_clear(m);
}

static void
test_objects(void **state)
{
	unsigned char id[] = { 3 }, der[] = { 0x30, 0x03, 1, 2, 3 }, params[] = { 6, 1, 1 },
		      point[] = { 4, 9, 9 };
	struct p11_object o[2] = {
		{ .kind = P11_OBJ_CERT,
		  .handle = 2,
		  .id = id,
		  .id_len = 1,
		  .label = S("p256"),
		  .a = der,
		  .a_len = sizeof(der) },
		{ .kind = P11_OBJ_EC,
		  .handle = 1ULL << 40,
		  .id = id,
		  .id_len = 1,
		  .label = S("p256"),
		  .a = params,
		  .a_len = sizeof(params),
		  .b = point,
		  .b_len = sizeof(point) },
	};
	struct msg_p11_objects_resp m = { o, 2 }, got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	assert_int_equal(msg_p11_objects_resp_put(enc, &m), 0);
	b = payload(enc, wbuf_len(enc), P11_OBJECTS | MSG_REPLY);
	assert_int_equal(msg_p11_objects_resp_get(b, &got), 0);
	assert_int_equal(got.n, 2);
	assert_int_equal(got.o[0].kind, P11_OBJ_CERT);
	assert_memory_equal(got.o[0].a, der, sizeof(der));
	assert_true(got.o[1].handle == 1ULL << 40);
	assert_memory_equal(got.o[1].b, point, sizeof(point));
	assert_string_equal(got.o[1].label, "p256");
	msg_p11_objects_resp_clear(&got);
	wbuf_free(b);
	check_hostile(enc, P11_OBJECTS | MSG_REPLY, objects_get, &got, sizeof(got), objects_clear);
	wbuf_free(enc);

	/* A certificate has no second value; an unknown kind is refused. */
	o[0].b = point;
	o[0].b_len = 1;
	enc = newbuf();
	assert_int_equal(msg_p11_objects_resp_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
	enc = newbuf();
	assert_int_equal(wbuf_put_u32(enc, 1), 0);
	assert_int_equal(wbuf_put_u8(enc, 9), 0);
	assert_int_equal(msg_p11_objects_resp_get(enc, &got), MTLS_ERR_BAD_REQUEST);
	assert_null(got.o);
	wbuf_free(enc);
}

static int
login_get(struct wbuf *b, void *m)
{
	return msg_p11_login_req_get(b, m);
}
static void
login_clear(void *m)
{
	msg_p11_login_req_clear(m);
}

static void
test_login(void **state)
{
	struct msg_p11_login_req m = { .slot = 5, .flags = P11_LOGIN_VERIFY, .pin = S("1234") },
				 got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	assert_int_equal(msg_p11_login_req_put(enc, &m), 0);
	b = payload(enc, wbuf_len(enc), P11_LOGIN);
	assert_int_equal(msg_p11_login_req_get(b, &got), 0);
	assert_int_equal(got.slot, 5);
	assert_int_equal(got.flags, P11_LOGIN_VERIFY);
	assert_string_equal(got.pin, "1234");
	msg_p11_login_req_clear(&got);
	assert_null(got.pin);
	wbuf_free(b);
	check_hostile(enc, P11_LOGIN, login_get, &got, sizeof(got), login_clear);
	wbuf_free(enc);

	/* Unknown flags, an empty PIN: refused by the encoder. */
	m.flags = 0x80;
	enc = newbuf();
	assert_int_equal(msg_p11_login_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.flags = 0;
	m.pin = S("");
	assert_int_equal(msg_p11_login_req_put(enc, &m), MTLS_ERR_PIN_INVALID);
	wbuf_free(enc);
	/* ... and by the decoder. */
	enc = newbuf();
	assert_int_equal(wbuf_put_u32(enc, 0), 0);
	assert_int_equal(wbuf_put_u32(enc, 1), 0);
	assert_int_equal(wbuf_put_u8(enc, 0x80), 0);
	assert_int_equal(wbuf_put_cstring(enc, "1234"), 0);
	assert_int_equal(msg_p11_login_req_get(enc, &got), MTLS_ERR_BAD_REQUEST);
	assert_null(got.pin);
	wbuf_free(enc);
}

static void
test_set_pin_and_slot(void **state)
{
	struct msg_p11_set_pin_req m = { .slot = 1,
					 .mode = SET_PIN_UNBLOCK,
					 .old_pin = S("so"),
					 .new_pin = S("5678") },
				   got;
	struct msg_p11_slot_req s = { .slot = 9 }, sgot;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	assert_int_equal(msg_p11_set_pin_req_put(enc, &m), 0);
	b = payload(enc, wbuf_len(enc), P11_SET_PIN);
	assert_int_equal(msg_p11_set_pin_req_get(b, &got), 0);
	assert_int_equal(got.mode, SET_PIN_UNBLOCK);
	assert_string_equal(got.old_pin, "so");
	assert_string_equal(got.new_pin, "5678");
	msg_p11_set_pin_req_clear(&got);
	wbuf_free(b);
	wbuf_free(enc);
	m.mode = 3;
	enc = newbuf();
	assert_int_equal(msg_p11_set_pin_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);

	enc = newbuf();
	assert_int_equal(msg_p11_slot_req_put(enc, P11_LOGOUT, &s), 0);
	b = payload(enc, wbuf_len(enc), P11_LOGOUT);
	assert_int_equal(msg_p11_slot_req_get(b, &sgot), 0);
	assert_int_equal(sgot.slot, 9);
	wbuf_free(b);
	assert_int_equal(msg_p11_slot_req_put(enc, P11_SIGN, &s), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
}

static int
sign_get(struct wbuf *b, void *m)
{
	return msg_p11_sign_req_get(b, m);
}
static void
sign_clear(void *m)
{
	msg_p11_sign_req_clear(m);
}

static void
test_sign(void **state)
{
	unsigned char digest[64];
	struct msg_p11_sign_req m = { .slot = 1,
				      .key = 42,
				      .mech = P11_MECH_ECDSA,
				      .data = digest,
				      .data_len = 32 },
				got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	memset(digest, 0xab, sizeof(digest));
	assert_int_equal(msg_p11_sign_req_put(enc, &m), 0);
	b = payload(enc, wbuf_len(enc), P11_SIGN);
	assert_int_equal(msg_p11_sign_req_get(b, &got), 0);
	assert_int_equal(got.key, 42);
	assert_int_equal(got.mech, P11_MECH_ECDSA);
	assert_memory_equal(got.data, digest, 32);
	msg_p11_sign_req_clear(&got);
	wbuf_free(b);
	check_hostile(enc, P11_SIGN, sign_get, &got, sizeof(got), sign_clear);
	wbuf_free(enc);

	/* The data must have the length the mechanism takes. */
	enc = newbuf();
	m.data_len = 31;
	assert_int_equal(msg_p11_sign_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.mech = P11_MECH_RSA_PSS;
	m.data_len = 48;
	m.hash = P11_HASH_SHA256;
	assert_int_equal(msg_p11_sign_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.hash = P11_HASH_SHA384;
	assert_int_equal(msg_p11_sign_req_put(enc, &m), 0);
	m.mech = P11_MECH_RSA_PKCS;
	m.hash = 0;
	m.data_len = 19 + 32;
	assert_int_equal(msg_p11_sign_req_put(enc, &m), 0);
	m.mech = 9;
	assert_int_equal(msg_p11_sign_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
}

static int
error_get(struct wbuf *b, void *m)
{
	return msg_p11_error_get(b, m);
}
static void
error_clear(void *m)
{
	msg_p11_error_clear(m);
}

static void
test_error(void **state)
{
	struct msg_p11_error m = { .code = MTLS_ERR_PIN_INCORRECT,
				   .retries = 2,
				   .rv = 0xa0,
				   .message = S("C_Login: PKCS#11 error 0xa0") },
			     got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	assert_int_equal(msg_p11_error_put(enc, &m), 0);
	b = payload(enc, wbuf_len(enc), P11_ERROR);
	assert_int_equal(msg_p11_error_get(b, &got), 0);
	assert_int_equal(got.code, MTLS_ERR_PIN_INCORRECT);
	assert_int_equal(got.retries, 2);
	assert_int_equal(got.rv, 0xa0);
	assert_string_equal(got.message, m.message);
	msg_p11_error_clear(&got);
	wbuf_free(b);
	check_hostile(enc, P11_ERROR, error_get, &got, sizeof(got), error_clear);
	wbuf_free(enc);

	/* A code we do not know is the helper's bug, not mapped away. */
	enc = newbuf();
	assert_int_equal(wbuf_put_u32(enc, 9999), 0);
	assert_int_equal(wbuf_put_u32(enc, 0), 0);
	assert_int_equal(wbuf_put_u32(enc, 0), 0);
	assert_int_equal(wbuf_put_cstring(enc, ""), 0);
	assert_int_equal(msg_p11_error_get(enc, &got), MTLS_ERR_BAD_REQUEST);
	assert_null(got.message);
	wbuf_free(enc);
	m.code = 0;
	enc = newbuf();
	assert_int_equal(msg_p11_error_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
}

static int
keygen_get(struct wbuf *b, void *m)
{
	return msg_p11_keygen_req_get(b, m);
}
static void
keygen_clear(void *m)
{
	msg_p11_keygen_req_clear(m);
}
static int
keygen_resp_get(struct wbuf *b, void *m)
{
	return msg_p11_keygen_resp_get(b, m);
}
static void
keygen_resp_clear(void *m)
{
	msg_p11_object_clear(m);
}
static int
import_get(struct wbuf *b, void *m)
{
	return msg_p11_import_req_get(b, m);
}
static void
import_clear(void *m)
{
	msg_p11_import_req_clear(m);
}

static void
test_keygen(void **state)
{
	unsigned char id[16], params[10], point[67];
	struct msg_p11_keygen_req m = { .slot = 5,
					.kind = MTLS_AGENT_KEYGEN_EC_P256,
					.label = S("work") },
				  got;
	struct p11_object o = { .kind = P11_OBJ_EC,
				.handle = 77,
				.id = id,
				.id_len = sizeof(id),
				.label = S("work"),
				.a = params,
				.a_len = sizeof(params),
				.b = point,
				.b_len = sizeof(point) },
			  ogot;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	memset(id, 1, sizeof(id));
	memset(params, 6, sizeof(params));
	memset(point, 4, sizeof(point));
	assert_int_equal(msg_p11_keygen_req_put(enc, &m), 0);
	b = payload(enc, wbuf_len(enc), P11_KEYGEN);
	assert_int_equal(msg_p11_keygen_req_get(b, &got), 0);
	assert_int_equal(got.slot, 5);
	assert_int_equal(got.kind, MTLS_AGENT_KEYGEN_EC_P256);
	assert_string_equal(got.label, "work");
	msg_p11_keygen_req_clear(&got);
	wbuf_free(b);
	check_hostile(enc, P11_KEYGEN, keygen_get, &got, sizeof(got), keygen_clear);
	wbuf_free(enc);

	enc = newbuf();
	assert_int_equal(msg_p11_keygen_resp_put(enc, &o), 0);
	b = payload(enc, wbuf_len(enc), P11_KEYGEN | MSG_REPLY);
	assert_int_equal(msg_p11_keygen_resp_get(b, &ogot), 0);
	assert_int_equal(ogot.handle, 77);
	assert_memory_equal(ogot.b, point, sizeof(point));
	msg_p11_object_clear(&ogot);
	wbuf_free(b);
	check_hostile(enc, P11_KEYGEN | MSG_REPLY, keygen_resp_get, &ogot, sizeof(ogot),
		      keygen_resp_clear);
	wbuf_free(enc);

	/* A kind we do not make, a certificate for a key, a key without its
	 * public value. */
	enc = newbuf();
	m.kind = 6;
	assert_int_equal(msg_p11_keygen_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	o.kind = P11_OBJ_CERT;
	assert_int_equal(msg_p11_keygen_resp_put(enc, &o), MTLS_ERR_INVALID_ARGUMENT);
	o.kind = P11_OBJ_RSA;
	o.b_len = 0;
	assert_int_equal(msg_p11_keygen_resp_put(enc, &o), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
	b = newbuf();
	assert_int_equal(wbuf_put_u32(b, 0), 0);
	assert_int_equal(wbuf_put_u32(b, 1), 0);
	assert_int_equal(wbuf_put_u8(b, 0), 0);
	assert_int_equal(wbuf_put_cstring(b, "x"), 0);
	assert_int_equal(msg_p11_keygen_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
	assert_null(got.label);
	wbuf_free(b);
}

static void
test_import_cert(void **state)
{
	unsigned char id[16], subj[20], cert[200];
	struct msg_p11_import_req m = { .slot = 2,
					.flags = P11_IMPORT_REPLACE,
					.id = id,
					.id_len = sizeof(id),
					.label = S("work"),
					.subject = subj,
					.subject_len = sizeof(subj),
					.cert = cert,
					.cert_len = sizeof(cert) },
				  got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	memset(id, 1, sizeof(id));
	memset(subj, 0x30, sizeof(subj));
	memset(cert, 0x30, sizeof(cert));
	assert_int_equal(msg_p11_import_req_put(enc, &m), 0);
	b = payload(enc, wbuf_len(enc), P11_IMPORT_CERT);
	assert_int_equal(msg_p11_import_req_get(b, &got), 0);
	assert_int_equal(got.flags, P11_IMPORT_REPLACE);
	assert_memory_equal(got.cert, cert, sizeof(cert));
	assert_int_equal(got.subject_len, sizeof(subj));
	msg_p11_import_req_clear(&got);
	wbuf_free(b);
	check_hostile(enc, P11_IMPORT_CERT, import_get, &got, sizeof(got), import_clear);
	wbuf_free(enc);

	enc = newbuf();
	m.flags = 2;
	assert_int_equal(msg_p11_import_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.flags = 0;
	m.id_len = 0;
	assert_int_equal(msg_p11_import_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.id_len = sizeof(id);
	m.cert_len = MTLS_CERT_MAX + 1;
	assert_int_equal(msg_p11_import_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
}

static int
delete_get(struct wbuf *b, void *m)
{
	return msg_p11_delete_req_get(b, m);
}
static void
delete_clear(void *m)
{
	msg_p11_delete_req_clear(m);
}

static void
test_delete(void **state)
{
	unsigned char id[16];
	struct msg_p11_delete_req m = { .slot = 3, .id = id, .id_len = sizeof(id) }, got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	memset(id, 7, sizeof(id));
	assert_int_equal(msg_p11_delete_req_put(enc, &m), 0);
	check_hostile(enc, P11_DELETE, delete_get, &got, sizeof(got), delete_clear);
	wbuf_free(enc);
	/* An empty id is refused: it must never match every object. */
	enc = newbuf();
	m.id_len = 0;
	assert_int_equal(msg_p11_delete_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
	b = newbuf();
	assert_int_equal(wbuf_put_u32(b, 0), 0);
	assert_int_equal(wbuf_put_u32(b, 3), 0);
	assert_int_equal(wbuf_put_string(b, id, 0), 0);
	assert_int_equal(msg_p11_delete_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tokens), cmocka_unit_test(test_objects),
		cmocka_unit_test(test_login),  cmocka_unit_test(test_set_pin_and_slot),
		cmocka_unit_test(test_sign),   cmocka_unit_test(test_error),
		cmocka_unit_test(test_keygen), cmocka_unit_test(test_import_cert),
		cmocka_unit_test(test_delete),
	};

	return cmocka_run_group_tests_name("helper codecs", tests, NULL, NULL);
}
