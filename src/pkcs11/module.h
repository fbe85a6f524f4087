/*
 * module.h - what the files of mtls-agent-pkcs11.so share.
 *
 * The module's only state is a connection to the agent (libmtls-agent's
 * public API) and tables derived from the agent's LIST reply: one slot per
 * identity, three objects per slot, and the open sessions.  Everything is
 * guarded by one lock (g_lock); the agent is asked again whenever an
 * application looks at slots or tokens, so login state, token presence and
 * identities follow the agent.
 */
#ifndef MTLS_PKCS11_MODULE_H
#define MTLS_PKCS11_MODULE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "mtls-agent.h"

#define P11_MAX_SLOTS	 256 /* MTLS_IDS_MAX: a LIST reply holds no more */
#define P11_MAX_SESSIONS 1024
#define P11_MAX_FOUND	 3

/* Object handles: slot index s has (s + 1) * 4 + OBJ_*; never 0. */
enum p11_obj_kind { OBJ_CERT = 1, OBJ_PUBKEY = 2, OBJ_PRIVKEY = 3 };

/* One identity of the agent as a slot and its token. */
struct p11_slot {
	char *name;	       /* identity name = token label */
	int listed;	       /* in the agent's last LIST reply */
	uint32_t flags;	       /* MTLS_AGENT_ID_* from the last LIST */
	uint32_t purposes;     /* bits of allowed purposes */
	int key_type;	       /* MTLS_AGENT_KEY_* */
	unsigned int key_bits; /* modulus or curve size */
	unsigned char *id;     /* CKA_ID */
	size_t id_len;
	/* From the certificate, DER: */
	unsigned char *cert, *subject, *issuer, *serial, *spki;
	size_t cert_len, subject_len, issuer_len, serial_len, spki_len;
	unsigned char *modulus, *exponent; /* RSA */
	size_t modulus_len, exponent_len;
	unsigned char *ec_params, *ec_point; /* EC: OID, OCTET STRING of the point */
	size_t ec_params_len, ec_point_len;
	char serial_hex[17]; /* token serial number */
};

/* A multi-part or pending signature. */
struct p11_sign_op {
	int active;
	CK_MECHANISM_TYPE mech;
	CK_OBJECT_HANDLE key;
	CK_RSA_PKCS_PSS_PARAMS pss;
	unsigned char *buf; /* data so far (C_SignUpdate) */
	size_t len, cap;
};

struct p11_session {
	CK_SESSION_HANDLE handle; /* 0: free entry */
	CK_SLOT_ID slot;
	CK_FLAGS flags;
	mtls_agent *agent; /* this session's own connection, for signatures */
	/* C_FindObjects* */
	int finding;
	CK_OBJECT_HANDLE found[P11_MAX_FOUND];
	size_t n_found, next_found;
	struct p11_sign_op sign;
};

struct p11_state {
	int initialized;
	mtls_agent *agent; /* for LIST, LOGIN, LOGOUT */
	struct p11_slot slots[P11_MAX_SLOTS];
	size_t n_slots;
	struct p11_session sessions[P11_MAX_SESSIONS];
	CK_SESSION_HANDLE next_handle;
};

extern struct p11_state g;
extern pthread_mutex_t g_lock;
/* Counts C_Finalize and re-initialisations: a call that let go of g_lock
 * finds out whether the state it started with is still there. */
extern unsigned long g_generation;

/* Logs to syslog, and to stderr when $MTLS_AGENT_PKCS11_DEBUG is set. */
void p11_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The closest CK_RV for an MTLS_ERR_* code. */
CK_RV p11_rv(int err);
/* Looks up an open session (lock held); NULL if the handle is not one. */
struct p11_session *p11_session_get(CK_SESSION_HANDLE h);
/* The slot of a session, NULL if its identity is gone (lock held). */
struct p11_slot *p11_session_slot(const struct p11_session *s);
/* 1 when the identity's key may be used now (agent says logged in). */
int p11_slot_logged_in(const struct p11_slot *sl);

/* objects.c */
__attribute__((warn_unused_result)) int p11_slot_fill(struct p11_slot *sl,
						      const struct mtls_agent_identity *id);
void p11_slot_clear(struct p11_slot *sl);
/* Slot index and kind of an object handle visible in session s; -1 if none. */
int p11_object_lookup(const struct p11_session *s, CK_OBJECT_HANDLE h, struct p11_slot **slp,
		      enum p11_obj_kind *kind);
CK_RV p11_find_init(struct p11_session *s, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n);
CK_RV p11_get_attributes(struct p11_slot *sl, enum p11_obj_kind kind, CK_ATTRIBUTE_PTR tmpl,
			 CK_ULONG n);

/* sign.c */
CK_RV p11_mechanisms(const struct p11_slot *sl, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count);
CK_RV p11_mechanism_info(const struct p11_slot *sl, CK_MECHANISM_TYPE type,
			 CK_MECHANISM_INFO_PTR info);
CK_RV p11_sign_init(struct p11_session *s, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key);
CK_RV p11_sign_update(struct p11_session *s, CK_BYTE_PTR data, CK_ULONG len);
CK_RV p11_sign_final(struct p11_session *s, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len);
void p11_sign_clear(struct p11_sign_op *op);

/* Fixed-width, blank-padded PKCS#11 text fields. */
void p11_pad(CK_UTF8CHAR *dst, size_t width, const char *src);

#endif
