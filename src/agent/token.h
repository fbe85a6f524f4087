/*
 * token - identities on the PKCS#11 tokens, login/logout, PIN changes and
 * signatures.  The module itself runs in mtls-agent-p11 (helper.h): this
 * file holds what the agent knows and asks the helper for the rest.
 *
 * Locking: a read-write lock inside the token set; signatures run in
 * parallel under the read lock (each on its own helper channel),
 * enumeration, login and logout take the write lock.  No helper call takes
 * longer than token-timeout, so neither lock is held longer.
 */
#ifndef MTLS_TOKEN_H
#define MTLS_TOKEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "conf.h"
#include "proto.h"
#include "scheme.h"

struct tokenset;

/* Loads cfg->module, finds the identities, logs in those with a PIN file.
 * cfg must outlive the token set (or be replaced with token_reload). */
__attribute__((warn_unused_result)) int token_open(const struct config *cfg, struct tokenset **out,
						   char *err, size_t err_len);

/* Re-reads identities for a new configuration (same module required;
 * a changed module is refused with MTLS_ERR_CONFIG).  The old cfg may be
 * freed once this has returned 0 and no token_* call that began before
 * it is still running: some read the configuration without the lock
 * (server.c keeps each one until then, see struct live_cfg). */
__attribute__((warn_unused_result)) int token_reload(struct tokenset *ts, const struct config *cfg,
						     char *err, size_t err_len);

/* Logs out every token, frees everything; accepts NULL. */
void token_close(struct tokenset *ts);

/* A copy of the identities (at most MTLS_IDS_MAX), for whoever shows
 * them; the caller frees *ids with mtls_agent_identities_free(). */
__attribute__((warn_unused_result)) int token_list(struct tokenset *ts,
						   struct mtls_agent_identity **ids, size_t *n,
						   char *why, size_t why_len);

/* Logs in the token of `name` ("" = the only token).  *retries is set to
 * the tries left the token reports, or -1.  With `verify` (LOGIN_VERIFY)
 * the token checks the PIN even when it is logged in: it is logged out and
 * in again, and after a wrong PIN it stays logged out. */
__attribute__((warn_unused_result)) int token_login(struct tokenset *ts, const char *name,
						    const char *pin, int verify, int *retries,
						    char *why, size_t why_len);

/*
 * SET_PIN: mode SET_PIN_CHANGE changes the user PIN from old to new;
 * SET_PIN_UNBLOCK logs in as SO with `old` (the unblocking code), sets the
 * user PIN to new, and logs the user in with it.  *retries as for login.
 */
__attribute__((warn_unused_result)) int token_set_pin(struct tokenset *ts, const char *name,
						      int mode, const char *old,
						      const char *new_pin, int *retries, char *why,
						      size_t why_len);

/* Logs out the token of `name` ("" = every token). */
__attribute__((warn_unused_result)) int token_logout(struct tokenset *ts, const char *name,
						     char *why, size_t why_len);

struct ssh_binds;

/* Who asks for a signature (from SO_PEERCRED and /proc). */
struct sign_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	const char *exe;
	/* The SSH socket's connection: its session bindings (ssh_policy.h);
	 * NULL on the mtls-agent socket. */
	const struct ssh_binds *ssh;
};

/*
 * Checks the request against the identity's policy (peers, purposes,
 * scheme, content, rate limit), asks for confirmation if the identity
 * wants it (with no lock held), then hashes and signs on the token.
 */
__attribute__((warn_unused_result)) int
token_sign(struct tokenset *ts, const struct sign_peer *peer, const char *name, uint16_t scheme,
	   int purpose, const unsigned char *content, size_t len, unsigned char **sig,
	   size_t *sig_len, char *why, size_t why_len);

/* Fills the token part of a status reply. */
__attribute__((warn_unused_result)) int
token_status(struct tokenset *ts, struct mtls_agent_status *st, char *why, size_t why_len);

/* Notices tokens removed, inserted or replaced since the last call and
 * re-reads slots and identities if so; called about once a second. */
void token_poll(struct tokenset *ts);

/* Logs out tokens logged in for longer than cfg->login_timeout, and
 * drops keys past their identity's lifetime or idle-logout. */
void token_expire(struct tokenset *ts, time_t now);

#endif
