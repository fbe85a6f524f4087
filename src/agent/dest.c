/*
 * dest.c - TLS destination binding: which server a TLS 1.2 handshake is
 * with, proven from the transcript the client asks us to sign.  See dest.h.
 *
 * Why the ServerKeyExchange signature matters: a server certificate is
 * public, so a transcript naming it proves nothing; the server's signature
 * over both randoms and its ECDHE share, checked with that certificate's
 * key, shows the key holder took part in this very handshake (the client
 * random is fresh, and the CertificateVerify we sign covers all of it).
 */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "dest.h"
#include "mtls-agent.h"
#include "purpose.h"
#include "scheme.h"
#include "tls_transcript.h"

static int __attribute__((format(printf, 4, 5)))
deny(int code, char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && why_len > 0) {
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return code;
}

int
dest_name_matches(const char *pattern, const char *name)
{
	const char *dot;

	if (strncmp(pattern, "*.", 2) != 0)
		return strcasecmp(pattern, name) == 0;
	/* One label, not empty, then exactly the rest. */
	if ((dot = strchr(name, '.')) == NULL || dot == name)
		return 0;
	return strcasecmp(dot + 1, pattern + 2) == 0;
}

/* A server's signature `sig` over tbs with `key`, algorithm `alg` (a TLS
 * SignatureScheme); `what` names the message for the refusal. */
static int
verify_sig(uint16_t alg, int tls13, EVP_PKEY *key, const unsigned char *tbs, size_t n,
	   const unsigned char *sig, size_t sig_len, const char *what, char *why, size_t why_len)
{
	const struct scheme_info *s = scheme_lookup(alg);
	EVP_MD_CTX *ctx = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	int r = MTLS_ERR_SERVER_DENIED, kt = EVP_PKEY_get_base_id(key);

	if (s == NULL)
		return deny(r, why, why_len,
			    "server signed its %s with algorithm 0x%04x, which the agent does "
			    "not verify",
			    what, alg);
	if (tls13 && s->key_type == MTLS_AGENT_KEY_RSA && !s->pss)
		return deny(r, why, why_len, "server %s with %s, which TLS 1.3 forbids", what,
			    s->name);
	if ((s->key_type == MTLS_AGENT_KEY_EC) != (kt == EVP_PKEY_EC) ||
	    (s->key_type == MTLS_AGENT_KEY_RSA) != (kt == EVP_PKEY_RSA || kt == EVP_PKEY_RSA_PSS))
		return deny(r, why, why_len,
			    "%s algorithm %s does not fit the server certificate's key", what,
			    s->name);
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if (EVP_DigestVerifyInit_ex(ctx, &pctx, s->digest, NULL, NULL, key, NULL) != 1 ||
	    (s->pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
			EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))) {
		r = deny(r, why, why_len, "cannot verify a %s %s signature", s->name, what);
		goto out;
	}
	if (EVP_DigestVerify(ctx, sig, sig_len, tbs, n) != 1) {
		r = deny(r, why, why_len,
			 "the %s signature does not verify with the server certificate's key "
			 "(%s): the handshake was not with that server",
			 what, s->name);
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	return r;
}

/* The ServerKeyExchange signature over client_random || server_random ||
 * params, with the server certificate's key (RFC 8422 5.4). */
static int
verify_ske(const struct tls12_hs *hs, EVP_PKEY *key, char *why, size_t why_len)
{
	unsigned char tbs[2 * TLS_HS_RANDOM_LEN + 1 + 2 + 1 + 255];

	if (hs->ske_params_len > sizeof(tbs) - 2 * TLS_HS_RANDOM_LEN)
		return deny(MTLS_ERR_CONTENT_REJECTED, why, why_len,
			    "ServerKeyExchange params too long");
	memcpy(tbs, hs->client_random, TLS_HS_RANDOM_LEN);
	memcpy(tbs + TLS_HS_RANDOM_LEN, hs->server_random, TLS_HS_RANDOM_LEN);
	memcpy(tbs + 2 * TLS_HS_RANDOM_LEN, hs->ske_params, hs->ske_params_len);
	return verify_sig(hs->ske_sigalg, 0, key, tbs, 2 * TLS_HS_RANDOM_LEN + hs->ske_params_len,
			  hs->ske_sig, hs->ske_sig_len, "ServerKeyExchange", why, why_len);
}

/* SHA-256 of the leaf's SubjectPublicKeyInfo against the entry's pins. */
static int
pin_matches(const struct config_server *sv, X509 *leaf)
{
	unsigned char *der = NULL, md[32];
	unsigned int md_len = 0;
	size_t i;
	int n, ok = 0;

	if ((n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &der)) <= 0)
		return 0;
	if (EVP_Digest(der, (size_t)n, md, &md_len, EVP_sha256(), NULL) == 1 && md_len == 32)
		for (i = 0; i < sv->n_pins; i++)
			if (memcmp(sv->pins[i], md, 32) == 0)
				ok = 1;
	OPENSSL_free(der);
	return ok;
}

/* The chain against the entry's CA file, for the SNI name, as a server. */
static int
chain_verifies(const struct config_server *sv, X509 *leaf, STACK_OF(X509) * rest, const char *sni,
	       char *err, size_t err_len)
{
	X509_STORE *store = NULL;
	X509_STORE_CTX *vctx = NULL;
	X509_VERIFY_PARAM *param;
	int ok = 0;

	if ((store = X509_STORE_new()) == NULL || X509_STORE_load_file(store, sv->ca_file) != 1) {
		snprintf(err, err_len, "cannot read CA file %s", sv->ca_file);
		goto out;
	}
	if ((vctx = X509_STORE_CTX_new()) == NULL ||
	    X509_STORE_CTX_init(vctx, store, leaf, rest) != 1) {
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	param = X509_STORE_CTX_get0_param(vctx);
	X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (X509_VERIFY_PARAM_set1_host(param, sni, 0) != 1 ||
	    X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_SERVER) != 1) {
		snprintf(err, err_len, "out of memory");
		goto out;
	}
	if (X509_verify_cert(vctx) != 1) {
		snprintf(err, err_len, "%s",
			 X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
		goto out;
	}
	ok = 1;
out:
	X509_STORE_CTX_free(vctx);
	X509_STORE_free(store);
	return ok;
}

/* The SNI, lower case, if one of the identity's patterns matches it. */
static int
name_allowed(const struct config_identity *ci, const char *sni, char *name, char *why,
	     size_t why_len)
{
	size_t i;

	if (sni[0] == '\0')
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "the ClientHello names no server (no SNI): identity %s signs only "
			    "toward its servers",
			    ci->name);
	for (i = 0; sni[i] != '\0'; i++)
		name[i] = (char)(sni[i] >= 'A' && sni[i] <= 'Z' ? sni[i] - 'A' + 'a' : sni[i]);
	name[i] = '\0';
	for (i = 0; i < ci->n_servers; i++)
		if (dest_name_matches(ci->servers[i].pattern, name))
			return 0;
	return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
		    "server %s is not in the servers of identity %s", name, ci->name);
}

static int
client_cert_is(const struct config_identity *ci, const unsigned char *got, size_t got_len,
	       const unsigned char *cert_der, size_t cert_len, char *why, size_t why_len)
{
	if (got == NULL || got_len != cert_len || memcmp(got, cert_der, cert_len) != 0)
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "the handshake's client Certificate is not identity %s's certificate",
			    ci->name);
	return 0;
}

/* The server's certificates as X509s: *leaf and the rest in *rest. */
static int
parse_chain(const unsigned char *const *certs, const size_t *lens, size_t n, const char *name,
	    X509 **leaf, STACK_OF(X509) * *rest, char *why, size_t why_len)
{
	const unsigned char *p;
	X509 *x;
	size_t i;

	*leaf = NULL;
	if ((*rest = sk_X509_new_null()) == NULL)
		return MTLS_ERR_ALLOC;
	for (i = 0; i < n; i++) {
		p = certs[i];
		if ((x = d2i_X509(NULL, &p, (long)lens[i])) == NULL || p != certs[i] + lens[i]) {
			X509_free(x);
			return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
				    "a server certificate of %s does not parse", name);
		}
		if (i == 0) {
			*leaf = x;
		} else if (!sk_X509_push(*rest, x)) {
			X509_free(x);
			return MTLS_ERR_ALLOC;
		}
	}
	if (X509_get0_pubkey(*leaf) == NULL)
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "the server certificate of %s has no usable key", name);
	return 0;
}

/*
 * Parsed server certificates, by a hash of the DER the server sent: OpenSSL
 * 3's d2i_X509 decodes the public key through its decoder framework, which
 * costs more than the signature check itself.  Shared X509s are only read.
 */
#define DEST_PARSED_SIZE 16

static struct {
	unsigned char key[32];
	X509 *leaf;
	STACK_OF(X509) * rest;
} parsed_cache[DEST_PARSED_SIZE];
static size_t parsed_next;
static pthread_mutex_t parsed_mu = PTHREAD_MUTEX_INITIALIZER;

/* Each certificate into `md` behind its 64-bit length, so that no two
 * lists of certificates hash alike. */
static int
digest_certs(EVP_MD_CTX *md, const unsigned char *const *certs, const size_t *lens, size_t n)
{
	unsigned char len8[8];
	size_t i, j;

	for (i = 0; i < n; i++) {
		for (j = 0; j < 8; j++)
			len8[j] = (unsigned char)((uint64_t)lens[i] >> (56 - 8 * j));
		if (EVP_DigestUpdate(md, len8, 8) != 1 ||
		    EVP_DigestUpdate(md, certs[i], lens[i]) != 1)
			return 0;
	}
	return 1;
}

static int
certs_hash(const unsigned char *const *certs, const size_t *lens, size_t n, unsigned char key[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;

	ok = ok && digest_certs(md, certs, lens, n);
	ok = ok && EVP_DigestFinal_ex(md, key, NULL) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

static int
load_chain(const unsigned char *const *certs, const size_t *lens, size_t n, const char *name,
	   X509 **leaf, STACK_OF(X509) * *rest, char *why, size_t why_len)
{
	unsigned char key[32];
	size_t i;
	int r, keyed = certs_hash(certs, lens, n, key);

	*leaf = NULL;
	*rest = NULL;
	if (keyed) {
		pthread_mutex_lock(&parsed_mu);
		for (i = 0; i < DEST_PARSED_SIZE && *leaf == NULL; i++) {
			if (parsed_cache[i].leaf == NULL ||
			    memcmp(parsed_cache[i].key, key, 32) != 0)
				continue;
			if ((*rest = X509_chain_up_ref(parsed_cache[i].rest)) != NULL &&
			    X509_up_ref(parsed_cache[i].leaf) == 1)
				*leaf = parsed_cache[i].leaf;
		}
		pthread_mutex_unlock(&parsed_mu);
		if (*leaf != NULL)
			return 0;
		sk_X509_pop_free(*rest, X509_free);
		*rest = NULL;
	}
	if ((r = parse_chain(certs, lens, n, name, leaf, rest, why, why_len)) != 0 || !keyed)
		return r;
	pthread_mutex_lock(&parsed_mu);
	i = parsed_next;
	parsed_next = (parsed_next + 1) % DEST_PARSED_SIZE;
	X509_free(parsed_cache[i].leaf);
	sk_X509_pop_free(parsed_cache[i].rest, X509_free);
	parsed_cache[i].leaf = NULL;
	if ((parsed_cache[i].rest = X509_chain_up_ref(*rest)) != NULL && X509_up_ref(*leaf) == 1) {
		parsed_cache[i].leaf = *leaf;
		memcpy(parsed_cache[i].key, key, 32);
	}
	pthread_mutex_unlock(&parsed_mu);
	return 0;
}

/*
 * Verified server chains, so that a bound identity costs one signature
 * verification per handshake rather than a CA file read and a chain
 * check: the key is a hash of the CA file (path, inode, size, mtime), the
 * name and every certificate the server sent; an entry lasts
 * DEST_CACHE_SECONDS and never past the leaf's notAfter.
 */
#define DEST_CACHE_SIZE	   64
#define DEST_CACHE_SECONDS 300

static struct {
	unsigned char key[32];
	time_t until;
} chain_cache[DEST_CACHE_SIZE];
static size_t chain_cache_next;
static pthread_mutex_t chain_cache_mu = PTHREAD_MUTEX_INITIALIZER;

static int
chain_key(const struct config_server *sv, const char *name, const unsigned char *const *certs,
	  const size_t *lens, size_t n, unsigned char key[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	struct stat st;
	int ok;

	if (md == NULL || stat(sv->ca_file, &st) != 0) {
		EVP_MD_CTX_free(md);
		return 0;
	}
	ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(md, sv->ca_file, strlen(sv->ca_file) + 1) == 1 &&
	     EVP_DigestUpdate(md, &st.st_ino, sizeof(st.st_ino)) == 1 &&
	     EVP_DigestUpdate(md, &st.st_size, sizeof(st.st_size)) == 1 &&
	     EVP_DigestUpdate(md, &st.st_mtim, sizeof(st.st_mtim)) == 1 &&
	     EVP_DigestUpdate(md, name, strlen(name) + 1) == 1;
	ok = ok && digest_certs(md, certs, lens, n);
	ok = ok && EVP_DigestFinal_ex(md, key, NULL) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

static int
chain_cached(const unsigned char key[32])
{
	time_t now = time(NULL);
	size_t i;
	int hit = 0;

	pthread_mutex_lock(&chain_cache_mu);
	for (i = 0; i < DEST_CACHE_SIZE && !hit; i++)
		hit = chain_cache[i].until > now && memcmp(chain_cache[i].key, key, 32) == 0;
	pthread_mutex_unlock(&chain_cache_mu);
	return hit;
}

static void
chain_remember(const unsigned char key[32], X509 *leaf)
{
	time_t until = time(NULL) + DEST_CACHE_SECONDS;
	struct tm tm;

	if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1 && timegm(&tm) < until)
		until = timegm(&tm);
	pthread_mutex_lock(&chain_cache_mu);
	memcpy(chain_cache[chain_cache_next].key, key, 32);
	chain_cache[chain_cache_next].until = until;
	chain_cache_next = (chain_cache_next + 1) % DEST_CACHE_SIZE;
	pthread_mutex_unlock(&chain_cache_mu);
}

/* Any entry for the name that recognises the server will do. */
static int
recognise(const struct config_identity *ci, const char *name, X509 *leaf, STACK_OF(X509) * rest,
	  const unsigned char *const *certs, const size_t *lens, size_t n, char *why,
	  size_t why_len)
{
	const struct config_server *sv;
	unsigned char key[32];
	char err[256] = "";
	size_t i;
	int keyed;

	for (i = 0; i < ci->n_servers; i++) {
		sv = &ci->servers[i];
		if (!dest_name_matches(sv->pattern, name))
			continue;
		if (sv->n_pins > 0 && !pin_matches(sv, leaf)) {
			snprintf(err, sizeof(err), "its key is not pinned for %s", sv->pattern);
			continue;
		}
		if (sv->ca_file != NULL) {
			keyed = chain_key(sv, name, certs, lens, n, key);
			if (!keyed || !chain_cached(key)) {
				if (!chain_verifies(sv, leaf, rest, name, err, sizeof(err)))
					continue;
				if (keyed)
					chain_remember(key, leaf);
			}
		} else if (X509_check_host(leaf, name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
					   NULL) != 1) {
			snprintf(err, sizeof(err), "the pinned certificate is not for that name");
			continue;
		}
		return 0;
	}
	return deny(MTLS_ERR_SERVER_DENIED, why, why_len, "server %s is not recognised: %s", name,
		    err);
}

static int
check_tls12(const struct config_identity *ci, const unsigned char *cert_der, size_t cert_len,
	    const unsigned char *content, size_t len, char *why, size_t why_len)
{
	struct tls12_hs hs;
	STACK_OF(X509) *rest = NULL;
	X509 *leaf = NULL;
	char name[TLS_HS_SNI_MAX + 1];
	int r;

	if ((r = tls12_transcript_parse(content, len, &hs, why, why_len)) != 0)
		return r;
	if ((r = client_cert_is(ci, hs.client_cert, hs.client_cert_len, cert_der, cert_len, why,
				why_len)) != 0)
		return r;
	if (!tls12_suite_is_ecdhe(hs.suite) || hs.ske_params == NULL)
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "cipher suite 0x%04x is not ECDHE: identity %s is bound to servers and "
			    "only an ECDHE key exchange proves which server it is",
			    hs.suite, ci->name);
	if ((r = name_allowed(ci, hs.sni, name, why, why_len)) != 0)
		return r;
	if ((r = load_chain(hs.srv_cert, hs.srv_cert_len, hs.n_srv_certs, name, &leaf, &rest, why,
			    why_len)) != 0)
		goto out;
	if ((r = verify_ske(&hs, X509_get0_pubkey(leaf), why, why_len)) != 0)
		goto out;
	r = recognise(ci, name, leaf, rest, hs.srv_cert, hs.srv_cert_len, hs.n_srv_certs, why,
		      why_len);
out:
	sk_X509_pop_free(rest, X509_free);
	X509_free(leaf);
	return r;
}

/*
 * TLS 1.3: the content holds Hash(ClientHello .. client Certificate); the
 * handshake messages must hash to exactly that, and the server's own
 * CertificateVerify over Hash(ClientHello .. server Certificate) must
 * verify with the server certificate's key (RFC 8446 4.4.3).
 */
static int
check_tls13(const struct config_identity *ci, const unsigned char *cert_der, size_t cert_len,
	    const unsigned char *content, size_t len, const unsigned char *t, size_t t_len,
	    char *why, size_t why_len)
{
	static const char srv_ctx[] = "TLS 1.3, server CertificateVerify";
	unsigned char md[EVP_MAX_MD_SIZE], tbs[64 + sizeof(srv_ctx) + EVP_MAX_MD_SIZE];
	const size_t head = 64 + sizeof(TLS13_CLIENT_CV_CONTEXT);
	struct tls13_hs hs;
	STACK_OF(X509) *rest = NULL;
	X509 *leaf = NULL;
	const EVP_MD *h;
	unsigned int md_len = 0;
	char name[TLS_HS_SNI_MAX + 1];
	int r;

	if (t == NULL || t_len == 0)
		return deny(MTLS_ERR_TRANSCRIPT_REQUIRED, why, why_len,
			    "identity %s is bound to servers: a TLS 1.3 CertificateVerify needs "
			    "the handshake messages with the request, which this client does not "
			    "send (an unmodified openssl through the provider cannot); use "
			    "mtls-agentctl connect or the library's SSL_CTX helper "
			    "(mtls_agent_ssl_ctx_use_identity), or TLS 1.2",
			    ci->name);
	if ((r = tls13_transcript_parse(t, t_len, &hs, why, why_len)) != 0)
		return r;
	switch (hs.suite) {
	case 0x1301:
	case 0x1303:
	case 0x1304:
	case 0x1305: h = EVP_sha256(); break;
	case 0x1302: h = EVP_sha384(); break;
	default:
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "TLS 1.3 cipher suite 0x%04x is unknown", hs.suite);
	}
	if (EVP_Digest(t, t_len, md, &md_len, h, NULL) != 1)
		return MTLS_ERR_INTERNAL;
	if (len != head + md_len || memcmp(content + head, md, md_len) != 0)
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "the handshake messages sent with the request do not hash to the "
			    "CertificateVerify's transcript hash");
	if ((r = client_cert_is(ci, hs.client_cert, hs.client_cert_len, cert_der, cert_len, why,
				why_len)) != 0)
		return r;
	if ((r = name_allowed(ci, hs.sni, name, why, why_len)) != 0)
		return r;
	if ((r = load_chain(hs.srv_cert, hs.srv_cert_len, hs.n_srv_certs, name, &leaf, &rest, why,
			    why_len)) != 0)
		goto out;
	memset(tbs, 0x20, 64);
	memcpy(tbs + 64, srv_ctx, sizeof(srv_ctx));
	if (EVP_Digest(t, hs.srv_cv_covers, tbs + 64 + sizeof(srv_ctx), &md_len, h, NULL) != 1) {
		r = MTLS_ERR_INTERNAL;
		goto out;
	}
	if ((r = verify_sig(hs.srv_cv_alg, 1, X509_get0_pubkey(leaf), tbs,
			    64 + sizeof(srv_ctx) + md_len, hs.srv_cv_sig, hs.srv_cv_sig_len,
			    "server CertificateVerify", why, why_len)) != 0)
		goto out;
	r = recognise(ci, name, leaf, rest, hs.srv_cert, hs.srv_cert_len, hs.n_srv_certs, why,
		      why_len);
out:
	sk_X509_pop_free(rest, X509_free);
	X509_free(leaf);
	return r;
}

int
dest_check(const struct config_identity *ci, const unsigned char *cert_der, size_t cert_len,
	   int purpose, const unsigned char *content, size_t len, const unsigned char *transcript,
	   size_t transcript_len, char *why, size_t why_len)
{
	if (ci == NULL || ci->n_servers == 0)
		return 0;
	switch (purpose) {
	case MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV:
		return check_tls12(ci, cert_der, cert_len, content, len, why, why_len);
	case MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV:
		return check_tls13(ci, cert_der, cert_len, content, len, transcript, transcript_len,
				   why, why_len);
	case MTLS_AGENT_PURPOSE_RAW_DIGEST:
	case MTLS_AGENT_PURPOSE_PKCS11_DIGEST:
		/* conf.c refuses the combination; a digest could be any
		 * handshake's, toward any server. */
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "identity %s is bound to servers: no %s digests", ci->name,
			    purpose == MTLS_AGENT_PURPOSE_RAW_DIGEST ? "raw" : "pkcs11");
	}
	return 0;
}
