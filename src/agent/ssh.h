/*
 * ssh - the SSH agent front end: the agent's second socket speaks the
 * ssh-agent protocol (msg_ssh.h).  This file only decodes requests, finds
 * the identity of a key blob and names the purpose; every signature goes
 * through the one sign pipeline (token_sign(): policy, ssh_policy.c,
 * confirm, rate limit), and the connection loop, peer checks, lock and
 * audit are server.c's.
 */
#ifndef MTLS_SSH_H
#define MTLS_SSH_H

#include "conf.h"
#include "log.h"
#include "token.h"
#include "wbuf.h"

struct ssh_conn;

/* What server.c lends one request. */
struct ssh_env {
	struct tokenset *ts;
	const struct config *cfg; /* the configuration of this request */
	struct sign_peer peer;	  /* who asks; .ssh is set here */
	void *arg;		  /* for the callbacks */
	int (*locked)(void *arg);
	/* 0 or a negative MTLS_ERR_* (AGENT_LOCKED: wrong passphrase ...) */
	int (*lock)(void *arg, const char *pass);
	int (*unlock)(void *arg, const char *pass);
	/* One audit line: "audit: WHAT: peer ..." then `rest`. */
	void (*audit)(void *arg, enum log_level level, const char *what, const char *rest);
};

/* Per-connection state (session bindings, the identity cache); NULL on
 * allocation failure.  ssh_conn_free accepts NULL. */
struct ssh_conn *ssh_conn_new(void);
void ssh_conn_free(struct ssh_conn *sc);

/*
 * Decodes one frame body from `in` and builds the reply into `out`.
 * Refusals and malformed requests are SSH_AGENT_FAILURE replies (0);
 * a negative return means no reply could be built (close).
 */
__attribute__((warn_unused_result)) int ssh_dispatch(struct ssh_conn *sc, const struct ssh_env *env,
						     struct wbuf *in, struct wbuf *out);

/* "ssh.sock" in the directory of the agent socket; malloc'd or NULL. */
char *ssh_default_socket(const char *agent_sock);

#endif
