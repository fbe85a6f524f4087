/*
 * certval - client certificate validation, shared by the PAM module and the
 * tools: chain to the configured CAs, validity period, key usage and EKU,
 * revocation by CRL and by OCSP.  One place, not two.
 */
#ifndef MTLS_CERTVAL_H
#define MTLS_CERTVAL_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

enum certval_ocsp {
	CERTVAL_OCSP_OFF = 0,  /* no OCSP */
	CERTVAL_OCSP_SOFT = 1, /* query; unreachable/unknown is accepted */
	CERTVAL_OCSP_HARD = 2, /* query; anything but "good" is refused */
};

struct certval_opts {
	const char *ca_file;  /* PEM bundle of trusted CAs; or NULL */
	const char *ca_dir;   /* hashed CA directory (c_rehash); or NULL */
	const char *crl_file; /* PEM CRL(s); or NULL */
	const char *crl_dir;  /* directory of PEM CRLs; or NULL */
	int crl_required;     /* 1: every cert in the chain must have a CRL */
	enum certval_ocsp ocsp;
	const char *ocsp_url;	       /* responder; NULL = the certificate's AIA */
	int ocsp_timeout;	       /* seconds for the whole OCSP exchange */
	int require_client_eku;	       /* EKU must allow clientAuth (if present,
					  and present at all when this is 2) */
	int require_digital_signature; /* keyUsage must allow it if present */
	int x509_strict;	       /* 1: X509_V_FLAG_X509_STRICT (RFC 5280
					  rules for every CA, e.g. keyUsage) */
	time_t at;		       /* check time; 0 = now */
};

/* Sets the defaults: EKU clientAuth and digitalSignature required, OCSP
 * off, 10 s timeout. */
void certval_opts_init(struct certval_opts *o);

/*
 * Validates `cert` with optional untrusted intermediates `chain` (may be
 * NULL).  Returns 0 or MTLS_ERR_CERT_INVALID, _EXPIRED, _NOT_YET_VALID,
 * _UNTRUSTED, _REVOKED, _USAGE, _REVOCATION_UNKNOWN, MTLS_ERR_CONFIG (CA
 * or CRL files unreadable), MTLS_ERR_ALLOC; `why` gets one line saying
 * which certificate and why.
 *
 * On success `why` is "" or a line worth logging: an OCSP soft-fail
 * ("OCSP soft-fail for '<subject>': <reason>"), a good answer without a
 * nonce in soft mode, or CRLs missing where not required.
 *
 * Details:
 * - The chain must end at a self-signed CA from ca_file/ca_dir (an
 *   intermediate there is not an anchor).  By default the chain is checked
 *   as nginx and Apache check it (OpenSSL's default rules: a CA made with
 *   a plain `openssl req -x509`, without keyUsage, is accepted); with
 *   x509_strict, X509_V_FLAG_X509_STRICT applies the RFC 5280 rules to
 *   every certificate (a CA must then carry keyUsage keyCertSign, ...).
 *   The leaf's own key usage and EKU rules below apply either way.
 *   Expiry of any certificate of the chain is _EXPIRED, and so on.
 * - CRLs (crl_file: PEM CRLs, at least one; crl_dir: every regular file
 *   in it that holds PEM CRLs, no c_rehash needed): every certificate of
 *   the chain is checked against the CRLs present.  An expired, not yet
 *   valid or badly signed CRL is _REVOCATION_UNKNOWN.  A certificate with
 *   no CRL from its issuer is accepted unless crl_required (then
 *   _REVOCATION_UNKNOWN); crl_required without a CRL source is _CONFIG.
 * - EKU: an anyExtendedKeyUsage-only EKU does not count as clientAuth.
 * - OCSP: after everything else.  http:// only (https is refused as
 *   unknown); no proxy, http_proxy is ignored; ocsp_timeout (<= 0: 10 s)
 *   bounds the connection and exchange, but not a DNS lookup of a host
 *   name; a refused connection is retried by OpenSSL until the timeout.
 *   The response must be signed by the issuer or a responder it
 *   delegated to (OCSPSigning EKU), be current (5 min skew, judged by the
 *   real clock, not `at`), carry our nonce (hard mode; soft mode accepts a
 *   response without one, but never a different nonce: replays are
 *   unknown) and report "good".  A correctly signed "revoked" is
 *   _REVOKED in both modes whatever its nonce and age.  Everything else
 *   (unreachable, timeout, unknown, bad signature, bad nonce, stale) is
 *   _REVOCATION_UNKNOWN in hard mode and accepted in soft mode.
 * - `at` moves the clock for the chain and CRL checks only.
 * Thread-safe; blocks SIGPIPE in the calling thread during the OCSP
 * exchange and consumes one raised meanwhile.
 */
__attribute__((warn_unused_result)) int certval_verify(X509 *cert, STACK_OF(X509) * chain,
						       const struct certval_opts *o, char *why,
						       size_t why_len);

/* Parses DER into a new X509; NULL if it does not parse. */
X509 *certval_parse_der(const unsigned char *der, size_t len);

#endif
