/*
 * dest - TLS destination binding: an identity with "servers" signs a
 * client CertificateVerify only toward a server the agent has recognised
 * from the handshake itself (docs/ARCHITECTURE.md, mtls-agent.conf(5)).
 */
#ifndef MTLS_DEST_H
#define MTLS_DEST_H

#include <stddef.h>

#include "conf.h"

/*
 * Decides a SIGN of `purpose` over `content` for the identity configured
 * as `ci` whose certificate is cert_der.  Identities without servers (or
 * ci NULL) and purposes that are no TLS CertificateVerify pass.  A TLS 1.2
 * CertificateVerify passes only if its transcript (the content) is a full
 * ECDHE handshake whose client Certificate carries cert_der, whose SNI
 * matches one of the servers, whose server chain verifies against that
 * entry's CA (with the name) and/or whose server key matches its pins, and
 * whose ServerKeyExchange signature verifies with the server's key.  A TLS
 * 1.3 CertificateVerify needs `transcript` (the handshake messages from
 * the SIGN request): they must hash to the content's transcript hash, the
 * server's CertificateVerify must verify, and the rest as for TLS 1.2.
 * Returns 0, MTLS_ERR_SERVER_DENIED, MTLS_ERR_TRANSCRIPT_REQUIRED,
 * MTLS_ERR_CONTENT_REJECTED or MTLS_ERR_ALLOC; why says which check.
 */
__attribute__((warn_unused_result)) int
dest_check(const struct config_identity *ci, const unsigned char *cert_der, size_t cert_len,
	   int purpose, const unsigned char *content, size_t len, const unsigned char *transcript,
	   size_t transcript_len, char *why, size_t why_len);

/* 1 if host name `name` (lower case) matches `pattern` ("*." one label). */
int dest_name_matches(const char *pattern, const char *name);

#endif
