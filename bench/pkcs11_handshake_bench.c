/*
 * pkcs11_handshake_bench - TLS 1.3 handshakes per second of a GnuTLS client
 * whose key is reached through a PKCS#11 module: mtls-agent-pkcs11.so, the
 * token's own module loaded directly, or p11-kit-client.so (remoting).
 * Each handshake is a new TCP connection and a full handshake (no
 * resumption) with client authentication, to a server on loopback; the
 * credentials are loaded once, as a long-running client would.
 *
 * usage: pkcs11_handshake_bench MODULE CA_FILE CERT_URI KEY_URI PORT SECONDS [PIN]
 * Prints "handshakes/s N".
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/pkcs11.h>

static const char *pin;

static int
pin_cb(void *data, int attempt, const char *token_url, const char *token_label, unsigned int flags,
       char *out, size_t out_len)
{
	if (pin == NULL || attempt > 0 || strlen(pin) >= out_len)
		return -1;
	strcpy(out, pin);
	return 0;
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
handshake(gnutls_certificate_credentials_t cred, gnutls_priority_t prio, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
	gnutls_session_t s = NULL;
	char buf[512];
	ssize_t n;
	int fd, r = -1, one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		goto out;
	if (gnutls_init(&s, GNUTLS_CLIENT) < 0 || gnutls_priority_set(s, prio) < 0 ||
	    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred) < 0)
		goto out;
	gnutls_server_name_set(s, GNUTLS_NAME_DNS, "localhost", 9);
	gnutls_session_set_verify_cert(s, "localhost", 0);
	gnutls_transport_set_int(s, fd);
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		fprintf(stderr, "handshake: %s\n", gnutls_strerror(r));
		goto out;
	}
	/* In TLS 1.3 the server checks the client's certificate after the
	 * client's Finished: read its answer so a refusal is counted as one. */
	if (gnutls_record_send(s, req, sizeof(req) - 1) < 0) {
		r = -1;
		goto out;
	}
	do
		n = gnutls_record_recv(s, buf, sizeof(buf) - 1);
	while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
	if (n <= 0 || strncmp(buf, "HTTP/1.1 200", 12) != 0) {
		fprintf(stderr, "no 200 from the server: %s\n",
			n < 0 ? gnutls_strerror((int)n) : (buf[n] = '\0', buf));
		r = -1;
		goto out;
	}
	r = 0;
out:
	if (s != NULL)
		gnutls_deinit(s);
	if (fd >= 0)
		close(fd);
	return r;
}

int
main(int argc, char **argv)
{
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	double t0, secs;
	long n = 0;
	int r;

	if (argc != 7 && argc != 8) {
		fprintf(stderr,
			"usage: pkcs11_handshake_bench MODULE CA_FILE CERT_URI KEY_URI PORT "
			"SECONDS [PIN]\n");
		return 2;
	}
	pin = argc == 8 ? argv[7] : NULL;
	secs = atof(argv[6]);
	if (gnutls_global_init() < 0 || gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL) < 0 ||
	    gnutls_pkcs11_add_provider(argv[1], NULL) < 0 ||
	    gnutls_certificate_allocate_credentials(&cred) < 0 ||
	    gnutls_certificate_set_x509_trust_file(cred, argv[2], GNUTLS_X509_FMT_PEM) <= 0 ||
	    gnutls_priority_init(&prio, "NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL) < 0) {
		fprintf(stderr, "pkcs11_handshake_bench: cannot set up GnuTLS with %s\n", argv[1]);
		return 1;
	}
	gnutls_pkcs11_set_pin_function(pin_cb, NULL);
	if ((r = gnutls_certificate_set_x509_key_file2(cred, argv[3], argv[4], GNUTLS_X509_FMT_PEM,
						       NULL, 0)) < 0) {
		fprintf(stderr, "pkcs11_handshake_bench: %s: %s\n", argv[4], gnutls_strerror(r));
		return 1;
	}
	if (handshake(cred, prio, atoi(argv[5])) != 0) /* warm-up, and a check */
		return 1;
	t0 = now();
	while (now() - t0 < secs) {
		if (handshake(cred, prio, atoi(argv[5])) != 0)
			return 1;
		n++;
	}
	printf("handshakes/s %.1f\n", n / (now() - t0));
	gnutls_priority_deinit(prio);
	gnutls_certificate_free_credentials(cred);
	gnutls_global_deinit();
	return 0;
}
