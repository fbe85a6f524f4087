/*
 * msg_import.c - IMPORT_CERT (enrollment: a certificate written onto the
 * token next to its private key).
 *
 * request:  string certificate (DER, 1-MTLS_CERT_MAX bytes),
 *           u8 flags (MTLS_AGENT_IMPORT_*)
 * reply:    string name (the identity the certificate makes)
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

int
msg_import_req_put(struct wbuf *b, const struct msg_import_req *m)
{
	int r;

	if (m->cert_len == 0 || m->cert_len > MTLS_CERT_MAX || (m->flags & ~IMPORT_FLAGS_KNOWN))
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_IMPORT_CERT)) != 0 ||
	    (r = wbuf_put_string(b, m->cert, m->cert_len)) != 0 ||
	    (r = wbuf_put_u8(b, m->flags)) != 0)
		return r;
	return 0;
}

int
msg_import_req_get(struct wbuf *b, struct msg_import_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_string(b, &m->cert, &m->cert_len, MTLS_CERT_MAX)) != 0 ||
	    (r = wbuf_get_u8(b, &m->flags)) != 0 || (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->cert_len == 0 || (m->flags & ~IMPORT_FLAGS_KNOWN))
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_import_req_clear(m);
	return r;
}

void
msg_import_req_clear(struct msg_import_req *m)
{
	free(m->cert);
	memset(m, 0, sizeof(*m));
}

int
msg_import_resp_put(struct wbuf *b, const struct msg_import_resp *m)
{
	int r;

	if (m->name == NULL || m->name[0] == '\0')
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_IMPORT_CERT | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_cstring(b, m->name)) != 0)
		return r;
	return 0;
}

int
msg_import_resp_get(struct wbuf *b, struct msg_import_resp *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->name, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->name[0] == '\0')
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_import_resp_clear(m);
	return r;
}

void
msg_import_resp_clear(struct msg_import_resp *m)
{
	free(m->name);
	memset(m, 0, sizeof(*m));
}
