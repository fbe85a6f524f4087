/*
 * msg_ssh_data.c - what an SSH SIGN_REQUEST may ask to sign: a user
 * authentication request (RFC 4252 section 7; OpenSSH's hostbound variant
 * in PROTOCOL) or an SSHSIG blob (PROTOCOL.sshsig).  Pure parsers; which
 * key, host and namespace are allowed is decided by the agent
 * (src/agent/ssh_policy.c).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "msg_ssh.h"
#include "purpose.h"

#define SSH2_MSG_USERAUTH_REQUEST 50

/* Printable ASCII or UTF-8 bytes, no controls: what a user name may be. */
static int
name_ok(const unsigned char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return 0;
	return 1;
}

int
ssh_userauth_parse(struct wbuf *b, struct ssh_userauth *m, char *why, size_t why_len)
{
	const unsigned char *service, *method;
	size_t service_len, method_len;
	uint8_t type = 0, has_sig = 0;

	memset(m, 0, sizeof(*m));
	if (wbuf_get_string_direct(b, &m->session_id, &m->session_id_len, SSH_SESSION_ID_MAX) !=
		0 ||
	    m->session_id_len < 16)
		return purpose_reject(why, why_len, "not an SSH userauth request (session id)");
	if (wbuf_get_u8(b, &type) != 0 || type != SSH2_MSG_USERAUTH_REQUEST)
		return purpose_reject(why, why_len, "not an SSH userauth request (message type)");
	if (wbuf_get_string_direct(b, &m->user, &m->user_len, SSH_USER_MAX) != 0 ||
	    m->user_len == 0 || !name_ok(m->user, m->user_len))
		return purpose_reject(why, why_len, "SSH userauth request: bad user name");
	if (wbuf_get_string_direct(b, &service, &service_len, SSH_NAME_MAX) != 0 ||
	    !ssh_str_eq(service, service_len, "ssh-connection"))
		return purpose_reject(why, why_len,
				      "SSH userauth request: service is not ssh-connection");
	if (wbuf_get_string_direct(b, &method, &method_len, SSH_NAME_MAX) != 0)
		return purpose_reject(why, why_len, "SSH userauth request: truncated method");
	if (ssh_str_eq(method, method_len, "publickey-hostbound-v00@openssh.com"))
		m->hostbound = 1;
	else if (!ssh_str_eq(method, method_len, "publickey"))
		return purpose_reject(why, why_len,
				      "SSH userauth request: method is not publickey");
	if (wbuf_get_u8(b, &has_sig) != 0 || has_sig != 1)
		return purpose_reject(why, why_len, "SSH userauth request: not a signed request");
	if (wbuf_get_string_direct(b, &m->alg, &m->alg_len, SSH_NAME_MAX) != 0 || m->alg_len == 0 ||
	    wbuf_get_string_direct(b, &m->key, &m->key_len, SSH_KEY_BLOB_MAX) != 0 ||
	    m->key_len == 0)
		return purpose_reject(why, why_len, "SSH userauth request: bad algorithm or key");
	if (m->hostbound &&
	    (wbuf_get_string_direct(b, &m->hostkey, &m->hostkey_len, SSH_KEY_BLOB_MAX) != 0 ||
	     m->hostkey_len == 0))
		return purpose_reject(why, why_len, "SSH userauth request: bad server host key");
	if (wbuf_expect_end(b) != 0)
		return purpose_reject(why, why_len, "trailing bytes after SSH userauth request");
	return 0;
}

int
sshsig_parse(struct wbuf *b, struct sshsig_tbs *m, char *why, size_t why_len)
{
	unsigned char magic[sizeof(SSHSIG_MAGIC) - 1];
	const unsigned char *reserved, *hash;
	size_t reserved_len, want;

	memset(m, 0, sizeof(*m));
	if (wbuf_get(b, magic, sizeof(magic)) != 0 || memcmp(magic, SSHSIG_MAGIC, sizeof(magic)))
		return purpose_reject(why, why_len, "not an SSHSIG blob (magic)");
	if (wbuf_get_string_direct(b, &m->ns, &m->ns_len, SSH_NAME_MAX) != 0 || m->ns_len == 0 ||
	    memchr(m->ns, '\0', m->ns_len) != NULL || !name_ok(m->ns, m->ns_len))
		return purpose_reject(why, why_len, "SSHSIG: bad namespace");
	if (wbuf_get_string_direct(b, &reserved, &reserved_len, SSH_NAME_MAX) != 0)
		return purpose_reject(why, why_len, "SSHSIG: truncated reserved field");
	if (wbuf_get_string_direct(b, &m->hash_alg, &m->hash_alg_len, SSH_NAME_MAX) != 0)
		return purpose_reject(why, why_len, "SSHSIG: truncated hash algorithm");
	if (ssh_str_eq(m->hash_alg, m->hash_alg_len, "sha256"))
		want = 32;
	else if (ssh_str_eq(m->hash_alg, m->hash_alg_len, "sha512"))
		want = 64;
	else
		return purpose_reject(why, why_len,
				      "SSHSIG: hash algorithm is neither sha256 nor sha512");
	if (wbuf_get_string_direct(b, &hash, &m->hash_len, 64) != 0 || m->hash_len != want)
		return purpose_reject(why, why_len, "SSHSIG: message hash of the wrong length");
	if (wbuf_expect_end(b) != 0)
		return purpose_reject(why, why_len, "trailing bytes after SSHSIG blob");
	return 0;
}
