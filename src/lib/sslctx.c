/*
 * sslctx.c - mtls_agent_ssl_ctx_use_identity(): one call that gives an
 * SSL_CTX an agent identity (certificate, chain, agent-backed key).
 *
 * The key comes from the mtls-agent provider, loaded as a built-in with
 * the default provider into a library context of this library's own.
 * OpenSSL 3.0 has no way to ask an SSL_CTX for its library context, and
 * loading a provider into the application's default context would stop
 * OpenSSL from loading the default provider (or the configured ones) by
 * itself.  The key works in any SSL_CTX all the same: when libssl signs,
 * libcrypto falls back to the signature implementation of the key's own
 * provider.
 */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include "client.h"
#include "mtls-agent.h"
#include "provider.h"

static pthread_once_t libctx_once = PTHREAD_ONCE_INIT;
static OSSL_LIB_CTX *agent_libctx;

static void
make_libctx(void)
{
	OSSL_LIB_CTX *lc;

	if ((lc = OSSL_LIB_CTX_new()) == NULL)
		return;
	if (!OSSL_PROVIDER_add_builtin(lc, PROV_NAME, mtls_agent_provider_init) ||
	    OSSL_PROVIDER_load(lc, PROV_NAME) == NULL ||
	    OSSL_PROVIDER_load(lc, "default") == NULL) {
		OSSL_LIB_CTX_free(lc);
		return;
	}
	agent_libctx = lc;
}

/* Hex digits of `s` (optional '%' or ':' between bytes) equal to id? */
static int
key_id_matches(const char *s, const unsigned char *id, size_t id_len)
{
	size_t n = 0;
	unsigned int byte;

	if (id_len == 0)
		return 0;
	while (*s != '\0') {
		if (*s == '%' || *s == ':') {
			s++;
			continue;
		}
		if (!isxdigit((unsigned char)s[0]) || !isxdigit((unsigned char)s[1]) ||
		    sscanf(s, "%2x", &byte) != 1)
			return 0;
		if (n >= id_len || id[n] != byte)
			return 0;
		n++;
		s += 2;
	}
	return n == id_len;
}

/*
 * The identity `want` names: its name; else the only one whose key label
 * is `want`; else the only one whose key id is `want` in hex.  want NULL:
 * the only identity with a certificate.
 */
static const struct mtls_agent_identity *
pick(const struct mtls_agent_identity *ids, size_t n, const char *want)
{
	const struct mtls_agent_identity *hit = NULL;
	size_t i, hits = 0;

	for (i = 0; want != NULL && i < n; i++)
		if (strcmp(ids[i].name, want) == 0)
			return &ids[i];
	for (i = 0; i < n; i++) {
		if (want == NULL
			? ids[i].cert_der != NULL
			: (ids[i].key_label != NULL && strcmp(ids[i].key_label, want) == 0)) {
			hit = &ids[i];
			hits++;
		}
	}
	if (hits == 1)
		return hit;
	if (hits > 1 || want == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (key_id_matches(want, ids[i].key_id, ids[i].key_id_len)) {
			hit = &ids[i];
			hits++;
		}
	}
	return hits == 1 ? hit : NULL;
}

/* Appends s to the URI, escaping what would end a URI component. */
static int
append_escaped(char *buf, size_t len, size_t *off, const char *s)
{
	int n;

	for (; *s != '\0'; s++) {
		if (*s == '%' || *s == '?' || *s == '&' || *s == '#' || (unsigned char)*s <= 0x20 ||
		    (unsigned char)*s >= 0x7f)
			n = snprintf(buf + *off, len - *off, "%%%02X", (unsigned char)*s);
		else
			n = snprintf(buf + *off, len - *off, "%c", *s);
		if (n < 0 || (size_t)n >= len - *off)
			return MTLS_ERR_INVALID_ARGUMENT;
		*off += (size_t)n;
	}
	return 0;
}

/* The agent-backed private key of identity `name`, through the store. */
static int
load_key(const char *name, const char *socket, EVP_PKEY **out)
{
	char uri[1024];
	size_t off = 0;
	OSSL_STORE_CTX *store = NULL;
	OSSL_STORE_INFO *info = NULL;
	int r;

	*out = NULL;
	if ((r = append_escaped(uri, sizeof(uri), &off, PROV_URI_SCHEME ":")) != 0 ||
	    (r = append_escaped(uri, sizeof(uri), &off, name)) != 0)
		return r;
	if (socket != NULL) {
		if (off + 8 >= sizeof(uri))
			return MTLS_ERR_INVALID_ARGUMENT;
		memcpy(uri + off, "?socket=", 9);
		off += 8;
		if ((r = append_escaped(uri, sizeof(uri), &off, socket)) != 0)
			return r;
	}
	r = MTLS_ERR_INTERNAL;
	if ((store = OSSL_STORE_open_ex(uri, agent_libctx, NULL, NULL, NULL, NULL, NULL, NULL)) ==
		NULL ||
	    !OSSL_STORE_expect(store, OSSL_STORE_INFO_PKEY))
		goto out;
	while (!OSSL_STORE_eof(store)) {
		if ((info = OSSL_STORE_load(store)) == NULL)
			continue;
		if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY) {
			*out = OSSL_STORE_INFO_get1_PKEY(info);
			r = *out != NULL ? 0 : MTLS_ERR_ALLOC;
			goto out;
		}
		OSSL_STORE_INFO_free(info);
		info = NULL;
	}
	r = MTLS_ERR_NO_IDENTITY;
out:
	OSSL_STORE_INFO_free(info);
	OSSL_STORE_close(store);
	return r;
}

/*
 * The handshake messages of this thread's current handshake, for identities
 * bound to servers (src/agent/dest.c): the agent cannot check a TLS 1.3
 * server from the transcript hash alone.  The message callback sees them
 * decrypted; a ClientHello we send starts a new record, and the client's
 * Finished ends it.
 */
static __thread unsigned char *rec_buf;
static __thread size_t rec_len, rec_cap;
/* Frees a thread's record when the thread ends (its value: the buffer). */
static pthread_key_t rec_key;
static pthread_once_t rec_key_once = PTHREAD_ONCE_INIT;
static int rec_key_ok;

static void
rec_drop(void)
{
	client_set_transcript(NULL, 0);
	OPENSSL_clear_free(rec_buf, rec_cap);
	rec_buf = NULL;
	rec_len = rec_cap = 0;
}

static void
rec_free(void *p)
{
	/* Runs in the ending thread: its rec_* are still its own. */
	if (p != NULL && p == rec_buf)
		rec_drop();
}

static void
rec_key_make(void)
{
	rec_key_ok = pthread_key_create(&rec_key, rec_free) == 0;
}

static void
rec_forget(void)
{
	client_set_transcript(NULL, 0);
	if (rec_buf != NULL)
		OPENSSL_cleanse(rec_buf, rec_cap);
	rec_len = 0;
}

static void
record_handshake(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
		 void *arg)
{
	const unsigned char *m = buf;
	unsigned char *nb;
	size_t cap;

	(void)version;
	(void)ssl;
	(void)arg;
	if (content_type != SSL3_RT_HANDSHAKE || len < 4 || SSL_is_server(ssl))
		return;
	if (write_p && m[0] == SSL3_MT_CLIENT_HELLO)
		rec_forget();
	if (write_p && m[0] == SSL3_MT_FINISHED) {
		rec_forget();
		return;
	}
	if (len > MTLS_AGENT_CONTENT_MAX - rec_len) {
		rec_forget();
		return;
	}
	if (rec_len + len > rec_cap) {
		cap = rec_cap ? rec_cap : 8192;
		while (cap < rec_len + len)
			cap *= 2;
		if ((nb = OPENSSL_clear_realloc(rec_buf, rec_cap, cap)) == NULL) {
			rec_forget();
			return;
		}
		rec_buf = nb;
		rec_cap = cap;
		/* Without the key the buffer would outlive its thread. */
		if (pthread_once(&rec_key_once, rec_key_make) != 0 || !rec_key_ok ||
		    pthread_setspecific(rec_key, rec_buf) != 0) {
			rec_drop();
			return;
		}
	}
	memcpy(rec_buf + rec_len, m, len);
	rec_len += len;
	client_set_transcript(rec_buf, rec_len);
}

int
mtls_agent_ssl_ctx_use_identity(SSL_CTX *ctx, const char *socket_path, const char *identity)
{
	struct mtls_agent_identity *ids = NULL;
	const struct mtls_agent_identity *id;
	char *uri_name = NULL, *uri_socket = NULL, abs_socket[PATH_MAX];
	const char *want, *socket;
	mtls_agent *a = NULL;
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL, *cx = NULL;
	size_t n = 0, i;
	int r;

	if (ctx == NULL || identity == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	want = identity;
	if (strncasecmp(identity, PROV_URI_SCHEME ":", sizeof(PROV_URI_SCHEME)) == 0) {
		if ((r = prov_uri_parse(identity, &uri_name, &uri_socket)) != 0)
			goto out;
		want = uri_name;
	} else if (*identity == '\0') {
		return MTLS_ERR_INVALID_ARGUMENT;
	}
	socket = uri_socket != NULL ? uri_socket : socket_path;
	if (socket != NULL && *socket == '\0')
		socket = NULL;
	/* The key is loaded by a mtls-agent: URI, which names sockets by
	 * absolute path: a relative one is taken from the current directory. */
	if (socket != NULL && *socket != '/') {
		size_t dl;

		r = MTLS_ERR_INVALID_ARGUMENT;
		if (getcwd(abs_socket, sizeof(abs_socket)) == NULL)
			goto out;
		dl = strlen(abs_socket);
		if (dl + 1 + strlen(socket) + 1 > sizeof(abs_socket))
			goto out;
		abs_socket[dl] = '/';
		memcpy(abs_socket + dl + 1, socket, strlen(socket) + 1);
		socket = abs_socket;
	}

	if ((r = pthread_once(&libctx_once, make_libctx)) != 0 || agent_libctx == NULL) {
		r = MTLS_ERR_INTERNAL;
		goto out;
	}
	if ((r = mtls_agent_connect(socket, &a)) != 0 || (r = mtls_agent_list(a, &ids, &n)) != 0)
		goto out;
	if ((id = pick(ids, n, want)) == NULL) {
		r = MTLS_ERR_NO_IDENTITY;
		goto out;
	}
	if (id->cert_der == NULL) {
		r = MTLS_ERR_CERT_INVALID;
		goto out;
	}
	if ((x = prov_cert_from_der(NULL, id->cert_der, id->cert_der_len)) == NULL) {
		r = MTLS_ERR_CERT_INVALID;
		goto out;
	}
	if ((r = load_key(id->name, socket, &pkey)) != 0)
		goto out;
	r = MTLS_ERR_INTERNAL;
	if (SSL_CTX_use_certificate(ctx, x) != 1)
		goto out;
	for (i = 0; i < id->n_chain; i++) {
		if ((cx = prov_cert_from_der(NULL, id->chain_der[i], id->chain_der_len[i])) ==
		    NULL) {
			r = MTLS_ERR_CERT_INVALID;
			goto out;
		}
		if (SSL_CTX_add1_chain_cert(ctx, cx) != 1)
			goto out;
		X509_free(cx);
		cx = NULL;
	}
	if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1)
		goto out;
	/* TLS 1.3 handshake messages for the agent (identities with servers). */
	SSL_CTX_set_msg_callback(ctx, record_handshake);
	r = 0;
out:
	X509_free(cx);
	X509_free(x);
	EVP_PKEY_free(pkey);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	free(uri_name);
	free(uri_socket);
	return r;
}
