/*
 * mtls-agentctl connect: what its two files share.  connect.c makes the
 * request with libcurl; connect_tls.c is the TLS side: it attaches the
 * agent identity to each SSL_CTX libcurl makes, watches what the server
 * says in TLS, and turns a failure into one line that says who refused.
 */
#ifndef MTLS_CTL_CONNECT_H
#define MTLS_CTL_CONNECT_H

#include <curl/curl.h>
#include <openssl/ssl.h>

/* One connect command: what the SSL_CTX callback needs, and what it and
 * the TLS callbacks saw (reset for each connection libcurl makes). */
struct tls_state {
	const char *identity; /* agent identity name or mtls-agent: URI */
	int identity_err;     /* mtls_agent_ssl_ctx_use_identity() failed */
	int alert_received;   /* the server sent a fatal alert */
	int alert;	      /* its description */
	int ticket;	      /* the server sent a TLS 1.3 session ticket */
	int started, done;    /* the handshake started (TCP connected), finished */
	int cert_requested;   /* the server asked for a client certificate */
	SSL *ssl;	      /* the connection's, seen by the info callback; only
				 while libcurl keeps the connection */
};

/* The one connect of this process (libcurl's callbacks are plain C). */
extern struct tls_state tls_seen;

/* libcurl's CURLOPT_SSL_CTX_FUNCTION: the identity, the server name check
 * and the callbacks that record alerts and tickets. */
CURLcode tls_ctx_setup(CURL *h, void *sslctx, void *arg);

/* Where a URL points, for messages: "HOST[:PORT]" as written and the host
 * without brackets.  Fills both (possibly with "?"). */
void url_hostport(const char *url, char *hostport, size_t hp_len, char *host, size_t host_len);

/* Server text for a one-line message: control bytes become blanks (safe()
 * cannot be used twice in one printf: its buffer is shared). */
void blank_controls(char *s);

/* The SSL of h's connection (after a CONNECT_ONLY transfer too), or
 * NULL. */
SSL *curl_ssl(CURL *h);

/* Prints the TLS session (protocol, cipher, certificates, client
 * signature), each line after prefix. */
void print_session(FILE *f, SSL *ssl, const char *identity, const char *prefix);

/*
 * Explains in one line why the transfer failed and returns the exit code.
 * `errbuf` is libcurl's CURLOPT_ERRORBUFFER.
 */
int connect_failure(CURL *h, CURLcode rc, const char *errbuf);

#endif
