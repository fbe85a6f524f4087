/*
 * fuzz_msg_ssh - the SSH agent codec and the parsers of what an SSH
 * SIGN_REQUEST may sign.
 *
 * Input: a selector byte, then the bytes.
 *   0: one SSH agent frame body (type byte + payload), decoded as the
 *      agent's SSH front end does; a SIGN_REQUEST that decodes must encode
 *      to the same bytes, and its data goes through the SSH content checks.
 *   1: a user authentication request; one that parses must be rebuilt
 *      byte for byte from its fields.
 *   2: an SSHSIG blob, likewise.
 *   3: a key blob and, after it, a signature blob: parsed by OpenSSL's
 *      side (ssh_key_from_blob, ssh_sig_verify), which must not crash;
 *      a parsed key must give back the same blob.
 * Any other selector: all of the above on the same bytes.
 */
#include "config.h"

#include <string.h>

#include "fuzz.h"
#include "msg_ssh.h"
#include "msg_ssh_key.h"
#include "mtls-agent.h"
#include "purpose.h"
#include "secmem.h"

static void
frame(const uint8_t *d, size_t n)
{
	struct msg_ssh_sign_req m;
	struct msg_ssh_ext ext;
	struct msg_ssh_session_bind sb;
	struct msg_ssh_ident ids[SSH_IDS_MAX];
	struct wbuf *b, *enc;
	char why[256], *pass = NULL;
	uint8_t type;
	size_t nids;
	int r1, r2;

	FUZZ_CHECK((b = wbuf_from(d, n)) != NULL);
	if (wbuf_get_u8(b, &type) != 0)
		goto out;
	switch (type) {
	case SSH_AGENTC_REQUEST_IDENTITIES:
	case SSH_AGENTC_REMOVE_ALL_IDENTITIES:
		FUZZ_CHECK((msg_ssh_empty_get(b) == 0) == (n == 1));
		break;
	case SSH_AGENTC_SIGN_REQUEST:
		if (msg_ssh_sign_req_get(b, &m) != 0)
			break;
		FUZZ_CHECK((enc = wbuf_new()) != NULL);
		FUZZ_CHECK(msg_ssh_sign_req_put(enc, &m) == 0);
		FUZZ_CHECK(wbuf_len(enc) == n && memcmp(wbuf_ptr(enc), d, n) == 0);
		wbuf_free(enc);
		/* A content passes for at most one of the two purposes. */
		r1 = purpose_check(MTLS_AGENT_PURPOSE_SSH,
				   scheme_lookup(MTLS_AGENT_ECDSA_SECP256R1_SHA256), m.data,
				   m.data_len, why, sizeof(why));
		r2 = purpose_check(MTLS_AGENT_PURPOSE_SSH_SIG,
				   scheme_lookup(MTLS_AGENT_RSA_PKCS1_SHA512), m.data, m.data_len,
				   why, sizeof(why));
		FUZZ_CHECK(r1 != 0 || r2 != 0);
		break;
	case SSH_AGENTC_LOCK:
	case SSH_AGENTC_UNLOCK:
		if (msg_ssh_lock_get(b, &pass) == 0) {
			FUZZ_CHECK(pass != NULL);
			mtls_secure_free(pass);
		}
		break;
	case SSH_AGENTC_EXTENSION:
		if (msg_ssh_ext_get(b, &ext) != 0)
			break;
		FUZZ_CHECK(strlen(ext.name) > 0 && strlen(ext.name) <= SSH_NAME_MAX);
		if (strcmp(ext.name, SSH_EXT_SESSION_BIND) == 0 &&
		    msg_ssh_session_bind_get(b, &sb) == 0) {
			FUZZ_CHECK(sb.session_id_len > 0 && sb.session_id_len <= 64);
			/* Made-up bytes never verify. */
			FUZZ_CHECK(ssh_sig_verify(sb.hostkey, sb.hostkey_len, sb.sig, sb.sig_len,
						  sb.session_id, sb.session_id_len) != 0);
		}
		break;
	case SSH_AGENT_IDENTITIES_ANSWER:
		if (msg_ssh_identities_get(b, ids, SSH_IDS_MAX, &nids) == 0)
			FUZZ_CHECK(nids <= SSH_IDS_MAX);
		break;
	}
out:
	wbuf_free(b);
}

static void
userauth(const uint8_t *d, size_t n)
{
	struct ssh_userauth ua;
	struct wbuf *b, *enc;
	char why[256];

	FUZZ_CHECK((b = wbuf_from(d, n)) != NULL);
	if (ssh_userauth_parse(b, &ua, why, sizeof(why)) != 0) {
		FUZZ_CHECK(why[0] != '\0');
		goto out;
	}
	FUZZ_CHECK((enc = wbuf_new()) != NULL);
	FUZZ_CHECK(wbuf_put_string(enc, ua.session_id, ua.session_id_len) == 0 &&
		   wbuf_put_u8(enc, 50) == 0 && wbuf_put_string(enc, ua.user, ua.user_len) == 0 &&
		   wbuf_put_cstring(enc, "ssh-connection") == 0 &&
		   wbuf_put_cstring(enc, ua.hostbound ? "publickey-hostbound-v00@openssh.com"
						      : "publickey") == 0 &&
		   wbuf_put_u8(enc, 1) == 0 && wbuf_put_string(enc, ua.alg, ua.alg_len) == 0 &&
		   wbuf_put_string(enc, ua.key, ua.key_len) == 0);
	if (ua.hostbound)
		FUZZ_CHECK(wbuf_put_string(enc, ua.hostkey, ua.hostkey_len) == 0);
	FUZZ_CHECK(wbuf_len(enc) == n && memcmp(wbuf_ptr(enc), d, n) == 0);
	wbuf_free(enc);
out:
	wbuf_free(b);
}

static void
sshsig(const uint8_t *d, size_t n)
{
	struct sshsig_tbs m;
	struct wbuf *b;
	char why[256];

	FUZZ_CHECK((b = wbuf_from(d, n)) != NULL);
	if (sshsig_parse(b, &m, why, sizeof(why)) == 0) {
		FUZZ_CHECK(n >= 6 && memcmp(d, SSHSIG_MAGIC, 6) == 0);
		FUZZ_CHECK(m.hash_len == 32 || m.hash_len == 64);
		FUZZ_CHECK(m.ns_len > 0);
	} else {
		FUZZ_CHECK(why[0] != '\0');
	}
	wbuf_free(b);
}

static void
keys(const uint8_t *d, size_t n)
{
	const unsigned char *key, *sig;
	size_t key_len, sig_len;
	struct wbuf *b, *enc;
	EVP_PKEY *pk = NULL;

	FUZZ_CHECK((b = wbuf_from(d, n)) != NULL);
	if (wbuf_get_string_direct(b, &key, &key_len, SSH_KEY_BLOB_MAX) != 0)
		goto out;
	sig = wbuf_ptr(b);
	sig_len = wbuf_len(b);
	if (ssh_key_from_blob(key, key_len, &pk) == 0) {
		FUZZ_CHECK(pk != NULL);
		if (ssh_key_type(pk) != NULL) {
			FUZZ_CHECK((enc = wbuf_new()) != NULL);
			FUZZ_CHECK(ssh_key_blob_put(enc, pk) == 0);
			/* EC points may come compressed; RSA must round-trip */
			if (EVP_PKEY_is_a(pk, "RSA"))
				FUZZ_CHECK(wbuf_len(enc) == key_len &&
					   memcmp(wbuf_ptr(enc), key, key_len) == 0);
			wbuf_free(enc);
		}
		EVP_PKEY_free(pk);
	}
	FUZZ_CHECK(ssh_sig_verify(key, key_len, sig, sig_len, (const unsigned char *)"x", 1) != 0);
out:
	wbuf_free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0]) {
	case 0: frame(data + 1, size - 1); break;
	case 1: userauth(data + 1, size - 1); break;
	case 2: sshsig(data + 1, size - 1); break;
	case 3: keys(data + 1, size - 1); break;
	default:
		frame(data + 1, size - 1);
		userauth(data + 1, size - 1);
		sshsig(data + 1, size - 1);
		keys(data + 1, size - 1);
	}
	return 0;
}
