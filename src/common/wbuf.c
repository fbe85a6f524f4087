/*
 * wbuf.c - bounds-checked wire buffer.  See wbuf.h.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "secmem.h"
#include "wbuf.h"

struct wbuf {
	unsigned char *d; /* storage */
	size_t off;	  /* first unconsumed byte */
	size_t size;	  /* end of valid data */
	size_t alloc;	  /* bytes allocated */
};

struct wbuf *
wbuf_new(void)
{
	return calloc(1, sizeof(struct wbuf));
}

struct wbuf *
wbuf_from(const void *data, size_t len)
{
	struct wbuf *b;

	if ((b = wbuf_new()) == NULL)
		return NULL;
	if (wbuf_put(b, data, len) != 0) {
		wbuf_free(b);
		return NULL;
	}
	return b;
}

void
wbuf_free(struct wbuf *b)
{
	if (b == NULL)
		return;
	if (b->d != NULL)
		mtls_freezero(b->d, b->alloc);
	free(b);
}

void
wbuf_reset(struct wbuf *b)
{
	if (b->d != NULL)
		mtls_wipe(b->d, b->alloc);
	b->off = b->size = 0;
}

size_t
wbuf_len(const struct wbuf *b)
{
	return b->size - b->off;
}

const unsigned char *
wbuf_ptr(const struct wbuf *b)
{
	static const unsigned char empty[1];

	return b->d == NULL ? empty : b->d + b->off;
}

int
wbuf_reserve(struct wbuf *b, size_t len, unsigned char **dp)
{
	unsigned char *nd;
	size_t need, nalloc;

	if (dp != NULL)
		*dp = NULL;
	/* Live bytes only: consumed ones at the front are compacted away. */
	if (len > WBUF_SIZE_MAX || b->size - b->off > WBUF_SIZE_MAX - len)
		return MTLS_ERR_FRAME_TOO_LARGE;
	need = b->size + len;
	if (need > b->alloc) {
		/* Compact first: consumed bytes at the front are dead. */
		if (b->off > 0) {
			memmove(b->d, b->d + b->off, b->size - b->off);
			mtls_wipe(b->d + (b->size - b->off), b->off);
			b->size -= b->off;
			b->off = 0;
			need = b->size + len;
		}
	}
	if (need > WBUF_SIZE_MAX)
		return MTLS_ERR_FRAME_TOO_LARGE; /* not reached; keeps the loop finite */
	if (need > b->alloc) {
		nalloc = b->alloc < 256 ? 256 : b->alloc;
		while (nalloc < need)
			nalloc = nalloc > WBUF_SIZE_MAX / 2 ? WBUF_SIZE_MAX : nalloc * 2;
		/* Not realloc: the old block may hold secrets and is wiped. */
		if ((nd = malloc(nalloc)) == NULL)
			return MTLS_ERR_ALLOC;
		if (b->d != NULL) {
			memcpy(nd, b->d, b->size);
			mtls_freezero(b->d, b->alloc);
		}
		b->d = nd;
		b->alloc = nalloc;
	}
	/* Nothing allocated yet (len 0): no pointer arithmetic on NULL. */
	if (dp != NULL)
		*dp = b->d != NULL ? b->d + b->size : NULL;
	b->size += len;
	return 0;
}

int
wbuf_unreserve(struct wbuf *b, size_t len)
{
	if (len > b->size - b->off)
		return MTLS_ERR_INVALID_ARGUMENT;
	if (len == 0)
		return 0;
	b->size -= len;
	mtls_wipe(b->d + b->size, len);
	return 0;
}

int
wbuf_consume(struct wbuf *b, size_t len)
{
	if (len > b->size - b->off)
		return MTLS_ERR_TRUNCATED;
	b->off += len;
	if (b->off == b->size)
		b->off = b->size = 0;
	return 0;
}

int
wbuf_expect_end(const struct wbuf *b)
{
	return wbuf_len(b) == 0 ? 0 : MTLS_ERR_TRAILING_DATA;
}

int
wbuf_put(struct wbuf *b, const void *data, size_t len)
{
	unsigned char *p;
	int r;

	if ((r = wbuf_reserve(b, len, &p)) != 0)
		return r;
	if (len > 0)
		memcpy(p, data, len);
	return 0;
}

int
wbuf_put_u8(struct wbuf *b, uint8_t v)
{
	return wbuf_put(b, &v, 1);
}

int
wbuf_put_u16(struct wbuf *b, uint16_t v)
{
	unsigned char p[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	return wbuf_put(b, p, sizeof(p));
}

int
wbuf_put_u32(struct wbuf *b, uint32_t v)
{
	unsigned char p[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
			       (unsigned char)(v >> 8), (unsigned char)v };

	return wbuf_put(b, p, sizeof(p));
}

int
wbuf_put_string(struct wbuf *b, const void *data, size_t len)
{
	unsigned char *p;
	int r;

	if (len > WBUF_SIZE_MAX - 4)
		return MTLS_ERR_FRAME_TOO_LARGE;
	if ((r = wbuf_reserve(b, 4 + len, &p)) != 0)
		return r;
	p[0] = (unsigned char)(len >> 24);
	p[1] = (unsigned char)(len >> 16);
	p[2] = (unsigned char)(len >> 8);
	p[3] = (unsigned char)len;
	if (len > 0)
		memcpy(p + 4, data, len);
	return 0;
}

int
wbuf_put_cstring(struct wbuf *b, const char *s)
{
	return wbuf_put_string(b, s == NULL ? "" : s, s == NULL ? 0 : strlen(s));
}

int
wbuf_get(struct wbuf *b, void *out, size_t len)
{
	if (len > wbuf_len(b))
		return MTLS_ERR_TRUNCATED;
	if (out != NULL && len > 0)
		memcpy(out, b->d + b->off, len);
	return wbuf_consume(b, len);
}

int
wbuf_get_u8(struct wbuf *b, uint8_t *v)
{
	return wbuf_get(b, v, 1);
}

int
wbuf_get_u16(struct wbuf *b, uint16_t *v)
{
	unsigned char p[2];
	int r;

	if ((r = wbuf_get(b, p, sizeof(p))) != 0)
		return r;
	*v = (uint16_t)((p[0] << 8) | p[1]);
	return 0;
}

int
wbuf_peek_u32(const struct wbuf *b, uint32_t *v)
{
	const unsigned char *p;

	if (wbuf_len(b) < 4)
		return MTLS_ERR_TRUNCATED;
	p = b->d + b->off;
	*v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
	     (uint32_t)p[3];
	return 0;
}

int
wbuf_get_u32(struct wbuf *b, uint32_t *v)
{
	int r;

	if ((r = wbuf_peek_u32(b, v)) != 0)
		return r;
	return wbuf_consume(b, 4);
}

int
wbuf_get_string_direct(struct wbuf *b, const unsigned char **dp, size_t *lenp, size_t max)
{
	uint32_t len;
	int r;

	if (dp != NULL)
		*dp = NULL;
	if (lenp != NULL)
		*lenp = 0;
	if ((r = wbuf_peek_u32(b, &len)) != 0)
		return r;
	/* Written so it cannot overflow: avail - 4 is safe after the peek. */
	if (wbuf_len(b) - 4 < len)
		return MTLS_ERR_TRUNCATED;
	if (max != 0 && len > max)
		return MTLS_ERR_BAD_REQUEST;
	if (dp != NULL)
		*dp = b->d + b->off + 4;
	if (lenp != NULL)
		*lenp = len;
	return wbuf_consume(b, 4 + (size_t)len);
}

int
wbuf_get_string(struct wbuf *b, unsigned char **dp, size_t *lenp, size_t max)
{
	const unsigned char *p;
	unsigned char *copy;
	size_t len;
	size_t save_off = b->off, save_size = b->size;
	int r;

	*dp = NULL;
	if (lenp != NULL)
		*lenp = 0;
	if ((r = wbuf_get_string_direct(b, &p, &len, max)) != 0)
		return r;
	if ((copy = malloc(len + 1)) == NULL) {
		/* Undo the consume so the buffer is unchanged on failure. */
		b->off = save_off;
		b->size = save_size;
		return MTLS_ERR_ALLOC;
	}
	if (len > 0)
		memcpy(copy, p, len);
	copy[len] = '\0';
	*dp = copy;
	if (lenp != NULL)
		*lenp = len;
	return 0;
}

int
wbuf_get_cstring(struct wbuf *b, char **sp, size_t max)
{
	const unsigned char *p;
	char *s;
	size_t len;
	size_t save_off = b->off, save_size = b->size;
	int r;

	*sp = NULL;
	if ((r = wbuf_get_string_direct(b, &p, &len, max)) != 0)
		return r;
	if (len > 0 && memchr(p, '\0', len) != NULL) {
		r = MTLS_ERR_STRING_NUL;
		goto undo;
	}
	if ((s = malloc(len + 1)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto undo;
	}
	if (len > 0)
		memcpy(s, p, len);
	s[len] = '\0';
	*sp = s;
	return 0;
undo:
	b->off = save_off;
	b->size = save_size;
	return r;
}

int
wbuf_put_mpint(struct wbuf *b, const unsigned char *be, size_t len)
{
	unsigned char *p;
	size_t pad;
	int r;

	while (len > 0 && be[0] == 0) {
		be++;
		len--;
	}
	pad = len > 0 && (be[0] & 0x80) != 0;
	if (len > WBUF_SIZE_MAX - 5)
		return MTLS_ERR_FRAME_TOO_LARGE;
	if ((r = wbuf_reserve(b, 4 + pad + len, &p)) != 0)
		return r;
	p[0] = (unsigned char)((len + pad) >> 24);
	p[1] = (unsigned char)((len + pad) >> 16);
	p[2] = (unsigned char)((len + pad) >> 8);
	p[3] = (unsigned char)(len + pad);
	if (pad)
		p[4] = 0;
	if (len > 0)
		memcpy(p + 4 + pad, be, len);
	return 0;
}

int
wbuf_get_mpint_direct(struct wbuf *b, const unsigned char **dp, size_t *lenp, size_t max)
{
	size_t save_off = b->off, save_size = b->size, len;
	const unsigned char *p;
	int r;

	*dp = NULL;
	*lenp = 0;
	if ((r = wbuf_get_string_direct(b, &p, &len, max == 0 ? 0 : max + 1)) != 0)
		return r;
	/* Negative, or a zero byte that is not needed: not canonical. */
	if ((len > 0 && (p[0] & 0x80) != 0) ||
	    (len > 0 && p[0] == 0 && (len == 1 || (p[1] & 0x80) == 0))) {
		b->off = save_off;
		b->size = save_size;
		return MTLS_ERR_BAD_REQUEST;
	}
	if (len > 0 && p[0] == 0) {
		p++;
		len--;
	}
	if (max != 0 && len > max) {
		b->off = save_off;
		b->size = save_size;
		return MTLS_ERR_BAD_REQUEST;
	}
	*dp = p;
	*lenp = len;
	return 0;
}
