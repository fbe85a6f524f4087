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

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "dest.h"
#include "mtls-agent.h"
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

/* The ServerKeyExchange signature over client_random || server_random ||
 * params, with the server certificate's key (RFC 8422 5.4). */
static int
verify_ske(const struct tls12_hs *hs, EVP_PKEY *key, char *why, size_t why_len)
{
	const struct scheme_info *s = scheme_lookup(hs->ske_sigalg);
	unsigned char tbs[2 * TLS_HS_RANDOM_LEN + 1 + 2 + 1 + 255];
	EVP_MD_CTX *ctx = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	char alg[16];
	size_t n = 0;
	int r = MTLS_ERR_SERVER_DENIED, kt = EVP_PKEY_get_base_id(key);

	snprintf(alg, sizeof(alg), "0x%04x", hs->ske_sigalg);
	if (s == NULL)
		return deny(r, why, why_len,
			    "server signed its ServerKeyExchange with algorithm %s, which the "
			    "agent does not verify%s",
			    alg, "");
	if ((s->key_type == MTLS_AGENT_KEY_EC) != (kt == EVP_PKEY_EC) ||
	    (s->key_type == MTLS_AGENT_KEY_RSA) != (kt == EVP_PKEY_RSA || kt == EVP_PKEY_RSA_PSS))
		return deny(r, why, why_len,
			    "ServerKeyExchange algorithm %s does not fit the server "
			    "certificate's key%s",
			    s->name, "");
	if (hs->ske_params_len > sizeof(tbs) - 2 * TLS_HS_RANDOM_LEN)
		return deny(MTLS_ERR_CONTENT_REJECTED, why, why_len,
			    "ServerKeyExchange params too long%s%s", "", "");
	memcpy(tbs, hs->client_random, TLS_HS_RANDOM_LEN);
	memcpy(tbs + TLS_HS_RANDOM_LEN, hs->server_random, TLS_HS_RANDOM_LEN);
	memcpy(tbs + 2 * TLS_HS_RANDOM_LEN, hs->ske_params, hs->ske_params_len);
	n = 2 * TLS_HS_RANDOM_LEN + hs->ske_params_len;
	if ((ctx = EVP_MD_CTX_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if (EVP_DigestVerifyInit_ex(ctx, &pctx, s->digest, NULL, NULL, key, NULL) != 1 ||
	    (s->pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
			EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))) {
		r = deny(r, why, why_len, "cannot verify a %s ServerKeyExchange signature%s",
			 s->name, "");
		goto out;
	}
	if (EVP_DigestVerify(ctx, hs->ske_sig, hs->ske_sig_len, tbs, n) != 1) {
		r = deny(r, why, why_len,
			 "the ServerKeyExchange signature does not verify with the server "
			 "certificate's key (%s): the handshake was not with that server%s",
			 s->name, "");
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	return r;
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

static int
check_tls12(const struct config_identity *ci, const unsigned char *cert_der, size_t cert_len,
	    const unsigned char *content, size_t len, char *why, size_t why_len)
{
	struct tls12_hs hs;
	const struct config_server *sv;
	STACK_OF(X509) *rest = NULL;
	X509 *leaf = NULL, *x;
	EVP_PKEY *key;
	const unsigned char *p;
	char name[TLS_HS_SNI_MAX + 1], err[256] = "", suite[8];
	size_t i;
	int r, matched = 0;

	if ((r = tls12_transcript_parse(content, len, &hs, why, why_len)) != 0)
		return r;
	if (hs.client_cert == NULL || hs.client_cert_len != cert_len ||
	    memcmp(hs.client_cert, cert_der, cert_len) != 0)
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "the handshake's client Certificate is not identity %s's "
			    "certificate%s",
			    ci->name, "");
	snprintf(suite, sizeof(suite), "0x%04x", hs.suite);
	if (!tls12_suite_is_ecdhe(hs.suite) || hs.ske_params == NULL)
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "cipher suite %s is not ECDHE: identity %s is bound to servers and "
			    "only an ECDHE key exchange proves which server it is",
			    suite, ci->name);
	if (hs.sni[0] == '\0')
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "the ClientHello names no server (no SNI): identity %s signs only "
			    "toward its servers%s",
			    ci->name, "");
	for (i = 0; hs.sni[i] != '\0'; i++)
		name[i] = (char)(hs.sni[i] >= 'A' && hs.sni[i] <= 'Z' ? hs.sni[i] - 'A' + 'a'
								      : hs.sni[i]);
	name[i] = '\0';
	for (i = 0; i < ci->n_servers; i++)
		if (dest_name_matches(ci->servers[i].pattern, name))
			matched = 1;
	if (!matched)
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "server %s is not in the servers of identity %s", name, ci->name);

	p = hs.srv_cert[0];
	if ((leaf = d2i_X509(NULL, &p, (long)hs.srv_cert_len[0])) == NULL ||
	    p != hs.srv_cert[0] + hs.srv_cert_len[0]) {
		r = deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			 "the server certificate of %s does not parse%s", name, "");
		goto out;
	}
	if ((rest = sk_X509_new_null()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (i = 1; i < hs.n_srv_certs; i++) {
		p = hs.srv_cert[i];
		if ((x = d2i_X509(NULL, &p, (long)hs.srv_cert_len[i])) == NULL) {
			r = deny(MTLS_ERR_SERVER_DENIED, why, why_len,
				 "a chain certificate of %s does not parse%s", name, "");
			goto out;
		}
		if (!sk_X509_push(rest, x)) {
			X509_free(x);
			r = MTLS_ERR_ALLOC;
			goto out;
		}
	}
	if ((key = X509_get0_pubkey(leaf)) == NULL) {
		r = deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			 "the server certificate of %s has no usable key%s", name, "");
		goto out;
	}
	if ((r = verify_ske(&hs, key, why, why_len)) != 0)
		goto out;
	/* Any entry for the name that recognises the server will do. */
	r = MTLS_ERR_SERVER_DENIED;
	for (i = 0; i < ci->n_servers && r != 0; i++) {
		sv = &ci->servers[i];
		if (!dest_name_matches(sv->pattern, name))
			continue;
		if (sv->n_pins > 0 && !pin_matches(sv, leaf)) {
			snprintf(err, sizeof(err), "its key is not pinned for %s", sv->pattern);
			continue;
		}
		if (sv->ca_file != NULL) {
			if (!chain_verifies(sv, leaf, rest, name, err, sizeof(err)))
				continue;
		} else if (X509_check_host(leaf, name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
					   NULL) != 1) {
			snprintf(err, sizeof(err), "the pinned certificate is not for that name");
			continue;
		}
		r = 0;
	}
	if (r != 0)
		r = deny(r, why, why_len, "server %s is not recognised: %s", name, err);
out:
	sk_X509_pop_free(rest, X509_free);
	X509_free(leaf);
	return r;
}

int
dest_check(const struct config_identity *ci, const unsigned char *cert_der, size_t cert_len,
	   int purpose, const unsigned char *content, size_t len, char *why, size_t why_len)
{
	if (ci == NULL || ci->n_servers == 0)
		return 0;
	switch (purpose) {
	case MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV:
		return check_tls12(ci, cert_der, cert_len, content, len, why, why_len);
	case MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV:
		return deny(MTLS_ERR_TRANSCRIPT_REQUIRED, why, why_len,
			    "identity %s is bound to servers: a TLS 1.3 CertificateVerify carries "
			    "only a transcript hash, and this agent cannot yet take the handshake "
			    "messages that prove the server; use TLS 1.2 toward %s",
			    ci->name, ci->servers[0].pattern);
	case MTLS_AGENT_PURPOSE_RAW_DIGEST:
		/* conf.c refuses the combination; a digest could be anything. */
		return deny(MTLS_ERR_SERVER_DENIED, why, why_len,
			    "identity %s is bound to servers: no raw digests%s", ci->name, "");
	}
	return 0;
}
