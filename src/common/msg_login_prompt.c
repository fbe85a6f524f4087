/*
 * msg_login_prompt.c - LOGIN_PROMPT (14): log in with a PIN the agent asks
 * a person for itself, through its askpass program, so that a client with
 * no way to ask (the PKCS#11 front end called with a protected
 * authentication path) never sees the PIN.
 *
 * request: string identity (0-256 bytes, no NUL; "" = the only token)
 * reply:   (empty)
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

int
msg_login_prompt_req_put(struct wbuf *b, const struct msg_login_prompt_req *m)
{
	int r;

	if ((r = wbuf_put_u8(b, MSG_LOGIN_PROMPT)) != 0 ||
	    (r = wbuf_put_cstring(b, m->identity != NULL ? m->identity : "")) != 0)
		return r;
	return 0;
}

int
msg_login_prompt_req_get(struct wbuf *b, struct msg_login_prompt_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->identity, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		msg_login_prompt_req_clear(m);
	return r;
}

void
msg_login_prompt_req_clear(struct msg_login_prompt_req *m)
{
	free(m->identity);
	memset(m, 0, sizeof(*m));
}
