/*
 * test_wbuf.c - unit tests of the wire buffer (src/common/wbuf.c).
 *
 * The buffer is the only code that touches raw wire bytes, so every bound
 * it enforces is checked here with the exact error it must give, and every
 * refused read is checked to leave the buffer as it was.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "wbuf.h"

/* Buffer holding exactly the given bytes. */
static struct wbuf *
from_bytes(const unsigned char *p, size_t len)
{
	struct wbuf *b = wbuf_from(p, len);

	assert_non_null(b);
	assert_int_equal(wbuf_len(b), len);
	return b;
}

/* Asserts b still holds exactly p[0..len) unconsumed. */
static void
assert_contents(const struct wbuf *b, const unsigned char *p, size_t len)
{
	assert_int_equal(wbuf_len(b), len);
	if (len > 0)
		assert_memory_equal(wbuf_ptr(b), p, len);
}

static void
test_new_empty(void **state)
{
	struct wbuf *b = wbuf_new();
	uint8_t v8 = 0x55;

	(void)state;
	assert_non_null(b);
	assert_int_equal(wbuf_len(b), 0);
	assert_non_null(wbuf_ptr(b));
	assert_int_equal(wbuf_expect_end(b), 0);
	assert_int_equal(wbuf_get_u8(b, &v8), MTLS_ERR_TRUNCATED);
	assert_int_equal(v8, 0x55);
	wbuf_free(b);
}

static void
test_free_null(void **state)
{
	(void)state;
	/* Must not crash: free functions accept NULL (house style). */
	wbuf_free(NULL);
}

static void
test_int_roundtrip(void **state)
{
	struct wbuf *b = wbuf_new();
	uint8_t v8;
	uint16_t v16;
	uint32_t v32;
	static const uint32_t u32s[] = { 0,	     1,		 0x7f,	     0x80,
					 0xff,	     0x100,	 0x12345678, 0x7fffffff,
					 0x80000000, 0xfffffffe, 0xffffffff };
	static const uint16_t u16s[] = { 0, 1, 0xff, 0x100, 0x1234, 0x8000, 0xffff };
	size_t i;

	(void)state;
	assert_non_null(b);
	for (i = 0; i < 256; i++)
		assert_int_equal(wbuf_put_u8(b, (uint8_t)i), 0);
	for (i = 0; i < sizeof(u16s) / sizeof(u16s[0]); i++)
		assert_int_equal(wbuf_put_u16(b, u16s[i]), 0);
	for (i = 0; i < sizeof(u32s) / sizeof(u32s[0]); i++)
		assert_int_equal(wbuf_put_u32(b, u32s[i]), 0);
	assert_int_equal(wbuf_len(b), 256 + 2 * sizeof(u16s) / sizeof(u16s[0]) +
					  4 * sizeof(u32s) / sizeof(u32s[0]));
	for (i = 0; i < 256; i++) {
		assert_int_equal(wbuf_get_u8(b, &v8), 0);
		assert_int_equal(v8, i);
	}
	for (i = 0; i < sizeof(u16s) / sizeof(u16s[0]); i++) {
		assert_int_equal(wbuf_get_u16(b, &v16), 0);
		assert_int_equal(v16, u16s[i]);
	}
	for (i = 0; i < sizeof(u32s) / sizeof(u32s[0]); i++) {
		assert_int_equal(wbuf_peek_u32(b, &v32), 0);
		assert_int_equal(v32, u32s[i]);
		assert_int_equal(wbuf_get_u32(b, &v32), 0);
		assert_int_equal(v32, u32s[i]);
	}
	assert_int_equal(wbuf_len(b), 0);
	assert_int_equal(wbuf_expect_end(b), 0);
	wbuf_free(b);
}

static void
test_big_endian_layout(void **state)
{
	static const unsigned char want[] = {
		0xab,				       /* u8 */
		0x12, 0x34,			       /* u16 */
		0xde, 0xad, 0xbe, 0xef,		       /* u32 */
		0x00, 0x00, 0x00, 0x03, 'a', 'b', 'c', /* string "abc" */
		0x00, 0x00, 0x00, 0x02, 'h', 'i',      /* cstring "hi" */
		0x00, 0x00, 0x00, 0x00,		       /* cstring NULL -> "" */
		0x01, 0x02,			       /* raw put */
	};
	struct wbuf *b = wbuf_new();
	uint32_t v32;

	(void)state;
	assert_non_null(b);
	assert_int_equal(wbuf_put_u8(b, 0xab), 0);
	assert_int_equal(wbuf_put_u16(b, 0x1234), 0);
	assert_int_equal(wbuf_put_u32(b, 0xdeadbeef), 0);
	assert_int_equal(wbuf_put_string(b, "abc", 3), 0);
	assert_int_equal(wbuf_put_cstring(b, "hi"), 0);
	assert_int_equal(wbuf_put_cstring(b, NULL), 0);
	assert_int_equal(wbuf_put(b, "\x01\x02", 2), 0);
	assert_contents(b, want, sizeof(want));
	wbuf_free(b);

	/* And reading literal bytes gives the big-endian values. */
	b = from_bytes((const unsigned char *)"\x01\x02\x03\x04", 4);
	assert_int_equal(wbuf_get_u32(b, &v32), 0);
	assert_int_equal(v32, 0x01020304);
	wbuf_free(b);
}

static void
test_string_roundtrip(void **state)
{
	static const unsigned char bin[] = { 0x00, 0xff, 0x00, 0x7f, 0x0a };
	struct wbuf *b = wbuf_new();
	const unsigned char *dp;
	unsigned char *s;
	char *cs;
	size_t len;

	(void)state;
	assert_non_null(b);
	assert_int_equal(wbuf_put_string(b, bin, sizeof(bin)), 0);
	assert_int_equal(wbuf_put_string(b, NULL, 0), 0);
	assert_int_equal(wbuf_put_cstring(b, "hello, world"), 0);
	assert_int_equal(wbuf_put_cstring(b, ""), 0);
	assert_int_equal(wbuf_put_string(b, bin, sizeof(bin)), 0);

	/* Binary string with NULs survives get_string. */
	assert_int_equal(wbuf_get_string(b, &s, &len, 0), 0);
	assert_non_null(s);
	assert_int_equal(len, sizeof(bin));
	assert_memory_equal(s, bin, sizeof(bin));
	assert_int_equal(s[len], '\0'); /* NUL-terminated for convenience */
	free(s);

	/* Empty string: a valid allocation of length 0. */
	assert_int_equal(wbuf_get_string(b, &s, &len, 0), 0);
	assert_non_null(s);
	assert_int_equal(len, 0);
	assert_int_equal(s[0], '\0');
	free(s);

	assert_int_equal(wbuf_get_cstring(b, &cs, 0), 0);
	assert_string_equal(cs, "hello, world");
	free(cs);
	assert_int_equal(wbuf_get_cstring(b, &cs, 0), 0);
	assert_string_equal(cs, "");
	free(cs);

	/* Direct read points into the buffer. */
	assert_int_equal(wbuf_get_string_direct(b, &dp, &len, 0), 0);
	assert_int_equal(len, sizeof(bin));
	assert_memory_equal(dp, bin, sizeof(bin));
	assert_int_equal(wbuf_len(b), 0);
	assert_int_equal(wbuf_expect_end(b), 0);
	wbuf_free(b);
}

static void
test_string_max_exact(void **state)
{
	struct wbuf *b = wbuf_new();
	unsigned char *s;
	size_t len;

	(void)state;
	assert_non_null(b);
	assert_int_equal(wbuf_put_string(b, "12345", 5), 0);
	/* max equal to the length is allowed. */
	assert_int_equal(wbuf_get_string(b, &s, &len, 5), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(s, "12345", 5);
	free(s);
	wbuf_free(b);
}

/* Every fixed-size read on every short buffer is refused, untouched. */
static void
test_truncated_ints(void **state)
{
	static const unsigned char data[] = { 0x11, 0x22, 0x33 };
	uint8_t v8 = 0;
	uint16_t v16 = 0;
	uint32_t v32 = 0;
	unsigned char out[8];
	struct wbuf *b;
	size_t n;

	(void)state;
	for (n = 0; n <= sizeof(data); n++) {
		b = from_bytes(data, n);
		if (n < 1) {
			assert_int_equal(wbuf_get_u8(b, &v8), MTLS_ERR_TRUNCATED);
			assert_contents(b, data, n);
		}
		if (n < 2) {
			assert_int_equal(wbuf_get_u16(b, &v16), MTLS_ERR_TRUNCATED);
			assert_contents(b, data, n);
		}
		assert_int_equal(wbuf_get_u32(b, &v32), MTLS_ERR_TRUNCATED);
		assert_contents(b, data, n);
		assert_int_equal(wbuf_peek_u32(b, &v32), MTLS_ERR_TRUNCATED);
		assert_contents(b, data, n);
		assert_int_equal(wbuf_get(b, out, n + 1), MTLS_ERR_TRUNCATED);
		assert_contents(b, data, n);
		assert_int_equal(wbuf_consume(b, n + 1), MTLS_ERR_TRUNCATED);
		assert_contents(b, data, n);
		wbuf_free(b);
	}
}

/* A string whose header or body is cut short, at every cut point. */
static void
test_truncated_string(void **state)
{
	static const unsigned char enc[] = { 0, 0, 0, 4, 'a', 'b', 'c', 'd' };
	const unsigned char *dp;
	unsigned char *s;
	char *cs;
	size_t n, len;
	struct wbuf *b;

	(void)state;
	for (n = 0; n < sizeof(enc); n++) {
		b = from_bytes(enc, n);
		dp = (const unsigned char *)"x";
		len = 99;
		assert_int_equal(wbuf_get_string_direct(b, &dp, &len, 0), MTLS_ERR_TRUNCATED);
		assert_null(dp);
		assert_int_equal(len, 0);
		assert_contents(b, enc, n);
		assert_int_equal(wbuf_get_string(b, &s, &len, 0), MTLS_ERR_TRUNCATED);
		assert_null(s);
		assert_contents(b, enc, n);
		assert_int_equal(wbuf_get_cstring(b, &cs, 0), MTLS_ERR_TRUNCATED);
		assert_null(cs);
		assert_contents(b, enc, n);
		wbuf_free(b);
	}
}

/*
 * Lengths that exceed what is left, including those where 4 + len would
 * wrap a 32-bit size_t, must be refused as truncation, not read past.
 */
static void
test_string_length_overflow(void **state)
{
	static const uint32_t lens[] = { 5,	     0x7fffffff, 0x80000000, 0xfffffffb,
					 0xfffffffc, 0xfffffffd, 0xfffffffe, 0xffffffff };
	unsigned char enc[4 + 8];
	const unsigned char *dp;
	unsigned char *s;
	char *cs;
	size_t i, len;
	struct wbuf *b;

	(void)state;
	memset(enc, 'z', sizeof(enc));
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		enc[0] = (unsigned char)(lens[i] >> 24);
		enc[1] = (unsigned char)(lens[i] >> 16);
		enc[2] = (unsigned char)(lens[i] >> 8);
		enc[3] = (unsigned char)lens[i];
		/* 4 bytes of body: one short even for len 5. */
		b = from_bytes(enc, 8);
		assert_int_equal(wbuf_get_string_direct(b, &dp, &len, 0), MTLS_ERR_TRUNCATED);
		assert_contents(b, enc, 8);
		/* A max bound must not change the verdict into a read. */
		assert_true(wbuf_get_string_direct(b, &dp, &len, 16) < 0);
		assert_null(dp);
		assert_contents(b, enc, 8);
		assert_int_equal(wbuf_get_string(b, &s, &len, 0), MTLS_ERR_TRUNCATED);
		assert_null(s);
		assert_contents(b, enc, 8);
		assert_int_equal(wbuf_get_cstring(b, &cs, 0), MTLS_ERR_TRUNCATED);
		assert_null(cs);
		assert_contents(b, enc, 8);
		wbuf_free(b);
	}
}

static void
test_string_max_bound(void **state)
{
	static const unsigned char enc[] = { 0, 0, 0, 6, 'a', 'b', 'c', 'd', 'e', 'f' };
	const unsigned char *dp;
	unsigned char *s;
	char *cs;
	size_t len;
	struct wbuf *b = from_bytes(enc, sizeof(enc));

	(void)state;
	assert_int_equal(wbuf_get_string_direct(b, &dp, &len, 5), MTLS_ERR_BAD_REQUEST);
	assert_null(dp);
	assert_contents(b, enc, sizeof(enc));
	assert_int_equal(wbuf_get_string(b, &s, &len, 5), MTLS_ERR_BAD_REQUEST);
	assert_null(s);
	assert_contents(b, enc, sizeof(enc));
	assert_int_equal(wbuf_get_cstring(b, &cs, 1), MTLS_ERR_BAD_REQUEST);
	assert_null(cs);
	assert_contents(b, enc, sizeof(enc));
	/* 0 means no bound; 6 is exactly enough. */
	assert_int_equal(wbuf_get_cstring(b, &cs, 6), 0);
	assert_string_equal(cs, "abcdef");
	free(cs);
	wbuf_free(b);
}

static void
test_cstring_nul(void **state)
{
	/* NUL in the middle, at the start and at the end, then a good one
	 * after it that must still be readable once the bad one is skipped. */
	static const unsigned char mid[] = { 0, 0, 0, 3, 'a', 0, 'b', 0, 0, 0, 1, 'z' };
	static const unsigned char first[] = { 0, 0, 0, 2, 0, 'b' };
	static const unsigned char last[] = { 0, 0, 0, 2, 'a', 0 };
	unsigned char *s;
	char *cs;
	size_t len;
	struct wbuf *b;

	(void)state;
	b = from_bytes(mid, sizeof(mid));
	cs = (char *)&len; /* must be reset to NULL */
	assert_int_equal(wbuf_get_cstring(b, &cs, 0), MTLS_ERR_STRING_NUL);
	assert_null(cs);
	assert_contents(b, mid, sizeof(mid));
	/* The binary getter accepts the same bytes. */
	assert_int_equal(wbuf_get_string(b, &s, &len, 0), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(s, "a\0b", 3);
	free(s);
	assert_int_equal(wbuf_get_cstring(b, &cs, 0), 0);
	assert_string_equal(cs, "z");
	free(cs);
	wbuf_free(b);

	/* A string that is the whole buffer: consuming it empties the buffer,
	 * so the undo must restore it completely. */
	b = from_bytes(first, sizeof(first));
	assert_int_equal(wbuf_get_cstring(b, &cs, 0), MTLS_ERR_STRING_NUL);
	assert_null(cs);
	assert_contents(b, first, sizeof(first));
	wbuf_free(b);
	b = from_bytes(last, sizeof(last));
	assert_int_equal(wbuf_get_cstring(b, &cs, 0), MTLS_ERR_STRING_NUL);
	assert_null(cs);
	assert_contents(b, last, sizeof(last));
	wbuf_free(b);
}

static void
test_expect_end(void **state)
{
	struct wbuf *b = wbuf_new();
	uint8_t v8;

	(void)state;
	assert_non_null(b);
	assert_int_equal(wbuf_expect_end(b), 0);
	assert_int_equal(wbuf_put_u16(b, 0x0102), 0);
	assert_int_equal(wbuf_expect_end(b), MTLS_ERR_TRAILING_DATA);
	assert_int_equal(wbuf_get_u8(b, &v8), 0);
	assert_int_equal(wbuf_expect_end(b), MTLS_ERR_TRAILING_DATA);
	assert_int_equal(wbuf_get_u8(b, &v8), 0);
	assert_int_equal(v8, 2);
	assert_int_equal(wbuf_expect_end(b), 0);
	wbuf_free(b);
}

static void
test_size_limit(void **state)
{
	struct wbuf *b = wbuf_new();
	unsigned char *p, *big;
	uint8_t v8;

	(void)state;
	assert_non_null(b);
	/* One reserve over the limit, and lengths near SIZE_MAX. */
	p = (unsigned char *)&v8;
	assert_int_equal(wbuf_reserve(b, WBUF_SIZE_MAX + 1, &p), MTLS_ERR_FRAME_TOO_LARGE);
	assert_null(p);
	assert_int_equal(wbuf_reserve(b, SIZE_MAX, &p), MTLS_ERR_FRAME_TOO_LARGE);
	assert_int_equal(wbuf_reserve(b, SIZE_MAX - 3, &p), MTLS_ERR_FRAME_TOO_LARGE);
	assert_int_equal(wbuf_put_string(b, "", SIZE_MAX - 3), MTLS_ERR_FRAME_TOO_LARGE);
	assert_int_equal(wbuf_put_string(b, "", WBUF_SIZE_MAX - 3), MTLS_ERR_FRAME_TOO_LARGE);
	assert_int_equal(wbuf_len(b), 0);

	/* Growing step by step up to exactly the limit works ... */
	assert_int_equal(wbuf_put_u8(b, 0xaa), 0);
	assert_int_equal(wbuf_reserve(b, WBUF_SIZE_MAX - 2, &p), 0);
	assert_non_null(p);
	memset(p, 0x5a, WBUF_SIZE_MAX - 2);
	assert_int_equal(wbuf_put_u8(b, 0xbb), 0);
	assert_int_equal(wbuf_len(b), WBUF_SIZE_MAX);
	/* ... one more byte does not, and leaves the contents alone. */
	assert_int_equal(wbuf_put_u8(b, 0xcc), MTLS_ERR_FRAME_TOO_LARGE);
	assert_int_equal(wbuf_put_u32(b, 1), MTLS_ERR_FRAME_TOO_LARGE);
	assert_int_equal(wbuf_put_string(b, NULL, 0), MTLS_ERR_FRAME_TOO_LARGE);
	assert_int_equal(wbuf_len(b), WBUF_SIZE_MAX);
	assert_int_equal(wbuf_ptr(b)[0], 0xaa);
	assert_int_equal(wbuf_ptr(b)[1], 0x5a);
	assert_int_equal(wbuf_ptr(b)[WBUF_SIZE_MAX - 2], 0x5a);
	assert_int_equal(wbuf_ptr(b)[WBUF_SIZE_MAX - 1], 0xbb);
	wbuf_free(b);

	/* wbuf_from of too much data fails cleanly. */
	big = calloc(1, WBUF_SIZE_MAX + 1);
	assert_non_null(big);
	assert_null(wbuf_from(big, WBUF_SIZE_MAX + 1));
	b = wbuf_from(big, WBUF_SIZE_MAX);
	assert_non_null(b);
	assert_int_equal(wbuf_len(b), WBUF_SIZE_MAX);
	wbuf_free(b);
	free(big);
}

static void
test_reserve_unreserve_consume(void **state)
{
	struct wbuf *b = wbuf_new();
	unsigned char *p;
	uint8_t v8;

	(void)state;
	assert_non_null(b);
	assert_int_equal(wbuf_reserve(b, 0, &p), 0);
	assert_int_equal(wbuf_len(b), 0);
	assert_int_equal(wbuf_reserve(b, 10, &p), 0);
	assert_non_null(p);
	memcpy(p, "0123456789", 10);
	assert_contents(b, (const unsigned char *)"0123456789", 10);
	/* Reserve with no pointer wanted. */
	assert_int_equal(wbuf_reserve(b, 2, NULL), 0);
	assert_int_equal(wbuf_len(b), 12);
	assert_int_equal(wbuf_unreserve(b, 2), 0);
	assert_contents(b, (const unsigned char *)"0123456789", 10);
	assert_int_equal(wbuf_unreserve(b, 3), 0);
	assert_contents(b, (const unsigned char *)"0123456", 7);
	/* Cannot drop more than is there. */
	assert_int_equal(wbuf_unreserve(b, 8), MTLS_ERR_INVALID_ARGUMENT);
	assert_contents(b, (const unsigned char *)"0123456", 7);

	assert_int_equal(wbuf_consume(b, 0), 0);
	assert_int_equal(wbuf_consume(b, 2), 0);
	assert_contents(b, (const unsigned char *)"23456", 5);
	/* unreserve only counts unconsumed bytes. */
	assert_int_equal(wbuf_unreserve(b, 6), MTLS_ERR_INVALID_ARGUMENT);
	assert_contents(b, (const unsigned char *)"23456", 5);
	assert_int_equal(wbuf_unreserve(b, 1), 0);
	assert_contents(b, (const unsigned char *)"2345", 4);
	assert_int_equal(wbuf_consume(b, 5), MTLS_ERR_TRUNCATED);
	assert_contents(b, (const unsigned char *)"2345", 4);
	assert_int_equal(wbuf_get(b, NULL, 1), 0); /* skip without copying */
	assert_contents(b, (const unsigned char *)"345", 3);
	assert_int_equal(wbuf_consume(b, 3), 0);
	assert_int_equal(wbuf_len(b), 0);
	assert_int_equal(wbuf_get_u8(b, &v8), MTLS_ERR_TRUNCATED);

	/* Reset drops everything and the buffer is reusable. */
	assert_int_equal(wbuf_put(b, "abc", 3), 0);
	wbuf_reset(b);
	assert_int_equal(wbuf_len(b), 0);
	assert_int_equal(wbuf_put(b, "xy", 2), 0);
	assert_contents(b, (const unsigned char *)"xy", 2);
	wbuf_free(b);
}

/*
 * Consume part, then put enough to force growth (and so the compaction
 * of consumed bytes): the unconsumed bytes must come through intact and
 * in order.  Done many rounds so the consumed front is non-trivial.
 */
static void
test_interleaved_compaction(void **state)
{
	struct wbuf *b = wbuf_new();
	uint32_t next_put = 0, next_get = 0, v;
	size_t round, i;

	(void)state;
	assert_non_null(b);
	for (round = 0; round < 200; round++) {
		/* Puts grow faster than gets, so the buffer grows over time. */
		for (i = 0; i < 7 + round % 13; i++)
			assert_int_equal(wbuf_put_u32(b, next_put++), 0);
		for (i = 0; i < 5 + round % 7; i++) {
			if (next_get == next_put)
				break;
			assert_int_equal(wbuf_get_u32(b, &v), 0);
			assert_int_equal(v, next_get);
			next_get++;
		}
		assert_int_equal(wbuf_len(b), 4 * (size_t)(next_put - next_get));
	}
	while (next_get < next_put) {
		assert_int_equal(wbuf_get_u32(b, &v), 0);
		assert_int_equal(v, next_get);
		next_get++;
	}
	assert_int_equal(wbuf_expect_end(b), 0);
	wbuf_free(b);

	/* A targeted case: consume most of a full 256-byte block, then put
	 * more than is free at the end. */
	b = wbuf_new();
	assert_non_null(b);
	for (i = 0; i < 256; i++)
		assert_int_equal(wbuf_put_u8(b, (uint8_t)i), 0);
	assert_int_equal(wbuf_consume(b, 250), 0);
	for (i = 0; i < 100; i++)
		assert_int_equal(wbuf_put_u8(b, (uint8_t)(0x80 ^ i)), 0);
	assert_int_equal(wbuf_len(b), 106);
	for (i = 0; i < 6; i++)
		assert_int_equal(wbuf_ptr(b)[i], 250 + i);
	for (i = 0; i < 100; i++)
		assert_int_equal(wbuf_ptr(b)[6 + i], 0x80 ^ i);
	wbuf_free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_empty),
		cmocka_unit_test(test_free_null),
		cmocka_unit_test(test_int_roundtrip),
		cmocka_unit_test(test_big_endian_layout),
		cmocka_unit_test(test_string_roundtrip),
		cmocka_unit_test(test_string_max_exact),
		cmocka_unit_test(test_truncated_ints),
		cmocka_unit_test(test_truncated_string),
		cmocka_unit_test(test_string_length_overflow),
		cmocka_unit_test(test_string_max_bound),
		cmocka_unit_test(test_cstring_nul),
		cmocka_unit_test(test_expect_end),
		cmocka_unit_test(test_size_limit),
		cmocka_unit_test(test_reserve_unreserve_consume),
		cmocka_unit_test(test_interleaved_compaction),
	};

	/* A growth bug can loop forever: the default SIGALRM action ends
	 * the run instead of hanging the suite. */
	alarm(120);
	return cmocka_run_group_tests_name("wbuf", tests, NULL, NULL);
}
