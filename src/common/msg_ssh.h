/*
 * msg_ssh - the SSH agent protocol (RFC 9987, and OpenSSH's PROTOCOL.agent
 * for its extensions) spoken on the agent's second socket, and the
 * formats a signature request may carry: an SSH user-authentication
 * request (RFC 4252 section 7) and an SSHSIG blob (OpenSSH's
 * PROTOCOL.sshsig).  Everything goes through wbuf.
 *
 * A frame is a u32 length and a body of a u8 type and its payload, as on
 * the mtls-agent socket; the limit is SSH_AGENT_FRAME_MAX.  Decoders take
 * the payload (type already read), require that nothing follows, and
 * point into the buffer they read from (valid until it changes); none
 * allocates except msg_ssh_lock_get().
 *
 * Files: msg_ssh.c (agent messages), msg_ssh_data.c (userauth, SSHSIG),
 * msg_ssh_key.c (key and signature blobs from OpenSSL keys).
 */
#ifndef MTLS_MSG_SSH_H
#define MTLS_MSG_SSH_H

#include <stddef.h>
#include <stdint.h>

#include "wbuf.h"

/* RFC 9987 section 6.1 message numbers. */
#define SSH_AGENT_FAILURE			 5
#define SSH_AGENT_SUCCESS			 6
#define SSH_AGENTC_REQUEST_IDENTITIES		 11
#define SSH_AGENT_IDENTITIES_ANSWER		 12
#define SSH_AGENTC_SIGN_REQUEST			 13
#define SSH_AGENT_SIGN_RESPONSE			 14
#define SSH_AGENTC_ADD_IDENTITY			 17
#define SSH_AGENTC_REMOVE_IDENTITY		 18
#define SSH_AGENTC_REMOVE_ALL_IDENTITIES	 19
#define SSH_AGENTC_ADD_SMARTCARD_KEY		 20
#define SSH_AGENTC_REMOVE_SMARTCARD_KEY		 21
#define SSH_AGENTC_LOCK				 22
#define SSH_AGENTC_UNLOCK			 23
#define SSH_AGENTC_ADD_ID_CONSTRAINED		 25
#define SSH_AGENTC_ADD_SMARTCARD_KEY_CONSTRAINED 26
#define SSH_AGENTC_EXTENSION			 27
#define SSH_AGENT_EXTENSION_FAILURE		 28

/* SIGN_REQUEST flags (RFC 9987 section 3.6.1). */
#define SSH_AGENT_RSA_SHA2_256 0x02
#define SSH_AGENT_RSA_SHA2_512 0x04

/* OpenSSH's agent takes frames up to 256 KiB; so do we. */
#define SSH_AGENT_FRAME_MAX (256 * 1024)
/* Bounds on decoded fields. */
#define SSH_KEY_BLOB_MAX   (16 * 1024) /* a public key or certificate */
#define SSH_DATA_MAX	   (SSH_AGENT_FRAME_MAX - 64)
#define SSH_NAME_MAX	   256 /* algorithm, extension, namespace names */
#define SSH_USER_MAX	   1024
#define SSH_PASS_MAX	   1024
#define SSH_SESSION_ID_MAX 64 /* a SHA-512 exchange hash */
#define SSH_SIG_BLOB_MAX   2048
#define SSH_IDS_MAX	   256

#define SSH_EXT_SESSION_BIND "session-bind@openssh.com"
#define SSH_EXT_QUERY	     "query"

struct msg_ssh_sign_req {
	const unsigned char *key; /* the key blob */
	size_t key_len;
	const unsigned char *data;
	size_t data_len;
	uint32_t flags;
};

struct msg_ssh_ident {
	const unsigned char *key; /* key (or certificate) blob */
	size_t key_len;
	const char *comment;
};

struct msg_ssh_ext {
	char name[SSH_NAME_MAX + 1];
	const unsigned char *rest; /* the extension's contents */
	size_t rest_len;
};

struct msg_ssh_session_bind {
	const unsigned char *hostkey;
	size_t hostkey_len;
	const unsigned char *session_id;
	size_t session_id_len;
	const unsigned char *sig;
	size_t sig_len;
	int forwarding;
};

/* An empty payload (REQUEST_IDENTITIES, REMOVE_ALL_IDENTITIES). */
WUR int msg_ssh_empty_get(struct wbuf *b);
WUR int msg_ssh_sign_req_get(struct wbuf *b, struct msg_ssh_sign_req *m);
/* LOCK / UNLOCK: string passphrase, into secure memory (secmem.h) that
 * the caller frees with mtls_secure_free(). */
WUR int msg_ssh_lock_get(struct wbuf *b, char **pass);
/* EXTENSION: string name, then the rest is the extension's. */
WUR int msg_ssh_ext_get(struct wbuf *b, struct msg_ssh_ext *m);
/* The contents of session-bind@openssh.com. */
WUR int msg_ssh_session_bind_get(struct wbuf *b, struct msg_ssh_session_bind *m);

/* Replies (type byte included). */
WUR int msg_ssh_status_put(struct wbuf *b, uint8_t type);
WUR int msg_ssh_identities_put(struct wbuf *b, const struct msg_ssh_ident *ids, size_t n);
WUR int msg_ssh_sign_resp_put(struct wbuf *b, const unsigned char *sig, size_t len);
/* The "query" reply: SSH_AGENT_SUCCESS, then each name as a string. */
WUR int msg_ssh_query_resp_put(struct wbuf *b, const char *const *names, size_t n);
/* Client side (tests, bench): the same messages the other way. */
WUR int msg_ssh_sign_req_put(struct wbuf *b, const struct msg_ssh_sign_req *m);
WUR int msg_ssh_identities_get(struct wbuf *b, struct msg_ssh_ident *ids, size_t max, size_t *n);

/*
 * The data of a SIGN_REQUEST.
 *
 * User authentication (RFC 4252 section 7, as signed): string session
 * id, byte 50, string user, string "ssh-connection", string "publickey"
 * or "publickey-hostbound-v00@openssh.com", boolean TRUE, string
 * algorithm, string key blob, and for hostbound string server host key.
 */
struct ssh_userauth {
	const unsigned char *session_id;
	size_t session_id_len;
	const unsigned char *user;
	size_t user_len;
	const unsigned char *alg;
	size_t alg_len;
	const unsigned char *key;
	size_t key_len;
	int hostbound;
	const unsigned char *hostkey; /* hostbound only */
	size_t hostkey_len;
};

/* SSHSIG to be signed: "SSHSIG", string namespace, string reserved,
 * string hash algorithm ("sha256" | "sha512"), string H(message). */
#define SSHSIG_MAGIC "SSHSIG"
struct sshsig_tbs {
	const unsigned char *ns;
	size_t ns_len;
	const unsigned char *hash_alg;
	size_t hash_alg_len;
	size_t hash_len;
};

/* Both parse all of b (which they consume) and return 0 or
 * MTLS_ERR_CONTENT_REJECTED with a reason in why; pointers in *m point
 * into b and stay valid until it changes. */
WUR int ssh_userauth_parse(struct wbuf *b, struct ssh_userauth *m, char *why, size_t why_len);
WUR int sshsig_parse(struct wbuf *b, struct sshsig_tbs *m, char *why, size_t why_len);

/* 1 if the string (len bytes) equals the C string s. */
int ssh_str_eq(const unsigned char *p, size_t len, const char *s);

#endif
