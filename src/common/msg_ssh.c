/*
 * msg_ssh.c - the SSH agent protocol's messages (see msg_ssh.h).
 *
 * request:  SIGN_REQUEST   string key blob, string data, u32 flags
 *           LOCK, UNLOCK   string passphrase
 *           EXTENSION      string name, contents (the rest)
 *           session-bind@openssh.com contents: string host key, string
 *                          session id, string signature, bool forwarding
 * reply:    IDENTITIES_ANSWER  u32 n, n x (string key blob, string comment)
 *           SIGN_RESPONSE      string signature blob
 *           FAILURE, SUCCESS   nothing
 */
#include "config.h"

#include <string.h>

#include "msg_ssh.h"
#include "secmem.h"

int
ssh_str_eq(const unsigned char *p, size_t len, const char *s)
{
	return p != NULL && strlen(s) == len && memcmp(p, s, len) == 0;
}

int
msg_ssh_empty_get(struct wbuf *b)
{
	return wbuf_expect_end(b);
}

int
msg_ssh_sign_req_get(struct wbuf *b, struct msg_ssh_sign_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_string_direct(b, &m->key, &m->key_len, SSH_KEY_BLOB_MAX)) != 0 ||
	    (r = wbuf_get_string_direct(b, &m->data, &m->data_len, SSH_DATA_MAX)) != 0 ||
	    (r = wbuf_get_u32(b, &m->flags)) != 0 || (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->key_len == 0)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		memset(m, 0, sizeof(*m));
	return r;
}

int
msg_ssh_sign_req_put(struct wbuf *b, const struct msg_ssh_sign_req *m)
{
	int r;

	if ((r = wbuf_put_u8(b, SSH_AGENTC_SIGN_REQUEST)) != 0 ||
	    (r = wbuf_put_string(b, m->key, m->key_len)) != 0 ||
	    (r = wbuf_put_string(b, m->data, m->data_len)) != 0 ||
	    (r = wbuf_put_u32(b, m->flags)) != 0)
		return r;
	return 0;
}

int
msg_ssh_lock_get(struct wbuf *b, char **pass)
{
	const unsigned char *p;
	size_t len;
	char *s;
	int r;

	*pass = NULL;
	if ((r = wbuf_get_string_direct(b, &p, &len, SSH_PASS_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		return r;
	if (len > 0 && memchr(p, '\0', len) != NULL)
		return MTLS_ERR_STRING_NUL;
	if ((s = mtls_secure_alloc(len + 1)) == NULL)
		return MTLS_ERR_ALLOC;
	if (len > 0)
		memcpy(s, p, len);
	s[len] = '\0';
	*pass = s;
	return 0;
}

int
msg_ssh_ext_get(struct wbuf *b, struct msg_ssh_ext *m)
{
	const unsigned char *p;
	size_t len;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_string_direct(b, &p, &len, SSH_NAME_MAX)) != 0)
		return r;
	if (len == 0 || memchr(p, '\0', len) != NULL)
		return MTLS_ERR_BAD_REQUEST;
	memcpy(m->name, p, len);
	m->name[len] = '\0';
	m->rest = wbuf_ptr(b);
	m->rest_len = wbuf_len(b);
	/* The contents belong to the extension's own decoder. */
	return 0;
}

int
msg_ssh_session_bind_get(struct wbuf *b, struct msg_ssh_session_bind *m)
{
	uint8_t fwd = 0;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_string_direct(b, &m->hostkey, &m->hostkey_len, SSH_KEY_BLOB_MAX)) != 0 ||
	    (r = wbuf_get_string_direct(b, &m->session_id, &m->session_id_len,
					SSH_SESSION_ID_MAX)) != 0 ||
	    (r = wbuf_get_string_direct(b, &m->sig, &m->sig_len, SSH_SIG_BLOB_MAX)) != 0 ||
	    (r = wbuf_get_u8(b, &fwd)) != 0 || (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->hostkey_len == 0 || m->session_id_len == 0 || m->sig_len == 0 || fwd > 1) {
		r = MTLS_ERR_BAD_REQUEST;
		goto out;
	}
	m->forwarding = fwd;
out:
	if (r != 0)
		memset(m, 0, sizeof(*m));
	return r;
}

int
msg_ssh_status_put(struct wbuf *b, uint8_t type)
{
	return wbuf_put_u8(b, type);
}

int
msg_ssh_identities_put(struct wbuf *b, const struct msg_ssh_ident *ids, size_t n)
{
	size_t i;
	int r;

	if (n > SSH_IDS_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, SSH_AGENT_IDENTITIES_ANSWER)) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)n)) != 0)
		return r;
	for (i = 0; i < n; i++)
		if ((r = wbuf_put_string(b, ids[i].key, ids[i].key_len)) != 0 ||
		    (r = wbuf_put_cstring(b, ids[i].comment)) != 0)
			return r;
	return 0;
}

int
msg_ssh_identities_get(struct wbuf *b, struct msg_ssh_ident *ids, size_t max, size_t *n)
{
	const unsigned char *c;
	size_t i, clen;
	uint32_t count;
	int r;

	*n = 0;
	if ((r = wbuf_get_u32(b, &count)) != 0)
		return r;
	if (count > max || count > SSH_IDS_MAX)
		return MTLS_ERR_BAD_REQUEST;
	for (i = 0; i < count; i++) {
		if ((r = wbuf_get_string_direct(b, &ids[i].key, &ids[i].key_len,
						SSH_KEY_BLOB_MAX)) != 0 ||
		    (r = wbuf_get_string_direct(b, &c, &clen, SSH_USER_MAX)) != 0)
			return r;
		/* Comments are not NUL-terminated on the wire: not kept. */
		ids[i].comment = NULL;
	}
	if ((r = wbuf_expect_end(b)) != 0)
		return r;
	*n = count;
	return 0;
}

int
msg_ssh_sign_resp_put(struct wbuf *b, const unsigned char *sig, size_t len)
{
	int r;

	if (len == 0 || len > SSH_SIG_BLOB_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, SSH_AGENT_SIGN_RESPONSE)) != 0 ||
	    (r = wbuf_put_string(b, sig, len)) != 0)
		return r;
	return 0;
}

int
msg_ssh_query_resp_put(struct wbuf *b, const char *const *names, size_t n)
{
	size_t i;
	int r;

	if ((r = wbuf_put_u8(b, SSH_AGENT_SUCCESS)) != 0)
		return r;
	for (i = 0; i < n; i++)
		if ((r = wbuf_put_cstring(b, names[i])) != 0)
			return r;
	return 0;
}
