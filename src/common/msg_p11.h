/*
 * msg_p11.h - the internal protocol between mtls-agent and its PKCS#11
 * helper, mtls-agent-p11 (docs/PROTOCOL.md, "Internal protocol").
 *
 * Same frames (frame.c) and codec convention as proto.h: msg_p11_X_put()
 * appends the body with its type byte, msg_p11_X_get() parses the payload
 * (type byte consumed) and requires that nothing follows, leaving *m
 * cleared on failure; msg_p11_X_clear() frees (and wipes PINs), safe on a
 * zeroed struct.  Slot ids and object handles travel as u64 (CK_ULONG is
 * 64 bits on the platforms we build for; the helper refuses what does not
 * fit its CK_ULONG).
 *
 * Neither side trusts the other more than a socket peer: the agent treats
 * a helper's replies as hostile (a module can be anything), the helper
 * refuses malformed requests.
 */
#ifndef MTLS_MSG_P11_H
#define MTLS_MSG_P11_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Types: requests 0x41.., replies with MSG_REPLY set, failure P11_ERROR. */
enum p11_msg_type {
	P11_TOKENS = 0x41,  /* slots with a token, fresh flags (also the hot-plug poll) */
	P11_OBJECTS = 0x42, /* certificates and private keys of one slot */
	P11_LOGIN = 0x43,   /* user login on one slot */
	P11_LOGOUT = 0x44,  /* logout of one slot */
	P11_SET_PIN = 0x45, /* change or unblock the user PIN */
	P11_SIGN = 0x46,    /* one C_SignInit + C_Sign */
	P11_REINIT = 0x47,  /* C_Finalize + C_Initialize (module-wide) */
	/* 0x48..0x4b: enrollment (src/p11/keygen.c). */
	P11_KEYGEN = 0x48,	/* C_GenerateKeyPair on a logged-in slot */
	P11_IMPORT_CERT = 0x49, /* C_CreateObject of a certificate next to its key */
	P11_DELETE = 0x4a,	/* C_DestroyObject of every object with one CKA_ID */
	P11_ERROR = 0x7e	/* failure reply to any request */
};

#define P11_SLOTS_MAX	64	   /* tokens in a P11_TOKENS reply */
#define P11_OBJECTS_MAX 256	   /* objects in a P11_OBJECTS reply */
#define P11_ATTR_MAX	(8 * 1024) /* an id, modulus, point, parameter set */
#define P11_DATA_MAX	512	   /* what SIGN sends: a digest or DigestInfo */

/* One slot with a token (CK_TOKEN_INFO, read fresh by the helper). */
struct p11_token {
	uint64_t slot;
	char *label, *manufacturer, *model, *serial; /* blank padding removed */
	uint32_t flags;				     /* CKF_* of the token */
	uint8_t logged_in;			     /* a session of ours is logged in */
};
struct msg_p11_tokens_resp {
	struct p11_token *t;
	size_t n;
};

/* Object kinds, and what the two values of an object hold. */
#define P11_OBJ_CERT 1 /* a = certificate DER (CKA_VALUE), b = empty */
#define P11_OBJ_RSA  2 /* private RSA key: a = CKA_MODULUS, b = CKA_PUBLIC_EXPONENT */
#define P11_OBJ_EC                                                                                 \
	3 /* private EC key: a = CKA_EC_PARAMS, b = CKA_EC_POINT of the                            \
	   * public key object with the same CKA_ID, or empty */
struct p11_object {
	uint8_t kind;
	uint64_t handle; /* CK_OBJECT_HANDLE, valid until the next REINIT/restart */
	unsigned char *id;
	size_t id_len;
	char *label; /* CKA_LABEL, may be "" */
	unsigned char *a, *b;
	size_t a_len, b_len;
};
struct msg_p11_objects_req {
	uint64_t slot;
};
struct msg_p11_objects_resp {
	struct p11_object *o;
	size_t n;
};

/* LOGIN flags. */
#define P11_LOGIN_VERIFY 0x01 /* log out first, so the token checks the PIN */
struct msg_p11_login_req {
	uint64_t slot;
	uint8_t flags;
	char *pin; /* secure memory */
};
/* LOGOUT and OBJECTS carry a slot only. */
struct msg_p11_slot_req {
	uint64_t slot;
};
struct msg_p11_set_pin_req {
	uint64_t slot;
	uint8_t mode;		 /* SET_PIN_CHANGE / SET_PIN_UNBLOCK (proto.h) */
	char *old_pin, *new_pin; /* secure memory */
};

/* SIGN mechanisms: the agent hashes, the helper signs what it is given. */
#define P11_MECH_RSA_PKCS 1 /* CKM_RSA_PKCS over a DigestInfo */
#define P11_MECH_RSA_PSS  2 /* CKM_RSA_PKCS_PSS over a digest, salt = hash length */
#define P11_MECH_ECDSA	  3 /* CKM_ECDSA over a digest; reply r || s (raw) */
/* PSS hashes (the digest length tells them apart too). */
#define P11_HASH_SHA256 1
#define P11_HASH_SHA384 2
#define P11_HASH_SHA512 3
struct msg_p11_sign_req {
	uint64_t slot, key;
	uint8_t mech, hash; /* hash: P11_HASH_* for PSS, else 0 */
	unsigned char *data;
	size_t data_len;
};
/* The reply is a struct msg_sign_resp (proto.h) with type P11_SIGN | MSG_REPLY. */

/* KEYGEN: kind is MTLS_AGENT_KEYGEN_*; the reply is one struct p11_object
 * (the private key, its public numbers as in OBJECTS, its fresh id). */
struct msg_p11_keygen_req {
	uint64_t slot;
	uint8_t kind;
	char *label;
};
/* IMPORT_CERT: the certificate gets CKA_ID id and CKA_LABEL label; with
 * P11_IMPORT_REPLACE the slot's other certificates with that id are
 * destroyed once the new one is written.  Reply: (empty). */
#define P11_IMPORT_REPLACE 0x01
struct msg_p11_import_req {
	uint64_t slot;
	uint8_t flags;
	unsigned char *id;
	size_t id_len;
	char *label;
	unsigned char *subject; /* DER Name of the certificate (CKA_SUBJECT) */
	size_t subject_len;
	unsigned char *cert;
	size_t cert_len;
};

/* DELETE: every certificate, private and public key with CKA_ID id on the
 * slot is destroyed.  Reply: (empty). */
struct msg_p11_delete_req {
	uint64_t slot;
	unsigned char *id;
	size_t id_len;
};

struct msg_p11_error {
	int code;      /* negative MTLS_ERR_* */
	int retries;   /* PIN tries left, -1 unknown */
	uint32_t rv;   /* the CK_RV the module answered, 0 if none */
	char *message; /* never holds a PIN */
};

WUR int msg_p11_empty_req_put(struct wbuf *b, uint8_t type);
WUR int msg_p11_tokens_resp_put(struct wbuf *b, const struct msg_p11_tokens_resp *m);
WUR int msg_p11_tokens_resp_get(struct wbuf *b, struct msg_p11_tokens_resp *m);
void msg_p11_tokens_resp_clear(struct msg_p11_tokens_resp *m);

/* type: P11_OBJECTS or P11_LOGOUT. */
WUR int msg_p11_slot_req_put(struct wbuf *b, uint8_t type, const struct msg_p11_slot_req *m);
WUR int msg_p11_slot_req_get(struct wbuf *b, struct msg_p11_slot_req *m);
WUR int msg_p11_objects_resp_put(struct wbuf *b, const struct msg_p11_objects_resp *m);
WUR int msg_p11_objects_resp_get(struct wbuf *b, struct msg_p11_objects_resp *m);
void msg_p11_objects_resp_clear(struct msg_p11_objects_resp *m);

WUR int msg_p11_login_req_put(struct wbuf *b, const struct msg_p11_login_req *m);
WUR int msg_p11_login_req_get(struct wbuf *b, struct msg_p11_login_req *m);
void msg_p11_login_req_clear(struct msg_p11_login_req *m);
WUR int msg_p11_set_pin_req_put(struct wbuf *b, const struct msg_p11_set_pin_req *m);
WUR int msg_p11_set_pin_req_get(struct wbuf *b, struct msg_p11_set_pin_req *m);
void msg_p11_set_pin_req_clear(struct msg_p11_set_pin_req *m);

WUR int msg_p11_sign_req_put(struct wbuf *b, const struct msg_p11_sign_req *m);
WUR int msg_p11_sign_req_get(struct wbuf *b, struct msg_p11_sign_req *m);
void msg_p11_sign_req_clear(struct msg_p11_sign_req *m);
WUR int msg_p11_sign_resp_put(struct wbuf *b, const struct msg_sign_resp *m);

WUR int msg_p11_keygen_req_put(struct wbuf *b, const struct msg_p11_keygen_req *m);
WUR int msg_p11_keygen_req_get(struct wbuf *b, struct msg_p11_keygen_req *m);
void msg_p11_keygen_req_clear(struct msg_p11_keygen_req *m);
WUR int msg_p11_keygen_resp_put(struct wbuf *b, const struct p11_object *o);
WUR int msg_p11_keygen_resp_get(struct wbuf *b, struct p11_object *o);
void msg_p11_object_clear(struct p11_object *o);
WUR int msg_p11_import_req_put(struct wbuf *b, const struct msg_p11_import_req *m);
WUR int msg_p11_import_req_get(struct wbuf *b, struct msg_p11_import_req *m);
void msg_p11_import_req_clear(struct msg_p11_import_req *m);

WUR int msg_p11_delete_req_put(struct wbuf *b, const struct msg_p11_delete_req *m);
WUR int msg_p11_delete_req_get(struct wbuf *b, struct msg_p11_delete_req *m);
void msg_p11_delete_req_clear(struct msg_p11_delete_req *m);

WUR int msg_p11_error_put(struct wbuf *b, const struct msg_p11_error *m);
WUR int msg_p11_error_get(struct wbuf *b, struct msg_p11_error *m);
void msg_p11_error_clear(struct msg_p11_error *m);

#endif
