/*
 * handshake_bench.c - full mTLS handshakes per second against one server.
 *
 *   handshake_bench --port P --ca CA.pem --cert CERT.pem --seconds S --mode MODE ...
 *     --mode pem      --key KEY.pem                 software key from a file
 *     --mode libp11   --module SO --token LABEL --pin PIN --id HEX
 *                     key through libp11 directly: PKCS11_get_private_key()
 *                     and SSL_CTX_use_PrivateKey() (no engine)
 *     --mode agent    --socket PATH --identity NAME  mtls_agent_ssl_ctx_use_identity()
 *     --mode provider --socket PATH --identity NAME  the mtls-agent provider in a
 *                     library context, key from OSSL_STORE "mtls-agent:NAME"
 *
 * Each handshake is a new TCP connection and a new SSL object, TLS 1.3,
 * no session resumption; the client then writes one line and reads the
 * server's answer (openssl s_server -rev), so the server has checked the
 * client certificate before the next handshake starts.
 * Prints one line: "rate <handshakes/s> count <n> seconds <s>".
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libp11.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>

#include "mtls-agent.h"

static const char *o_mode, *o_ca, *o_cert, *o_key, *o_module, *o_token, *o_pin, *o_id, *o_socket,
    *o_ident;
static int o_port;
static double o_seconds = 3.0;

static void
fail(const char *what)
{
	fprintf(stderr, "handshake_bench: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static double
now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int
hexbyte(const char *s)
{
	unsigned int v;

	return sscanf(s, "%2x", &v) == 1 ? (int)v : -1;
}

/* The libp11 way, as an application would do it without the engine. */
static EVP_PKEY *
libp11_key(void)
{
	PKCS11_CTX *ctx = PKCS11_CTX_new();
	PKCS11_SLOT *slots = NULL, *s;
	PKCS11_KEY *keys = NULL;
	unsigned int nslots = 0, nkeys = 0, i;
	int id = hexbyte(o_id);
	EVP_PKEY *pk;

	if (ctx == NULL || PKCS11_CTX_load(ctx, o_module) != 0)
		fail("PKCS11_CTX_load failed");
	if (PKCS11_enumerate_slots(ctx, &slots, &nslots) != 0)
		fail("PKCS11_enumerate_slots failed");
	for (s = NULL, i = 0; i < nslots; i++)
		if (slots[i].token != NULL && strcmp(slots[i].token->label, o_token) == 0)
			s = &slots[i];
	if (s == NULL)
		fail("token not found");
	if (PKCS11_open_session(s, 0) != 0 || PKCS11_login(s, 0, o_pin) != 0)
		fail("PKCS11_login failed");
	if (PKCS11_enumerate_keys(s->token, &keys, &nkeys) != 0)
		fail("PKCS11_enumerate_keys failed");
	for (i = 0; i < nkeys; i++)
		if (keys[i].id_len == 1 && keys[i].id[0] == id)
			break;
	if (i == nkeys)
		fail("key not found");
	if ((pk = PKCS11_get_private_key(&keys[i])) == NULL)
		fail("PKCS11_get_private_key failed");
	/* ctx and slots stay: the key lives in them. */
	return pk;
}

static EVP_PKEY *
store_key(OSSL_LIB_CTX *lc, const char *uri)
{
	OSSL_STORE_CTX *st = OSSL_STORE_open_ex(uri, lc, NULL, NULL, NULL, NULL, NULL, NULL);
	OSSL_STORE_INFO *info;
	EVP_PKEY *pk = NULL;

	if (st == NULL)
		fail("OSSL_STORE_open failed");
	while (pk == NULL && !OSSL_STORE_eof(st)) {
		if ((info = OSSL_STORE_load(st)) == NULL)
			continue;
		if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
			pk = OSSL_STORE_INFO_get1_PKEY(info);
		OSSL_STORE_INFO_free(info);
	}
	OSSL_STORE_close(st);
	if (pk == NULL)
		fail("no key from the store");
	return pk;
}

static SSL_CTX *
make_ctx(void)
{
	OSSL_LIB_CTX *lc = NULL;
	SSL_CTX *ctx;
	EVP_PKEY *pk = NULL;
	int r;

	if (strcmp(o_mode, "provider") == 0) {
		if ((lc = OSSL_LIB_CTX_new()) == NULL ||
		    OSSL_PROVIDER_add_builtin(lc, "mtls-agent", mtls_agent_provider_init) != 1 ||
		    OSSL_PROVIDER_load(lc, "default") == NULL ||
		    OSSL_PROVIDER_load(lc, "mtls-agent") == NULL)
			fail("provider set-up failed");
		if (o_socket != NULL)
			setenv(MTLS_AGENT_SOCK_ENV, o_socket, 1);
	}
	if ((ctx = SSL_CTX_new_ex(lc, NULL, TLS_client_method())) == NULL)
		fail("SSL_CTX_new");
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	if (SSL_CTX_load_verify_locations(ctx, o_ca, NULL) != 1)
		fail("cannot load the CA");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (strcmp(o_mode, "agent") == 0) {
		if ((r = mtls_agent_ssl_ctx_use_identity(ctx, o_socket, o_ident)) != 0) {
			fprintf(stderr, "handshake_bench: %s\n", mtls_agent_strerror(r));
			exit(1);
		}
		return ctx;
	}
	if (SSL_CTX_use_certificate_file(ctx, o_cert, SSL_FILETYPE_PEM) != 1)
		fail("cannot load the certificate");
	if (strcmp(o_mode, "pem") == 0) {
		if (SSL_CTX_use_PrivateKey_file(ctx, o_key, SSL_FILETYPE_PEM) != 1)
			fail("cannot load the key");
		return ctx;
	}
	if (strcmp(o_mode, "libp11") == 0) {
		pk = libp11_key();
	} else if (strcmp(o_mode, "provider") == 0) {
		char uri[512];

		snprintf(uri, sizeof(uri), "mtls-agent:%s", o_ident);
		pk = store_key(lc, uri);
	} else {
		fail("unknown --mode");
	}
	if (SSL_CTX_use_PrivateKey(ctx, pk) != 1)
		fail("SSL_CTX_use_PrivateKey");
	EVP_PKEY_free(pk);
	return ctx;
}

static void
one(SSL_CTX *ctx, const struct sockaddr_in *sa)
{
	char buf[256];
	int fd, on = 1, n;
	SSL *ssl;

	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		fail("socket");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0)
		fail("connect");
	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1)
		fail("SSL_new");
	SSL_set_tlsext_host_name(ssl, "localhost");
	if (SSL_connect(ssl) != 1)
		fail("handshake failed");
	if (SSL_write(ssl, "ping\n", 5) != 5)
		fail("write failed");
	/* The answer comes only once the server accepted our certificate. */
	if ((n = SSL_read(ssl, buf, sizeof(buf))) <= 0)
		fail("the server did not answer (client certificate refused?)");
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mode", 1, NULL, 'M' },     { "port", 1, NULL, 'P' },
		{ "ca", 1, NULL, 'C' },	      { "cert", 1, NULL, 'c' },
		{ "key", 1, NULL, 'k' },      { "module", 1, NULL, 'm' },
		{ "token", 1, NULL, 't' },    { "pin", 1, NULL, 'p' },
		{ "id", 1, NULL, 'd' },	      { "socket", 1, NULL, 's' },
		{ "identity", 1, NULL, 'i' }, { "seconds", 1, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	struct sockaddr_in sa;
	unsigned long count = 0;
	double t0, t1, end;
	SSL_CTX *ctx;
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'M': o_mode = optarg; break;
		case 'P': o_port = atoi(optarg); break;
		case 'C': o_ca = optarg; break;
		case 'c': o_cert = optarg; break;
		case 'k': o_key = optarg; break;
		case 'm': o_module = optarg; break;
		case 't': o_token = optarg; break;
		case 'p': o_pin = optarg; break;
		case 'd': o_id = optarg; break;
		case 's': o_socket = optarg; break;
		case 'i': o_ident = optarg; break;
		case 'S': o_seconds = strtod(optarg, NULL); break;
		default:
			fprintf(stderr,
				"usage: see the comment at the top of bench/handshake_bench.c\n");
			return 2;
		}
	}
	if (o_mode == NULL || o_port <= 0 || o_ca == NULL || o_seconds <= 0 ||
	    (strcmp(o_mode, "agent") != 0 && o_cert == NULL) ||
	    (strcmp(o_mode, "pem") == 0 && o_key == NULL) ||
	    (strcmp(o_mode, "libp11") == 0 &&
	     (o_module == NULL || o_token == NULL || o_pin == NULL || o_id == NULL)) ||
	    ((strcmp(o_mode, "agent") == 0 || strcmp(o_mode, "provider") == 0) &&
	     o_ident == NULL)) {
		fprintf(stderr, "handshake_bench: missing options for --mode\n");
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)o_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ctx = make_ctx();
	one(ctx, &sa); /* warm-up, and a check that the set-up works */
	t0 = now();
	end = t0 + o_seconds;
	do {
		one(ctx, &sa);
		count++;
	} while ((t1 = now()) < end);
	printf("rate %.1f count %lu seconds %.3f\n", (double)count / (t1 - t0), count, t1 - t0);
	SSL_CTX_free(ctx);
	return 0;
}
