/*
 * policy.c - peer and signing decisions.  See policy.h.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "mtls-agent.h"
#include "conf.h"
#include "policy.h"
#include "purpose.h"

int
policy_peer_matches(const struct config_peer *peers, size_t n, uid_t uid, gid_t gid,
		    const char *exe)
{
	size_t i;

	for (i = 0; i < n; i++) {
		switch (peers[i].kind) {
		case PEER_UID:
			if (peers[i].id == (unsigned long)uid)
				return 1;
			break;
		case PEER_GID:
			if (peers[i].id == (unsigned long)gid)
				return 1;
			break;
		case PEER_EXE:
			if (exe != NULL && peers[i].exe != NULL && strcmp(peers[i].exe, exe) == 0)
				return 1;
			break;
		}
	}
	return 0;
}

int
policy_peer_allowed(uid_t peer_uid, uid_t agent_uid, int allow_root)
{
	if (peer_uid == agent_uid)
		return 1;
	return peer_uid == 0 && allow_root;
}

int
policy_check_sign(uint32_t purposes, int key_type, unsigned int key_bits, uint16_t scheme,
		  int purpose, const unsigned char *content, size_t len,
		  const struct scheme_info **sp, char *why, size_t why_len)
{
	const struct scheme_info *s;
	const char *pname;

	*sp = NULL;
	if ((s = scheme_lookup(scheme)) == NULL) {
		snprintf(why, why_len, "unknown signature scheme 0x%04x", scheme);
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	}
	if (s->key_type != key_type || (s->ec_bits != 0 && s->ec_bits != key_bits)) {
		snprintf(why, why_len, "%s does not fit %s-%u key", s->name,
			 key_type == MTLS_AGENT_KEY_RSA ? "an RSA" : "an EC", key_bits);
		return MTLS_ERR_UNSUPPORTED_SCHEME;
	}
	if ((pname = mtls_agent_purpose_name(purpose)) == NULL) {
		snprintf(why, why_len, "unknown purpose %d", purpose);
		return MTLS_ERR_CONTENT_REJECTED;
	}
	if ((purposes & (1U << purpose)) == 0) {
		snprintf(why, why_len, "purpose %s not allowed for this identity", pname);
		return MTLS_ERR_POLICY_DENIED;
	}
	*sp = s;
	return purpose_check(purpose, s, content, len, why, why_len);
}
