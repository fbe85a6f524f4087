/*
 * server - the agent's socket: listening, peer checks, one thread per
 * connection, request dispatch, signals.  Parses nothing itself: every
 * message goes through the codecs in src/common.
 */
#ifndef MTLS_SERVER_H
#define MTLS_SERVER_H

#include <stddef.h>

#include "conf.h"
#include "token.h"

struct server;

/*
 * Creates the listening socket at `path`: the parent directory is created
 * mode 0700 if missing, and refused if it is not a directory owned by us
 * with no group/other access; a live agent already on the path is an
 * error, a stale socket file is replaced; the socket is mode 0600.
 */
__attribute__((warn_unused_result)) int server_listen(const char *path, int *fd, char *err,
						      size_t err_len);

/* Takes ownership of cfg, ts and listen_fd.  config_path (may be NULL)
 * is re-read on SIGHUP, with the command-line overrides `ov` (which must
 * outlive the server) applied again. */
__attribute__((warn_unused_result)) int server_new(struct config *cfg, const char *config_path,
						   const struct config_overrides *ov,
						   struct tokenset *ts, int listen_fd,
						   const char *sock_path, struct server **out);

/* Serves until SIGTERM or SIGINT; then closes connections, removes the
 * socket, logs out and frees.  The caller must have blocked SIGTERM,
 * SIGINT and SIGHUP in every thread (server_block_signals). */
int server_run(struct server *s);

/* Blocks the signals server_run waits for; call before any thread. */
void server_block_signals(void);

/* The socket belongs to the service manager (socket activation): the
 * server does not unlink it when it stops. */
void server_keep_socket(struct server *s);

/* Serves the SSH agent protocol (ssh.c) on fd too, bound at `path`;
 * the server owns fd, and unlinks path at exit unless `keep`.  Returns 0
 * or MTLS_ERR_ALLOC. */
__attribute__((warn_unused_result)) int server_set_ssh_socket(struct server *s, int fd,
							      const char *path, int keep);

/*
 * One request body `in` through the dispatcher, as a connection of `peer`
 * that has (*hello_done) or has not said HELLO would have it served; the
 * reply (or MSG_ERROR) is in `out`, *hello_done is updated.  Returns what
 * dispatch() does: non-zero only when no reply could be built.  For the
 * dispatcher's fuzz target (tests/fuzz/fuzz_dispatch.c): conn_main() is
 * the only caller of dispatch() in the agent.
 */
struct wbuf;
__attribute__((warn_unused_result)) int server_dispatch_frame(struct server *s,
							      const struct sign_peer *peer,
							      int *hello_done, struct wbuf *in,
							      struct wbuf *out);

/* The default socket path, $XDG_RUNTIME_DIR/mtls-agent/agent.sock, in a
 * new string; NULL if XDG_RUNTIME_DIR is unset or not absolute. */
char *server_default_socket(void);

#endif
