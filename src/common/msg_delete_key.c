/*
 * msg_delete_key.c - DELETE_KEY (enrollment: an identity's key pair and
 * certificate removed from its token).
 *
 * request:  string identity (1-256 bytes), u8 flags (MTLS_AGENT_DELETE_*)
 * reply:    (empty)
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

int
msg_delete_key_req_put(struct wbuf *b, const struct msg_delete_key_req *m)
{
	int r;

	if (m->identity == NULL || m->identity[0] == '\0' || strlen(m->identity) > MTLS_NAME_MAX ||
	    (m->flags & ~DELETE_FLAGS_KNOWN) != 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_DELETE_KEY)) != 0 ||
	    (r = wbuf_put_cstring(b, m->identity)) != 0 || (r = wbuf_put_u8(b, m->flags)) != 0)
		return r;
	return 0;
}

int
msg_delete_key_req_get(struct wbuf *b, struct msg_delete_key_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->identity, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_u8(b, &m->flags)) != 0 || (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->identity[0] == '\0' || (m->flags & ~DELETE_FLAGS_KNOWN) != 0)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_delete_key_req_clear(m);
	return r;
}

void
msg_delete_key_req_clear(struct msg_delete_key_req *m)
{
	free(m->identity);
	memset(m, 0, sizeof(*m));
}
