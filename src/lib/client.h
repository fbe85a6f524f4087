/*
 * client.h - entry points of client.c for the PAM module only.
 *
 * Not part of the public API: their names are outside the mtls_agent_*
 * prefix that libmtls-agent.map exports, so libmtls-agent.so keeps them
 * hidden; pam_mtls_agent.so links its own copy (pam/libpam-client.la).
 */
#ifndef MTLS_CLIENT_H
#define MTLS_CLIENT_H

#include "mtls-agent.h"

/*
 * A handle on a connection the caller has opened and checked already.
 * Takes `fd` (closed on failure too), sends HELLO on it, and never opens
 * another connection: once fd is gone, requests fail with
 * MTLS_ERR_CONNECTION_CLOSED.  Returns 0 or a negative MTLS_ERR_* code.
 */
__attribute__((warn_unused_result)) int client_connect_fd(int fd, mtls_agent **out);

/*
 * LOGIN with the "verify" flag: the agent logs the token out and in again
 * with `pin`, so the token checks the PIN even when it was logged in (a
 * wrong PIN counts against its retry counter and leaves it logged out).
 * Returns as mtls_agent_login().
 */
__attribute__((warn_unused_result)) int client_login_verify(mtls_agent *a, const char *identity,
							    const char *pin, int *retries_left);

/*
 * The TLS 1.3 handshake messages of the handshake this thread is in, as
 * the SSL_CTX helper records them (sslctx.c); mtls_agent_sign() sends them
 * with a TLS 1.3 CertificateVerify so that an identity bound to servers
 * can check the server (PROTOCOL.md 6.3).  The bytes stay the caller's;
 * NULL forgets them.
 */
void client_set_transcript(const unsigned char *t, size_t len);

#endif
