/*
 * p11.h - inside mtls-agent-p11, the process that holds one PKCS#11
 * module for the agent (docs/PROTOCOL.md, "Internal protocol").
 *
 * Files, by concern:
 *   main.c     hardening, fds, environment, one thread per channel
 *   serve.c    reads a request frame, dispatches, writes the reply
 *   module.c   dlopen + C_GetFunctionList + C_Initialize, REINIT
 *   objects.c  TOKENS (fresh CK_TOKEN_INFO) and OBJECTS (discovery)
 *   login.c    LOGIN / LOGOUT / SET_PIN, the per-slot login session
 *   sign.c     SIGN: C_SignInit + C_Sign on the channel's own session
 *   keygen.c   KEYGEN (C_GenerateKeyPair), IMPORT_CERT (C_CreateObject),
 *              DELETE (C_DestroyObject)
 *
 * Nothing here decides policy: the agent does.  The helper refuses what
 * is malformed and passes the module's answers on.
 */
#ifndef MTLS_P11_H
#define MTLS_P11_H

#include <pthread.h>
#include <stddef.h>

#include <p11-kit/pkcs11.h>

#include "msg_p11.h"

#define P11_SESSIONS_MAX 64 /* per channel: one sign session per slot */

/* The loaded module (module.c). */
struct p11_module {
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	pthread_rwlock_t reinit; /* write-held only by REINIT */
};

/* Login state of one slot (login.c), in a table under `lock`. */
struct p11_slot {
	CK_SLOT_ID id;
	CK_SESSION_HANDLE login; /* kept open while logged in, CK_INVALID_HANDLE else */
	int logged_in;
};

struct p11_state {
	struct p11_module mod;
	pthread_mutex_t lock; /* the slot table; never held across a module call that
			       * can block except C_Login/C_Logout of that table */
	struct p11_slot slots[P11_SLOTS_MAX];
	size_t n_slots;
	unsigned int epoch; /* bumped by REINIT, under the reinit write lock */
};

/* One channel (serve.c): its own sign sessions, so signatures on several
 * channels run in parallel with no lock of ours held across C_Sign. */
struct p11_channel {
	struct p11_state *st;
	int fd;
	CK_SLOT_ID sess_slot[P11_SESSIONS_MAX];
	CK_SESSION_HANDLE sess[P11_SESSIONS_MAX];
	size_t n_sess;
	unsigned int epoch; /* st->epoch when sess[] were opened */
};

/* A failure for the reply: code, module rv, text. */
struct p11_fail {
	int code;
	int retries;
	CK_RV rv;
	char message[256];
};

WUR int p11_module_load(struct p11_module *m, const char *path, char *err, size_t err_len);
void p11_module_unload(struct p11_module *m);
/* C_Finalize + C_Initialize; every session and login is gone after it. */
WUR int p11_module_reinit(struct p11_state *st, struct p11_fail *fail);

/* Sets fail from a module answer; returns fail->code. */
int p11_fail_rv(struct p11_fail *fail, CK_RV rv, const char *what);

WUR int p11_tokens(struct p11_state *st, struct msg_p11_tokens_resp *out, struct p11_fail *fail);
WUR int p11_objects(struct p11_channel *ch, CK_SLOT_ID slot, struct msg_p11_objects_resp *out,
		    struct p11_fail *fail);

WUR int p11_login(struct p11_state *st, const struct msg_p11_login_req *req, struct p11_fail *fail);
WUR int p11_logout(struct p11_state *st, CK_SLOT_ID slot, struct p11_fail *fail);
WUR int p11_set_pin(struct p11_state *st, const struct msg_p11_set_pin_req *req,
		    struct p11_fail *fail);
/* A session on slot, read-write unless the token is write-protected. */
CK_RV p11_open_session(struct p11_state *st, CK_SLOT_ID slot, CK_SESSION_HANDLE *s);
/* Is slot logged in by us (the table, no module call)? */
int p11_slot_logged_in(struct p11_state *st, CK_SLOT_ID slot);

/* The channel's session on slot, opened on first use. */
WUR int p11_channel_session(struct p11_channel *ch, CK_SLOT_ID slot, CK_SESSION_HANDLE *s,
			    struct p11_fail *fail);
/* Forgets (closes) the channel's session on slot. */
void p11_channel_drop(struct p11_channel *ch, CK_SLOT_ID slot);

WUR int p11_sign(struct p11_channel *ch, const struct msg_p11_sign_req *req, unsigned char *sig,
		 size_t *sig_len, struct p11_fail *fail);

/* One attribute into a fresh buffer (NULL/0 if the object has none). */
WUR int p11_get_attr(struct p11_channel *ch, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
		     CK_ATTRIBUTE_TYPE type, unsigned char **vp, size_t *lenp, size_t max);

WUR int p11_keygen(struct p11_channel *ch, const struct msg_p11_keygen_req *req,
		   struct p11_object *out, struct p11_fail *fail);
WUR int p11_import_cert(struct p11_channel *ch, const struct msg_p11_import_req *req,
			struct p11_fail *fail);
WUR int p11_delete(struct p11_channel *ch, const struct msg_p11_delete_req *req,
		   struct p11_fail *fail);

/* Serves one channel until the agent closes it. */
void *p11_serve(void *channel);

#endif
