/*
 * msg_keygen.c - KEYGEN (enrollment: a key pair generated on a token).
 *
 * request:  string token (pkcs11: URI, "" = the only token),
 *           string label (1-64 bytes), u8 kind (MTLS_AGENT_KEYGEN_*)
 * reply:    string name, string key_id (1-256 bytes),
 *           string spki (DER SubjectPublicKeyInfo, 1-MTLS_SPKI_MAX bytes)
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

int
msg_keygen_kind_known(uint8_t kind)
{
	return kind >= MTLS_AGENT_KEYGEN_EC_P256 && kind <= MTLS_AGENT_KEYGEN_RSA_4096;
}

int
msg_keygen_req_put(struct wbuf *b, const struct msg_keygen_req *m)
{
	int r;

	if (!msg_keygen_kind_known(m->kind) || m->label == NULL || m->label[0] == '\0' ||
	    strlen(m->label) > 64 || m->token == NULL || strlen(m->token) > MTLS_TEXT_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_KEYGEN)) != 0 || (r = wbuf_put_cstring(b, m->token)) != 0 ||
	    (r = wbuf_put_cstring(b, m->label)) != 0 || (r = wbuf_put_u8(b, m->kind)) != 0)
		return r;
	return 0;
}

int
msg_keygen_req_get(struct wbuf *b, struct msg_keygen_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->token, MTLS_TEXT_MAX)) != 0 ||
	    (r = wbuf_get_cstring(b, &m->label, 64)) != 0 || (r = wbuf_get_u8(b, &m->kind)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->label[0] == '\0' || !msg_keygen_kind_known(m->kind))
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_keygen_req_clear(m);
	return r;
}

void
msg_keygen_req_clear(struct msg_keygen_req *m)
{
	free(m->token);
	free(m->label);
	memset(m, 0, sizeof(*m));
}

int
msg_keygen_resp_put(struct wbuf *b, const struct msg_keygen_resp *m)
{
	int r;

	if (m->name == NULL || m->key_id_len == 0 || m->key_id_len > MTLS_NAME_MAX ||
	    m->spki_len == 0 || m->spki_len > MTLS_SPKI_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_KEYGEN | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_cstring(b, m->name)) != 0 ||
	    (r = wbuf_put_string(b, m->key_id, m->key_id_len)) != 0 ||
	    (r = wbuf_put_string(b, m->spki, m->spki_len)) != 0)
		return r;
	return 0;
}

int
msg_keygen_resp_get(struct wbuf *b, struct msg_keygen_resp *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->name, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_string(b, &m->key_id, &m->key_id_len, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_string(b, &m->spki, &m->spki_len, MTLS_SPKI_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->name[0] == '\0' || m->key_id_len == 0 || m->spki_len == 0)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_keygen_resp_clear(m);
	return r;
}

void
msg_keygen_resp_clear(struct msg_keygen_resp *m)
{
	free(m->name);
	free(m->key_id);
	free(m->spki);
	memset(m, 0, sizeof(*m));
}
