/*
 * proto.h - the mtls-agent wire protocol: frames, message types, and one
 * codec per message (docs/PROTOCOL.md is the normative description).
 *
 * A frame is a u32 big-endian length followed by that many body bytes; the
 * body is a u8 message type and the message's payload.  A successful reply
 * has the request's type with MSG_REPLY set; a failure is MSG_ERROR.
 *
 * Codec convention, for every message X:
 *   msg_X_put(b, m)  appends the body (type byte + payload) to b;
 *   msg_X_get(b, m)  parses a payload (the type byte already consumed),
 *                    requires that nothing follows, and on failure leaves
 *                    *m cleared;
 *   msg_X_clear(m)   frees what a get allocated (wiping secrets); safe on
 *                    a zeroed or already-cleared struct.
 */
#ifndef MTLS_PROTO_H
#define MTLS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "mtls-agent.h"
#include "wbuf.h"

/* Hard limit on a frame body, checked before the body is read. */
#define MTLS_FRAME_MAX (1024 * 1024)
/* Protocol versions this build speaks. */
#define MTLS_PROTO_MIN 1
#define MTLS_PROTO_MAX 1

/* Bounds on decoded fields (a hostile peer cannot make us allocate more). */
#define MTLS_NAME_MAX	 256			/* identity names, labels, client names */
#define MTLS_TEXT_MAX	 1024			/* error messages, version strings */
#define MTLS_PIN_MAX	 MTLS_AGENT_PIN_MAX	/* PIN bytes */
#define MTLS_CONTENT_MAX MTLS_AGENT_CONTENT_MAX /* content to sign */
#define MTLS_SIG_MAX	 1024			/* a signature (RSA-8192 is 1024 bytes) */
#define MTLS_CERT_MAX	 (64 * 1024)		/* one DER certificate */
#define MTLS_IDS_MAX	 256			/* identities in a LIST reply */
#define MTLS_CHAIN_MAX	 16			/* chain certificates per identity */
#define MTLS_SCHEMES_MAX 32			/* schemes per identity */

enum msg_type {
	MSG_HELLO = 1,
	MSG_LIST = 2,
	MSG_SIGN = 3,
	MSG_LOGIN = 4,
	MSG_LOGOUT = 5,
	MSG_STATUS = 6,
	MSG_SET_PIN = 7,
	MSG_LOCK = 8,
	MSG_UNLOCK = 9,
	/* 10..13: enrollment (msg_keygen.c, msg_import.c, msg_delete_key.c);
	 * 14..15: the PKCS#11 front end. */
	MSG_KEYGEN = 10,
	MSG_IMPORT_CERT = 11,
	MSG_DELETE_KEY = 12,
	MSG_LOGIN_PROMPT = 14, /* log in with a PIN the agent asks for */
	MSG_ERROR = 0x7f,
	MSG_REPLY = 0x80
};

struct msg_hello_req {
	uint32_t min_version, max_version;
	char *client; /* free text naming the client program */
};
struct msg_hello_resp {
	uint32_t version;
	char *agent; /* agent name and version */
};

/* LIST has an empty request. */
struct msg_list_resp {
	struct mtls_agent_identity *ids;
	size_t n;
};

struct msg_sign_req {
	char *identity;
	uint16_t scheme;
	uint8_t purpose;
	unsigned char *content;
	size_t content_len;
	/* Optional trailing field (PROTOCOL.md 6.3): the TLS 1.3 handshake
	 * messages the content's transcript hash covers; NULL if absent. */
	unsigned char *transcript;
	size_t transcript_len;
};
struct msg_sign_resp {
	unsigned char *sig;
	size_t sig_len;
};

struct msg_login_req {
	char *identity; /* "" = the only / first token */
	char *pin;	/* secure memory (secmem.h) */
	uint8_t flags;	/* LOGIN_* */
};
/* LOGIN flags.  LOGIN_VERIFY: log the token out and in again with this
 * PIN, so the token itself checks it even when it is logged in already. */
#define LOGIN_VERIFY	  0x01
#define LOGIN_FLAGS_KNOWN LOGIN_VERIFY
/* SET_PIN modes. */
#define SET_PIN_CHANGE	1 /* old = current user PIN */
#define SET_PIN_UNBLOCK 2 /* old = unblocking code (the SO PIN, "PUK") */

struct msg_set_pin_req {
	char *identity; /* "" = the only token */
	uint8_t mode;	/* SET_PIN_* */
	char *old_pin;	/* secure memory */
	char *new_pin;	/* secure memory */
};

/* LOCK and UNLOCK carry one passphrase. */
struct msg_lock_req {
	char *passphrase; /* secure memory */
};

/* LOGIN, LOGOUT, SET_PIN, LOCK and UNLOCK replies are empty. */
/* LOGIN_PROMPT: the agent asks a person for the PIN (msg_login_prompt.c). */
struct msg_login_prompt_req {
	char *identity; /* "" = the only token */
};

struct msg_logout_req {
	char *identity; /* "" = every token */
};

/* STATUS has an empty request; the reply is struct mtls_agent_status. */

/* KEYGEN: a key pair on a token (msg_keygen.c). */
#define MTLS_SPKI_MAX 2048 /* a SubjectPublicKeyInfo (RSA-4096 is 550 bytes) */
struct msg_keygen_req {
	char *token;  /* pkcs11: URI of the token; "" = the only one */
	char *label;  /* CKA_LABEL of the new key pair, a valid identity name */
	uint8_t kind; /* MTLS_AGENT_KEYGEN_* */
};
struct msg_keygen_resp {
	char *name; /* the new identity */
	unsigned char *key_id;
	size_t key_id_len;
	unsigned char *spki; /* DER SubjectPublicKeyInfo */
	size_t spki_len;
};

/* IMPORT_CERT: a certificate next to its key (msg_import.c). */
#define IMPORT_FLAGS_KNOWN MTLS_AGENT_IMPORT_FORCE
struct msg_import_req {
	unsigned char *cert; /* DER */
	size_t cert_len;
	uint8_t flags; /* MTLS_AGENT_IMPORT_* */
};
struct msg_import_resp {
	char *name;
};

/* DELETE_KEY: an identity's key pair and certificate off its token
 * (msg_delete_key.c).  The reply is empty. */
#define DELETE_FLAGS_KNOWN MTLS_AGENT_DELETE_FORCE
struct msg_delete_key_req {
	char *identity;
	uint8_t flags; /* MTLS_AGENT_DELETE_* */
};

struct msg_error {
	int code;      /* negative MTLS_ERR_* */
	int retries;   /* PIN tries left, -1 unknown / not applicable */
	char *message; /* human-readable detail, may be "" */
};

WUR int msg_hello_req_put(struct wbuf *b, const struct msg_hello_req *m);
WUR int msg_hello_req_get(struct wbuf *b, struct msg_hello_req *m);
void msg_hello_req_clear(struct msg_hello_req *m);
WUR int msg_hello_resp_put(struct wbuf *b, const struct msg_hello_resp *m);
WUR int msg_hello_resp_get(struct wbuf *b, struct msg_hello_resp *m);
void msg_hello_resp_clear(struct msg_hello_resp *m);

WUR int msg_list_req_put(struct wbuf *b);
WUR int msg_list_req_get(struct wbuf *b);
WUR int msg_list_resp_put(struct wbuf *b, const struct msg_list_resp *m);
WUR int msg_list_resp_get(struct wbuf *b, struct msg_list_resp *m);
void msg_list_resp_clear(struct msg_list_resp *m);

WUR int msg_sign_req_put(struct wbuf *b, const struct msg_sign_req *m);
WUR int msg_sign_req_get(struct wbuf *b, struct msg_sign_req *m);
void msg_sign_req_clear(struct msg_sign_req *m);
WUR int msg_sign_resp_put(struct wbuf *b, const struct msg_sign_resp *m);
WUR int msg_sign_resp_get(struct wbuf *b, struct msg_sign_resp *m);
void msg_sign_resp_clear(struct msg_sign_resp *m);

/* A PIN (or passphrase) on the wire: 1..MTLS_PIN_MAX bytes, no NUL; the
 * getter copies it straight from the frame into secure memory (free it with
 * mtls_secure_free).  Every message that carries one uses these. */
WUR int msg_pin_put(struct wbuf *b, const char *pin);
WUR int msg_pin_get(struct wbuf *b, char **pinp);
WUR int msg_login_req_put(struct wbuf *b, const struct msg_login_req *m);
WUR int msg_login_req_get(struct wbuf *b, struct msg_login_req *m);
void msg_login_req_clear(struct msg_login_req *m);
WUR int msg_login_prompt_req_put(struct wbuf *b, const struct msg_login_prompt_req *m);
WUR int msg_login_prompt_req_get(struct wbuf *b, struct msg_login_prompt_req *m);
void msg_login_prompt_req_clear(struct msg_login_prompt_req *m);
WUR int msg_logout_req_put(struct wbuf *b, const struct msg_logout_req *m);
WUR int msg_logout_req_get(struct wbuf *b, struct msg_logout_req *m);
void msg_logout_req_clear(struct msg_logout_req *m);
WUR int msg_set_pin_req_put(struct wbuf *b, const struct msg_set_pin_req *m);
WUR int msg_set_pin_req_get(struct wbuf *b, struct msg_set_pin_req *m);
void msg_set_pin_req_clear(struct msg_set_pin_req *m);
/* type: MSG_LOCK or MSG_UNLOCK. */
WUR int msg_lock_req_put(struct wbuf *b, uint8_t type, const struct msg_lock_req *m);
WUR int msg_lock_req_get(struct wbuf *b, struct msg_lock_req *m);
void msg_lock_req_clear(struct msg_lock_req *m);
/* Empty success reply for LOGIN / LOGOUT / SET_PIN / LOCK / UNLOCK. */
WUR int msg_empty_resp_put(struct wbuf *b, uint8_t type);
WUR int msg_empty_get(struct wbuf *b);

WUR int msg_status_req_put(struct wbuf *b);
WUR int msg_status_resp_put(struct wbuf *b, const struct mtls_agent_status *m);
WUR int msg_status_resp_get(struct wbuf *b, struct mtls_agent_status *m);

/* A key kind (MTLS_AGENT_KEYGEN_*) KEYGEN knows; the helper's KEYGEN too. */
int msg_keygen_kind_known(uint8_t kind);
WUR int msg_keygen_req_put(struct wbuf *b, const struct msg_keygen_req *m);
WUR int msg_keygen_req_get(struct wbuf *b, struct msg_keygen_req *m);
void msg_keygen_req_clear(struct msg_keygen_req *m);
WUR int msg_keygen_resp_put(struct wbuf *b, const struct msg_keygen_resp *m);
WUR int msg_keygen_resp_get(struct wbuf *b, struct msg_keygen_resp *m);
void msg_keygen_resp_clear(struct msg_keygen_resp *m);

WUR int msg_import_req_put(struct wbuf *b, const struct msg_import_req *m);
WUR int msg_import_req_get(struct wbuf *b, struct msg_import_req *m);
void msg_import_req_clear(struct msg_import_req *m);
WUR int msg_import_resp_put(struct wbuf *b, const struct msg_import_resp *m);
WUR int msg_import_resp_get(struct wbuf *b, struct msg_import_resp *m);
void msg_import_resp_clear(struct msg_import_resp *m);

WUR int msg_delete_key_req_put(struct wbuf *b, const struct msg_delete_key_req *m);
WUR int msg_delete_key_req_get(struct wbuf *b, struct msg_delete_key_req *m);
void msg_delete_key_req_clear(struct msg_delete_key_req *m);

WUR int msg_error_put(struct wbuf *b, const struct msg_error *m);
WUR int msg_error_get(struct wbuf *b, struct msg_error *m);
void msg_error_clear(struct msg_error *m);

/* Frees the members of one identity (not the struct itself). */
void identity_clear(struct mtls_agent_identity *id);

/*
 * Frame I/O on a blocking or non-blocking stream socket.
 *
 * Reads go through a per-connection stash: one recv takes the header and
 * as much of the body as has arrived, and bytes past the frame (a client
 * that pipelines) wait there for the next frame_read().  Bytes handed out
 * are wiped from the stash.  One stash per connection, reset (and wiped)
 * with frame_rx_reset() whenever the connection is replaced.
 *
 * frame_read() resets `body`, reads one frame header, refuses a length of
 * 0 or over `max` (MTLS_ERR_FRAME_TOO_LARGE) before reading the body, then
 * reads the body.  idle_ms bounds the wait for the first byte (-1: none);
 * once it has arrived the whole frame must follow within timeout_ms (-1:
 * no limit).  A clean EOF before the first byte is
 * MTLS_ERR_CONNECTION_CLOSED; an empty frame is MTLS_ERR_BAD_REQUEST.
 * frame_write() writes the header and `body` completely.
 */
#define FRAME_RX_SIZE 2048
struct frame_rx {
	size_t start, end; /* unread bytes are buf[start..end) */
	unsigned char buf[FRAME_RX_SIZE];
};

void frame_rx_reset(struct frame_rx *rx);
WUR int frame_read(int fd, struct frame_rx *rx, struct wbuf *body, size_t max, int idle_ms,
		   int timeout_ms);
WUR int frame_write(int fd, const struct wbuf *body, int timeout_ms);
/*
 * For a reply awaited on a socket set up with frame_set_rcvtimeo(fd, ms):
 * when nothing is stashed, one blocking recv waits for the first bytes
 * (bounded by SO_RCVTIMEO: MTLS_ERR_TIMEOUT), instead of frame_read()'s
 * recv, poll and recv again; the rest of the frame as frame_read() with
 * timeout_ms.  Two system calls fewer for every reply that is slept for.
 */
WUR int frame_set_rcvtimeo(int fd, int timeout_ms);
WUR int frame_read_timed(int fd, struct frame_rx *rx, struct wbuf *body, size_t max,
			 int timeout_ms);

/*
 * Busy-polls fd for up to spin_us microseconds (0: does not wait), with a
 * CPU pause between tries and never a yield; what arrives goes to the
 * stash.  Callers go through spin_wait() (spin.h), which decides whether a
 * spin is worth it.  Returns 1 as soon as there is something to read (or EOF),
 * 0 when the time is up.  A reply expected within a millisecond or so is
 * then read without putting the waiting CPU to sleep: on virtual machines
 * waking an idle CPU costs 50-150 us, as much as a P-256 signature
 * (docs/BENCHMARKS.md).
 */
int frame_spin(int fd, struct frame_rx *rx, unsigned int spin_us);

#endif
