/*
 * err.c - text for MTLS_ERR_* codes.
 */
#include "config.h"

#include "mtls-agent.h"

const char *
mtls_agent_strerror(int err)
{
	switch (err) {
	case MTLS_ERR_OK: return "success";
	case MTLS_ERR_INTERNAL: return "internal error";
	case MTLS_ERR_ALLOC: return "out of memory";
	case MTLS_ERR_BAD_REQUEST: return "malformed message";
	case MTLS_ERR_UNSUPPORTED_VERSION: return "no common protocol version";
	case MTLS_ERR_NO_IDENTITY: return "no such identity";
	case MTLS_ERR_TOKEN_ABSENT: return "token not present";
	case MTLS_ERR_LOGIN_REQUIRED: return "token login required";
	case MTLS_ERR_PIN_INCORRECT: return "PIN incorrect";
	case MTLS_ERR_PIN_LOCKED: return "PIN locked";
	case MTLS_ERR_POLICY_DENIED: return "denied by the identity's policy";
	case MTLS_ERR_CONTENT_REJECTED: return "content does not match the stated purpose";
	case MTLS_ERR_PEER_DENIED: return "peer not allowed to use this agent";
	case MTLS_ERR_FRAME_TOO_LARGE: return "message larger than the frame limit";
	case MTLS_ERR_TRUNCATED: return "message truncated";
	case MTLS_ERR_TRAILING_DATA: return "trailing bytes after message";
	case MTLS_ERR_STRING_NUL: return "string contains a NUL byte";
	case MTLS_ERR_UNSUPPORTED_SCHEME: return "signature scheme not supported for this key";
	case MTLS_ERR_UNSUPPORTED_MESSAGE: return "unknown message type";
	case MTLS_ERR_INVALID_ARGUMENT: return "invalid argument";
	case MTLS_ERR_CONNECT: return "cannot connect to the agent";
	case MTLS_ERR_IO: return "I/O error on the agent connection";
	case MTLS_ERR_CONNECTION_CLOSED: return "connection closed by peer";
	case MTLS_ERR_TIMEOUT: return "timed out";
	case MTLS_ERR_TOKEN: return "PKCS#11 token error";
	case MTLS_ERR_PIN_INVALID: return "PIN empty, too long or malformed";
	case MTLS_ERR_BUSY: return "agent busy: too many connections";
	case MTLS_ERR_CONFIG: return "configuration error";
	case MTLS_ERR_HELLO_REQUIRED: return "protocol error: HELLO required first";
	case MTLS_ERR_NO_SOCKET: return "no agent socket: set MTLS_AGENT_SOCK or XDG_RUNTIME_DIR";
	case MTLS_ERR_CERT_INVALID: return "certificate does not parse";
	case MTLS_ERR_CERT_EXPIRED: return "certificate expired";
	case MTLS_ERR_CERT_NOT_YET_VALID: return "certificate not yet valid";
	case MTLS_ERR_CERT_UNTRUSTED: return "certificate not issued by a trusted CA";
	case MTLS_ERR_CERT_REVOKED: return "certificate revoked";
	case MTLS_ERR_CERT_USAGE: return "certificate key usage or extended key usage not allowed";
	case MTLS_ERR_CERT_REVOCATION_UNKNOWN: return "certificate revocation status unknown";
	case MTLS_ERR_USER_MISMATCH: return "certificate does not map to this user";
	case MTLS_ERR_SIGNATURE_INVALID: return "signature does not verify";
	case MTLS_ERR_AGENT_LOCKED: return "agent locked";
	case MTLS_ERR_CONFIRM_DENIED: return "use of the key not confirmed";
	case MTLS_ERR_RATE_LIMITED: return "signature rate limit reached";
	case MTLS_ERR_DESTINATION_DENIED: return "SSH destination not allowed for this identity";
	case MTLS_ERR_SSH_BINDING: return "SSH session binding missing or invalid";
	case MTLS_ERR_READ_ONLY: return "the token or identity is configured read-only";
	case MTLS_ERR_MECHANISM: return "the token cannot generate this key";
	case MTLS_ERR_KEY_NOT_FOUND:
		return "no private key on a logged-in token for this certificate";
	case MTLS_ERR_DUPLICATE: return "already on the token";
	}
	return "unknown error";
}
