/*
 * tls_transcript - the TLS 1.2 handshake messages a client CertificateVerify
 * signs, parsed for destination binding (src/agent/dest.c decides).  The
 * parser only frames and picks fields; it trusts nothing it finds: which
 * server, which keys and whether the signatures hold is dest.c's business.
 */
#ifndef MTLS_TLS_TRANSCRIPT_H
#define MTLS_TLS_TRANSCRIPT_H

#include <stddef.h>
#include <stdint.h>

#define TLS_HS_RANDOM_LEN 32
#define TLS_HS_SNI_MAX	  255	       /* a DNS name */
#define TLS_HS_MAX_CERTS  10	       /* server certificates looked at */
#define TLS_HS_CERT_MAX	  (64U * 1024) /* one certificate */

/* Pointers point into the transcript given to tls12_transcript_parse(). */
struct tls12_hs {
	unsigned char client_random[TLS_HS_RANDOM_LEN];
	unsigned char server_random[TLS_HS_RANDOM_LEN];
	char sni[TLS_HS_SNI_MAX + 1]; /* host_name of server_name; "" if none */
	uint16_t server_version;      /* ServerHello.server_version */
	uint16_t suite;		      /* the cipher suite the server chose */
	/* server Certificate: leaf first */
	const unsigned char *srv_cert[TLS_HS_MAX_CERTS];
	size_t srv_cert_len[TLS_HS_MAX_CERTS];
	size_t n_srv_certs;
	/* ServerKeyExchange of an ECDHE suite (RFC 8422 5.4): the signed
	 * params (curve_type, named_curve, public point), the signature
	 * algorithm (RFC 5246 7.4.1.4.1) and the signature; NULL if the
	 * transcript has no ServerKeyExchange. */
	const unsigned char *ske_params;
	size_t ske_params_len;
	uint16_t ske_sigalg;
	const unsigned char *ske_sig;
	size_t ske_sig_len;
	/* the client's Certificate message: its first (end-entity)
	 * certificate; NULL if it sent none */
	const unsigned char *client_cert;
	size_t client_cert_len;
};

/* 1 if `suite` is a TLS 1.2 ECDHE suite (ECDSA or RSA authenticated). */
int tls12_suite_is_ecdhe(uint16_t suite);

/*
 * Parses a full TLS 1.2 handshake with client authentication as the client
 * signs it: ClientHello, ServerHello, Certificate, [CertificateStatus],
 * ServerKeyExchange, CertificateRequest, ServerHelloDone, Certificate,
 * ClientKeyExchange, in that order, nothing after.  A missing
 * ServerKeyExchange (RSA key exchange) parses, with ske_params NULL.
 * Returns 0 or MTLS_ERR_CONTENT_REJECTED with the reason in why.
 */
__attribute__((warn_unused_result)) int tls12_transcript_parse(const unsigned char *t, size_t len,
							       struct tls12_hs *hs, char *why,
							       size_t why_len);

/* TLS 1.3 (RFC 8446 4): the handshake as the client saw it, decrypted. */
struct tls13_hs {
	char sni[TLS_HS_SNI_MAX + 1];
	uint16_t suite;
	const unsigned char *srv_cert[TLS_HS_MAX_CERTS];
	size_t srv_cert_len[TLS_HS_MAX_CERTS];
	size_t n_srv_certs;
	/* the server CertificateVerify and the length of the transcript it
	 * signs (ClientHello .. server Certificate) */
	uint16_t srv_cv_alg;
	const unsigned char *srv_cv_sig;
	size_t srv_cv_sig_len;
	size_t srv_cv_covers;
	const unsigned char *client_cert;
	size_t client_cert_len;
};

/*
 * Parses ClientHello, ServerHello, EncryptedExtensions, CertificateRequest,
 * Certificate, CertificateVerify, Finished (the server's), then the
 * client's Certificate, nothing after: what the client CertificateVerify's
 * transcript hash covers.  No HelloRetryRequest, no PSK (a server
 * Certificate is required).  Returns 0 or MTLS_ERR_CONTENT_REJECTED.
 */
__attribute__((warn_unused_result)) int tls13_transcript_parse(const unsigned char *t, size_t len,
							       struct tls13_hs *hs, char *why,
							       size_t why_len);

#endif
