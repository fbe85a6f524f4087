/*
 * purpose - what a signature request claims to sign, and the checks that
 * hold it to that claim.  Used by the agent (to check), the PAM module (to
 * build challenges) and the fuzz targets.
 */
#ifndef MTLS_PURPOSE_H
#define MTLS_PURPOSE_H

#include <stddef.h>
#include <stdint.h>

#include "scheme.h"
#include "wbuf.h"

/* RFC 8446 4.4.3: 64 spaces, the context string, one zero byte. */
#define TLS13_CV_PAD_LEN	64
#define TLS13_CLIENT_CV_CONTEXT "TLS 1.3, client CertificateVerify"

/* The PAM challenge: this prefix (with its NUL), then string nonce,
 * string service, string user (u32-length-prefixed, wbuf encoding). */
#define PAM_CHALLENGE_CONTEXT "mtls-agent pam-challenge v1"
#define PAM_NONCE_MIN	      32
#define PAM_NONCE_MAX	      256

/*
 * Checks that `content` is what `purpose` says for scheme `s` (NULL, an
 * unknown scheme, is refused with MTLS_ERR_UNSUPPORTED_SCHEME).
 * Returns 0 or MTLS_ERR_CONTENT_REJECTED (or _UNSUPPORTED_SCHEME when the
 * purpose forbids the scheme); on refusal `why` gets a short reason.
 */
__attribute__((warn_unused_result)) int purpose_check(int purpose, const struct scheme_info *s,
						      const unsigned char *content, size_t len,
						      char *why, size_t why_len);

/*
 * The one refusal of a content check: `reason` into `why` (when given),
 * MTLS_ERR_CONTENT_REJECTED returned.  Shared by the purpose checks here
 * and the SSH content parsers (msg_ssh_data.c).
 */
int purpose_reject(char *why, size_t why_len, const char *reason);

/*
 * What a client's whole to-be-signed data claims to be: a TLS 1.3 client
 * CertificateVerify content is recognisable by its prefix; anything else
 * can only be a TLS 1.2 transcript, which the agent checks and signs only
 * where the identity allows TLS 1.2.  Used by the provider and the PKCS#11
 * module, so both name the purpose the same way.
 */
int purpose_of_tls_content(const unsigned char *content, size_t len);

/*
 * The csr purpose (purpose_csr.c): content is a DER CertificationRequestInfo,
 * version 0, printable subject, known printable extensions, no CA; with key
 * not NULL (an EVP_PKEY) its public key must be that key.  purpose_check()
 * checks the shape only (key NULL); the sign pipeline adds the binding.
 */
struct evp_pkey_st;
__attribute__((warn_unused_result)) int purpose_csr_check(const unsigned char *content, size_t len,
							  const struct evp_pkey_st *key, char *why,
							  size_t why_len);

/* Builds a PAM challenge into b. */
__attribute__((warn_unused_result)) int pam_challenge_put(struct wbuf *b,
							  const unsigned char *nonce,
							  size_t nonce_len, const char *service,
							  const char *user);

#endif
