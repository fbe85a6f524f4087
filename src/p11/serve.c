/*
 * serve.c - one channel: read a request frame, dispatch it, write the
 * reply.  One thread per channel; the agent sends one request at a time
 * on a channel and waits for its reply (or kills us).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "p11.h"
#include "secmem.h"

int
p11_channel_session(struct p11_channel *ch, CK_SLOT_ID slot, CK_SESSION_HANDLE *s,
		    struct p11_fail *fail)
{
	size_t i;
	CK_RV rv;

	/* Read under the reinit read lock that every request holds. */
	if (ch->epoch != ch->st->epoch) {
		ch->n_sess = 0;
		ch->epoch = ch->st->epoch;
	}
	for (i = 0; i < ch->n_sess; i++)
		if (ch->sess_slot[i] == slot) {
			*s = ch->sess[i];
			return 0;
		}
	if (ch->n_sess == P11_SESSIONS_MAX)
		return p11_fail_rv(fail, CKR_SESSION_COUNT, "too many slots");
	if ((rv = p11_open_session(ch->st, slot, s)) != CKR_OK)
		return p11_fail_rv(fail, rv, "C_OpenSession");
	ch->sess_slot[ch->n_sess] = slot;
	ch->sess[ch->n_sess++] = *s;
	return 0;
}

void
p11_channel_drop(struct p11_channel *ch, CK_SLOT_ID slot)
{
	size_t i;

	for (i = 0; i < ch->n_sess; i++)
		if (ch->sess_slot[i] == slot) {
			(void)ch->st->mod.f->C_CloseSession(ch->sess[i]);
			ch->sess_slot[i] = ch->sess_slot[ch->n_sess - 1];
			ch->sess[i] = ch->sess[ch->n_sess - 1];
			ch->n_sess--;
			return;
		}
}

/* Slot ids and handles arrive as u64; a CK_ULONG might be narrower. */
static int
fits(uint64_t v)
{
	return (uint64_t)(CK_ULONG)v == v;
}

static int
do_sign(struct p11_channel *ch, struct wbuf *in, struct wbuf *out, struct p11_fail *fail)
{
	struct msg_p11_sign_req req;
	unsigned char sig[MTLS_SIG_MAX];
	struct msg_sign_resp resp;
	size_t sig_len = sizeof(sig);
	int r;

	if ((r = msg_p11_sign_req_get(in, &req)) != 0)
		return r;
	if (!fits(req.slot) || !fits(req.key))
		r = MTLS_ERR_BAD_REQUEST;
	else if ((r = p11_sign(ch, &req, sig, &sig_len, fail)) == 0) {
		resp.sig = sig;
		resp.sig_len = sig_len;
		r = msg_p11_sign_resp_put(out, &resp);
	}
	msg_p11_sign_req_clear(&req);
	return r;
}

static int
do_slot_req(struct p11_channel *ch, uint8_t type, struct wbuf *in, struct wbuf *out,
	    struct p11_fail *fail)
{
	struct msg_p11_objects_resp objs;
	struct msg_p11_slot_req req;
	int r;

	if ((r = msg_p11_slot_req_get(in, &req)) != 0)
		return r;
	if (!fits(req.slot))
		return MTLS_ERR_BAD_REQUEST;
	if (type == P11_LOGOUT) {
		if ((r = p11_logout(ch->st, (CK_SLOT_ID)req.slot, fail)) == 0)
			r = wbuf_put_u8(out, P11_LOGOUT | MSG_REPLY);
		return r;
	}
	if ((r = p11_objects(ch, (CK_SLOT_ID)req.slot, &objs, fail)) != 0)
		return r;
	r = msg_p11_objects_resp_put(out, &objs);
	msg_p11_objects_resp_clear(&objs);
	return r;
}

static int
do_pin(struct p11_channel *ch, uint8_t type, struct wbuf *in, struct wbuf *out,
       struct p11_fail *fail)
{
	struct msg_p11_set_pin_req sp;
	struct msg_p11_login_req lr;
	int r;

	if (type == P11_LOGIN) {
		if ((r = msg_p11_login_req_get(in, &lr)) != 0)
			return r;
		r = fits(lr.slot) ? p11_login(ch->st, &lr, fail) : MTLS_ERR_BAD_REQUEST;
		msg_p11_login_req_clear(&lr);
	} else {
		if ((r = msg_p11_set_pin_req_get(in, &sp)) != 0)
			return r;
		r = fits(sp.slot) ? p11_set_pin(ch->st, &sp, fail) : MTLS_ERR_BAD_REQUEST;
		msg_p11_set_pin_req_clear(&sp);
	}
	if (r == 0)
		r = wbuf_put_u8(out, type | MSG_REPLY);
	return r;
}

static int
do_enroll(struct p11_channel *ch, uint8_t type, struct wbuf *in, struct wbuf *out,
	  struct p11_fail *fail)
{
	struct msg_p11_keygen_req kr;
	struct msg_p11_import_req ir;
	struct msg_p11_delete_req dr;
	struct p11_object o;
	int r;

	if (type == P11_KEYGEN) {
		if ((r = msg_p11_keygen_req_get(in, &kr)) != 0)
			return r;
		r = fits(kr.slot) ? p11_keygen(ch, &kr, &o, fail) : MTLS_ERR_BAD_REQUEST;
		msg_p11_keygen_req_clear(&kr);
		if (r == 0) {
			r = msg_p11_keygen_resp_put(out, &o);
			msg_p11_object_clear(&o);
		}
		return r;
	}
	if (type == P11_DELETE) {
		if ((r = msg_p11_delete_req_get(in, &dr)) != 0)
			return r;
		r = fits(dr.slot) ? p11_delete(ch, &dr, fail) : MTLS_ERR_BAD_REQUEST;
		msg_p11_delete_req_clear(&dr);
		return r == 0 ? wbuf_put_u8(out, P11_DELETE | MSG_REPLY) : r;
	}
	if ((r = msg_p11_import_req_get(in, &ir)) != 0)
		return r;
	r = fits(ir.slot) ? p11_import_cert(ch, &ir, fail) : MTLS_ERR_BAD_REQUEST;
	msg_p11_import_req_clear(&ir);
	if (r == 0)
		r = wbuf_put_u8(out, P11_IMPORT_CERT | MSG_REPLY);
	return r;
}

static int
dispatch(struct p11_channel *ch, struct wbuf *in, struct wbuf *out, struct p11_fail *fail)
{
	struct msg_p11_tokens_resp toks;
	uint8_t type;
	int r;

	if ((r = wbuf_get_u8(in, &type)) != 0)
		return r;
	switch (type) {
	case P11_SIGN: return do_sign(ch, in, out, fail);
	case P11_TOKENS:
		if ((r = wbuf_expect_end(in)) != 0 || (r = p11_tokens(ch->st, &toks, fail)) != 0)
			return r;
		r = msg_p11_tokens_resp_put(out, &toks);
		msg_p11_tokens_resp_clear(&toks);
		return r;
	case P11_OBJECTS:
	case P11_LOGOUT: return do_slot_req(ch, type, in, out, fail);
	case P11_LOGIN:
	case P11_SET_PIN: return do_pin(ch, type, in, out, fail);
	case P11_KEYGEN:
	case P11_IMPORT_CERT:
	case P11_DELETE: return do_enroll(ch, type, in, out, fail);
	default: return MTLS_ERR_UNSUPPORTED_MESSAGE;
	}
}

static int
reinit(struct p11_channel *ch, struct wbuf *in, struct wbuf *out, struct p11_fail *fail)
{
	int r;

	/* Every channel's sessions are void after it: each forgets its own
	 * when it sees the new epoch (p11_channel_session). */
	if ((r = wbuf_expect_end(in)) != 0 || (r = p11_module_reinit(ch->st, fail)) != 0)
		return r;
	return wbuf_put_u8(out, P11_REINIT | MSG_REPLY);
}

static int
reply_error(int fd, struct wbuf *out, int code, const struct p11_fail *fail)
{
	struct msg_p11_error e = { .code = code, .retries = -1 };

	wbuf_reset(out);
	if (fail->code == code) {
		e.retries = fail->retries;
		e.rv = (uint32_t)fail->rv;
		e.message = (char *)fail->message;
	}
	if (msg_p11_error_put(out, &e) != 0)
		return MTLS_ERR_INTERNAL;
	return frame_write(fd, out, -1);
}

void *
p11_serve(void *arg)
{
	struct p11_channel *ch = arg;
	struct frame_rx rx;
	struct wbuf *in = wbuf_new(), *out = wbuf_new();
	struct p11_fail fail;
	int r;

	frame_rx_reset(&rx);
	while (in != NULL && out != NULL) {
		if (frame_read(ch->fd, &rx, in, MTLS_FRAME_MAX, -1, -1) != 0)
			break;
		wbuf_reset(out);
		memset(&fail, 0, sizeof(fail));
		if (wbuf_len(in) > 0 && wbuf_ptr(in)[0] == P11_REINIT) {
			uint8_t t;

			r = wbuf_get_u8(in, &t);
			r = r != 0 ? r : reinit(ch, in, out, &fail);
		} else {
			pthread_rwlock_rdlock(&ch->st->mod.reinit);
			r = dispatch(ch, in, out, &fail);
			pthread_rwlock_unlock(&ch->st->mod.reinit);
		}
		/* A LOGIN's PIN must not wait in the buffer for the next
		 * request on this channel, which may never come. */
		wbuf_reset(in);
		if (r == 0)
			r = frame_write(ch->fd, out, -1);
		else
			r = reply_error(ch->fd, out, r, &fail);
		if (r != 0)
			break;
	}
	wbuf_free(in);
	wbuf_free(out);
	close(ch->fd);
	return NULL;
}
