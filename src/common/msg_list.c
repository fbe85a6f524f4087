/*
 * msg_list.c - LIST.
 *
 * request:  (empty)
 * reply:    u32 count, then count identities, each:
 *             string name, string token_label, string key_label,
 *             string key_id, u8 key_type, u32 key_bits, u32 flags,
 *             u32 purposes, u32 n_schemes, n_schemes x u16 scheme,
 *             string certificate (DER; empty = none),
 *             u32 n_chain, n_chain x string certificate (DER)
 *           [u32 n_keys, n_keys x {u32 index, string spki}]
 *           (public keys of identities with no certificate yet, indexes
 *           ascending; only when there are any, so clients from before it
 *           take every other reply, and every reply has one encoding)
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

int
msg_list_req_put(struct wbuf *b)
{
	return wbuf_put_u8(b, MSG_LIST);
}

int
msg_list_req_get(struct wbuf *b)
{
	return wbuf_expect_end(b);
}

static int
put_identity(struct wbuf *b, const struct mtls_agent_identity *id)
{
	size_t i;
	int r;

	if (id->n_schemes > MTLS_SCHEMES_MAX || id->n_chain > MTLS_CHAIN_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_cstring(b, id->name)) != 0 ||
	    (r = wbuf_put_cstring(b, id->token_label)) != 0 ||
	    (r = wbuf_put_cstring(b, id->key_label)) != 0 ||
	    (r = wbuf_put_string(b, id->key_id, id->key_id_len)) != 0 ||
	    (r = wbuf_put_u8(b, (uint8_t)id->key_type)) != 0 ||
	    (r = wbuf_put_u32(b, id->key_bits)) != 0 || (r = wbuf_put_u32(b, id->flags)) != 0 ||
	    (r = wbuf_put_u32(b, id->purposes)) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)id->n_schemes)) != 0)
		return r;
	for (i = 0; i < id->n_schemes; i++)
		if ((r = wbuf_put_u16(b, id->schemes[i])) != 0)
			return r;
	if ((r = wbuf_put_string(b, id->cert_der, id->cert_der_len)) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)id->n_chain)) != 0)
		return r;
	for (i = 0; i < id->n_chain; i++)
		if ((r = wbuf_put_string(b, id->chain_der[i], id->chain_der_len[i])) != 0)
			return r;
	return 0;
}

int
msg_list_resp_put(struct wbuf *b, const struct msg_list_resp *m)
{
	size_t i;
	int r;

	if (m->n > MTLS_IDS_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_LIST | MSG_REPLY)) != 0 ||
	    (r = wbuf_put_u32(b, (uint32_t)m->n)) != 0)
		return r;
	size_t n_keys = 0;

	for (i = 0; i < m->n; i++)
		if ((r = put_identity(b, &m->ids[i])) != 0)
			return r;
	for (i = 0; i < m->n; i++) {
		if (m->ids[i].spki_der_len == 0)
			continue;
		if (m->ids[i].cert_der_len != 0 || m->ids[i].spki_der_len > MTLS_SPKI_MAX)
			return MTLS_ERR_INVALID_ARGUMENT;
		n_keys++;
	}
	if (n_keys == 0)
		return 0;
	if ((r = wbuf_put_u32(b, (uint32_t)n_keys)) != 0)
		return r;
	for (i = 0; i < m->n; i++)
		if (m->ids[i].spki_der_len > 0 &&
		    ((r = wbuf_put_u32(b, (uint32_t)i)) != 0 ||
		     (r = wbuf_put_string(b, m->ids[i].spki_der, m->ids[i].spki_der_len)) != 0))
			return r;
	return 0;
}

void
identity_clear(struct mtls_agent_identity *id)
{
	size_t i;

	if (id == NULL)
		return;
	free(id->name);
	free(id->token_label);
	free(id->key_label);
	free(id->key_id);
	free(id->schemes);
	free(id->cert_der);
	free(id->spki_der);
	for (i = 0; i < id->n_chain; i++)
		free(id->chain_der[i]);
	free(id->chain_der);
	free(id->chain_der_len);
	memset(id, 0, sizeof(*id));
}

static int
get_identity(struct wbuf *b, struct mtls_agent_identity *id)
{
	uint32_t n, bits;
	uint8_t type;
	size_t i;
	int r;

	if ((r = wbuf_get_cstring(b, &id->name, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_cstring(b, &id->token_label, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_cstring(b, &id->key_label, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_string(b, &id->key_id, &id->key_id_len, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_u8(b, &type)) != 0 || (r = wbuf_get_u32(b, &bits)) != 0 ||
	    (r = wbuf_get_u32(b, &id->flags)) != 0 || (r = wbuf_get_u32(b, &id->purposes)) != 0 ||
	    (r = wbuf_get_u32(b, &n)) != 0)
		return r;
	if (type != MTLS_AGENT_KEY_RSA && type != MTLS_AGENT_KEY_EC)
		return MTLS_ERR_BAD_REQUEST;
	id->key_type = type;
	if (bits > 16384)
		return MTLS_ERR_BAD_REQUEST;
	id->key_bits = bits;
	if (n > MTLS_SCHEMES_MAX)
		return MTLS_ERR_BAD_REQUEST;
	if (n > 0) {
		if ((id->schemes = calloc(n, sizeof(*id->schemes))) == NULL)
			return MTLS_ERR_ALLOC;
		for (i = 0; i < n; i++) {
			if ((r = wbuf_get_u16(b, &id->schemes[i])) != 0)
				return r;
			id->n_schemes = i + 1;
		}
	}
	if ((r = wbuf_get_string(b, &id->cert_der, &id->cert_der_len, MTLS_CERT_MAX)) != 0)
		return r;
	if (id->cert_der_len == 0) {
		free(id->cert_der);
		id->cert_der = NULL;
	}
	if ((r = wbuf_get_u32(b, &n)) != 0)
		return r;
	if (n > MTLS_CHAIN_MAX)
		return MTLS_ERR_BAD_REQUEST;
	if (n > 0) {
		if ((id->chain_der = calloc(n, sizeof(*id->chain_der))) == NULL ||
		    (id->chain_der_len = calloc(n, sizeof(*id->chain_der_len))) == NULL)
			return MTLS_ERR_ALLOC;
		for (i = 0; i < n; i++) {
			if ((r = wbuf_get_string(b, &id->chain_der[i], &id->chain_der_len[i],
						 MTLS_CERT_MAX)) != 0)
				return r;
			id->n_chain = i + 1;
			if (id->chain_der_len[i] == 0)
				return MTLS_ERR_BAD_REQUEST;
		}
	}
	return 0;
}

/* The optional public keys of identities with no certificate. */
static int
get_keys(struct wbuf *b, struct msg_list_resp *m)
{
	uint32_t n, k, idx, last = 0;
	struct mtls_agent_identity *id;
	int r;

	if ((r = wbuf_get_u32(b, &n)) != 0)
		return r;
	if (n == 0 || n > m->n)
		return MTLS_ERR_BAD_REQUEST;
	for (k = 0; k < n; k++) {
		if ((r = wbuf_get_u32(b, &idx)) != 0)
			return r;
		/* Ascending, in range, for an identity with no certificate. */
		if (idx >= m->n || (k > 0 && idx <= last) || m->ids[idx].cert_der != NULL)
			return MTLS_ERR_BAD_REQUEST;
		last = idx;
		id = &m->ids[idx];
		if ((r = wbuf_get_string(b, &id->spki_der, &id->spki_der_len, MTLS_SPKI_MAX)) != 0)
			return r;
		if (id->spki_der_len == 0)
			return MTLS_ERR_BAD_REQUEST;
	}
	return 0;
}

int
msg_list_resp_get(struct wbuf *b, struct msg_list_resp *m)
{
	uint32_t n;
	size_t i;
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_u32(b, &n)) != 0)
		goto out;
	/* Each identity takes well over 32 bytes: refuse counts the frame
	 * cannot hold before allocating for them. */
	if (n > MTLS_IDS_MAX || n > wbuf_len(b) / 32) {
		r = MTLS_ERR_BAD_REQUEST;
		goto out;
	}
	if (n > 0 && (m->ids = calloc(n, sizeof(*m->ids))) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (i = 0; i < n; i++) {
		m->n = i + 1;
		if ((r = get_identity(b, &m->ids[i])) != 0)
			goto out;
	}
	/* Fewer bytes than a count are trailing ones, not a short section. */
	if (wbuf_len(b) >= 4 && (r = get_keys(b, m)) != 0)
		goto out;
	r = wbuf_expect_end(b);
out:
	if (r != 0)
		msg_list_resp_clear(m);
	return r;
}

void
msg_list_resp_clear(struct msg_list_resp *m)
{
	mtls_agent_identities_free(m->ids, m->n);
	memset(m, 0, sizeof(*m));
}

void
mtls_agent_identities_free(struct mtls_agent_identity *ids, size_t n)
{
	size_t i;

	if (ids == NULL)
		return;
	for (i = 0; i < n; i++)
		identity_clear(&ids[i]);
	free(ids);
}
