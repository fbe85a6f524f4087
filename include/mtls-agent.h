/*
 * mtls-agent.h - the public interface of libmtls-agent.
 *
 * libmtls-agent talks to a running mtls-agent over its UNIX socket: it lists
 * the identities (a private key on a PKCS#11 token plus its certificate) the
 * agent offers, logs the token in, and asks for signatures.  The key never
 * leaves the token and no PKCS#11 state lives in the calling process.
 *
 * Error idiom: every function that can fail returns 0 on success or a
 * negative MTLS_ERR_* code; mtls_agent_strerror() turns a code into text.
 * Functions that return an object through an out-pointer set it to NULL
 * first, so it is safe to free on every path.  All *_free functions accept
 * NULL.
 */
#ifndef MTLS_AGENT_H
#define MTLS_AGENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MTLS_AGENT_WUR __attribute__((warn_unused_result))
#define MTLS_AGENT_API __attribute__((visibility("default")))
#else
#define MTLS_AGENT_WUR
#define MTLS_AGENT_API
#endif

/* Version of the wire protocol this library speaks (docs/PROTOCOL.md). */
#define MTLS_AGENT_PROTOCOL_VERSION 1

/* Largest content one signature request may carry, and longest PIN. */
#define MTLS_AGENT_CONTENT_MAX (1024 * 1024 - 1024)
#define MTLS_AGENT_PIN_MAX     256

/* Environment variable naming the agent socket, as printed by the agent. */
#define MTLS_AGENT_SOCK_ENV "MTLS_AGENT_SOCK"

/*
 * Error codes.  The numbers are part of the wire protocol (an error reply
 * carries the positive value) and never change meaning.
 */
enum mtls_agent_error {
	MTLS_ERR_OK = 0,
	MTLS_ERR_INTERNAL = -1,			/* a bug or an unexpected failure */
	MTLS_ERR_ALLOC = -2,			/* out of memory */
	MTLS_ERR_BAD_REQUEST = -3,		/* malformed message */
	MTLS_ERR_UNSUPPORTED_VERSION = -4,	/* no common protocol version */
	MTLS_ERR_NO_IDENTITY = -5,		/* no such identity */
	MTLS_ERR_TOKEN_ABSENT = -6,		/* the identity's token is not present */
	MTLS_ERR_LOGIN_REQUIRED = -7,		/* the token must be logged in first */
	MTLS_ERR_PIN_INCORRECT = -8,		/* wrong PIN */
	MTLS_ERR_PIN_LOCKED = -9,		/* PIN blocked; needs the PUK/SO */
	MTLS_ERR_POLICY_DENIED = -10,		/* the identity's policy forbids it */
	MTLS_ERR_CONTENT_REJECTED = -11,	/* content does not match purpose */
	MTLS_ERR_PEER_DENIED = -12,		/* this peer may not use the agent */
	MTLS_ERR_FRAME_TOO_LARGE = -13,		/* frame over the size limit */
	MTLS_ERR_TRUNCATED = -14,		/* message ends early */
	MTLS_ERR_TRAILING_DATA = -15,		/* bytes left after the message */
	MTLS_ERR_STRING_NUL = -16,		/* embedded NUL in a string */
	MTLS_ERR_UNSUPPORTED_SCHEME = -17,	/* scheme unknown or wrong key type */
	MTLS_ERR_UNSUPPORTED_MESSAGE = -18,	/* unknown message type */
	MTLS_ERR_INVALID_ARGUMENT = -19,	/* bad argument from the caller */
	MTLS_ERR_CONNECT = -20,			/* cannot reach the agent socket */
	MTLS_ERR_IO = -21,			/* read/write error on the socket */
	MTLS_ERR_CONNECTION_CLOSED = -22,	/* the peer closed the connection */
	MTLS_ERR_TIMEOUT = -23,			/* the operation timed out */
	MTLS_ERR_TOKEN = -24,			/* the PKCS#11 module failed */
	MTLS_ERR_PIN_INVALID = -25,		/* PIN empty, too long or bad chars */
	MTLS_ERR_BUSY = -26,			/* too many connections */
	MTLS_ERR_CONFIG = -27,			/* bad configuration */
	MTLS_ERR_HELLO_REQUIRED = -28,		/* first message must be HELLO */
	MTLS_ERR_NO_SOCKET = -29,		/* no socket path known */
	MTLS_ERR_CERT_INVALID = -30,		/* certificate does not parse */
	MTLS_ERR_CERT_EXPIRED = -31,		/* certificate (or chain) expired */
	MTLS_ERR_CERT_NOT_YET_VALID = -32,	/* certificate not valid yet */
	MTLS_ERR_CERT_UNTRUSTED = -33,		/* no chain to a trusted CA */
	MTLS_ERR_CERT_REVOKED = -34,		/* revoked (CRL or OCSP) */
	MTLS_ERR_CERT_USAGE = -35,		/* key usage / EKU not allowed */
	MTLS_ERR_CERT_REVOCATION_UNKNOWN = -36, /* status unknown (hard fail) */
	MTLS_ERR_USER_MISMATCH = -37,		/* certificate maps to another user */
	MTLS_ERR_SIGNATURE_INVALID = -38,	/* signature does not verify */
	MTLS_ERR_AGENT_LOCKED = -39,		/* agent locked with a passphrase */
	MTLS_ERR_CONFIRM_DENIED = -40,		/* use not confirmed (refused, timeout) */
	MTLS_ERR_RATE_LIMITED = -41,		/* identity's signature rate exceeded */
	/* -42, -43: the SSH front end (-44 unassigned). */
	MTLS_ERR_DESTINATION_DENIED = -42, /* SSH host not in the identity's destinations */
	MTLS_ERR_SSH_BINDING = -43,	   /* SSH session binding missing or invalid */
	/* -45..-48: enrollment (key generation, certificate import). */
	MTLS_ERR_READ_ONLY = -45,     /* token or identity configured read-only */
	MTLS_ERR_MECHANISM = -46,     /* the token cannot generate such a key */
	MTLS_ERR_KEY_NOT_FOUND = -47, /* no private key on a token for this certificate */
	MTLS_ERR_DUPLICATE = -48,     /* already on the token */
	MTLS_ERR_LAST_ = -48
};

/*
 * Returns a static, human-readable description of an MTLS_ERR_* code;
 * never NULL, also for unknown codes.
 */
MTLS_AGENT_API const char *mtls_agent_strerror(int err);

/* Key types. */
#define MTLS_AGENT_KEY_RSA 1
#define MTLS_AGENT_KEY_EC  2

/* Purposes: what a signature request claims to sign (docs/PROTOCOL.md). */
#define MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV 1 /* tls13-client-certificate-verify */
#define MTLS_AGENT_PURPOSE_PAM_CHALLENGE   2 /* pam-challenge */
#define MTLS_AGENT_PURPOSE_RAW_DIGEST	   3 /* raw-digest */
#define MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV 4 /* tls12-client-certificate-verify */
/* 5 and 6: the SSH front end; 7: csr (enrollment); 8: the PKCS#11 front end. */
#define MTLS_AGENT_PURPOSE_SSH		 5 /* ssh: SSH user authentication */
#define MTLS_AGENT_PURPOSE_SSH_SIG	 6 /* ssh-sig: SSHSIG (ssh-keygen -Y sign) */
#define MTLS_AGENT_PURPOSE_CSR		 7 /* csr: a CertificationRequestInfo for this key */
#define MTLS_AGENT_PURPOSE_PKCS11_DIGEST 8 /* pkcs11-digest: a digest from mtls-agent-pkcs11.so */

/* TLS SignatureScheme code points (RFC 8446 section 4.2.3). */
#define MTLS_AGENT_RSA_PKCS1_SHA256	  0x0401
#define MTLS_AGENT_RSA_PKCS1_SHA384	  0x0501
#define MTLS_AGENT_RSA_PKCS1_SHA512	  0x0601
#define MTLS_AGENT_ECDSA_SECP256R1_SHA256 0x0403
#define MTLS_AGENT_ECDSA_SECP384R1_SHA384 0x0503
#define MTLS_AGENT_RSA_PSS_RSAE_SHA256	  0x0804
#define MTLS_AGENT_RSA_PSS_RSAE_SHA384	  0x0805
#define MTLS_AGENT_RSA_PSS_RSAE_SHA512	  0x0806

/* Identity flags (struct mtls_agent_identity.flags). */
#define MTLS_AGENT_ID_TOKEN_PRESENT  0x01
#define MTLS_AGENT_ID_LOGGED_IN	     0x02
#define MTLS_AGENT_ID_KEY_FOUND	     0x04 /* private key seen on the token */
#define MTLS_AGENT_ID_PIN_COUNT_LOW  0x08
#define MTLS_AGENT_ID_PIN_FINAL_TRY  0x10
#define MTLS_AGENT_ID_PIN_LOCKED     0x20
#define MTLS_AGENT_ID_PROTECTED_AUTH 0x40 /* PIN pad on the reader */
#define MTLS_AGENT_ID_KEY_MISMATCH   0x80 /* key at its id is not the certificate's */

/* One identity offered by the agent.  Owned by the array it came in. */
struct mtls_agent_identity {
	char *name;	       /* identity name, used in requests */
	char *token_label;     /* label of the token holding the key */
	char *key_label;       /* CKA_LABEL of the key, may be "" */
	unsigned char *key_id; /* CKA_ID of the key */
	size_t key_id_len;
	int key_type;	       /* MTLS_AGENT_KEY_* */
	unsigned int key_bits; /* modulus or curve size */
	uint32_t flags;	       /* MTLS_AGENT_ID_* */
	uint32_t purposes;     /* bit (1 << MTLS_AGENT_PURPOSE_*) allowed */
	uint16_t *schemes;     /* SignatureSchemes the key can do */
	size_t n_schemes;
	unsigned char *cert_der; /* certificate (DER); NULL if none */
	size_t cert_der_len;
	unsigned char **chain_der; /* chain certificates, leaf's issuer first */
	size_t *chain_der_len;
	size_t n_chain;
	/* A key with no certificate yet (enrollment): its public key, a DER
	 * SubjectPublicKeyInfo; NULL when cert_der is set. */
	unsigned char *spki_der;
	size_t spki_der_len;
};

/* Agent status. */
struct mtls_agent_status {
	char *version;		      /* agent version string */
	uint32_t pid;		      /* agent process id */
	uint32_t uptime;	      /* seconds since start */
	uint32_t connections;	      /* open client connections */
	uint32_t identities;	      /* identities configured */
	uint32_t tokens_present;      /* tokens currently present */
	uint32_t tokens_logged_in;    /* tokens currently logged in */
	uint32_t identities_expiring; /* certificates expired or expiring within
				       * the agent's expiry-warning-days */
};

/* A connection to an agent.  Thread-safe: calls on one handle are
 * serialized; use one handle per thread for parallel signatures. */
typedef struct mtls_agent mtls_agent;

/*
 * Connects to the agent at `path`; if `path` is NULL, at $MTLS_AGENT_SOCK,
 * else at $XDG_RUNTIME_DIR/mtls-agent/agent.sock.  Performs the version
 * handshake.  On success *out is a new handle the caller frees with
 * mtls_agent_free().  A handle whose agent restarted reconnects once on
 * its next call.
 * Returns 0, MTLS_ERR_NO_SOCKET, MTLS_ERR_CONNECT, MTLS_ERR_PEER_DENIED,
 * MTLS_ERR_UNSUPPORTED_VERSION, MTLS_ERR_IO, MTLS_ERR_ALLOC ...
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_connect(const char *path, mtls_agent **out);

/* Closes the connection and frees the handle.  Accepts NULL. */
MTLS_AGENT_API void mtls_agent_free(mtls_agent *agent);

/*
 * The text the agent sent with the last error reply received on this
 * thread ("" if none).  Valid until the next call on this thread.
 */
MTLS_AGENT_API const char *mtls_agent_last_message(void);

/*
 * Lists the identities.  On success *ids is an array of *n identities the
 * caller frees with mtls_agent_identities_free().
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_list(mtls_agent *agent,
						  struct mtls_agent_identity **ids, size_t *n);
MTLS_AGENT_API void mtls_agent_identities_free(struct mtls_agent_identity *ids, size_t n);

/*
 * Asks the agent to sign `content` for `purpose` with the identity named
 * `identity` using TLS SignatureScheme `scheme`.  The agent hashes the
 * content itself (except for MTLS_AGENT_PURPOSE_RAW_DIGEST, where content
 * is the digest) after checking it matches the purpose.  On success *sig is
 * a malloc'd signature of *sig_len bytes (ECDSA: DER-encoded), freed with
 * free().  Returns 0 or MTLS_ERR_NO_IDENTITY, MTLS_ERR_LOGIN_REQUIRED,
 * MTLS_ERR_CONTENT_REJECTED, MTLS_ERR_POLICY_DENIED, MTLS_ERR_TOKEN_ABSENT,
 * MTLS_ERR_UNSUPPORTED_SCHEME ...
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_sign(mtls_agent *agent, const char *identity,
						  uint16_t scheme, int purpose,
						  const unsigned char *content, size_t content_len,
						  unsigned char **sig, size_t *sig_len);

/*
 * Logs in the token of `identity` (NULL or "": the only token, or the
 * first identity's) with `pin`.  On MTLS_ERR_PIN_INCORRECT, *retries_left
 * (if not NULL) is set to the tries the token reports left, or -1 when it
 * does not say.  The library wipes its copies of the PIN.
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_login(mtls_agent *agent, const char *identity,
						   const char *pin, int *retries_left);

/*
 * Logs in the token of `identity` (NULL or "": the only token) with a PIN
 * the agent asks the person for itself, through its askpass program; the
 * caller never sees the PIN.  For clients that have no way to ask (the
 * PKCS#11 front end's protected authentication path).  Returns 0,
 * MTLS_ERR_CONFIRM_DENIED (no askpass program, or no answer in time),
 * MTLS_ERR_PIN_INCORRECT (with *retries_left as for mtls_agent_login()),
 * MTLS_ERR_PIN_LOCKED ...
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_login_prompt(mtls_agent *agent, const char *identity,
							  int *retries_left);

/*
 * Changes the user PIN of the token of `identity` (NULL or "": the only
 * token) from old_pin to new_pin.  On MTLS_ERR_PIN_INCORRECT *retries_left
 * is set as for mtls_agent_login().
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_change_pin(mtls_agent *agent, const char *identity,
							const char *old_pin, const char *new_pin,
							int *retries_left);

/*
 * Unblocks (re-sets) the user PIN with the unblocking code: the token's SO
 * PIN, which is what PKCS#11 calls the PUK.  The token is logged in as SO
 * only for this, then logged out.
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_unblock_pin(mtls_agent *agent, const char *identity,
							 const char *puk, const char *new_pin,
							 int *retries_left);

/*
 * Locks the agent with a passphrase: until mtls_agent_unlock() with the
 * same passphrase it lists nothing and signs nothing.  The agent keeps
 * only a salted slow hash of it.  Failed unlocks are answered more and
 * more slowly.  Returns 0, MTLS_ERR_AGENT_LOCKED (already locked) ...
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_lock(mtls_agent *agent, const char *passphrase);
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_unlock(mtls_agent *agent, const char *passphrase);

/* Logs out the token of `identity` (NULL or "": every token). */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_logout(mtls_agent *agent, const char *identity);

/* Fills *st; free its members with mtls_agent_status_clear(). */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_get_status(mtls_agent *agent,
							struct mtls_agent_status *st);
MTLS_AGENT_API void mtls_agent_status_clear(struct mtls_agent_status *st);

/*
 * Enrollment.  Key kinds for mtls_agent_keygen() ("ec:p256", "rsa:2048", ...
 * by mtls_agent_key_kind_from_name(); 0 when unknown).
 */
#define MTLS_AGENT_KEYGEN_EC_P256  1
#define MTLS_AGENT_KEYGEN_EC_P384  2
#define MTLS_AGENT_KEYGEN_RSA_2048 3
#define MTLS_AGENT_KEYGEN_RSA_3072 4
#define MTLS_AGENT_KEYGEN_RSA_4096 5
MTLS_AGENT_API int mtls_agent_key_kind_from_name(const char *name);

/*
 * Generates a key pair on the token that `token_uri` (a pkcs11: URI; NULL
 * or "": the only token) names, labelled `label`: the private key is
 * sensitive, never extractable, for signing; the public key is stored on
 * the token too; both get a fresh random CKA_ID.  The token must be logged
 * in.  On success *name is the new identity's name (malloc'd) and *spki
 * its SubjectPublicKeyInfo (DER, malloc'd, *spki_len bytes); free both.
 * Returns 0 or MTLS_ERR_LOGIN_REQUIRED, MTLS_ERR_READ_ONLY,
 * MTLS_ERR_MECHANISM (the message lists the token's mechanisms),
 * MTLS_ERR_DUPLICATE (the label is taken), MTLS_ERR_NO_IDENTITY (no such
 * token) ...
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_keygen(mtls_agent *agent, const char *token_uri,
						    const char *label, int kind, char **name,
						    unsigned char **spki, size_t *spki_len);

/* mtls_agent_import_cert() flags. */
#define MTLS_AGENT_IMPORT_FORCE 0x01 /* expired, or replacing a later certificate */

/*
 * Writes the certificate `der` onto the token that holds its private key,
 * with the key's CKA_ID and label; the agent lists the identity at once.
 * A certificate the token has already is MTLS_ERR_DUPLICATE; one whose key
 * is on no logged-in token MTLS_ERR_KEY_NOT_FOUND; an expired one
 * MTLS_ERR_CERT_EXPIRED unless forced.  A certificate that the key has
 * already is replaced when the new one ends later (a renewal), else only
 * with MTLS_AGENT_IMPORT_FORCE.  *name (malloc'd) is the identity's name.
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_import_cert(mtls_agent *agent,
							 const unsigned char *der, size_t len,
							 unsigned int flags, char **name);

/* mtls_agent_delete_key() flags. */
#define MTLS_AGENT_DELETE_FORCE 0x01 /* also while its certificate is valid */

/*
 * Destroys the private key, the public key and the certificates with the
 * CKA_ID of identity `name` on its (logged-in) token.  Refused with
 * MTLS_ERR_POLICY_DENIED while the identity's certificate is valid, unless
 * MTLS_AGENT_DELETE_FORCE; MTLS_ERR_READ_ONLY as for key generation.
 */
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_delete_key(mtls_agent *agent, const char *name,
							unsigned int flags);

/* Scheme and purpose names ("rsa_pss_rsae_sha256",
 * "tls13-client-certificate-verify").  Return NULL / 0 when unknown. */
MTLS_AGENT_API const char *mtls_agent_scheme_name(uint16_t scheme);
MTLS_AGENT_API uint16_t mtls_agent_scheme_from_name(const char *name);
MTLS_AGENT_API const char *mtls_agent_purpose_name(int purpose);
MTLS_AGENT_API int mtls_agent_purpose_from_name(const char *name);

/*
 * OpenSSL 3 integration (declared with OpenSSL's struct tags so that this
 * header does not need the OpenSSL headers).
 *
 * mtls_agent_ssl_ctx_use_identity() configures `ctx` with an agent
 * identity: its certificate, its chain, and a private key whose
 * signatures are made by the agent (through the mtls-agent OpenSSL
 * provider, registered as a built-in and loaded, with the default
 * provider, into a private library context on first use: OpenSSL 3.0 has
 * no way to reach an SSL_CTX's own; signing then follows the key to its
 * provider, whatever the SSL_CTX's context).  `identity` is an identity name
 * or an "mtls-agent:" URI; `socket_path` NULL means $MTLS_AGENT_SOCK or the
 * default.  The process keeps no PKCS#11 state: a child forked after this
 * call signs over its own connection.
 * Returns 0 or MTLS_ERR_NO_IDENTITY, MTLS_ERR_CONNECT, MTLS_ERR_INTERNAL...
 */
struct ssl_ctx_st;
MTLS_AGENT_API MTLS_AGENT_WUR int mtls_agent_ssl_ctx_use_identity(struct ssl_ctx_st *ctx,
								  const char *socket_path,
								  const char *identity);

/*
 * The provider's entry point, for OSSL_PROVIDER_add_builtin(libctx,
 * "mtls-agent", mtls_agent_provider_init).  The loadable module
 * mtls-agent.so (in OpenSSL's modules directory) exports it as
 * OSSL_provider_init.  Its parameters are OpenSSL's OSSL_provider_init_fn.
 */
struct ossl_core_handle_st;
struct ossl_dispatch_st;
MTLS_AGENT_API int mtls_agent_provider_init(const struct ossl_core_handle_st *handle,
					    const struct ossl_dispatch_st *in,
					    const struct ossl_dispatch_st **out, void **provctx);

#ifdef __cplusplus
}
#endif
#endif /* MTLS_AGENT_H */
