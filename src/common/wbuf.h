/*
 * wbuf - the one bounds-checked wire buffer.
 *
 * Every byte that crosses the agent socket is read and written through this
 * module; nobody else does pointer arithmetic on wire data.  A wbuf holds
 * bytes [off, len) not yet consumed.  All integers are big-endian.  Every
 * function returns 0 or a negative MTLS_ERR_* code and leaves the buffer
 * unchanged on failure.  Buffers are wiped when freed or grown, since
 * they may carry a PIN.
 */
#ifndef MTLS_WBUF_H
#define MTLS_WBUF_H

#include <stddef.h>
#include <stdint.h>

#include "mtls-agent.h"

#define WUR __attribute__((warn_unused_result))

/* Largest size any wbuf may grow to (the frame limit plus its header). */
#define WBUF_SIZE_MAX (1024 * 1024 + 4)

struct wbuf;

/* New empty buffer; NULL on allocation failure. */
struct wbuf *wbuf_new(void);
/* New buffer holding a copy of data[0..len); NULL on failure. */
struct wbuf *wbuf_from(const void *data, size_t len);
/* Wipes and frees; accepts NULL. */
void wbuf_free(struct wbuf *b);
/* Drops all contents (wiped) and keeps the allocation. */
void wbuf_reset(struct wbuf *b);

/* Bytes not yet consumed. */
size_t wbuf_len(const struct wbuf *b);
/* Pointer to the unconsumed bytes; valid until the next change. */
const unsigned char *wbuf_ptr(const struct wbuf *b);
/* Reserves `len` writable bytes at the end; *dp points at them. */
WUR int wbuf_reserve(struct wbuf *b, size_t len, unsigned char **dp);
/* Drops the last `len` bytes (undoes part of a reserve). */
WUR int wbuf_unreserve(struct wbuf *b, size_t len);
/* Marks `len` bytes at the front as consumed. */
WUR int wbuf_consume(struct wbuf *b, size_t len);
/* 0 if everything was consumed, MTLS_ERR_TRAILING_DATA otherwise. */
WUR int wbuf_expect_end(const struct wbuf *b);

WUR int wbuf_put(struct wbuf *b, const void *data, size_t len);
WUR int wbuf_put_u8(struct wbuf *b, uint8_t v);
WUR int wbuf_put_u16(struct wbuf *b, uint16_t v);
WUR int wbuf_put_u32(struct wbuf *b, uint32_t v);
/* u32 length followed by the bytes. */
WUR int wbuf_put_string(struct wbuf *b, const void *data, size_t len);
/* A C string as a string (without its NUL); NULL is put as "". */
WUR int wbuf_put_cstring(struct wbuf *b, const char *s);

WUR int wbuf_get(struct wbuf *b, void *out, size_t len);
WUR int wbuf_get_u8(struct wbuf *b, uint8_t *v);
WUR int wbuf_get_u16(struct wbuf *b, uint16_t *v);
WUR int wbuf_get_u32(struct wbuf *b, uint32_t *v);
WUR int wbuf_peek_u32(const struct wbuf *b, uint32_t *v);
/* Reads a string without copying: *dp points into the buffer and stays
 * valid until the buffer changes.  `max` bounds the length (0: none). */
WUR int wbuf_get_string_direct(struct wbuf *b, const unsigned char **dp, size_t *lenp, size_t max);
/* Reads a string into a new malloc'd copy (NUL-terminated for
 * convenience; *lenp excludes it).  `max` bounds the length (0: none). */
WUR int wbuf_get_string(struct wbuf *b, unsigned char **dp, size_t *lenp, size_t max);
/* Reads a string that must not contain NUL into a new C string. */
WUR int wbuf_get_cstring(struct wbuf *b, char **sp, size_t max);

/*
 * SSH mpint (RFC 4251 section 5) of a non-negative number given as
 * big-endian bytes: leading zeros dropped, a zero byte added when the top
 * bit is set.  The getter accepts only that canonical, non-negative form
 * and points *dp at the magnitude (no leading zero; *lenp 0 for zero).
 */
WUR int wbuf_put_mpint(struct wbuf *b, const unsigned char *be, size_t len);
WUR int wbuf_get_mpint_direct(struct wbuf *b, const unsigned char **dp, size_t *lenp, size_t max);

#endif
