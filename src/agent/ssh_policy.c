/*
 * ssh_policy.c - the SSH decisions of the sign pipeline (see
 * ssh_policy.h).  Pure functions of the request, the identity and the
 * connection's bindings, plus reading known-hosts files.
 */
#include "config.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "msg_ssh.h"
#include "msg_ssh_key.h"
#include "mtls-agent.h"
#include "safefile.h"
#include "ssh_policy.h"

#define CERT_SUFFIX	    "-cert-v01@openssh.com"
#define KNOWN_HOSTS_MAX	    (4U * 1024 * 1024)
#define KNOWN_HOSTS_KEY_MAX 8192

void
ssh_binds_clear(struct ssh_binds *bs)
{
	size_t i;

	if (bs == NULL)
		return;
	for (i = 0; i < bs->n; i++)
		free(bs->b[i].hostkey);
	memset(bs, 0, sizeof(*bs));
}

static int
mem_eq(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* The identity's key blob, into a new buffer. */
static int
ident_blob(X509 *cert, struct wbuf **out)
{
	struct wbuf *b;
	int r;

	*out = NULL;
	if ((b = wbuf_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if ((r = ssh_key_blob_put(b, X509_get0_pubkey(cert))) != 0) {
		wbuf_free(b);
		return r;
	}
	*out = b;
	return 0;
}

/*
 * 1 if `key` is our key blob, or an OpenSSH certificate (PROTOCOL.certkeys)
 * of our key: string TYPE-cert-v01@openssh.com, string nonce, then the
 * public key's fields exactly as in the plain blob after its type.
 */
static int
key_is_ours(const unsigned char *key, size_t key_len, struct wbuf *ours)
{
	const unsigned char *type, *ctype, *nonce;
	size_t type_len, ctype_len, nonce_len, fields_len;
	struct wbuf *plain = NULL, *cb = NULL;
	char want[SSH_NAME_MAX + sizeof(CERT_SUFFIX)];
	int ok = 0;

	if (mem_eq(key, key_len, wbuf_ptr(ours), wbuf_len(ours)))
		return 1;
	if ((plain = wbuf_from(wbuf_ptr(ours), wbuf_len(ours))) == NULL ||
	    (cb = wbuf_from(key, key_len)) == NULL)
		goto out;
	if (wbuf_get_string_direct(plain, &type, &type_len, SSH_NAME_MAX) != 0)
		goto out;
	fields_len = wbuf_len(plain);
	snprintf(want, sizeof(want), "%.*s%s", (int)type_len, (const char *)type, CERT_SUFFIX);
	if (wbuf_get_string_direct(cb, &ctype, &ctype_len, sizeof(want)) != 0 ||
	    !ssh_str_eq(ctype, ctype_len, want) ||
	    wbuf_get_string_direct(cb, &nonce, &nonce_len, 1024) != 0 || wbuf_len(cb) < fields_len)
		goto out;
	ok = memcmp(wbuf_ptr(cb), wbuf_ptr(plain), fields_len) == 0;
out:
	wbuf_free(plain);
	wbuf_free(cb);
	return ok;
}

int
ssh_cert_is_of(X509 *cert, const unsigned char *blob, size_t len)
{
	struct wbuf *ours;
	int ok;

	if (ident_blob(cert, &ours) != 0)
		return 0;
	/* a certificate, not the plain key itself */
	ok = !mem_eq(blob, len, wbuf_ptr(ours), wbuf_len(ours)) && key_is_ours(blob, len, ours);
	wbuf_free(ours);
	return ok;
}

/* The userauth algorithm must be the one the scheme signs with. */
static int
alg_fits(const unsigned char *alg, size_t alg_len, uint16_t scheme, X509 *cert)
{
	const char *base;
	char cert_alg[SSH_NAME_MAX + sizeof(CERT_SUFFIX)];

	switch (scheme) {
	case MTLS_AGENT_RSA_PKCS1_SHA256: base = "rsa-sha2-256"; break;
	case MTLS_AGENT_RSA_PKCS1_SHA512: base = "rsa-sha2-512"; break;
	default: base = ssh_key_type(X509_get0_pubkey(cert)); break;
	}
	if (base == NULL)
		return 0;
	snprintf(cert_alg, sizeof(cert_alg), "%s%s", base, CERT_SUFFIX);
	return ssh_str_eq(alg, alg_len, base) || ssh_str_eq(alg, alg_len, cert_alg);
}

/* A user name for messages: printable, cut short. */
static void
show_user(const unsigned char *u, size_t len, char *out, size_t out_len)
{
	size_t i, n = 0;

	for (i = 0; i < len && n + 1 < out_len && n < 64; i++)
		out[n++] = (u[i] >= 0x20 && u[i] < 0x7f && u[i] != '"') ? (char)u[i] : '?';
	out[n] = '\0';
}

/* Compares a base64 field of a known-hosts line with a key blob. */
static int
b64_is(const char *b64, size_t b64_len, const unsigned char *blob, size_t blob_len)
{
	unsigned char *dec;
	int n, pad = 0, ok;

	if (b64_len == 0 || b64_len % 4 != 0 || b64_len > KNOWN_HOSTS_KEY_MAX)
		return 0;
	if ((dec = malloc(b64_len)) == NULL)
		return 0;
	n = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)b64_len);
	if (b64[b64_len - 1] == '=')
		pad++;
	if (b64_len > 1 && b64[b64_len - 2] == '=')
		pad++;
	ok = n >= pad && mem_eq(dec, (size_t)(n - pad), blob, blob_len);
	free(dec);
	return ok;
}

/* 1 if a host of the comma-separated field matches pat (NULL: any);
 * the first plain name goes to host. */
static int
hosts_match(const char *field, size_t flen, const char *pat, char *host, size_t host_len)
{
	char name[256];
	size_t i = 0, j, n;
	int matched = pat == NULL;

	while (i < flen) {
		for (j = i; j < flen && field[j] != ','; j++)
			;
		n = j - i;
		/* [host]:port -> host; hashed names (|1|...) cannot match a pattern */
		if (n > 0 && n < sizeof(name) && field[i] != '|' && field[i] != '!') {
			memcpy(name, field + i, n);
			name[n] = '\0';
			if (name[0] == '[' && strchr(name, ']') != NULL) {
				*strchr(name, ']') = '\0';
				memmove(name, name + 1, strlen(name));
			}
			if (host[0] == '\0')
				snprintf(host, host_len, "%s", name);
			if (pat != NULL && fnmatch(pat, name, FNM_CASEFOLD) == 0) {
				snprintf(host, host_len, "%s", name);
				matched = 1;
			}
		}
		i = j + 1;
	}
	return matched;
}

/* Looks the key up in a known-hosts file; @revoked lines deny. */
static int
known_hosts_has(const char *path, const char *pat, const unsigned char *key, size_t key_len,
		char *host, size_t host_len)
{
	const struct safefile_rules rules = { .owner = getuid(),
					      .forbidden = S_IWGRP | S_IWOTH,
					      .max = KNOWN_HOSTS_MAX,
					      .flags = SAFEFILE_FOLLOW };
	struct safefile f;
	const char *line, *end, *fld[4];
	size_t flen[4], nf, i;
	int found = 0, revoked;

	if (safefile_read(AT_FDCWD, path, &rules, &f) != 0) {
		safefile_free(&f);
		return 0;
	}
	for (line = f.data; line != NULL && *line != '\0' && found >= 0; line = end) {
		char h[256] = "";

		end = strchr(line, '\n');
		/* Fields: [marker] hosts keytype base64 [comment] */
		nf = 0;
		i = 0;
		while (nf < 4) {
			const char *stop = end != NULL ? end : line + strlen(line);

			while (line + i < stop && (line[i] == ' ' || line[i] == '\t'))
				i++;
			if (line + i >= stop || line[i] == '#')
				break;
			fld[nf] = line + i;
			while (line + i < stop && line[i] != ' ' && line[i] != '\t')
				i++;
			flen[nf] = (size_t)(line + i - fld[nf]);
			nf++;
		}
		if (end != NULL)
			end++;
		revoked = nf > 0 && fld[0][0] == '@';
		if (revoked && !(flen[0] == 8 && memcmp(fld[0], "@revoked", 8) == 0))
			continue; /* @cert-authority: not a host key */
		if (nf < (size_t)(revoked ? 4 : 3))
			continue;
		if (!b64_is(fld[revoked ? 3 : 2], flen[revoked ? 3 : 2], key, key_len))
			continue;
		if (revoked) {
			found = -1;
			break;
		}
		if (hosts_match(fld[0], flen[0], pat, h, sizeof(h))) {
			snprintf(host, host_len, "%s", h);
			found = 1;
		}
	}
	safefile_free(&f);
	return found > 0;
}

int
ssh_destination_allowed(const char *dests, const unsigned char *hostkey, size_t hostkey_len,
			char *host, size_t host_len)
{
	char fp[64], *copy, *item, *save = NULL, *pat;
	int ok = 0;

	host[0] = '\0';
	if (ssh_fingerprint(hostkey, hostkey_len, fp, sizeof(fp)) != 0 ||
	    (copy = strdup(dests)) == NULL)
		return 0;
	for (item = strtok_r(copy, ",", &save); item != NULL && !ok;
	     item = strtok_r(NULL, ",", &save)) {
		if (strncmp(item, "known-hosts=", 12) == 0) {
			item += 12;
			if ((pat = strchr(item, ':')) != NULL)
				*pat++ = '\0';
			ok = known_hosts_has(item, pat, hostkey, hostkey_len, host, host_len);
		} else {
			ok = strcmp(item, fp) == 0;
		}
	}
	free(copy);
	return ok;
}

static int deny(int code, char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
deny(int code, char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
	return code;
}

static int
check_userauth(X509 *cert, const struct config_identity *ci, const struct ssh_binds *bs,
	       uint16_t scheme, const unsigned char *content, size_t len, char *why, size_t why_len)
{
	const struct ssh_binding *last = bs != NULL && bs->n > 0 ? &bs->b[bs->n - 1] : NULL;
	struct ssh_userauth ua;
	struct wbuf *c = NULL, *ours = NULL;
	char user[80], host[256] = "";
	size_t i;
	int r;

	if ((c = wbuf_from(content, len)) == NULL)
		return MTLS_ERR_ALLOC;
	if ((r = ssh_userauth_parse(c, &ua, why, why_len)) != 0)
		goto out;
	show_user(ua.user, ua.user_len, user, sizeof(user));
	if ((r = ident_blob(cert, &ours)) != 0) {
		snprintf(why, why_len, "the identity's key has no SSH form");
		goto out;
	}
	if (!key_is_ours(ua.key, ua.key_len, ours)) {
		r = deny(MTLS_ERR_CONTENT_REJECTED, why, why_len,
			 "SSH userauth request for user \"%s\" carries another key%s", user, "");
		goto out;
	}
	if (!alg_fits(ua.alg, ua.alg_len, scheme, cert)) {
		r = deny(MTLS_ERR_CONTENT_REJECTED, why, why_len,
			 "SSH userauth request for user \"%s\" names another signature algorithm "
			 "than the request%s",
			 user, "");
		goto out;
	}
	for (i = 0; bs != NULL && i < bs->n; i++)
		if (bs->b[i].forwarding && (ci == NULL || !ci->ssh_forwarding)) {
			r = deny(MTLS_ERR_DESTINATION_DENIED, why, why_len,
				 "user \"%s\": agent forwarded through host key %s, and the "
				 "identity does not allow forwarding (ssh-forwarding)",
				 user, bs->b[i].fp);
			goto out;
		}
	if (last != NULL &&
	    !mem_eq(ua.session_id, ua.session_id_len, last->session_id, last->session_id_len)) {
		r = deny(MTLS_ERR_SSH_BINDING, why, why_len,
			 "user \"%s\": the userauth session id is not the one the connection is "
			 "bound to (host key %s)",
			 user, last->fp);
		goto out;
	}
	if (ua.hostbound && last == NULL) {
		r = deny(MTLS_ERR_SSH_BINDING, why, why_len,
			 "user \"%s\": hostbound userauth on a connection without "
			 "session-bind%s",
			 user, "");
		goto out;
	}
	if (ua.hostbound && !mem_eq(ua.hostkey, ua.hostkey_len, last->hostkey, last->hostkey_len)) {
		r = deny(MTLS_ERR_SSH_BINDING, why, why_len,
			 "user \"%s\": the server host key in the userauth request is not the "
			 "bound one (%s)",
			 user, last->fp);
		goto out;
	}
	if (ci != NULL && ci->ssh_destinations != NULL) {
		if (last == NULL) {
			r = deny(
			    MTLS_ERR_DESTINATION_DENIED, why, why_len,
			    "user \"%s\": the identity has ssh-destinations and the connection "
			    "is not bound to a host (session-bind@openssh.com)%s",
			    user, "");
			goto out;
		}
		if (!ssh_destination_allowed(ci->ssh_destinations, last->hostkey, last->hostkey_len,
					     host, sizeof(host))) {
			r = deny(MTLS_ERR_DESTINATION_DENIED, why, why_len,
				 "user \"%s\" to host key %s: not in ssh-destinations", user,
				 last->fp);
			goto out;
		}
	}
	r = 0;
out:
	wbuf_free(c);
	wbuf_free(ours);
	return r;
}

static int
namespace_allowed(const char *list, const unsigned char *ns, size_t ns_len)
{
	const char *p = list, *e;

	while (p != NULL && *p != '\0') {
		e = strchr(p, ',');
		if ((size_t)((e ? e : p + strlen(p)) - p) == ns_len && memcmp(p, ns, ns_len) == 0)
			return 1;
		p = e != NULL ? e + 1 : NULL;
	}
	return 0;
}

static int
check_sshsig(const struct config_identity *ci, const struct ssh_binds *bs,
	     const unsigned char *content, size_t len, char *why, size_t why_len)
{
	const char *list = ci != NULL && ci->ssh_sig_namespaces != NULL
			       ? ci->ssh_sig_namespaces
			       : CONFIG_DEFAULT_SSH_SIG_NAMESPACES;
	struct sshsig_tbs m;
	struct wbuf *c;
	char ns[80];
	size_t i;
	int r;

	if ((c = wbuf_from(content, len)) == NULL)
		return MTLS_ERR_ALLOC;
	if ((r = sshsig_parse(c, &m, why, why_len)) != 0)
		goto out;
	show_user(m.ns, m.ns_len, ns, sizeof(ns));
	if (!namespace_allowed(list, m.ns, m.ns_len)) {
		r = deny(MTLS_ERR_POLICY_DENIED, why, why_len,
			 "SSHSIG namespace \"%s\" not in ssh-sig-namespaces (%s)", ns, list);
		goto out;
	}
	/* A forwarded agent signs logins at most, never files or commits. */
	for (i = 0; bs != NULL && i < bs->n; i++)
		if (bs->b[i].forwarding && (ci == NULL || !ci->ssh_forwarding)) {
			r = deny(MTLS_ERR_DESTINATION_DENIED, why, why_len,
				 "SSHSIG \"%s\" asked through an agent forwarded to host key %s",
				 ns, bs->b[i].fp);
			goto out;
		}
	r = 0;
out:
	wbuf_free(c);
	return r;
}

int
ssh_policy_check(X509 *cert, const struct config_identity *ci, const struct ssh_binds *bs,
		 uint16_t scheme, int purpose, const unsigned char *content, size_t len, char *why,
		 size_t why_len)
{
	struct wbuf *ours;
	int same;

	/* The key the request named is still this identity's (a reload may
	 * have given the name another certificate meanwhile). */
	if (bs != NULL && bs->want_key != NULL) {
		if (ident_blob(cert, &ours) != 0)
			return deny(MTLS_ERR_CONTENT_REJECTED, why, why_len,
				    "the identity's key has no SSH form");
		same = key_is_ours(bs->want_key, bs->want_key_len, ours);
		wbuf_free(ours);
		if (!same)
			return deny(MTLS_ERR_CONTENT_REJECTED, why, why_len,
				    "the request names a key the identity does not have (the "
				    "configuration was reloaded?)");
	}
	if (purpose == MTLS_AGENT_PURPOSE_SSH)
		return check_userauth(cert, ci, bs, scheme, content, len, why, why_len);
	if (purpose == MTLS_AGENT_PURPOSE_SSH_SIG)
		return check_sshsig(ci, bs, content, len, why, why_len);
	return 0;
}

void
ssh_describe(const struct ssh_binds *bs, const struct config_identity *ci, int purpose,
	     const unsigned char *content, size_t len, char *out, size_t out_len)
{
	const struct ssh_binding *last = bs != NULL && bs->n > 0 ? &bs->b[bs->n - 1] : NULL;
	struct ssh_userauth ua;
	struct sshsig_tbs sig;
	char user[80], host[256] = "";
	struct wbuf *c;

	out[0] = '\0';
	if ((c = wbuf_from(content, len)) == NULL)
		return;
	if (purpose == MTLS_AGENT_PURPOSE_SSH && ssh_userauth_parse(c, &ua, NULL, 0) == 0) {
		show_user(ua.user, ua.user_len, user, sizeof(user));
		if (last != NULL && ci != NULL && ci->ssh_destinations != NULL)
			(void)ssh_destination_allowed(ci->ssh_destinations, last->hostkey,
						      last->hostkey_len, host, sizeof(host));
		snprintf(out, out_len, "ssh-user=%s host=%s host-key=%s%s", user,
			 host[0] ? host : "?", last != NULL ? last->fp : "unbound",
			 last != NULL && bs->n > 1 ? " forwarded" : "");
	} else if (purpose == MTLS_AGENT_PURPOSE_SSH_SIG && sshsig_parse(c, &sig, NULL, 0) == 0) {
		show_user(sig.ns, sig.ns_len, user, sizeof(user));
		snprintf(out, out_len, "sshsig-namespace=%s", user);
	}
	wbuf_free(c);
}
