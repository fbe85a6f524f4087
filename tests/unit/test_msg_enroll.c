/*
 * test_msg_enroll.c - unit tests of the enrollment codecs: KEYGEN
 * (src/common/msg_keygen.c) and IMPORT_CERT (src/common/msg_import.c).
 *
 * Each message goes round trip with its exact bytes; each decoder is fed
 * every truncation and one trailing byte and must leave its struct
 * cleared; fields out of bounds, unknown kinds and flags are refused by
 * the encoder and the decoder.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

#define S(s) ((char *)(s))

typedef int (*get_fn)(struct wbuf *, void *);

static struct wbuf *
newbuf(void)
{
	struct wbuf *b = wbuf_new();

	assert_non_null(b);
	return b;
}

/* The payload of body p[0..len) after its type byte, which must be type. */
static struct wbuf *
payload(const unsigned char *p, size_t len, uint8_t type)
{
	struct wbuf *b = wbuf_from(p, len);
	uint8_t t;

	assert_non_null(b);
	assert_int_equal(wbuf_get_u8(b, &t), 0);
	assert_int_equal(t, type);
	return b;
}

static void
check_hostile(const struct wbuf *enc, uint8_t type, get_fn get, void *m, size_t m_size,
	      void (*clear)(void *))
{
	unsigned char zero[256], *longer;
	struct wbuf *b;
	size_t len;

	assert_true(m_size <= sizeof(zero));
	memset(zero, 0, sizeof(zero));
	for (len = 1; len < wbuf_len(enc); len++) {
		b = payload(wbuf_ptr(enc), len, type);
		memset(m, 0xa5, m_size);
		if (get(b, m) == 0)
			fail_msg("prefix of %zu/%zu bytes accepted", len, wbuf_len(enc));
		assert_memory_equal(m, zero, m_size);
		wbuf_free(b);
	}
	assert_non_null(longer = malloc(wbuf_len(enc) + 1));
	memcpy(longer, wbuf_ptr(enc), wbuf_len(enc));
	longer[wbuf_len(enc)] = 0;
	b = payload(longer, wbuf_len(enc) + 1, type);
	assert_int_equal(get(b, m), MTLS_ERR_TRAILING_DATA);
	assert_memory_equal(m, zero, m_size);
	wbuf_free(b);
	free(longer);
	b = payload(wbuf_ptr(enc), wbuf_len(enc), type);
	assert_int_equal(get(b, m), 0);
	clear(m);
	wbuf_free(b);
}

static int
kreq_get(struct wbuf *b, void *m)
{
	return msg_keygen_req_get(b, m);
}
static void
kreq_clear(void *m)
{
	msg_keygen_req_clear(m);
}
static int
kresp_get(struct wbuf *b, void *m)
{
	return msg_keygen_resp_get(b, m);
}
static void
kresp_clear(void *m)
{
	msg_keygen_resp_clear(m);
}
static int
ireq_get(struct wbuf *b, void *m)
{
	return msg_import_req_get(b, m);
}
static void
ireq_clear(void *m)
{
	msg_import_req_clear(m);
}
static int
iresp_get(struct wbuf *b, void *m)
{
	return msg_import_resp_get(b, m);
}
static void
iresp_clear(void *m)
{
	msg_import_resp_clear(m);
}

static void
test_keygen_req(void **state)
{
	static const unsigned char want[] = {
		MSG_KEYGEN, 0, 0, 0, 0, 0, 0, 0, 4, 'w', 'o', 'r', 'k', MTLS_AGENT_KEYGEN_EC_P384
	};
	struct msg_keygen_req m = { S(""), S("work"), MTLS_AGENT_KEYGEN_EC_P384 }, got;
	struct wbuf *enc = newbuf(), *b;
	char label[66];

	(void)state;
	assert_int_equal(msg_keygen_req_put(enc, &m), 0);
	assert_int_equal(wbuf_len(enc), sizeof(want));
	assert_memory_equal(wbuf_ptr(enc), want, sizeof(want));
	b = payload(wbuf_ptr(enc), wbuf_len(enc), MSG_KEYGEN);
	assert_int_equal(msg_keygen_req_get(b, &got), 0);
	assert_string_equal(got.token, "");
	assert_string_equal(got.label, "work");
	assert_int_equal(got.kind, MTLS_AGENT_KEYGEN_EC_P384);
	msg_keygen_req_clear(&got);
	wbuf_free(b);
	check_hostile(enc, MSG_KEYGEN, kreq_get, &got, sizeof(got), kreq_clear);
	wbuf_free(enc);

	/* Encoder: unknown kind, empty or overlong label. */
	enc = newbuf();
	m.kind = 0;
	assert_int_equal(msg_keygen_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.kind = MTLS_AGENT_KEYGEN_RSA_4096 + 1;
	assert_int_equal(msg_keygen_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.kind = MTLS_AGENT_KEYGEN_RSA_2048;
	m.label = S("");
	assert_int_equal(msg_keygen_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	memset(label, 'a', 65);
	label[65] = '\0';
	m.label = label;
	assert_int_equal(msg_keygen_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);

	/* Decoder: unknown kind, empty label, a label over 64 bytes. */
	{
		static const unsigned char bad_kind[] = { 0, 0, 0, 0, 0, 0, 0, 1, 'w', 9 };
		static const unsigned char empty[] = { 0, 0, 0, 0, 0, 0, 0, 0, 1 };

		b = wbuf_from(bad_kind, sizeof(bad_kind));
		assert_int_equal(msg_keygen_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
		assert_null(got.label);
		wbuf_free(b);
		b = wbuf_from(empty, sizeof(empty));
		assert_int_equal(msg_keygen_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
		wbuf_free(b);
		b = newbuf();
		assert_int_equal(wbuf_put_cstring(b, ""), 0);
		assert_int_equal(wbuf_put_cstring(b, label), 0);
		assert_int_equal(wbuf_put_u8(b, 1), 0);
		assert_int_not_equal(msg_keygen_req_get(b, &got), 0);
		assert_null(got.token);
		wbuf_free(b);
	}
}

static void
test_keygen_resp(void **state)
{
	unsigned char id[16], spki[91];
	struct msg_keygen_resp m = { S("work"), id, sizeof(id), spki, sizeof(spki) }, got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	memset(id, 0x11, sizeof(id));
	memset(spki, 0x30, sizeof(spki));
	assert_int_equal(msg_keygen_resp_put(enc, &m), 0);
	b = payload(wbuf_ptr(enc), wbuf_len(enc), MSG_KEYGEN | MSG_REPLY);
	assert_int_equal(msg_keygen_resp_get(b, &got), 0);
	assert_string_equal(got.name, "work");
	assert_int_equal(got.key_id_len, sizeof(id));
	assert_memory_equal(got.spki, spki, sizeof(spki));
	msg_keygen_resp_clear(&got);
	wbuf_free(b);
	check_hostile(enc, MSG_KEYGEN | MSG_REPLY, kresp_get, &got, sizeof(got), kresp_clear);
	wbuf_free(enc);

	enc = newbuf();
	m.spki_len = 0;
	assert_int_equal(msg_keygen_resp_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.spki_len = MTLS_SPKI_MAX + 1;
	assert_int_equal(msg_keygen_resp_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.spki_len = sizeof(spki);
	m.key_id_len = 0;
	assert_int_equal(msg_keygen_resp_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);

	/* An empty SubjectPublicKeyInfo from the agent is refused. */
	b = newbuf();
	assert_int_equal(wbuf_put_cstring(b, "work"), 0);
	assert_int_equal(wbuf_put_string(b, id, sizeof(id)), 0);
	assert_int_equal(wbuf_put_string(b, spki, 0), 0);
	assert_int_equal(msg_keygen_resp_get(b, &got), MTLS_ERR_BAD_REQUEST);
	assert_null(got.name);
	wbuf_free(b);
}

static void
test_import(void **state)
{
	unsigned char cert[300];
	struct msg_import_req m = { cert, sizeof(cert), MTLS_AGENT_IMPORT_FORCE }, got;
	struct msg_import_resp r = { S("work") }, rgot;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	memset(cert, 0x30, sizeof(cert));
	assert_int_equal(msg_import_req_put(enc, &m), 0);
	b = payload(wbuf_ptr(enc), wbuf_len(enc), MSG_IMPORT_CERT);
	assert_int_equal(msg_import_req_get(b, &got), 0);
	assert_int_equal(got.cert_len, sizeof(cert));
	assert_int_equal(got.flags, MTLS_AGENT_IMPORT_FORCE);
	msg_import_req_clear(&got);
	wbuf_free(b);
	check_hostile(enc, MSG_IMPORT_CERT, ireq_get, &got, sizeof(got), ireq_clear);
	wbuf_free(enc);

	enc = newbuf();
	assert_int_equal(msg_import_resp_put(enc, &r), 0);
	check_hostile(enc, MSG_IMPORT_CERT | MSG_REPLY, iresp_get, &rgot, sizeof(rgot),
		      iresp_clear);
	wbuf_free(enc);

	/* Unknown flags, an empty certificate, an empty name. */
	enc = newbuf();
	m.flags = 2;
	assert_int_equal(msg_import_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.flags = 0;
	m.cert_len = 0;
	assert_int_equal(msg_import_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.cert_len = MTLS_CERT_MAX + 1;
	assert_int_equal(msg_import_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	r.name = S("");
	assert_int_equal(msg_import_resp_put(enc, &r), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
	b = newbuf();
	assert_int_equal(wbuf_put_string(b, cert, 10), 0);
	assert_int_equal(wbuf_put_u8(b, 0x80), 0);
	assert_int_equal(msg_import_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
	assert_null(got.cert);
	wbuf_free(b);
	b = newbuf();
	assert_int_equal(wbuf_put_string(b, cert, 0), 0);
	assert_int_equal(wbuf_put_u8(b, 0), 0);
	assert_int_equal(msg_import_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
	wbuf_free(b);
}

static int
dreq_get(struct wbuf *b, void *m)
{
	return msg_delete_key_req_get(b, m);
}
static void
dreq_clear(void *m)
{
	msg_delete_key_req_clear(m);
}

static void
test_delete_key(void **state)
{
	static const unsigned char want[] = { MSG_DELETE_KEY, 0, 0, 0, 4, 'w', 'o', 'r', 'k', 1 };
	struct msg_delete_key_req m = { S("work"), MTLS_AGENT_DELETE_FORCE }, got;
	struct wbuf *enc = newbuf(), *b;

	(void)state;
	assert_int_equal(msg_delete_key_req_put(enc, &m), 0);
	assert_int_equal(wbuf_len(enc), sizeof(want));
	assert_memory_equal(wbuf_ptr(enc), want, sizeof(want));
	check_hostile(enc, MSG_DELETE_KEY, dreq_get, &got, sizeof(got), dreq_clear);
	wbuf_free(enc);
	enc = newbuf();
	m.flags = 2;
	assert_int_equal(msg_delete_key_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	m.flags = 0;
	m.identity = S("");
	assert_int_equal(msg_delete_key_req_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
	{
		static const unsigned char empty[] = { 0, 0, 0, 0, 0 };
		static const unsigned char flags[] = { 0, 0, 0, 1, 'w', 0x10 };

		b = wbuf_from(empty, sizeof(empty));
		assert_int_equal(msg_delete_key_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
		wbuf_free(b);
		b = wbuf_from(flags, sizeof(flags));
		assert_int_equal(msg_delete_key_req_get(b, &got), MTLS_ERR_BAD_REQUEST);
		assert_null(got.identity);
		wbuf_free(b);
	}
}

/* STATUS's identities_expiring travels only when not 0. */
static void
test_status_expiring(void **state)
{
	struct mtls_agent_status st = { .version = S("v"), .identities = 3 }, got;
	struct wbuf *enc = newbuf(), *old = newbuf(), *b;
	uint8_t t;

	(void)state;
	assert_int_equal(msg_status_resp_put(old, &st), 0);
	st.identities_expiring = 2;
	assert_int_equal(msg_status_resp_put(enc, &st), 0);
	assert_int_equal(wbuf_len(enc), wbuf_len(old) + 4);
	assert_memory_equal(wbuf_ptr(enc), wbuf_ptr(old), wbuf_len(old));
	b = payload(wbuf_ptr(enc), wbuf_len(enc), MSG_STATUS | MSG_REPLY);
	assert_int_equal(msg_status_resp_get(b, &got), 0);
	assert_int_equal(got.identities_expiring, 2);
	mtls_agent_status_clear(&got);
	wbuf_free(b);
	b = payload(wbuf_ptr(old), wbuf_len(old), MSG_STATUS | MSG_REPLY);
	assert_int_equal(msg_status_resp_get(b, &got), 0);
	assert_int_equal(got.identities_expiring, 0);
	mtls_agent_status_clear(&got);
	wbuf_free(b);
	/* An explicit 0 is a second encoding: refused; so is a short field. */
	assert_int_equal(wbuf_put_u32(old, 0), 0);
	b = payload(wbuf_ptr(old), wbuf_len(old), MSG_STATUS | MSG_REPLY);
	assert_int_equal(msg_status_resp_get(b, &got), MTLS_ERR_BAD_REQUEST);
	assert_null(got.version);
	wbuf_free(b);
	b = payload(wbuf_ptr(enc), wbuf_len(enc) - 1, MSG_STATUS | MSG_REPLY);
	assert_int_equal(msg_status_resp_get(b, &got), MTLS_ERR_TRAILING_DATA);
	wbuf_free(b);
	(void)t;
	wbuf_free(enc);
	wbuf_free(old);
}

/* LIST's public keys of identities with no certificate: only when any. */
static void
test_list_keys(void **state)
{
	unsigned char cert[40], spki[91];
	struct mtls_agent_identity ids[3] = {
		{ .name = S("a"),
		  .token_label = S("t"),
		  .key_label = S("a"),
		  .key_type = 2,
		  .key_bits = 256,
		  .cert_der = cert,
		  .cert_der_len = sizeof(cert) },
		{ .name = S("b"),
		  .token_label = S("t"),
		  .key_label = S("b"),
		  .key_type = 2,
		  .key_bits = 256,
		  .spki_der = spki,
		  .spki_der_len = sizeof(spki) },
		{ .name = S("c"),
		  .token_label = S("t"),
		  .key_label = S("c"),
		  .key_type = 2,
		  .key_bits = 256 },
	};
	struct msg_list_resp m = { ids, 3 }, got;
	struct wbuf *enc = newbuf(), *old = newbuf(), *b;
	size_t n;

	(void)state;
	memset(cert, 0x30, sizeof(cert));
	memset(spki, 0x31, sizeof(spki));
	assert_int_equal(msg_list_resp_put(enc, &m), 0);
	ids[1].spki_der = NULL;
	ids[1].spki_der_len = 0;
	assert_int_equal(msg_list_resp_put(old, &m), 0);
	/* Without such keys the reply is what it was. */
	n = wbuf_len(old);
	assert_int_equal(wbuf_len(enc), n + 4 + 4 + 4 + sizeof(spki));
	assert_memory_equal(wbuf_ptr(enc), wbuf_ptr(old), n);
	b = payload(wbuf_ptr(enc), wbuf_len(enc), MSG_LIST | MSG_REPLY);
	assert_int_equal(msg_list_resp_get(b, &got), 0);
	assert_int_equal(got.n, 3);
	assert_null(got.ids[0].spki_der);
	assert_int_equal(got.ids[1].spki_der_len, sizeof(spki));
	assert_memory_equal(got.ids[1].spki_der, spki, sizeof(spki));
	assert_null(got.ids[2].spki_der);
	msg_list_resp_clear(&got);
	wbuf_free(b);
	/* Every truncation of the section, and a byte after it. */
	{
		unsigned char *longer = malloc(wbuf_len(enc) + 1);
		size_t len;

		assert_non_null(longer);
		for (len = n + 4; len < wbuf_len(enc); len++) {
			b = payload(wbuf_ptr(enc), len, MSG_LIST | MSG_REPLY);
			assert_int_not_equal(msg_list_resp_get(b, &got), 0);
			assert_null(got.ids);
			wbuf_free(b);
		}
		memcpy(longer, wbuf_ptr(enc), wbuf_len(enc));
		longer[wbuf_len(enc)] = 0;
		b = payload(longer, wbuf_len(enc) + 1, MSG_LIST | MSG_REPLY);
		assert_int_equal(msg_list_resp_get(b, &got), MTLS_ERR_TRAILING_DATA);
		wbuf_free(b);
		free(longer);
	}
	/* The section refused: empty, an index out of range, not ascending, for
	 * an identity with a certificate, an empty key. */
	{
		static const uint32_t bad[][3] = {
			{ 0, 0, 0 }, /* n = 0 */
			{ 1, 3, 1 }, /* index 3 of 3 */
			{ 1, 0, 1 }, /* identity a has a certificate */
			{ 1, 1, 0 }, /* empty key */
			{ 2, 2, 1 }, /* then index 1 after 2: not ascending */
		};
		size_t k;

		for (k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			b = newbuf();
			assert_int_equal(wbuf_put(b, wbuf_ptr(old) + 1, n - 1), 0);
			assert_int_equal(wbuf_put_u32(b, bad[k][0]), 0);
			if (bad[k][0] > 0) {
				assert_int_equal(wbuf_put_u32(b, bad[k][1]), 0);
				assert_int_equal(wbuf_put_string(b, spki, bad[k][2] ? 5 : 0), 0);
			}
			if (bad[k][0] > 1) {
				assert_int_equal(wbuf_put_u32(b, 1), 0);
				assert_int_equal(wbuf_put_string(b, spki, 5), 0);
			}
			assert_int_equal(msg_list_resp_get(b, &got), MTLS_ERR_BAD_REQUEST);
			assert_null(got.ids);
			wbuf_free(b);
		}
	}
	/* The encoder: not both a certificate and a key. */
	ids[0].spki_der = spki;
	ids[0].spki_der_len = sizeof(spki);
	wbuf_reset(enc);
	assert_int_equal(msg_list_resp_put(enc, &m), MTLS_ERR_INVALID_ARGUMENT);
	wbuf_free(enc);
	wbuf_free(old);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keygen_req),	cmocka_unit_test(test_keygen_resp),
		cmocka_unit_test(test_import),		cmocka_unit_test(test_delete_key),
		cmocka_unit_test(test_status_expiring), cmocka_unit_test(test_list_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
