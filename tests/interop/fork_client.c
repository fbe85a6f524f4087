/*
 * fork_client - a prefork process acting as an mTLS client: it configures
 * one SSL_CTX with an agent identity, makes a request, then forks children
 * that each make their own request with the inherited SSL_CTX while the
 * parent makes another.  Every request must succeed: no PKCS#11 (or agent
 * connection) state may be shared across fork() in a way that breaks.
 *
 *   fork_client CA_FILE IDENTITY PORT EXPECT [CHILDREN]
 *
 * Connects to 127.0.0.1:PORT, verifies the server against CA_FILE for the
 * name "localhost", sends GET / and wants a 200 response whose body holds
 * EXPECT.  Exit 0 when all requests succeeded, 1 otherwise (why on stderr).
 * Test scaffolding: it reports and exits rather than following the error
 * idiom.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "mtls-agent.h"

#define MAX_CHILDREN 16

static const char *prog = "fork_client";

static void
ssl_errors(const char *who, const char *what)
{
	unsigned long e;
	char buf[256];

	fprintf(stderr, "%s: %s: %s failed\n", prog, who, what);
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		fprintf(stderr, "%s: %s:   %s\n", prog, who, buf);
	}
	if (*mtls_agent_last_message() != '\0')
		fprintf(stderr, "%s: %s:   agent: %s\n", prog, who, mtls_agent_last_message());
}

/* One request on a fresh connection; 0 on success. */
static int
request(SSL_CTX *ctx, int port, const char *expect, const char *who)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n"
				  "Connection: close\r\n\r\n";
	struct sockaddr_in sin;
	char resp[8192];
	size_t len = 0;
	SSL *ssl = NULL;
	int fd, n, ret = -1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		fprintf(stderr, "%s: %s: cannot connect to port %d\n", prog, who, port);
		goto out;
	}
	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 ||
	    SSL_set1_host(ssl, "localhost") != 1 ||
	    SSL_set_tlsext_host_name(ssl, "localhost") != 1) {
		ssl_errors(who, "SSL set-up");
		goto out;
	}
	if (SSL_connect(ssl) != 1) {
		ssl_errors(who, "handshake");
		goto out;
	}
	if (SSL_write(ssl, req, (int)sizeof(req) - 1) <= 0) {
		ssl_errors(who, "write");
		goto out;
	}
	while (len < sizeof(resp) - 1 &&
	       (n = SSL_read(ssl, resp + len, (int)(sizeof(resp) - 1 - len))) > 0)
		len += (size_t)n;
	resp[len] = '\0';
	if (strncmp(resp, "HTTP/1.1 200 ", 13) != 0 || strstr(resp, expect) == NULL) {
		fprintf(stderr, "%s: %s: unexpected response: %.200s\n", prog, who, resp);
		goto out;
	}
	printf("%s: %s: ok\n", prog, who);
	ret = 0;
out:
	SSL_free(ssl);
	if (fd != -1)
		close(fd);
	return ret;
}

int
main(int argc, char **argv)
{
	pid_t pids[MAX_CHILDREN];
	int i, r, status, port, children = 3, failed = 0;
	char who[32];
	SSL_CTX *ctx;

	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: %s CA_FILE IDENTITY PORT EXPECT [CHILDREN]\n", prog);
		return 2;
	}
	port = atoi(argv[3]);
	if (argc == 6)
		children = atoi(argv[5]);
	if (port <= 0 || port > 65535 || children < 1 || children > MAX_CHILDREN) {
		fprintf(stderr, "%s: bad port or number of children\n", prog);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    SSL_CTX_load_verify_locations(ctx, argv[1], NULL) != 1) {
		ssl_errors("parent", "SSL_CTX set-up");
		return 1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if ((r = mtls_agent_ssl_ctx_use_identity(ctx, NULL, argv[2])) != 0) {
		fprintf(stderr, "%s: mtls_agent_ssl_ctx_use_identity(%s): %s\n", prog, argv[2],
			mtls_agent_strerror(r));
		ssl_errors("parent", "mtls_agent_ssl_ctx_use_identity");
		return 1;
	}
	/* The parent signs once before forking, so that whatever it keeps
	 * (an agent connection) is inherited by the children. */
	if (request(ctx, port, argv[4], "parent (before fork)") != 0)
		failed++;
	fflush(stdout);
	for (i = 0; i < children; i++) {
		if ((pids[i] = fork()) == -1) {
			perror("fork");
			failed++;
			children = i;
			break;
		}
		if (pids[i] == 0) {
			snprintf(who, sizeof(who), "child %d", i + 1);
			r = request(ctx, port, argv[4], who);
			fflush(stdout);
			_exit(r == 0 ? 0 : 1);
		}
	}
	if (request(ctx, port, argv[4], "parent (after fork)") != 0)
		failed++;
	for (i = 0; i < children; i++) {
		while ((r = waitpid(pids[i], &status, 0)) == -1 && errno == EINTR)
			;
		if (r == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "%s: child %d failed (status 0x%x)\n", prog, i + 1, status);
			failed++;
		}
	}
	SSL_CTX_free(ctx);
	if (failed == 0)
		printf("%s: %d children and the parent succeeded\n", prog, children);
	return failed == 0 ? 0 : 1;
}
