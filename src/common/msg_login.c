/*
 * msg_login.c - LOGIN and LOGOUT, and the empty replies they get.
 *
 * LOGIN request:   string identity, string pin, [u8 flags]
 *                  (flags only when not 0: a zero byte there is trailing
 *                  data, so every request has exactly one encoding)
 * LOGOUT request:  string identity
 * SET_PIN request: string identity, u8 mode (1 change, 2 unblock),
 *                  string old_pin (or unblocking code), string new_pin
 * LOCK, UNLOCK:    string passphrase (1-256 bytes, no NUL)
 * reply:           (empty)
 *
 * The PIN is copied straight from the frame into secure memory; the frame
 * buffer itself is wiped when freed (wbuf.c).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "secmem.h"

int
msg_pin_put(struct wbuf *b, const char *pin)
{
	if (pin == NULL || strlen(pin) == 0 || strlen(pin) > MTLS_PIN_MAX)
		return MTLS_ERR_PIN_INVALID;
	return wbuf_put_cstring(b, pin);
}

/* Reads a PIN string straight into secure memory. */
int
msg_pin_get(struct wbuf *b, char **pinp)
{
	const unsigned char *pin;
	size_t pin_len;
	int r;

	*pinp = NULL;
	if ((r = wbuf_get_string_direct(b, &pin, &pin_len, 0)) != 0)
		return r;
	if (pin_len == 0 || pin_len > MTLS_PIN_MAX || memchr(pin, '\0', pin_len) != NULL)
		return MTLS_ERR_PIN_INVALID;
	if ((*pinp = mtls_secure_alloc(pin_len + 1)) == NULL)
		return MTLS_ERR_ALLOC;
	memcpy(*pinp, pin, pin_len);
	(*pinp)[pin_len] = '\0';
	return 0;
}

int
msg_login_req_put(struct wbuf *b, const struct msg_login_req *m)
{
	int r;

	if (m->pin == NULL || strlen(m->pin) == 0 || strlen(m->pin) > MTLS_PIN_MAX)
		return MTLS_ERR_PIN_INVALID;
	if ((m->flags & ~LOGIN_FLAGS_KNOWN) != 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_LOGIN)) != 0 || (r = wbuf_put_cstring(b, m->identity)) != 0 ||
	    (r = msg_pin_put(b, m->pin)) != 0)
		return r;
	/* Left out when 0: agents from before the flags take such requests. */
	if (m->flags != 0 && (r = wbuf_put_u8(b, m->flags)) != 0)
		return r;
	return 0;
}

int
msg_login_req_get(struct wbuf *b, struct msg_login_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->identity, MTLS_NAME_MAX)) != 0 ||
	    (r = msg_pin_get(b, &m->pin)) != 0)
		goto out;
	if (wbuf_len(b) > 0) {
		if ((r = wbuf_get_u8(b, &m->flags)) != 0)
			goto out;
		/* Zero is never sent; unknown flags may change what LOGIN
		 * means, so they are refused rather than ignored. */
		if (m->flags == 0) {
			r = MTLS_ERR_TRAILING_DATA;
			goto out;
		}
		if ((m->flags & ~LOGIN_FLAGS_KNOWN) != 0) {
			r = MTLS_ERR_BAD_REQUEST;
			goto out;
		}
	}
	r = wbuf_expect_end(b);
out:
	if (r != 0)
		msg_login_req_clear(m);
	return r;
}

int
msg_set_pin_req_put(struct wbuf *b, const struct msg_set_pin_req *m)
{
	int r;

	if (m->mode != SET_PIN_CHANGE && m->mode != SET_PIN_UNBLOCK)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, MSG_SET_PIN)) != 0 || (r = wbuf_put_cstring(b, m->identity)) != 0 ||
	    (r = wbuf_put_u8(b, m->mode)) != 0 || (r = msg_pin_put(b, m->old_pin)) != 0 ||
	    (r = msg_pin_put(b, m->new_pin)) != 0)
		return r;
	return 0;
}

int
msg_set_pin_req_get(struct wbuf *b, struct msg_set_pin_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->identity, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_get_u8(b, &m->mode)) != 0 || (r = msg_pin_get(b, &m->old_pin)) != 0 ||
	    (r = msg_pin_get(b, &m->new_pin)) != 0 || (r = wbuf_expect_end(b)) != 0)
		goto out;
	if (m->mode != SET_PIN_CHANGE && m->mode != SET_PIN_UNBLOCK)
		r = MTLS_ERR_BAD_REQUEST;
out:
	if (r != 0)
		msg_set_pin_req_clear(m);
	return r;
}

void
msg_set_pin_req_clear(struct msg_set_pin_req *m)
{
	free(m->identity);
	mtls_secure_free(m->old_pin);
	mtls_secure_free(m->new_pin);
	memset(m, 0, sizeof(*m));
}

void
msg_login_req_clear(struct msg_login_req *m)
{
	free(m->identity);
	mtls_secure_free(m->pin);
	memset(m, 0, sizeof(*m));
}

int
msg_logout_req_put(struct wbuf *b, const struct msg_logout_req *m)
{
	int r;

	if ((r = wbuf_put_u8(b, MSG_LOGOUT)) != 0 || (r = wbuf_put_cstring(b, m->identity)) != 0)
		return r;
	return 0;
}

int
msg_logout_req_get(struct wbuf *b, struct msg_logout_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = wbuf_get_cstring(b, &m->identity, MTLS_NAME_MAX)) != 0 ||
	    (r = wbuf_expect_end(b)) != 0)
		msg_logout_req_clear(m);
	return r;
}

void
msg_logout_req_clear(struct msg_logout_req *m)
{
	free(m->identity);
	memset(m, 0, sizeof(*m));
}

int
msg_empty_resp_put(struct wbuf *b, uint8_t type)
{
	return wbuf_put_u8(b, type | MSG_REPLY);
}

int
msg_empty_get(struct wbuf *b)
{
	return wbuf_expect_end(b);
}

int
msg_lock_req_put(struct wbuf *b, uint8_t type, const struct msg_lock_req *m)
{
	int r;

	if (type != MSG_LOCK && type != MSG_UNLOCK)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((r = wbuf_put_u8(b, type)) != 0 || (r = msg_pin_put(b, m->passphrase)) != 0)
		return r;
	return 0;
}

int
msg_lock_req_get(struct wbuf *b, struct msg_lock_req *m)
{
	int r;

	memset(m, 0, sizeof(*m));
	if ((r = msg_pin_get(b, &m->passphrase)) != 0 || (r = wbuf_expect_end(b)) != 0)
		msg_lock_req_clear(m);
	return r;
}

void
msg_lock_req_clear(struct msg_lock_req *m)
{
	mtls_secure_free(m->passphrase);
	memset(m, 0, sizeof(*m));
}
