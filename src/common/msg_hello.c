/*
 * msg_hello.c - HELLO: version negotiation.
 *
 * request:  u32 min_version, u32 max_version, string client
 * reply:    u32 version, string agent
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

int
msg_hello_req_put(struct wbuf *b, const struct msg_hello_req *m)
{
	int r;

	if ((r = wbuf_put_u8(b, MSG_HELLO)) != 0 || (r = wbuf_put_u32(b, m->min_version)) != 0 ||
	    (r = wbuf_put_u32(b, m->max_version)) != 0 || (r = wbuf_put_cstring(b, m->client)) != 0)
		return r;
	return 0;
}

int
msg_hello_req_get(struct wbuf *b, struct msg_hello_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_u32(b, &m->min_version)) != 0 ||
	    (r = wbuf_get_u32(b, &m->max_version)) != 0 ||
	    (r = wbuf_get_cstring(b, &m->client, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->min_version > m->max_version)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_hello_req_clear(m);
	return r;
}

void
msg_hello_req_clear(struct msg_hello_req *m)
{
	free(m->client);
	memset(m, 0, sizeof(*m));
}

int
msg_hello_resp_put(struct wbuf *b, const struct msg_hello_resp *m)
{
	int r;

	if ((r = wbuf_put_u8(b, MSG_HELLO | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_u32(b, m->version)) != 0 || (r = wbuf_put_cstring(b, m->agent)) != 0)
		return r;
	return 0;
}

int
msg_hello_resp_get(struct wbuf *b, struct msg_hello_resp *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_u32(b, &m->version)) != 0 ||
	    (r = wbuf_get_cstring(b, &m->agent, MTLS_TEXT_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		msg_hello_resp_clear(m);
	return r;
}

void
msg_hello_resp_clear(struct msg_hello_resp *m)
{
	free(m->agent);
	memset(m, 0, sizeof(*m));
}
