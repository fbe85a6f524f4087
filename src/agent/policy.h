/*
 * policy - the decisions: who may connect, and what an identity may sign.
 * Pure functions, no I/O, so every rule has a unit test.
 */
#ifndef MTLS_POLICY_H
#define MTLS_POLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "scheme.h"

struct config_peer;

/* 1 if the peer matches one of the entries (uid, primary gid, or
 * executable path). */
int policy_peer_matches(const struct config_peer *peers, size_t n, uid_t uid, gid_t gid,
			const char *exe);

/* 1 if a peer with `peer_uid` may use an agent running as `agent_uid`. */
int policy_peer_allowed(uid_t peer_uid, uid_t agent_uid, int allow_root);

/*
 * Decides a signature request: the scheme must exist and fit the key
 * (type, and curve for ECDSA), the purpose must be allowed by the
 * identity's `purposes` mask, and the content must match the purpose.
 * On success *sp is the scheme.  Returns 0, MTLS_ERR_UNSUPPORTED_SCHEME,
 * MTLS_ERR_POLICY_DENIED or MTLS_ERR_CONTENT_REJECTED, with `why` set.
 */
__attribute__((warn_unused_result)) int policy_check_sign(uint32_t purposes, int key_type,
							  unsigned int key_bits, uint16_t scheme,
							  int purpose, const unsigned char *content,
							  size_t len, const struct scheme_info **sp,
							  char *why, size_t why_len);

#endif
