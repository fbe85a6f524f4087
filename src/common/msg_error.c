/*
 * msg_error.c - ERROR replies.
 *
 * reply:  u32 code (the positive value of an MTLS_ERR_*), u32 retries
 *         (PIN tries left, 0xffffffff = unknown), string message
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define RETRIES_UNKNOWN 0xffffffffU

int
msg_error_put(struct wbuf *b, const struct msg_error *m)
{
	int r;

	if (m->code >= 0 || m->code < MTLS_ERR_LAST_)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_ERROR)) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)-m->code)) != 0 ||
	    (r = wbuf_put_u32(b, m->retries < 0 ? RETRIES_UNKNOWN : (uint32_t)m->retries)) != 0 ||
	    (r = wbuf_put_cstring(b, m->message)) != 0)
		return r;
	return 0;
}

int
msg_error_get(struct wbuf *b, struct msg_error *m)
{
	uint32_t code, retries;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_u32(b, &code)) != 0 || (r = wbuf_get_u32(b, &retries)) != 0 ||
	    (r = wbuf_get_cstring(b, &m->message, MTLS_TEXT_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	/* A code we do not know (or 0, which is no error) is the peer's bug. */
	if (code == 0 || code > (uint32_t)-MTLS_ERR_LAST_) {
		r = MTLS_ERR_BAD_REQUEST;
		goto out;
	}
	m->code = -(int)code;
	m->retries = retries == RETRIES_UNKNOWN || retries > 1000 ? -1 : (int)retries;
out:
	if (r != 0)
		msg_error_clear(m);
	return r;
}

void
msg_error_clear(struct msg_error *m)
{
	free(m->message);
	memset(m, 0, sizeof(*m));
}
