/*
 * msg_sign.c - SIGN.
 *
 * request:  string identity, u16 scheme, u8 purpose, string content
 *           [string transcript]   (optional, 1..MTLS_CONTENT_MAX bytes)
 * reply:    string signature
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "secmem.h"

int
msg_sign_req_put(struct wbuf *b, const struct msg_sign_req *m)
{
	int r;

	if (m->content_len > MTLS_CONTENT_MAX)
		return MTLS_ERR_FRAME_TOO_LARGE;
	if ((r = wbuf_put_u8(b, MSG_SIGN)) != 0 || (r = wbuf_put_cstring(b, m->identity)) != 0 ||
	    (r = wbuf_put_u16(b, m->scheme)) != 0 || (r = wbuf_put_u8(b, m->purpose)) != 0 ||
	    (r = wbuf_put_string(b, m->content, m->content_len)) != 0)
		return r;
	/* Absent unless given: older agents refuse trailing bytes. */
	if (m->transcript != NULL && m->transcript_len > 0 &&
	    (r = wbuf_put_string(b, m->transcript, m->transcript_len)) != 0)
		return r;
	return 0;
}

int
msg_sign_req_get(struct wbuf *b, struct msg_sign_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->identity, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_u16(b, &m->scheme)) != 0 || (r = wbuf_get_u8(b, &m->purpose)) != 0 ||
	    (r = wbuf_get_string(b, &m->content, &m->content_len, MTLS_CONTENT_MAX)) != 0)
		goto out;
	if (wbuf_len(b) > 0) {
		if ((r = wbuf_get_string(b, &m->transcript, &m->transcript_len,
					 MTLS_CONTENT_MAX)) != 0)
			goto out;
		if (m->transcript_len == 0) {
			r = MTLS_ERR_BAD_REQUEST;
			goto out;
		}
	}
	r = wbuf_expect_end(b);
out:
	if (r != 0)
		msg_sign_req_clear(m);
	return r;
}

void
msg_sign_req_clear(struct msg_sign_req *m)
{
	free(m->identity);
	/* Content is not secret, but a transcript is nobody else's business. */
	mtls_freezero(m->content, m->content_len);
	mtls_freezero(m->transcript, m->transcript_len);
	memset(m, 0, sizeof(*m));
}

int
msg_sign_resp_put(struct wbuf *b, const struct msg_sign_resp *m)
{
	int r;

	if ((r = wbuf_put_u8(b, MSG_SIGN | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_string(b, m->sig, m->sig_len)) != 0)
		return r;
	return 0;
}

int
msg_sign_resp_get(struct wbuf *b, struct msg_sign_resp *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_string(b, &m->sig, &m->sig_len, MTLS_SIG_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->sig_len == 0)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_sign_resp_clear(m);
	return r;
}

void
msg_sign_resp_clear(struct msg_sign_resp *m)
{
	free(m->sig);
	memset(m, 0, sizeof(*m));
}
