/*
 * ssh_policy - what an identity may sign on the SSH agent socket, decided
 * inside the one sign pipeline (sign.c calls ssh_policy_check() for the
 * purposes ssh and ssh-sig): the userauth request carries this identity's
 * key and an algorithm that fits the scheme; the connection's
 * session-bind@openssh.com bindings allow it (destinations, forwarding,
 * the session id and the host key); an SSHSIG namespace is allowed.
 */
#ifndef MTLS_SSH_POLICY_H
#define MTLS_SSH_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "conf.h"
#include "msg_ssh.h"

/* session-bind@openssh.com bindings of one connection, oldest first (a
 * forwarded agent sees the hop it was forwarded over, then the next). */
#define SSH_BINDS_MAX 8
struct ssh_binding {
	unsigned char *hostkey; /* the host key blob, verified */
	size_t hostkey_len;
	unsigned char session_id[SSH_SESSION_ID_MAX];
	size_t session_id_len;
	int forwarding;
	char fp[64]; /* SHA256:... of the host key */
};
struct ssh_binds {
	struct ssh_binding b[SSH_BINDS_MAX];
	size_t n;
	/* The key blob the request named (set by ssh.c for each request):
	 * the identity must still have that key when it signs, also after a
	 * reload gave its name another one.  NULL: not checked. */
	const unsigned char *want_key;
	size_t want_key_len;
};

/* Frees the host keys; accepts NULL. */
void ssh_binds_clear(struct ssh_binds *bs);

/*
 * The check of sign.c for MTLS_AGENT_PURPOSE_SSH and _SSH_SIG, after the
 * purpose's content check passed.  cert: the identity's certificate (its
 * key is the identity's); ci: its configuration (NULL: discovered, the
 * defaults); bs: the connection's bindings (NULL: not the SSH socket).
 * Returns 0, MTLS_ERR_CONTENT_REJECTED, MTLS_ERR_DESTINATION_DENIED,
 * MTLS_ERR_SSH_BINDING or MTLS_ERR_POLICY_DENIED with the reason (naming
 * user, host and host key) in why.
 */
WUR int ssh_policy_check(X509 *cert, const struct config_identity *ci, const struct ssh_binds *bs,
			 uint16_t scheme, int purpose, const unsigned char *content, size_t len,
			 char *why, size_t why_len);

/*
 * Names the user, host and host-key fingerprint of a userauth request
 * (for the confirm prompt and the audit line): "user alice to host
 * h (SHA256:...)".  Empty for anything else.
 */
void ssh_describe(const struct ssh_binds *bs, const struct config_identity *ci, int purpose,
		  const unsigned char *content, size_t len, char *out, size_t out_len);

/* 1 if blob is an OpenSSH certificate of the certificate's key. */
int ssh_cert_is_of(X509 *cert, const unsigned char *blob, size_t len);

/* 1 if the host key blob is allowed by `dests` (the ssh-destinations
 * string); *host gets the known-hosts name that matched, or "". */
int ssh_destination_allowed(const char *dests, const unsigned char *hostkey, size_t hostkey_len,
			    char *host, size_t host_len);

#endif
