/*
 * test_dest.c - TLS destination binding (src/agent/dest.c) on real TLS 1.2
 * transcripts: an in-memory handshake between an OpenSSL client and server
 * (a BIO pair), recorded with the client's message callback up to the
 * ClientKeyExchange exactly as the provider sends it to the agent.  Each
 * check of dest.c has a case here that fails without it.  Also the
 * transcript parser (src/common/tls_transcript.c) on every truncation.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf.h"
#include "dest.h"
#include "mtls-agent.h"
#include "tls_transcript.h"

struct party {
	EVP_PKEY *key;
	X509 *cert;
};

struct fx {
	struct party ca_a, ca_b, srv, srv_b, srv_other, srv_rsa, client, client2;
	char dir[64], ca_a_file[96], ca_b_file[96];
	unsigned char *client_der;
	int client_der_len;
};

static struct fx F;

static EVP_PKEY *
new_key(int rsa)
{
	EVP_PKEY *k = rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
			  : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	assert_non_null(k);
	return k;
}

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	assert_non_null(e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value));
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* A certificate for `cn` (a CA if san is NULL) issued by `by` (self if NULL). */
static void
make(struct party *p, const char *cn, const char *san, const struct party *by, int rsa)
{
	X509_NAME *n;
	X509 *x;
	static long serial = 1;

	p->key = new_key(rsa);
	assert_non_null(x = X509_new());
	assert_int_equal(X509_set_version(x, 2), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -60));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	assert_non_null(n = X509_get_subject_name(x));
	assert_int_equal(
	    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
	    1);
	assert_int_equal(X509_set_issuer_name(x, by ? X509_get_subject_name(by->cert) : n), 1);
	assert_int_equal(X509_set_pubkey(x, p->key), 1);
	if (san == NULL) {
		add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, x, NID_key_usage, "critical,keyCertSign");
	} else {
		add_ext(x, by ? by->cert : x, NID_basic_constraints, "CA:FALSE");
		add_ext(x, by ? by->cert : x, NID_subject_alt_name, san);
		add_ext(x, by ? by->cert : x, NID_ext_key_usage, "serverAuth,clientAuth");
	}
	assert_true(X509_sign(x, by ? by->key : p->key, EVP_sha256()) > 0);
	p->cert = x;
}

static void
write_pem(const char *path, X509 *x)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	assert_int_equal(fclose(f), 0);
}

static int
setup(void **state)
{
	(void)state;
	memset(&F, 0, sizeof(F));
	make(&F.ca_a, "CA A", NULL, NULL, 0);
	make(&F.ca_b, "CA B", NULL, NULL, 0);
	make(&F.srv, "api.example.com", "DNS:api.example.com", &F.ca_a, 0);
	make(&F.srv_b, "api.example.com", "DNS:api.example.com", &F.ca_b, 0);
	make(&F.srv_other, "other.example.com", "DNS:other.example.com", &F.ca_a, 0);
	make(&F.srv_rsa, "api.example.com", "DNS:api.example.com", &F.ca_a, 1);
	make(&F.client, "client", "DNS:client", &F.ca_a, 0);
	make(&F.client2, "client2", "DNS:client2", &F.ca_a, 0);
	F.client_der_len = i2d_X509(F.client.cert, &F.client_der);
	assert_true(F.client_der_len > 0);
	snprintf(F.dir, sizeof(F.dir), "/tmp/test_dest.XXXXXX");
	assert_non_null(mkdtemp(F.dir));
	snprintf(F.ca_a_file, sizeof(F.ca_a_file), "%s/ca-a.pem", F.dir);
	snprintf(F.ca_b_file, sizeof(F.ca_b_file), "%s/ca-b.pem", F.dir);
	write_pem(F.ca_a_file, F.ca_a.cert);
	write_pem(F.ca_b_file, F.ca_b.cert);
	return 0;
}

static void
party_free(struct party *p)
{
	EVP_PKEY_free(p->key);
	X509_free(p->cert);
}

static int
teardown(void **state)
{
	(void)state;
	party_free(&F.ca_a);
	party_free(&F.ca_b);
	party_free(&F.srv);
	party_free(&F.srv_b);
	party_free(&F.srv_other);
	party_free(&F.srv_rsa);
	party_free(&F.client);
	party_free(&F.client2);
	OPENSSL_free(F.client_der);
	(void)unlink(F.ca_a_file);
	(void)unlink(F.ca_b_file);
	(void)rmdir(F.dir);
	return 0;
}

/* --- a recorded handshake --------------------------------------------------- */

struct rec {
	unsigned char buf[32768];
	size_t len;
	int done; /* ClientKeyExchange (1.2) or client Certificate (1.3) seen */
	int tls13;
};

static void
record(int write_p, int version, int content_type, const void *data, size_t len, SSL *ssl,
       void *arg)
{
	struct rec *r = arg;

	(void)write_p;
	(void)version;
	(void)ssl;
	if (content_type != SSL3_RT_HANDSHAKE || r->done || len < 4)
		return;
	/* TLS 1.3: up to the client's Certificate, not its CertificateVerify. */
	if (r->tls13 && write_p && ((const unsigned char *)data)[0] == 15) {
		r->done = 1;
		return;
	}
	assert_true(r->len + len <= sizeof(r->buf));
	memcpy(r->buf + r->len, data, len);
	r->len += len;
	if (!r->tls13 && ((const unsigned char *)data)[0] == 16)
		r->done = 1;
}

/* TEST_DEST_SEEDS=DIR: each transcript also becomes a seed of
 * fuzz_tls_transcript (first byte 0: TLS 1.2, 1: TLS 1.3). */
static void
save_seed(const struct rec *r)
{
	const char *dir = getenv("TEST_DEST_SEEDS");
	static int n;
	char path[512];
	FILE *f;

	if (dir == NULL)
		return;
	snprintf(path, sizeof(path), "%s/tls1%d-%02d", dir, r->tls13 ? 3 : 2, n++);
	assert_non_null(f = fopen(path, "wb"));
	assert_int_equal(fputc(r->tls13 ? 1 : 0, f), r->tls13 ? 1 : 0);
	assert_int_equal(fwrite(r->buf, 1, r->len, f), r->len);
	assert_int_equal(fclose(f), 0);
}

static int
accept_any(int ok, X509_STORE_CTX *ctx)
{
	(void)ok;
	(void)ctx;
	return 1;
}

/* A TLS 1.2 handshake: client (cert `cl`, SNI `sni` or none) to server `sv`;
 * the client's transcript up to its ClientKeyExchange goes to *r. */
static void
handshake(const struct party *sv, const struct party *cl, const char *sni, const char *ciphers,
	  struct rec *r)
{
	SSL_CTX *cctx, *sctx;
	SSL *c, *s;
	BIO *cb, *sb;
	int i, cdone = 0, sdone = 0;

	int tls13 = strncmp(ciphers, "TLS_", 4) == 0;

	memset(r, 0, sizeof(*r));
	r->tls13 = tls13;
	assert_non_null(cctx = SSL_CTX_new(TLS_client_method()));
	assert_non_null(sctx = SSL_CTX_new(TLS_server_method()));
	if (tls13) {
		assert_int_equal(SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION), 1);
		assert_int_equal(SSL_CTX_set_ciphersuites(cctx, ciphers), 1);
	} else {
		assert_int_equal(SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION), 1);
		assert_int_equal(SSL_CTX_set_cipher_list(cctx, ciphers), 1);
	}
	assert_int_equal(SSL_CTX_use_certificate(sctx, sv->cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(sctx, sv->key), 1);
	assert_int_equal(SSL_CTX_use_certificate(cctx, cl->cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(cctx, cl->key), 1);
	SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, accept_any);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, accept_any);
	assert_non_null(c = SSL_new(cctx));
	assert_non_null(s = SSL_new(sctx));
	if (sni != NULL)
		assert_int_equal(SSL_set_tlsext_host_name(c, sni), 1);
	SSL_set_msg_callback(c, record);
	SSL_set_msg_callback_arg(c, r);
	assert_int_equal(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
	SSL_set_bio(c, cb, cb);
	SSL_set_bio(s, sb, sb);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	for (i = 0; i < 100 && !(cdone && sdone); i++) {
		if (!cdone)
			cdone = SSL_do_handshake(c) == 1;
		if (!sdone)
			sdone = SSL_do_handshake(s) == 1;
	}
	assert_true(cdone && sdone);
	assert_true(r->done);
	save_seed(r);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

#define ECDHE "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"

/* One [identity] with the given "servers" lines ("%CA_A%" etc. in them). */
static struct config *
conf_with(const char *servers)
{
	char text[2048], err[512] = "";
	struct config *cfg = NULL;

	snprintf(text, sizeof(text),
		 "[identity me]\nkey = pkcs11:token=t;id=%%01;type=private\n"
		 "purposes = tls12, tls13\n%s",
		 servers);
	if (config_parse(text, "test.conf", &cfg, err, sizeof(err)) != 0)
		fail_msg("config: %s", err);
	return cfg;
}

static int
check(const char *servers, const struct rec *r, int purpose, char *why, size_t why_len)
{
	struct config *cfg = conf_with(servers);
	int ret;

	why[0] = '\0';
	ret = dest_check(&cfg->identities[0], F.client_der, (size_t)F.client_der_len, purpose,
			 r->buf, r->len, NULL, 0, why, why_len);
	config_free(cfg);
	return ret;
}

static char *
servers_ca(const char *pattern, const char *ca_file)
{
	static char line[512];

	snprintf(line, sizeof(line), "servers = %s ca=%s\n", pattern, ca_file);
	return line;
}

/* "pin=sha256:..." of a certificate's key. */
static void
pin_of(X509 *x, char *out, size_t out_len)
{
	unsigned char *der = NULL, md[32], b64[64];
	unsigned int md_len;
	int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);

	assert_true(n > 0);
	assert_int_equal(EVP_Digest(der, (size_t)n, md, &md_len, EVP_sha256(), NULL), 1);
	assert_int_equal(EVP_EncodeBlock(b64, md, 32), 44);
	snprintf(out, out_len, "pin=sha256:%s", b64);
	OPENSSL_free(der);
}

static void
expect_denied(int r, const char *why, int code, const char *what)
{
	if (r != code || strstr(why, what) == NULL)
		fail_msg("expected %d with \"%s\", got %d: %s", code, what, r, why);
}

/* --- the cases ------------------------------------------------------------- */

static void
test_allowed_ca(void **state)
{
	struct rec r;
	char why[512];

	(void)state;
	handshake(&F.srv, &F.client, "api.example.com", ECDHE, &r);
	assert_int_equal(check(servers_ca("api.example.com", F.ca_a_file), &r,
			       MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
			 0);
	assert_int_equal(check(servers_ca("*.example.com", F.ca_a_file), &r,
			       MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
			 0);
	/* An RSA server key (rsa_pss_rsae or rsa_pkcs1 ServerKeyExchange). */
	handshake(&F.srv_rsa, &F.client, "API.example.com", ECDHE, &r);
	assert_int_equal(check(servers_ca("api.example.com", F.ca_a_file), &r,
			       MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
			 0);
}

static void
test_other_ca(void **state)
{
	struct rec r;
	char why[512];

	(void)state;
	handshake(&F.srv_b, &F.client, "api.example.com", ECDHE, &r);
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED,
		      "server api.example.com is not recognised: unable to get local issuer");
}

static void
test_names(void **state)
{
	struct rec r;
	char why[512], pin[128], lines[1024];

	(void)state;
	/* The SNI is not in the list. */
	handshake(&F.srv_other, &F.client, "other.example.com", ECDHE, &r);
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED,
		      "server other.example.com is not in the servers of identity me");
	/* "*." is one label. */
	handshake(&F.srv, &F.client, "api.example.com", ECDHE, &r);
	expect_denied(check(servers_ca("*.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "is not in the servers");
	/* The SNI is allowed, the allowed CA's certificate is for another name. */
	handshake(&F.srv_other, &F.client, "api.example.com", ECDHE, &r);
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "not recognised: hostname mismatch");
	/* Same with a pin of that (other) server's key and no CA. */
	pin_of(F.srv_other.cert, pin, sizeof(pin));
	snprintf(lines, sizeof(lines), "servers = api.example.com %s\n", pin);
	expect_denied(check(lines, &r, MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)), why,
		      MTLS_ERR_SERVER_DENIED, "the pinned certificate is not for that name");
	/* No SNI at all. */
	handshake(&F.srv, &F.client, NULL, ECDHE, &r);
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "names no server (no SNI)");
}

static void
test_pins(void **state)
{
	struct rec r;
	char why[512], pin[128], lines[1024];

	(void)state;
	handshake(&F.srv, &F.client, "api.example.com", ECDHE, &r);
	pin_of(F.srv.cert, pin, sizeof(pin));
	snprintf(lines, sizeof(lines), "servers = api.example.com %s\n", pin);
	assert_int_equal(check(lines, &r, MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)), 0);
	/* Pin and CA both. */
	snprintf(lines, sizeof(lines), "servers = api.example.com %s ca=%s\n", pin, F.ca_a_file);
	assert_int_equal(check(lines, &r, MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)), 0);
	/* A pinned server with another key: also with the right CA. */
	pin_of(F.srv_b.cert, pin, sizeof(pin));
	snprintf(lines, sizeof(lines), "servers = api.example.com %s ca=%s\n", pin, F.ca_a_file);
	expect_denied(check(lines, &r, MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)), why,
		      MTLS_ERR_SERVER_DENIED, "its key is not pinned for api.example.com");
	/* A second line for the name that does recognise it will do. */
	snprintf(lines, sizeof(lines),
		 "servers = api.example.com %s\nservers = *.example.com ca=%s\n", pin, F.ca_a_file);
	assert_int_equal(check(lines, &r, MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)), 0);
}

/* The offset of the ServerKeyExchange signature in a transcript. */
static size_t
ske_sig_at(const struct rec *r)
{
	struct tls12_hs hs;
	char why[256];

	assert_int_equal(tls12_transcript_parse(r->buf, r->len, &hs, why, sizeof(why)), 0);
	assert_non_null(hs.ske_sig);
	return (size_t)(hs.ske_sig - r->buf);
}

static void
test_tampered(void **state)
{
	struct rec r, t;
	char why[512];
	size_t at;

	(void)state;
	handshake(&F.srv, &F.client, "api.example.com", ECDHE, &r);
	/* A byte of the server's signature flipped. */
	t = r;
	at = ske_sig_at(&t);
	t.buf[at + 10] ^= 0x01;
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &t,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "ServerKeyExchange signature does not verify");
	/* A replayed ServerKeyExchange: another client random (ClientHello
	 * starts at 4, the random after the 2-byte version). */
	t = r;
	t.buf[4 + 2 + 5] ^= 0x80;
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &t,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "ServerKeyExchange signature does not verify");
}

static void
test_client_cert_and_kex(void **state)
{
	struct rec r;
	char why[512];

	(void)state;
	/* Another client certificate in the handshake than this identity's. */
	handshake(&F.srv, &F.client2, "api.example.com", ECDHE, &r);
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED,
		      "client Certificate is not identity me's certificate");
	/* RSA key exchange: nothing the server signs. */
	handshake(&F.srv_rsa, &F.client, "api.example.com", "AES128-GCM-SHA256", &r);
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "cipher suite 0x009c is not ECDHE");
}

static void
test_purposes(void **state)
{
	struct rec r;
	char why[512];
	struct config *cfg;

	(void)state;
	memset(&r, 0, sizeof(r));
	memcpy(r.buf, "x", 1);
	r.len = 1;
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_TRANSCRIPT_REQUIRED,
		      "identity me is bound to servers: a TLS 1.3 CertificateVerify needs the "
		      "handshake messages");
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_RAW_DIGEST, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "no raw digests");
	expect_denied(check(servers_ca("api.example.com", F.ca_a_file), &r,
			    MTLS_AGENT_PURPOSE_PKCS11_DIGEST, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "no pkcs11 digests");
	/* Not a TLS signature: not this module's business. */
	assert_int_equal(check(servers_ca("api.example.com", F.ca_a_file), &r,
			       MTLS_AGENT_PURPOSE_PAM_CHALLENGE, why, sizeof(why)),
			 0);
	/* Without servers everything passes as before. */
	cfg = conf_with("");
	assert_int_equal(dest_check(&cfg->identities[0], F.client_der, (size_t)F.client_der_len,
				    MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, r.buf, r.len, NULL, 0, why,
				    sizeof(why)),
			 0);
	assert_int_equal(dest_check(&cfg->identities[0], F.client_der, (size_t)F.client_der_len,
				    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, r.buf, r.len, NULL, 0, why,
				    sizeof(why)),
			 0);
	config_free(cfg);
	assert_int_equal(dest_check(NULL, NULL, 0, MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, r.buf, r.len,
				    NULL, 0, why, sizeof(why)),
			 0);
}

static void
test_parser(void **state)
{
	struct tls12_hs hs;
	struct rec r, t;
	char why[256];
	size_t n;

	(void)state;
	handshake(&F.srv, &F.client, "api.example.com", ECDHE, &r);
	assert_int_equal(tls12_transcript_parse(r.buf, r.len, &hs, why, sizeof(why)), 0);
	assert_string_equal(hs.sni, "api.example.com");
	assert_int_equal(hs.server_version, 0x0303);
	assert_true(tls12_suite_is_ecdhe(hs.suite));
	assert_int_equal(hs.n_srv_certs, 1);
	assert_int_equal(hs.client_cert_len, (size_t)F.client_der_len);
	assert_memory_equal(hs.client_cert, F.client_der, hs.client_cert_len);
	/* Every truncation is refused, none reads past the end. */
	for (n = 0; n < r.len; n++)
		assert_int_equal(tls12_transcript_parse(r.buf, n, &hs, why, sizeof(why)),
				 MTLS_ERR_CONTENT_REJECTED);
	/* A message after the ClientKeyExchange. */
	t = r;
	memcpy(t.buf + t.len, "\x14\x00\x00\x00", 4);
	t.len += 4;
	assert_int_equal(tls12_transcript_parse(t.buf, t.len, &hs, why, sizeof(why)),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_non_null(strstr(why, "messages after the ClientKeyExchange"));
	/* A ServerHello of another version (its version after the 4-byte
	 * header of the ClientHello and its own). */
	t = r;
	n = 4 + ((size_t)r.buf[2] << 8 | r.buf[3]);
	assert_int_equal(t.buf[n], 2);
	t.buf[n + 5] = 0x04;
	assert_int_equal(tls12_transcript_parse(t.buf, t.len, &hs, why, sizeof(why)),
			 MTLS_ERR_CONTENT_REJECTED);
	assert_non_null(strstr(why, "ServerHello is not TLS 1.2"));
	assert_true(dest_name_matches("*.example.com", "a.example.com"));
	assert_false(dest_name_matches("*.example.com", "a.b.example.com"));
	assert_false(dest_name_matches("*.example.com", "example.com"));
	assert_false(dest_name_matches("*.example.com", ".example.com"));
	assert_true(dest_name_matches("api.example.com", "api.example.com"));
	assert_false(dest_name_matches("api.example.com", "api.example.com.evil"));
}

/* --- TLS 1.3 ---------------------------------------------------------------- */

#define TLS13 "TLS_AES_128_GCM_SHA256"

/* The client CertificateVerify content over a recorded transcript. */
static size_t
cv13_content(const struct rec *r, const EVP_MD *h, unsigned char *out)
{
	static const char ctx[] = "TLS 1.3, client CertificateVerify";
	unsigned int n = 0;

	memset(out, 0x20, 64);
	memcpy(out + 64, ctx, sizeof(ctx));
	assert_int_equal(EVP_Digest(r->buf, r->len, out + 64 + sizeof(ctx), &n, h, NULL), 1);
	return 64 + sizeof(ctx) + n;
}

static int
check13(const char *servers, const struct rec *r, const unsigned char *content, size_t len,
	char *why, size_t why_len)
{
	struct config *cfg = conf_with(servers);
	int ret;

	why[0] = '\0';
	ret = dest_check(&cfg->identities[0], F.client_der, (size_t)F.client_der_len,
			 MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, r->buf, r->len, why,
			 why_len);
	config_free(cfg);
	return ret;
}

static void
test_tls13(void **state)
{
	unsigned char content[200];
	struct tls13_hs hs;
	struct rec r, t;
	char why[512], lines[512];
	size_t len, at;

	(void)state;
	snprintf(lines, sizeof(lines), "%s", servers_ca("api.example.com", F.ca_a_file));
	handshake(&F.srv, &F.client, "api.example.com", TLS13, &r);
	len = cv13_content(&r, EVP_sha256(), content);
	assert_int_equal(check13(lines, &r, content, len, why, sizeof(why)), 0);
	/* SHA-384 suite, RSA (PSS) server key. */
	handshake(&F.srv_rsa, &F.client, "api.example.com", "TLS_AES_256_GCM_SHA384", &r);
	len = cv13_content(&r, EVP_sha384(), content);
	assert_int_equal(check13(lines, &r, content, len, why, sizeof(why)), 0);

	/* The messages do not hash to the content's hash. */
	handshake(&F.srv, &F.client, "api.example.com", TLS13, &r);
	len = cv13_content(&r, EVP_sha256(), content);
	t = r;
	t.buf[4 + 2 + 3] ^= 0x01; /* the client random */
	expect_denied(check13(lines, &t, content, len, why, sizeof(why)), why,
		      MTLS_ERR_SERVER_DENIED, "do not hash to the CertificateVerify's");
	/* They hash right, but the server's CertificateVerify is not over
	 * them: a proxy that relays another handshake's server messages. */
	len = cv13_content(&t, EVP_sha256(), content);
	expect_denied(check13(lines, &t, content, len, why, sizeof(why)), why,
		      MTLS_ERR_SERVER_DENIED, "server CertificateVerify signature does not verify");
	/* A byte of the server's signature itself. */
	t = r;
	assert_int_equal(tls13_transcript_parse(t.buf, t.len, &hs, why, sizeof(why)), 0);
	at = (size_t)(hs.srv_cv_sig - t.buf);
	t.buf[at + 12] ^= 0x40;
	len = cv13_content(&t, EVP_sha256(), content);
	expect_denied(check13(lines, &t, content, len, why, sizeof(why)), why,
		      MTLS_ERR_SERVER_DENIED, "server CertificateVerify signature does not verify");
	/* Other CA, name not listed, another client certificate. */
	handshake(&F.srv_b, &F.client, "api.example.com", TLS13, &r);
	len = cv13_content(&r, EVP_sha256(), content);
	expect_denied(check13(lines, &r, content, len, why, sizeof(why)), why,
		      MTLS_ERR_SERVER_DENIED, "not recognised: unable to get local issuer");
	handshake(&F.srv_other, &F.client, "other.example.com", TLS13, &r);
	len = cv13_content(&r, EVP_sha256(), content);
	expect_denied(check13(lines, &r, content, len, why, sizeof(why)), why,
		      MTLS_ERR_SERVER_DENIED, "server other.example.com is not in the servers");
	handshake(&F.srv, &F.client2, "api.example.com", TLS13, &r);
	len = cv13_content(&r, EVP_sha256(), content);
	expect_denied(check13(lines, &r, content, len, why, sizeof(why)), why,
		      MTLS_ERR_SERVER_DENIED, "client Certificate is not identity me's");
	/* A pin of another key. */
	{
		char pin[128];

		handshake(&F.srv, &F.client, "api.example.com", TLS13, &r);
		len = cv13_content(&r, EVP_sha256(), content);
		pin_of(F.srv_b.cert, pin, sizeof(pin));
		snprintf(lines, sizeof(lines), "servers = api.example.com %s\n", pin);
		expect_denied(check13(lines, &r, content, len, why, sizeof(why)), why,
			      MTLS_ERR_SERVER_DENIED, "its key is not pinned");
		pin_of(F.srv.cert, pin, sizeof(pin));
		snprintf(lines, sizeof(lines), "servers = api.example.com %s\n", pin);
		assert_int_equal(check13(lines, &r, content, len, why, sizeof(why)), 0);
	}
	/* Every truncation of the transcript is refused. */
	for (len = 0; len < r.len; len++)
		assert_int_equal(tls13_transcript_parse(r.buf, len, &hs, why, sizeof(why)),
				 MTLS_ERR_CONTENT_REJECTED);
}

/* The cache of verified chains follows the CA file: replaced, it is read
 * again. */
static void
test_chain_cache(void **state)
{
	char path[128], tmp[140], why[512];
	struct rec r;
	int i;

	(void)state;
	snprintf(path, sizeof(path), "%s/ca-cached.pem", F.dir);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	write_pem(path, F.ca_a.cert);
	handshake(&F.srv, &F.client, "api.example.com", ECDHE, &r);
	for (i = 0; i < 3; i++)
		assert_int_equal(check(servers_ca("api.example.com", path), &r,
				       MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
				 0);
	write_pem(tmp, F.ca_b.cert);
	assert_int_equal(rename(tmp, path), 0);
	expect_denied(check(servers_ca("api.example.com", path), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "not recognised: unable to get local issuer");
	/* A cached chain does not stand in for another name. */
	write_pem(tmp, F.ca_a.cert);
	assert_int_equal(rename(tmp, path), 0);
	assert_int_equal(check(servers_ca("api.example.com", path), &r,
			       MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
			 0);
	handshake(&F.srv, &F.client, "www.example.com", ECDHE, &r);
	expect_denied(check(servers_ca("*.example.com", path), &r,
			    MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, why, sizeof(why)),
		      why, MTLS_ERR_SERVER_DENIED, "hostname mismatch");
	(void)unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed_ca), cmocka_unit_test(test_other_ca),
		cmocka_unit_test(test_names),	   cmocka_unit_test(test_pins),
		cmocka_unit_test(test_tampered),   cmocka_unit_test(test_client_cert_and_kex),
		cmocka_unit_test(test_purposes),   cmocka_unit_test(test_parser),
		cmocka_unit_test(test_tls13),	   cmocka_unit_test(test_chain_cache),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
