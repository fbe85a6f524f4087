/*
 * msg_ssh_key - SSH public key and signature blobs (RFC 4253 6.6,
 * RFC 5656 3.1, RFC 8332) made from OpenSSL keys, and their fingerprints
 * as ssh-keygen -l prints them.  RSA and ECDSA P-256/P-384 only.
 */
#ifndef MTLS_MSG_SSH_KEY_H
#define MTLS_MSG_SSH_KEY_H

#include <stddef.h>

#include <openssl/evp.h>

#include "wbuf.h"

/* "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", or NULL for a
 * key SSH is not offered (another curve, Ed25519 on a token, ...). */
const char *ssh_key_type(EVP_PKEY *pk);

/* Appends the key's blob: string type, then mpint e, mpint n (RSA) or
 * string curve, string Q (ECDSA).  MTLS_ERR_UNSUPPORTED_SCHEME if the
 * key has no SSH form. */
WUR int ssh_key_blob_put(struct wbuf *b, EVP_PKEY *pk);

/*
 * Appends the signature blob of `alg` (RFC 8332 / RFC 5656 3.1.2):
 * string alg, string signature; for ECDSA the signature is DER
 * ECDSA-Sig-Value (what the sign pipeline returns) and is written as
 * string (mpint r, mpint s).
 */
WUR int ssh_sig_blob_put(struct wbuf *b, const char *alg, int ecdsa, const unsigned char *sig,
			 size_t len);

/* "SHA256:" and the unpadded base64 of the blob's SHA-256. */
WUR int ssh_fingerprint(const unsigned char *blob, size_t len, char *out, size_t out_len);

/* "TYPE BASE64 COMMENT" (an authorized_keys line without the newline);
 * *line is malloc'd. */
WUR int ssh_pubkey_line(const unsigned char *blob, size_t len, const char *comment, char **line);

/* The public key in an SSH key blob (RSA, ECDSA P-256/384/521, Ed25519):
 * for checking a host key's signature.  *pk is the caller's. */
WUR int ssh_key_from_blob(const unsigned char *blob, size_t len, EVP_PKEY **pk);

/*
 * Verifies an SSH signature blob over data with the key blob (a server's
 * host key signing the exchange hash): ssh-ed25519, rsa-sha2-256/512,
 * ecdsa-sha2-nistp256/384/521.  0 or MTLS_ERR_SIGNATURE_INVALID.
 */
WUR int ssh_sig_verify(const unsigned char *key, size_t key_len, const unsigned char *sig,
		       size_t sig_len, const unsigned char *data, size_t data_len);

#endif
