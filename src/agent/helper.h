/*
 * helper - the agent's side of mtls-agent-p11: starts the helper process
 * (posix_spawn of $(libexecdir)/mtls-agent-p11 with K socketpairs and a
 * minimal environment), sends one request per channel, and restarts the
 * helper when it crashed, exited or did not answer within the timeout.
 *
 * Nothing here waits for a hung helper for longer than the timeout, and no
 * lock is held while a request is in the helper: K requests run in
 * parallel, the (K+1)th waits for a free channel at most the timeout.
 * A restart bumps the generation: logins are lost with the process, so the
 * token layer compares helper_generation() to what it saw at login.
 */
#ifndef MTLS_HELPER_H
#define MTLS_HELPER_H

#include <stddef.h>
#include <stdint.h>

#include "msg_p11.h"

struct helper;

/* The environment variables a module may need; everything else is left
 * out of the helper's environment (docs/PROTOCOL.md, "Internal protocol"). */
int helper_env_kept(const char *entry);

/*
 * Starts the helper for `module` (already checked against module-dirs)
 * with `channels` channels.  `bin` = NULL: $MTLS_P11_HELPER_BIN if set
 * (the build's tests), else LIBEXECDIR/mtls-agent-p11.  timeout_ms bounds
 * every request (token-timeout).
 */
WUR int helper_start(const char *bin, const char *module, unsigned int channels, int timeout_ms,
		     struct helper **out, char *err, size_t err_len);

/* Kills and reaps the helper, frees everything; accepts NULL. */
void helper_free(struct helper *h);

/*
 * Sends the request body `req` and reads the reply into `reply`, its type
 * byte checked and consumed.  Returns 0; the code of a P11_ERROR reply
 * (with *fail filled in, retries and rv); MTLS_ERR_TIMEOUT when the helper
 * did not answer in time (it is killed and started again); MTLS_ERR_TOKEN
 * when it died or answered garbage (also restarted).  *gen (may be NULL)
 * gets the generation of the helper that answered.
 */
WUR int helper_call(struct helper *h, const struct wbuf *req, struct wbuf *reply,
		    struct msg_p11_error *fail, unsigned int *gen);

/* The helper's generation: 1 after helper_start(), one more each time a
 * helper is killed (its logins are lost with it); the next request starts
 * the helper of the new generation. */
unsigned int helper_generation(struct helper *h);

/* The pid of the current helper process (for tests and the log), or -1. */
int helper_pid(struct helper *h);

#endif
