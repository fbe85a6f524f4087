/*
 * login.c - LOGIN, LOGOUT and SET_PIN, and the table of logged-in slots.
 *
 * PKCS#11 login is per token and lasts while a session of the application
 * is open, so each logged-in slot keeps one session of its own (`login`)
 * open; the channels' sign sessions share the login state.  The PIN comes
 * in secure memory and goes back there: the caller's msg_*_clear wipes it.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "p11.h"

/* Under st->lock: the slot's entry, added if new (NULL if the table is full). */
static struct p11_slot *
slot_entry(struct p11_state *st, CK_SLOT_ID id)
{
	size_t i;

	for (i = 0; i < st->n_slots; i++)
		if (st->slots[i].id == id)
			return &st->slots[i];
	if (st->n_slots == P11_SLOTS_MAX)
		return NULL;
	st->slots[st->n_slots].id = id;
	st->slots[st->n_slots].login = CK_INVALID_HANDLE;
	st->slots[st->n_slots].logged_in = 0;
	return &st->slots[st->n_slots++];
}

/* Under st->lock: is e logged in still?  Asked of the token: a card
 * pulled and put back is logged out, and our session on it is gone. */
static int
still_in(struct p11_state *st, struct p11_slot *e)
{
	CK_SESSION_INFO si;

	if (!e->logged_in)
		return 0;
	if (st->mod.f->C_GetSessionInfo(e->login, &si) == CKR_OK &&
	    (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS))
		return 1;
	(void)st->mod.f->C_CloseSession(e->login);
	e->login = CK_INVALID_HANDLE;
	e->logged_in = 0;
	return 0;
}

CK_RV
p11_open_session(struct p11_state *st, CK_SLOT_ID slot, CK_SESSION_HANDLE *s)
{
	CK_RV rv;

	/* Read-write where the token allows: an SO login (SET_PIN unblock)
	 * is refused while any read-only session of ours exists
	 * (CKR_SESSION_READ_ONLY_EXISTS). */
	rv = st->mod.f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s);
	if (rv == CKR_TOKEN_WRITE_PROTECTED)
		rv = st->mod.f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, s);
	return rv;
}

int
p11_slot_logged_in(struct p11_state *st, CK_SLOT_ID slot)
{
	size_t i;
	int in = 0;

	pthread_mutex_lock(&st->lock);
	for (i = 0; i < st->n_slots; i++)
		if (st->slots[i].id == slot)
			in = still_in(st, &st->slots[i]);
	pthread_mutex_unlock(&st->lock);
	return in;
}

/* Fills in the tries left from the token's flags after a PIN failure. */
static int
pin_fail(struct p11_state *st, CK_SLOT_ID slot, CK_RV rv, int so, const char *what,
	 struct p11_fail *fail)
{
	CK_TOKEN_INFO info;
	CK_FLAGS locked = so ? CKF_SO_PIN_LOCKED : CKF_USER_PIN_LOCKED;
	CK_FLAGS final = so ? CKF_SO_PIN_FINAL_TRY : CKF_USER_PIN_FINAL_TRY;

	p11_fail_rv(fail, rv, what);
	if (st->mod.f->C_GetTokenInfo(slot, &info) == CKR_OK) {
		if (info.flags & locked) {
			fail->retries = 0;
			if (fail->code == MTLS_ERR_PIN_INCORRECT)
				fail->code = MTLS_ERR_PIN_LOCKED;
		} else if (info.flags & final)
			fail->retries = 1;
	}
	return fail->code;
}

static void
close_login(struct p11_state *st, struct p11_slot *e)
{
	if (e->login != CK_INVALID_HANDLE) {
		(void)st->mod.f->C_Logout(e->login);
		(void)st->mod.f->C_CloseSession(e->login);
	}
	e->login = CK_INVALID_HANDLE;
	e->logged_in = 0;
}

int
p11_login(struct p11_state *st, const struct msg_p11_login_req *req, struct p11_fail *fail)
{
	CK_FUNCTION_LIST_PTR f = st->mod.f;
	CK_SLOT_ID slot = (CK_SLOT_ID)req->slot;
	struct p11_slot *e;
	CK_RV rv;
	int r = 0;

	/* Login is module-wide state: one at a time, none racing a logout. */
	pthread_mutex_lock(&st->lock);
	if ((e = slot_entry(st, slot)) == NULL) {
		r = p11_fail_rv(fail, CKR_HOST_MEMORY, "too many slots");
		goto out;
	}
	if (still_in(st, e) && !(req->flags & P11_LOGIN_VERIFY))
		goto out;
	if (e->logged_in)
		close_login(st, e);
	if (e->login == CK_INVALID_HANDLE &&
	    (rv = p11_open_session(st, slot, &e->login)) != CKR_OK) {
		e->login = CK_INVALID_HANDLE;
		r = p11_fail_rv(fail, rv, "C_OpenSession");
		goto out;
	}
	rv = f->C_Login(e->login, CKU_USER, (CK_UTF8CHAR_PTR)req->pin, strlen(req->pin));
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
		e->logged_in = 1;
		goto out;
	}
	r = pin_fail(st, slot, rv, 0, "C_Login", fail);
	(void)f->C_CloseSession(e->login);
	e->login = CK_INVALID_HANDLE;
out:
	pthread_mutex_unlock(&st->lock);
	return r;
}

int
p11_logout(struct p11_state *st, CK_SLOT_ID slot, struct p11_fail *fail)
{
	struct p11_slot *e;

	(void)fail;
	pthread_mutex_lock(&st->lock);
	if ((e = slot_entry(st, slot)) != NULL)
		close_login(st, e);
	pthread_mutex_unlock(&st->lock);
	return 0;
}

int
p11_set_pin(struct p11_state *st, const struct msg_p11_set_pin_req *req, struct p11_fail *fail)
{
	CK_FUNCTION_LIST_PTR f = st->mod.f;
	CK_SLOT_ID slot = (CK_SLOT_ID)req->slot;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	const char *old = req->old_pin, *new_pin = req->new_pin;
	struct p11_slot *e;
	CK_RV rv;
	int r = 0;

	pthread_mutex_lock(&st->lock);
	if ((e = slot_entry(st, slot)) == NULL) {
		r = p11_fail_rv(fail, CKR_HOST_MEMORY, "too many slots");
		goto out;
	}
	/* The SO may log in only with no user session open. */
	if (req->mode == SET_PIN_UNBLOCK)
		close_login(st, e);
	if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s)) !=
	    CKR_OK) {
		r = p11_fail_rv(fail, rv, "C_OpenSession");
		s = CK_INVALID_HANDLE;
		goto out;
	}
	if (req->mode == SET_PIN_CHANGE) {
		/* Logged in or not, as before: C_SetPIN works either way. */
		rv = f->C_SetPIN(s, (CK_UTF8CHAR_PTR)old, strlen(old), (CK_UTF8CHAR_PTR)new_pin,
				 strlen(new_pin));
		if (rv != CKR_OK)
			r = pin_fail(st, slot, rv, 0, "C_SetPIN", fail);
		goto out;
	}
	/* Unblock: SO login with the unblocking code, set the user PIN. */
	if ((rv = f->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)old, strlen(old))) != CKR_OK) {
		r = pin_fail(st, slot, rv, 1, "C_Login (SO)", fail);
		goto out;
	}
	rv = f->C_InitPIN(s, (CK_UTF8CHAR_PTR)new_pin, strlen(new_pin));
	(void)f->C_Logout(s);
	if (rv != CKR_OK)
		r = p11_fail_rv(fail, rv, "C_InitPIN");
out:
	if (s != CK_INVALID_HANDLE)
		(void)f->C_CloseSession(s);
	pthread_mutex_unlock(&st->lock);
	if (r == 0 && req->mode == SET_PIN_UNBLOCK) {
		/* An unblocked token is logged in with its new PIN. */
		struct msg_p11_login_req login = { .slot = req->slot, .pin = req->new_pin };

		r = p11_login(st, &login, fail);
	}
	return r;
}
