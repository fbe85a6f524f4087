/*
 * ssh.c - the SSH agent front end (see ssh.h): RFC 9987 requests and
 * OpenSSH's extensions mapped onto the agent.
 *
 *   REQUEST_IDENTITIES  every identity with an RSA or ECDSA P-256/P-384
 *                       key and purpose ssh or ssh-sig; comment: the
 *                       certificate's subject; plus its ssh-certificate
 *   SIGN_REQUEST        token_sign() with purpose ssh (userauth) or
 *                       ssh-sig (an SSHSIG blob), the scheme from the key
 *                       and flags; the signature as an SSH blob
 *   LOCK / UNLOCK       the agent's lock (server.c)
 *   EXTENSION           query, session-bind@openssh.com (verified and
 *                       kept per connection, for ssh_policy.c)
 *   anything else       SSH_AGENT_FAILURE (keys come from tokens)
 */
#include "config.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "msg_ssh.h"
#include "msg_ssh_key.h"
#include "mtls-agent.h"
#include "safefile.h"
#include "secmem.h"
#include "ssh.h"
#include "ssh_policy.h"

#define SSH_CERT_FILE_MAX (64U * 1024)
#define SSH_COMMENT_MAX	  512

/* One key the connection was shown (or looked up): blob -> identity. */
struct ssh_key {
	char *name;
	unsigned char *blob; /* plain key blob, or an OpenSSH certificate */
	size_t blob_len;
	char *comment;
	int key_type;
	unsigned int key_bits;
};

struct ssh_conn {
	struct ssh_binds binds;
	struct ssh_key *keys;
	size_t n_keys;
};

struct ssh_conn *
ssh_conn_new(void)
{
	return calloc(1, sizeof(struct ssh_conn));
}

static void
keys_free(struct ssh_conn *sc)
{
	size_t i;

	for (i = 0; i < sc->n_keys; i++) {
		free(sc->keys[i].name);
		free(sc->keys[i].blob);
		free(sc->keys[i].comment);
	}
	free(sc->keys);
	sc->keys = NULL;
	sc->n_keys = 0;
}

void
ssh_conn_free(struct ssh_conn *sc)
{
	if (sc == NULL)
		return;
	keys_free(sc);
	ssh_binds_clear(&sc->binds);
	free(sc);
}

char *
ssh_default_socket(const char *agent_sock)
{
	const char *slash = strrchr(agent_sock, '/');
	char *p = NULL;

	if (slash == NULL)
		return NULL;
	if (asprintf(&p, "%.*s/ssh.sock", (int)(slash - agent_sock), agent_sock) < 0)
		return NULL;
	return p;
}

static const struct config_identity *
conf_ident(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; cfg != NULL && i < cfg->n_identities; i++)
		if (strcmp(cfg->identities[i].name, name) == 0)
			return &cfg->identities[i];
	return NULL;
}

static int
add_key(struct ssh_conn *sc, const char *name, const unsigned char *blob, size_t len,
	const char *comment, int key_type, unsigned int key_bits)
{
	struct ssh_key *k;

	if (sc->n_keys >= SSH_IDS_MAX)
		return 0;
	if ((k = reallocarray(sc->keys, sc->n_keys + 1, sizeof(*k))) == NULL)
		return MTLS_ERR_ALLOC;
	sc->keys = k;
	k = &sc->keys[sc->n_keys];
	memset(k, 0, sizeof(*k));
	k->name = strdup(name);
	k->blob = malloc(len);
	k->comment = strdup(comment);
	if (k->name == NULL || k->blob == NULL || k->comment == NULL) {
		free(k->name);
		free(k->blob);
		free(k->comment);
		return MTLS_ERR_ALLOC;
	}
	memcpy(k->blob, blob, len);
	k->blob_len = len;
	k->key_type = key_type;
	k->key_bits = key_bits;
	sc->n_keys++;
	return 0;
}

/*
 * The identity's OpenSSH certificate file: one line "TYPE BASE64
 * [COMMENT]" whose certificate is of the identity's key (else ignored,
 * with a warning: it would never be signed for).
 */
static int
read_ssh_cert(const char *path, X509 *cert, struct wbuf *out)
{
	const struct safefile_rules rules = { .owner = getuid(),
					      .forbidden = S_IWGRP | S_IWOTH,
					      .max = SSH_CERT_FILE_MAX,
					      .flags = SAFEFILE_FOLLOW };
	struct safefile f;
	unsigned char *dec = NULL;
	char *b64, *end;
	size_t b64_len;
	int n, pad = 0, r = MTLS_ERR_CONFIG;

	if (safefile_read(AT_FDCWD, path, &rules, &f) != 0)
		goto out;
	if ((b64 = strchr(f.data, ' ')) == NULL)
		goto out;
	b64++;
	b64_len = strcspn(b64, " \t\r\n");
	end = b64 + b64_len;
	if (b64_len == 0 || b64_len % 4 != 0 || (dec = malloc(b64_len)) == NULL)
		goto out;
	if (end[-1] == '=')
		pad++;
	if (b64_len > 1 && end[-2] == '=')
		pad++;
	if ((n = EVP_DecodeBlock(dec, (unsigned char *)b64, (int)b64_len)) < pad)
		goto out;
	wbuf_reset(out);
	if ((r = wbuf_put(out, dec, (size_t)(n - pad))) != 0)
		goto out;
	/* The certificate must be of this key (a userauth request with it is
	 * checked the same way: ssh_policy.c). */
	r = ssh_cert_is_of(cert, wbuf_ptr(out), wbuf_len(out)) ? 0 : MTLS_ERR_CONFIG;
out:
	free(dec);
	safefile_free(&f);
	return r;
}

/* Re-reads the identities the SSH socket offers into sc->keys. */
static int
load_keys(struct ssh_conn *sc, const struct ssh_env *env)
{
	const uint32_t ssh_bits =
	    (1U << MTLS_AGENT_PURPOSE_SSH) | (1U << MTLS_AGENT_PURPOSE_SSH_SIG);
	struct mtls_agent_identity *ids = NULL;
	const struct config_identity *ci;
	struct wbuf *b = NULL, *cb = NULL;
	char why[256], comment[SSH_COMMENT_MAX];
	size_t n = 0, i;
	int r;

	keys_free(sc);
	if ((r = token_list(env->ts, &ids, &n, why, sizeof(why))) != 0)
		return r;
	if ((b = wbuf_new()) == NULL || (cb = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (i = 0; i < n; i++) {
		const unsigned char *p = ids[i].cert_der;
		X509 *x;

		if ((ids[i].purposes & ssh_bits) == 0 || p == NULL)
			continue;
		if ((x = d2i_X509(NULL, &p, (long)ids[i].cert_der_len)) == NULL)
			continue;
		wbuf_reset(b);
		if (ssh_key_blob_put(b, X509_get0_pubkey(x)) != 0) {
			X509_free(x);
			continue; /* not an SSH key type (e.g. P-521) */
		}
		if (X509_NAME_oneline(X509_get_subject_name(x), comment, sizeof(comment)) == NULL)
			snprintf(comment, sizeof(comment), "%s", ids[i].name);
		if ((r = add_key(sc, ids[i].name, wbuf_ptr(b), wbuf_len(b), comment,
				 ids[i].key_type, ids[i].key_bits)) != 0) {
			X509_free(x);
			goto out;
		}
		ci = conf_ident(env->cfg, ids[i].name);
		if (ci != NULL && ci->ssh_certificate != NULL) {
			if (read_ssh_cert(ci->ssh_certificate, x, cb) == 0)
				r = add_key(sc, ids[i].name, wbuf_ptr(cb), wbuf_len(cb), comment,
					    ids[i].key_type, ids[i].key_bits);
			else
				warn("identity %s: ssh-certificate %s is unreadable, not an "
				     "OpenSSH certificate, or not of the identity's key; not "
				     "offered",
				     ids[i].name, ci->ssh_certificate);
		}
		X509_free(x);
		if (r != 0)
			goto out;
	}
	r = 0;
out:
	wbuf_free(b);
	wbuf_free(cb);
	mtls_agent_identities_free(ids, n);
	return r;
}

static int
failure(struct wbuf *out)
{
	wbuf_reset(out);
	return msg_ssh_status_put(out, SSH_AGENT_FAILURE);
}

static void audit(const struct ssh_env *env, enum log_level level, const char *what,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
audit(const struct ssh_env *env, enum log_level level, const char *what, const char *fmt, ...)
{
	char rest[1536];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rest, sizeof(rest), fmt, ap);
	va_end(ap);
	env->audit(env->arg, level, what, rest);
}

static int
handle_identities(struct ssh_conn *sc, const struct ssh_env *env, struct wbuf *in, struct wbuf *out)
{
	struct msg_ssh_ident *ids = NULL;
	size_t i;
	int r;

	if (msg_ssh_empty_get(in) != 0)
		return failure(out);
	/* Locked: no keys, as ssh-agent answers. */
	if (env->locked(env->arg))
		return msg_ssh_identities_put(out, NULL, 0);
	if (load_keys(sc, env) != 0)
		return failure(out);
	if (sc->n_keys > 0 && (ids = calloc(sc->n_keys, sizeof(*ids))) == NULL)
		return MTLS_ERR_ALLOC;
	for (i = 0; i < sc->n_keys; i++) {
		ids[i].key = sc->keys[i].blob;
		ids[i].key_len = sc->keys[i].blob_len;
		ids[i].comment = sc->keys[i].comment;
	}
	r = msg_ssh_identities_put(out, ids, sc->n_keys);
	free(ids);
	if (r != 0) {
		warn("SSH identities answer does not fit a frame: %s", mtls_agent_strerror(r));
		return failure(out);
	}
	return 0;
}

static const struct ssh_key *
find_key(const struct ssh_conn *sc, const unsigned char *blob, size_t len)
{
	size_t i;

	for (i = 0; i < sc->n_keys; i++)
		if (sc->keys[i].blob_len == len && memcmp(sc->keys[i].blob, blob, len) == 0)
			return &sc->keys[i];
	return NULL;
}

/* The scheme for the key and the request's flags, and the SSH name of
 * the signature algorithm; 0 if there is none (SHA-1 ssh-rsa). */
static uint16_t
pick_scheme(const struct ssh_key *k, uint32_t flags, const char **alg)
{
	if (k->key_type == MTLS_AGENT_KEY_RSA) {
		if (flags & SSH_AGENT_RSA_SHA2_512) {
			*alg = "rsa-sha2-512";
			return MTLS_AGENT_RSA_PKCS1_SHA512;
		}
		if (flags & SSH_AGENT_RSA_SHA2_256) {
			*alg = "rsa-sha2-256";
			return MTLS_AGENT_RSA_PKCS1_SHA256;
		}
		*alg = "ssh-rsa";
		return 0;
	}
	if (k->key_bits == 256) {
		*alg = "ecdsa-sha2-nistp256";
		return MTLS_AGENT_ECDSA_SECP256R1_SHA256;
	}
	*alg = "ecdsa-sha2-nistp384";
	return MTLS_AGENT_ECDSA_SECP384R1_SHA384;
}

static long
usec_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000000L + (t1.tv_nsec - t0->tv_nsec) / 1000;
}

static int
handle_sign(struct ssh_conn *sc, const struct ssh_env *env, struct wbuf *in, struct wbuf *out)
{
	struct msg_ssh_sign_req req;
	struct sign_peer peer = env->peer;
	const struct ssh_key *k;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	struct wbuf *blob = NULL;
	struct timespec t0;
	const char *alg = "?";
	char why[512] = "", detail[512] = "", fp[64] = "?";
	uint16_t scheme;
	int r, purpose;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((r = msg_ssh_sign_req_get(in, &req)) != 0) {
		audit(env, LOG_LEVEL_WARN, "ssh-sign refused", ": malformed SIGN_REQUEST (%s)",
		      mtls_agent_strerror(r));
		return failure(out);
	}
	if (env->locked(env->arg)) {
		audit(env, LOG_LEVEL_WARN, "ssh-sign refused", ": agent locked");
		return failure(out);
	}
	if (ssh_fingerprint(req.key, req.key_len, fp, sizeof(fp)) != 0)
		snprintf(fp, sizeof(fp), "?");
	/* The key blob names the identity: as listed, or listed afresh. */
	if ((k = find_key(sc, req.key, req.key_len)) == NULL && load_keys(sc, env) == 0)
		k = find_key(sc, req.key, req.key_len);
	if (k == NULL) {
		audit(env, LOG_LEVEL_WARN, "ssh-sign refused", ": key %s is none of the agent's",
		      fp);
		return failure(out);
	}
	if ((scheme = pick_scheme(k, req.flags, &alg)) == 0) {
		audit(env, LOG_LEVEL_WARN, "ssh-sign refused",
		      " identity=%s key=%s: SHA-1 ssh-rsa signatures are not made (flags 0x%x; "
		      "use rsa-sha2-256/512)",
		      k->name, fp, (unsigned)req.flags);
		return failure(out);
	}
	/* The purpose is what the data claims; the pipeline holds it to that. */
	purpose = req.data_len >= 6 && memcmp(req.data, SSHSIG_MAGIC, 6) == 0
		      ? MTLS_AGENT_PURPOSE_SSH_SIG
		      : MTLS_AGENT_PURPOSE_SSH;
	peer.ssh = &sc->binds;
	sc->binds.want_key = req.key;
	sc->binds.want_key_len = req.key_len;
	r = token_sign(env->ts, &peer, k->name, scheme, purpose, req.data, req.data_len, &sig,
		       &sig_len, why, sizeof(why));
	sc->binds.want_key = NULL;
	sc->binds.want_key_len = 0;
	ssh_describe(&sc->binds, conf_ident(env->cfg, k->name), purpose, req.data, req.data_len,
		     detail, sizeof(detail));
	if (r == 0) {
		if ((blob = wbuf_new()) == NULL) {
			r = MTLS_ERR_ALLOC;
		} else if ((r = ssh_sig_blob_put(blob, alg, k->key_type == MTLS_AGENT_KEY_EC, sig,
						 sig_len)) == 0 &&
			   (r = msg_ssh_sign_resp_put(out, wbuf_ptr(blob), wbuf_len(blob))) != 0)
			snprintf(why, sizeof(why), "signature does not fit the reply");
	}
	if (r == 0)
		audit(env, LOG_LEVEL_INFO, "ssh-sign ok",
		      " identity=%s key=%s alg=%s purpose=%s %s latency=%ldus", k->name, fp, alg,
		      mtls_agent_purpose_name(purpose), detail, usec_since(&t0));
	else
		audit(env, LOG_LEVEL_WARN, "ssh-sign refused",
		      " identity=%s key=%s alg=%s purpose=%s %s result=%s: %s latency=%ldus",
		      k->name, fp, alg, mtls_agent_purpose_name(purpose), detail,
		      mtls_agent_strerror(r), why[0] ? why : "-", usec_since(&t0));
	mtls_freezero(sig, sig_len);
	wbuf_free(blob);
	return r == 0 ? 0 : failure(out);
}

static int
handle_lock(const struct ssh_env *env, int lock, struct wbuf *in, struct wbuf *out)
{
	char *pass = NULL;
	int r;

	if ((r = msg_ssh_lock_get(in, &pass)) != 0) {
		audit(env, LOG_LEVEL_WARN, lock ? "ssh-lock refused" : "ssh-unlock refused",
		      ": malformed request (%s)", mtls_agent_strerror(r));
		return failure(out);
	}
	r = lock ? env->lock(env->arg, pass) : env->unlock(env->arg, pass);
	mtls_secure_free(pass);
	if (r != 0)
		return failure(out);
	return msg_ssh_status_put(out, SSH_AGENT_SUCCESS);
}

/* session-bind@openssh.com: verified, then kept for ssh_policy.c. */
static int
handle_bind(struct ssh_conn *sc, const struct ssh_env *env, struct wbuf *in, struct wbuf *out)
{
	struct msg_ssh_session_bind m;
	struct ssh_binding *nb;
	char fp[64] = "?";
	size_t i;
	int r;

	if ((r = msg_ssh_session_bind_get(in, &m)) != 0) {
		audit(env, LOG_LEVEL_WARN, "ssh-bind refused", ": malformed session-bind (%s)",
		      mtls_agent_strerror(r));
		return failure(out);
	}
	if (ssh_fingerprint(m.hostkey, m.hostkey_len, fp, sizeof(fp)) != 0)
		snprintf(fp, sizeof(fp), "?");
	if (ssh_sig_verify(m.hostkey, m.hostkey_len, m.sig, m.sig_len, m.session_id,
			   m.session_id_len) != 0) {
		audit(env, LOG_LEVEL_WARN, "ssh-bind refused",
		      ": host key %s: the signature over the session id does not verify", fp);
		return failure(out);
	}
	for (i = 0; i < sc->binds.n; i++) {
		if (sc->binds.b[i].session_id_len == m.session_id_len &&
		    memcmp(sc->binds.b[i].session_id, m.session_id, m.session_id_len) == 0) {
			audit(env, LOG_LEVEL_WARN, "ssh-bind refused",
			      ": host key %s: session id bound already", fp);
			return failure(out);
		}
		if (!sc->binds.b[i].forwarding) {
			audit(env, LOG_LEVEL_WARN, "ssh-bind refused",
			      ": host key %s: connection already bound for authentication", fp);
			return failure(out);
		}
	}
	if (sc->binds.n >= SSH_BINDS_MAX) {
		audit(env, LOG_LEVEL_WARN, "ssh-bind refused", ": host key %s: more than %d hops",
		      fp, SSH_BINDS_MAX);
		return failure(out);
	}
	nb = &sc->binds.b[sc->binds.n];
	memset(nb, 0, sizeof(*nb));
	if ((nb->hostkey = malloc(m.hostkey_len)) == NULL)
		return MTLS_ERR_ALLOC;
	memcpy(nb->hostkey, m.hostkey, m.hostkey_len);
	nb->hostkey_len = m.hostkey_len;
	memcpy(nb->session_id, m.session_id, m.session_id_len);
	nb->session_id_len = m.session_id_len;
	nb->forwarding = m.forwarding;
	snprintf(nb->fp, sizeof(nb->fp), "%s", fp);
	sc->binds.n++;
	audit(env, LOG_LEVEL_INFO, "ssh-bind", ": host key %s%s (hop %zu)", fp,
	      m.forwarding ? " forwarding" : "", sc->binds.n);
	return msg_ssh_status_put(out, SSH_AGENT_SUCCESS);
}

static int
handle_ext(struct ssh_conn *sc, const struct ssh_env *env, struct wbuf *in, struct wbuf *out)
{
	static const char *const names[] = { SSH_EXT_QUERY, SSH_EXT_SESSION_BIND };
	struct msg_ssh_ext ext;

	if (msg_ssh_ext_get(in, &ext) != 0) {
		audit(env, LOG_LEVEL_WARN, "ssh-extension refused", ": malformed EXTENSION");
		return failure(out);
	}
	if (strcmp(ext.name, SSH_EXT_QUERY) == 0) {
		if (msg_ssh_empty_get(in) != 0)
			return failure(out);
		return msg_ssh_query_resp_put(out, names, sizeof(names) / sizeof(names[0]));
	}
	if (strcmp(ext.name, SSH_EXT_SESSION_BIND) == 0)
		return handle_bind(sc, env, in, out);
	debug("SSH extension %s not supported", ext.name);
	return failure(out);
}

int
ssh_dispatch(struct ssh_conn *sc, const struct ssh_env *env, struct wbuf *in, struct wbuf *out)
{
	uint8_t type;

	if (wbuf_get_u8(in, &type) != 0)
		return failure(out);
	switch (type) {
	case SSH_AGENTC_REQUEST_IDENTITIES: return handle_identities(sc, env, in, out);
	case SSH_AGENTC_SIGN_REQUEST: return handle_sign(sc, env, in, out);
	case SSH_AGENTC_LOCK: return handle_lock(env, 1, in, out);
	case SSH_AGENTC_UNLOCK: return handle_lock(env, 0, in, out);
	case SSH_AGENTC_EXTENSION: return handle_ext(sc, env, in, out);
	case SSH_AGENTC_ADD_IDENTITY:
	case SSH_AGENTC_ADD_ID_CONSTRAINED:
	case SSH_AGENTC_REMOVE_IDENTITY:
	case SSH_AGENTC_REMOVE_ALL_IDENTITIES:
	case SSH_AGENTC_ADD_SMARTCARD_KEY:
	case SSH_AGENTC_ADD_SMARTCARD_KEY_CONSTRAINED:
	case SSH_AGENTC_REMOVE_SMARTCARD_KEY:
		audit(env, LOG_LEVEL_INFO, "ssh refused",
		      ": message %u: keys come from the tokens, they are not added or removed "
		      "over the SSH socket",
		      type);
		return failure(out);
	}
	debug("SSH agent message %u not supported", type);
	return failure(out);
}
