/*
 * p11_fork_client - a prefork-style client of mtls-agent-pkcs11.so: the
 * parent loads the identity through GnuTLS's PKCS#11 layer (pkcs11: URIs,
 * the module added as a provider), logs in to the server once, then forks
 * children that log in with the credentials they inherited, as prefork
 * servers and their workers do.  Each process prints "pid PID: LINE" for
 * the page's first line.  Exit 0 only if every process logged in.
 *
 * usage: p11_fork_client MODULE CA_FILE CERT_URI KEY_URI PORT CHILDREN
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/pkcs11.h>

static int
fetch(gnutls_certificate_credentials_t cred, int port)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	gnutls_session_t s = NULL;
	char buf[4096], *line;
	size_t len = 0;
	ssize_t n;
	int fd, r, ret = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		perror("connect");
		goto out;
	}
	if (gnutls_init(&s, GNUTLS_CLIENT) < 0 || gnutls_set_default_priority(s) < 0 ||
	    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred) < 0 ||
	    gnutls_server_name_set(s, GNUTLS_NAME_DNS, "localhost", 9) < 0)
		goto out;
	gnutls_session_set_verify_cert(s, "localhost", 0);
	gnutls_transport_set_int(s, fd);
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		fprintf(stderr, "pid %ld: handshake: %s\n", (long)getpid(), gnutls_strerror(r));
		goto out;
	}
	if (gnutls_record_send(s, req, sizeof(req) - 1) < 0)
		goto out;
	while (len < sizeof(buf) - 1) {
		n = gnutls_record_recv(s, buf + len, sizeof(buf) - 1 - len);
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	/* The body's first line (after the blank line ending the headers). */
	if ((line = strstr(buf, "\r\n\r\n")) == NULL) {
		fprintf(stderr, "pid %ld: no HTTP response (%zu bytes)\n", (long)getpid(), len);
		goto out;
	}
	line += 4;
	line[strcspn(line, "\r\n")] = '\0';
	printf("pid %ld: %s\n", (long)getpid(), line);
	fflush(stdout);
	ret = strncmp(line, "dn=<CN=", 7) == 0 ? 0 : 1;
out:
	if (s != NULL)
		gnutls_deinit(s);
	if (fd >= 0)
		close(fd);
	return ret;
}

int
main(int argc, char **argv)
{
	gnutls_certificate_credentials_t cred;
	int i, n, st, failed = 0;
	pid_t pid;

	if (argc != 7 || (n = atoi(argv[6])) < 0 || n > 64) {
		fprintf(stderr, "usage: p11_fork_client MODULE CA_FILE CERT_URI KEY_URI PORT "
				"CHILDREN\n");
		return 2;
	}
	if (gnutls_global_init() < 0 || gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL) < 0 ||
	    gnutls_pkcs11_add_provider(argv[1], NULL) < 0 ||
	    gnutls_certificate_allocate_credentials(&cred) < 0 ||
	    gnutls_certificate_set_x509_trust_file(cred, argv[2], GNUTLS_X509_FMT_PEM) <= 0) {
		fprintf(stderr, "p11_fork_client: cannot set up GnuTLS with %s\n", argv[1]);
		return 1;
	}
	if ((i = gnutls_certificate_set_x509_key_file2(cred, argv[3], argv[4], GNUTLS_X509_FMT_PEM,
						       NULL, 0)) < 0) {
		fprintf(stderr, "p11_fork_client: %s: %s\n", argv[4], gnutls_strerror(i));
		return 1;
	}
	if (fetch(cred, atoi(argv[5])) != 0)
		return 1;
	fflush(NULL);
	for (i = 0; i < n; i++) {
		if ((pid = fork()) < 0)
			return 1;
		if (pid == 0)
			_exit(fetch(cred, atoi(argv[5])));
	}
	for (i = 0; i < n; i++)
		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed = 1;
	/* And the parent again, after its children. */
	if (fetch(cred, atoi(argv[5])) != 0)
		failed = 1;
	gnutls_certificate_free_credentials(cred);
	gnutls_global_deinit();
	return failed;
}
