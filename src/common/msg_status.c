/*
 * msg_status.c - STATUS.
 *
 * request:  (empty)
 * reply:    string version, u32 pid, u32 uptime, u32 connections,
 *           u32 identities, u32 tokens_present, u32 tokens_logged_in,
 *           [u32 identities_expiring]
 *           (the last only when not 0: clients from before it still take the
 *           reply of an agent with nothing expiring, and every reply has one
 *           encoding)
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

int
msg_status_req_put(struct wbuf *b)
{
	return wbuf_put_u8(b, MSG_STATUS);
}

int
msg_status_resp_put(struct wbuf *b, const struct mtls_agent_status *m)
{
	int r;

	if ((r = wbuf_put_u8(b, MSG_STATUS | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_cstring(b, m->version)) != 0 || (r = wbuf_put_u32(b, m->pid)) != 0 ||
	    (r = wbuf_put_u32(b, m->uptime)) != 0 || (r = wbuf_put_u32(b, m->connections)) != 0 ||
	    (r = wbuf_put_u32(b, m->identities)) != 0 ||
	    (r = wbuf_put_u32(b, m->tokens_present)) != 0 ||
	    (r = wbuf_put_u32(b, m->tokens_logged_in)) != 0)
		return r;
	if (m->identities_expiring != 0 && (r = wbuf_put_u32(b, m->identities_expiring)) != 0)
		return r;
	return 0;
}

int
msg_status_resp_get(struct wbuf *b, struct mtls_agent_status *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->version, MTLS_TEXT_MAX)) != 0 ||
	    (r = wbuf_get_u32(b, &m->pid)) != 0 || (r = wbuf_get_u32(b, &m->uptime)) != 0 ||
	    (r = wbuf_get_u32(b, &m->connections)) != 0 ||
	    (r = wbuf_get_u32(b, &m->identities)) != 0 ||
	    (r = wbuf_get_u32(b, &m->tokens_present)) != 0 ||
	    (r = wbuf_get_u32(b, &m->tokens_logged_in)) != 0)
		goto out;
	/* Fewer bytes than the field are not a short field but trailing ones. */
	if (wbuf_len(b) >= 4) {
		if ((r = wbuf_get_u32(b, &m->identities_expiring)) != 0)
			goto out;
		if (m->identities_expiring == 0) {
			r = MTLS_ERR_BAD_REQUEST; /* 0 is sent as nothing */
			goto out;
		}
	}
	r = wbuf_expect_end(b);
out:
	if (r != 0)
		mtls_agent_status_clear(m);
	return r;
}

void
mtls_agent_status_clear(struct mtls_agent_status *st)
{
	if (st == NULL)
		return;
	free(st->version);
	memset(st, 0, sizeof(*st));
}
