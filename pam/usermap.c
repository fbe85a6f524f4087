/*
 * usermap.c - does this certificate belong to this user?
 *
 * Every method answers only "yes" or "no, and why"; nothing here may turn
 * a doubt into a yes.  Ambiguous certificates (two CNs, two UIDs, two UPNs)
 * are refused rather than guessed at.  Files that grant access are opened
 * once, without following a final symlink, and their owner and mode are
 * checked on the opened descriptor, so what is checked is what is read.
 *
 * Thread-safe and free of global state: linked into the PAM module.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls-agent.h"
#include "log.h"
#include "safefile.h"
#include "usermap.h"

#define FILE_MAX	   (1024 * 1024)
#define DEFAULT_AUTHORIZED "%h/.config/mtls-agent/authorized_certs"
#define SHA256_LEN	   32
#define PW_BUF_MAX	   (1024 * 1024)

/* ASN1 string -> NUL-terminated UTF-8; NULL if it holds a NUL byte. */
static char *
asn1_to_utf8(const ASN1_STRING *s)
{
	unsigned char *u = NULL;
	int n;

	if ((n = ASN1_STRING_to_UTF8(&u, s)) < 0)
		return NULL;
	if (memchr(u, '\0', (size_t)n) != NULL) {
		/* "alice\0.evil" must not compare equal to "alice". */
		OPENSSL_free(u);
		return NULL;
	}
	return (char *)u;
}

/*
 * The value of the only `nid` attribute of the subject.  Returns 0,
 * MTLS_ERR_USER_MISMATCH when there is none, more than one, or it is not
 * clean text.
 */
static int
only_subject_attr(X509 *cert, int nid, const char *label, char **out, char *why, size_t why_len)
{
	X509_NAME *name = X509_get_subject_name(cert);
	X509_NAME_ENTRY *ent;
	int i;

	*out = NULL;
	if ((i = X509_NAME_get_index_by_NID(name, nid, -1)) < 0) {
		why_printf(why, why_len, "certificate subject has no %s", label);
		return MTLS_ERR_USER_MISMATCH;
	}
	if (X509_NAME_get_index_by_NID(name, nid, i) >= 0) {
		why_printf(why, why_len,
			   "certificate subject has more than one %s; "
			   "refusing to choose",
			   label);
		return MTLS_ERR_USER_MISMATCH;
	}
	ent = X509_NAME_get_entry(name, i);
	if ((*out = asn1_to_utf8(X509_NAME_ENTRY_get_data(ent))) == NULL) {
		why_printf(why, why_len, "certificate subject %s is not clean text", label);
		return MTLS_ERR_USER_MISMATCH;
	}
	return 0;
}

/* "user@domain" matches user (local part) and "user@domain" (whole). */
static int
email_matches(const char *addr, const char *user)
{
	const char *at = strrchr(addr, '@');

	if (strcmp(addr, user) == 0)
		return 1;
	return at != NULL && at != addr && (size_t)(at - addr) == strlen(user) &&
	       strncmp(addr, user, (size_t)(at - addr)) == 0;
}

static int
map_subject_attr(X509 *cert, const char *user, int nid, const char *label, char *why,
		 size_t why_len)
{
	char *v = NULL;
	int r;

	if ((r = only_subject_attr(cert, nid, label, &v, why, why_len)) != 0)
		return r;
	if (strcmp(v, user) != 0) {
		why_printf(why, why_len, "certificate %s does not name user %s", label, user);
		r = MTLS_ERR_USER_MISMATCH;
	} else
		why_printf(why, why_len, "certificate %s matches user %s", label, user);
	OPENSSL_free(v);
	return r;
}

/*
 * The SAN extension; *present = 0 without one.  A duplicated or broken
 * SAN extension is refused (*sans stays NULL, *present = 1).
 */
static int
get_sans(X509 *cert, GENERAL_NAMES **sans, int *present, char *why, size_t why_len)
{
	int crit = -1;

	*sans = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	*present = crit != -1;
	if (*sans == NULL && crit != -1) {
		why_printf(why, why_len,
			   "certificate subjectAltName is malformed or "
			   "duplicated");
		return MTLS_ERR_USER_MISMATCH;
	}
	return 0;
}

/*
 * Any rfc822Name of the SAN whose local part (or whole address) is the
 * user.  Only when the certificate has no SAN at all does the legacy
 * subject emailAddress count (one, as for CN).  The domain is not
 * compared: trust the CA to issue addresses only of its own domains.
 */
static int
map_email(X509 *cert, const char *user, char *why, size_t why_len)
{
	GENERAL_NAMES *sans = NULL;
	GENERAL_NAME *gn;
	char *v = NULL;
	int r, i, present, n = 0;

	if ((r = get_sans(cert, &sans, &present, why, why_len)) != 0)
		goto out;
	if (!present) {
		if ((r = only_subject_attr(cert, NID_pkcs9_emailAddress, "emailAddress", &v, why,
					   why_len)) != 0)
			goto out;
		if (email_matches(v, user)) {
			why_printf(why, why_len, "subject emailAddress matches user %s", user);
			r = 0;
		} else {
			why_printf(why, why_len,
				   "subject emailAddress does not name "
				   "user %s",
				   user);
			r = MTLS_ERR_USER_MISMATCH;
		}
		goto out;
	}
	for (i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		gn = sk_GENERAL_NAME_value(sans, i);
		if (gn->type != GEN_EMAIL)
			continue;
		n++;
		OPENSSL_free(v);
		if ((v = asn1_to_utf8(gn->d.rfc822Name)) == NULL)
			continue;
		if (email_matches(v, user)) {
			why_printf(why, why_len, "email subjectAltName matches user %s", user);
			r = 0;
			goto out;
		}
	}
	if (n == 0)
		why_printf(why, why_len, "certificate has no email subjectAltName");
	else
		why_printf(why, why_len, "no email subjectAltName names user %s", user);
	r = MTLS_ERR_USER_MISMATCH;
out:
	OPENSSL_free(v);
	GENERAL_NAMES_free(sans);
	return r;
}

/*
 * The Microsoft UPN otherName (1.3.6.1.4.1.311.20.2.3, a UTF8String
 * "user@REALM"): its local part (or the whole name when it has no '@')
 * must be the user.  More than one UPN is refused as ambiguous.
 */
static int
map_upn(X509 *cert, const char *user, char *why, size_t why_len)
{
	GENERAL_NAMES *sans = NULL;
	GENERAL_NAME *gn;
	ASN1_OBJECT *upn_oid = NULL;
	const ASN1_TYPE *val = NULL;
	char *v = NULL, *at;
	int r, i, present, n = 0;

	if ((r = get_sans(cert, &sans, &present, why, why_len)) != 0)
		goto out;
	if ((upn_oid = OBJ_txt2obj("1.3.6.1.4.1.311.20.2.3", 1)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		gn = sk_GENERAL_NAME_value(sans, i);
		if (gn->type == GEN_OTHERNAME && OBJ_cmp(gn->d.otherName->type_id, upn_oid) == 0) {
			n++;
			val = gn->d.otherName->value;
		}
	}
	r = MTLS_ERR_USER_MISMATCH;
	if (n != 1) {
		if (n == 0)
			why_printf(why, why_len, "certificate has no UPN");
		else
			why_printf(why, why_len,
				   "certificate has more than one UPN; "
				   "refusing to choose");
		goto out;
	}
	if (val == NULL || val->type != V_ASN1_UTF8STRING ||
	    (v = asn1_to_utf8(val->value.utf8string)) == NULL) {
		why_printf(why, why_len, "certificate UPN is not a clean UTF8String");
		goto out;
	}
	if ((at = strrchr(v, '@')) != NULL)
		*at = '\0';
	if (strcmp(v, user) != 0) {
		why_printf(why, why_len, "certificate UPN does not name user %s", user);
		goto out;
	}
	why_printf(why, why_len, "certificate UPN matches user %s", user);
	r = 0;
out:
	OPENSSL_free(v);
	ASN1_OBJECT_free(upn_oid);
	GENERAL_NAMES_free(sans);
	return r;
}

/*
 * Reads `name` (relative to dirfd, or absolute when dirfd is AT_FDCWD)
 * whole through safefile_read(): no final symlink, regular file, owner
 * `uid` or root, no group or other write bit, at most FILE_MAX bytes.
 * ENOENT is returned as MTLS_ERR_USER_MISMATCH with *missing = 1 so the
 * caller can choose.  *bufp is the caller's to free().
 */
static int
read_safe_file(int dirfd, const char *name, const char *shown, uid_t uid, char **bufp, size_t *lenp,
	       int *missing, char *why, size_t why_len)
{
	const struct safefile_rules rules = { .owner = uid,
					      .forbidden = S_IWGRP | S_IWOTH,
					      .max = FILE_MAX };
	struct safefile f;
	int r;

	*bufp = NULL;
	*lenp = 0;
	*missing = 0;
	if ((r = safefile_read(dirfd, name, &rules, &f)) == 0) {
		*bufp = f.data;
		*lenp = f.len;
		return 0;
	}
	switch (f.fault) {
	case SAFEFILE_MISSING:
		*missing = 1;
		r = MTLS_ERR_USER_MISMATCH;
		break;
	case SAFEFILE_SYMLINK:
		why_printf(why, why_len, "%s is a symbolic link; refused", shown);
		break;
	case SAFEFILE_OPEN:
		why_printf(why, why_len, "cannot open %s: %s", shown, strerror(f.err));
		break;
	case SAFEFILE_STAT:
		why_printf(why, why_len, "cannot stat %s: %s", shown, strerror(f.err));
		break;
	case SAFEFILE_NOT_REGULAR:
		why_printf(why, why_len, "%s is not a regular file; refused", shown);
		break;
	case SAFEFILE_OWNER:
		why_printf(why, why_len, "%s is owned by uid %lu, not by %s; refused", shown,
			   (unsigned long)f.uid, uid == 0 ? "root" : "its user or root");
		break;
	case SAFEFILE_MODE:
		why_printf(why, why_len,
			   "%s is writable by group or others (mode "
			   "%04o); refused",
			   shown, (unsigned)f.mode);
		break;
	case SAFEFILE_TOO_BIG:
		why_printf(why, why_len, "%s is larger than %d bytes; refused", shown, FILE_MAX);
		break;
	case SAFEFILE_READ:
		why_printf(why, why_len, "cannot read %s: %s", shown, strerror(f.err));
		break;
	case SAFEFILE_ALLOC:
	case SAFEFILE_OK: break;
	}
	safefile_free(&f);
	return r;
}

/*
 * 64 hex digits, case-insensitive, with optional ':' between bytes, up to
 * the end of `s` or the first blank.  Returns the characters used, 0 if
 * malformed.
 */
static size_t
parse_sha256_hex(const char *s, unsigned char out[SHA256_LEN])
{
	size_t i = 0, nb = 0;
	int hi, lo;

	while (nb < SHA256_LEN) {
		if (nb > 0 && s[i] == ':')
			i++;
		if ((hi = OPENSSL_hexchar2int((unsigned char)s[i])) < 0 ||
		    (lo = OPENSSL_hexchar2int((unsigned char)s[i + 1])) < 0)
			return 0;
		out[nb++] = (unsigned char)(hi << 4 | lo);
		i += 2;
	}
	if (s[i] != '\0' && s[i] != ' ' && s[i] != '\t')
		return 0;
	return i;
}

static int
digest_der(int (*i2d)(const void *, unsigned char **), const void *obj,
	   unsigned char md[SHA256_LEN])
{
	unsigned char *der = NULL;
	unsigned int mdlen = 0;
	int n, ok;

	if ((n = i2d(obj, &der)) <= 0)
		return MTLS_ERR_ALLOC;
	ok = EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
	OPENSSL_free(der);
	return ok && mdlen == SHA256_LEN ? 0 : MTLS_ERR_INTERNAL;
}

static int
i2d_cert(const void *x, unsigned char **out)
{
	return i2d_X509((const X509 *)x, out);
}

static int
i2d_spki(const void *x, unsigned char **out)
{
	/* The SubjectPublicKeyInfo exactly as in the certificate. */
	return i2d_X509_PUBKEY(X509_get_X509_PUBKEY((const X509 *)x), out);
}

/* The subject as X509_NAME_print_ex(..., XN_FLAG_RFC2253) prints it. */
static char *
subject_rfc2253(X509 *cert)
{
	BIO *bio = NULL;
	char *p, *s = NULL;
	long n;

	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0 ||
	    (n = BIO_get_mem_data(bio, &p)) < 0 || (s = malloc((size_t)n + 1)) == NULL)
		goto out;
	memcpy(s, p, (size_t)n);
	s[n] = '\0';
out:
	BIO_free(bio);
	return s;
}

static void
rtrim(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
}

static char *
ltrim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

/*
 * Map file: "<RFC 2253 subject> <user>" or "sha256:<fingerprint of the
 * certificate DER> <user>" per line, '#' comments.  The user is the last
 * blank-separated word (subjects contain blanks).  A certificate may be
 * listed for several users; the login user must be one of them.  Any
 * malformed line fails the whole file: a root-owned access list with a
 * typo should be fixed, not half-used.
 */
static int
map_file(X509 *cert, const char *user, const char *path, char *why, size_t why_len)
{
	unsigned char fp[SHA256_LEN], want[SHA256_LEN];
	char *buf = NULL, *line, *next, *key, *who, *subject = NULL;
	size_t len, lineno = 0, matched = 0;
	int r, missing, listed = 0;

	if (path == NULL || path[0] != '/') {
		why_printf(why, why_len, "map file must be an absolute path");
		return MTLS_ERR_CONFIG;
	}
	if ((r = read_safe_file(AT_FDCWD, path, path, 0, &buf, &len, &missing, why, why_len)) !=
	    0) {
		if (missing) {
			why_printf(why, why_len, "map file %s does not exist", path);
			r = MTLS_ERR_CONFIG;
		}
		goto out;
	}
	if (memchr(buf, '\0', len) != NULL) {
		why_printf(why, why_len, "map file %s contains a NUL byte", path);
		r = MTLS_ERR_CONFIG;
		goto out;
	}
	if ((r = digest_der(i2d_cert, cert, fp)) != 0 ||
	    (subject = subject_rfc2253(cert)) == NULL) {
		r = r != 0 ? r : MTLS_ERR_ALLOC;
		goto out;
	}
	for (line = buf; line != NULL; line = next) {
		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		rtrim(line);
		key = ltrim(line);
		if (*key == '\0' || *key == '#')
			continue;
		who = strrchr(key, ' ');
		if (who == NULL || strrchr(key, '\t') > who)
			who = strrchr(key, '\t');
		if (who == NULL) {
			why_printf(why, why_len,
				   "%s:%zu: want \"<subject or sha256:"
				   "fingerprint> <user>\"",
				   path, lineno);
			r = MTLS_ERR_CONFIG;
			goto out;
		}
		*who++ = '\0';
		rtrim(key);
		if (strncasecmp(key, "sha256:", 7) == 0) {
			if (parse_sha256_hex(key + 7, want) != strlen(key + 7)) {
				why_printf(why, why_len,
					   "%s:%zu: bad sha256 "
					   "fingerprint",
					   path, lineno);
				r = MTLS_ERR_CONFIG;
				goto out;
			}
			if (memcmp(want, fp, SHA256_LEN) != 0)
				continue;
		} else if (strcmp(key, subject) != 0)
			continue;
		listed = 1;
		/* Keep reading: a bad line further down still fails. */
		if (strcmp(who, user) == 0 && matched == 0)
			matched = lineno;
	}
	if (matched > 0) {
		why_printf(why, why_len, "%s:%zu maps the certificate to %s", path, matched, user);
		r = 0;
	} else if (listed)
		why_printf(why, why_len,
			   "%s maps the certificate to other users, "
			   "not %s",
			   path, user);
	else
		why_printf(why, why_len, "certificate not listed in %s", path);
	if (matched == 0)
		r = MTLS_ERR_USER_MISMATCH;
out:
	free(subject);
	free(buf);
	return r;
}

/* getpwnam_r with a growing buffer; *pwbuf is for the caller to free. */
static int
lookup_user(const char *user, struct passwd *pw, char **pwbuf, char *why, size_t why_len)
{
	struct passwd *res = NULL;
	long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
	size_t len = sz > 0 ? (size_t)sz : 4096;
	char *buf = NULL, *nbuf;
	int e;

	*pwbuf = NULL;
	for (;;) {
		if ((nbuf = realloc(buf, len)) == NULL) {
			free(buf);
			return MTLS_ERR_ALLOC;
		}
		buf = nbuf;
		e = getpwnam_r(user, pw, buf, len, &res);
		if (e != ERANGE || len >= PW_BUF_MAX)
			break;
		len *= 2;
	}
	if (res == NULL) {
		free(buf);
		why_printf(why, why_len, "no such user %s", user);
		return MTLS_ERR_USER_MISMATCH;
	}
	*pwbuf = buf;
	return 0;
}

/* Pattern with %h (home), %u (user), %% -> an absolute path. */
static int
expand_pattern(const char *pat, const struct passwd *pw, char *out, size_t out_len, char *why,
	       size_t why_len)
{
	size_t o = 0, n;
	const char *add;
	char pct[2] = "%";

	for (; *pat != '\0'; pat++) {
		if (*pat != '%') {
			if (o + 1 >= out_len)
				goto toolong;
			out[o++] = *pat;
			continue;
		}
		pat++;
		if (*pat == 'h')
			add = pw->pw_dir;
		else if (*pat == 'u')
			add = pw->pw_name;
		else if (*pat == '%')
			add = pct;
		else {
			why_printf(why, why_len,
				   "authorized file pattern: unknown "
				   "escape %%%c (want %%h, %%u or %%%%)",
				   *pat != '\0' ? *pat : '?');
			return MTLS_ERR_CONFIG;
		}
		n = strlen(add);
		if (o + n >= out_len)
			goto toolong;
		memcpy(out + o, add, n);
		o += n;
	}
	out[o] = '\0';
	if (out[0] != '/') {
		why_printf(why, why_len, "authorized file %s is not an absolute path", out);
		return MTLS_ERR_CONFIG;
	}
	return 0;
toolong:
	why_printf(why, why_len, "authorized file path too long");
	return MTLS_ERR_CONFIG;
}

/*
 * Authorized-certificates file: PEM certificates (match: identical DER)
 * and "sha256:<hex of the SubjectPublicKeyInfo DER>" lines (match: same
 * public key, so a renewed certificate for the same key still works).
 * Other lines are ignored; they can only fail to grant.
 */
static int
authorized_matches(X509 *cert, const char *buf, size_t len, const char *path, char *why,
		   size_t why_len)
{
	unsigned char spki[SHA256_LEN], want[SHA256_LEN];
	unsigned char *der = NULL, *der2 = NULL;
	char *copy = NULL, *line, *next, *s;
	X509 *x = NULL;
	BIO *bio = NULL;
	unsigned long e;
	size_t lineno = 0;
	int r, n, n2;

	if ((n = i2d_X509(cert, &der)) <= 0) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (;;) {
		ERR_set_mark();
		if ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
			e = ERR_peek_last_error();
			ERR_pop_to_mark();
			if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
			    ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
				break;
			why_printf(why, why_len, "%s: a certificate does not parse", path);
			r = MTLS_ERR_CONFIG;
			goto out;
		}
		ERR_clear_last_mark();
		n2 = i2d_X509(x, &der2);
		X509_free(x);
		x = NULL;
		if (n2 == n && memcmp(der, der2, (size_t)n) == 0) {
			why_printf(why, why_len, "certificate listed in %s", path);
			r = 0;
			goto out;
		}
		OPENSSL_free(der2);
		der2 = NULL;
	}

	if ((r = digest_der(i2d_spki, cert, spki)) != 0)
		goto out;
	if ((copy = strdup(buf)) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	for (line = copy; line != NULL; line = next) {
		lineno++;
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		rtrim(line);
		s = ltrim(line);
		if (strncasecmp(s, "sha256:", 7) != 0)
			continue;
		if (parse_sha256_hex(s + 7, want) == 0) {
			why_printf(why, why_len, "%s:%zu: bad sha256 key line", path, lineno);
			r = MTLS_ERR_CONFIG;
			goto out;
		}
		if (memcmp(want, spki, SHA256_LEN) == 0) {
			why_printf(why, why_len, "%s:%zu: public key listed", path, lineno);
			r = 0;
			goto out;
		}
	}
	why_printf(why, why_len, "certificate not in %s", path);
	r = MTLS_ERR_USER_MISMATCH;
out:
	free(copy);
	X509_free(x);
	OPENSSL_free(der);
	OPENSSL_free(der2);
	BIO_free(bio);
	return r;
}

/*
 * The directory is opened first and checked on its descriptor (owner the
 * user or root, not writable by group or others); the file is then opened
 * relative to that descriptor, so a directory swapped in between is the
 * one checked.  Missing file or directory: the user has authorized no
 * certificate, which is a plain mismatch.
 */
static int
map_authorized(X509 *cert, const char *user, const char *pattern, char *why, size_t why_len)
{
	struct passwd pw;
	struct stat st;
	char path[PATH_MAX], dir[PATH_MAX], *pwbuf = NULL, *buf = NULL, *base;
	size_t len;
	struct safefile_rules dir_rules = { .forbidden = S_IWGRP | S_IWOTH };
	int r, dfd = -1, missing;

	if ((r = lookup_user(user, &pw, &pwbuf, why, why_len)) != 0)
		goto out;
	dir_rules.owner = pw.pw_uid;
	if ((r = expand_pattern(pattern != NULL ? pattern : DEFAULT_AUTHORIZED, &pw, path,
				sizeof(path), why, why_len)) != 0)
		goto out;
	memcpy(dir, path, strlen(path) + 1);
	base = strrchr(dir, '/');
	*base++ = '\0';
	if (*base == '\0') {
		why_printf(why, why_len, "authorized file %s names a directory", path);
		r = MTLS_ERR_CONFIG;
		goto out;
	}
	dfd = open(dir[0] != '\0' ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		if (errno == ENOENT || errno == ENOTDIR) {
			why_printf(why, why_len,
				   "no authorized certificates file "
				   "(%s)",
				   path);
			r = MTLS_ERR_USER_MISMATCH;
		} else {
			why_printf(why, why_len, "cannot open directory of %s: %s", path,
				   strerror(errno));
			r = MTLS_ERR_CONFIG;
		}
		goto out;
	}
	r = MTLS_ERR_CONFIG;
	if (fstat(dfd, &st) != 0) {
		why_printf(why, why_len, "cannot stat directory of %s: %s", path, strerror(errno));
		goto out;
	}
	switch (safefile_check_owner(&st, &dir_rules)) {
	case SAFEFILE_OWNER:
		why_printf(why, why_len,
			   "directory of %s is owned by uid %lu, not by "
			   "%s or root; refused",
			   path, (unsigned long)st.st_uid, user);
		goto out;
	case SAFEFILE_MODE:
		why_printf(why, why_len,
			   "directory of %s is writable by group or "
			   "others (mode %04o); refused",
			   path, (unsigned)(st.st_mode & 07777));
		goto out;
	default: break;
	}
	if ((r = read_safe_file(dfd, base, path, pw.pw_uid, &buf, &len, &missing, why, why_len)) !=
	    0) {
		if (missing)
			why_printf(why, why_len,
				   "no authorized certificates file "
				   "(%s)",
				   path);
		goto out;
	}
	if (memchr(buf, '\0', len) != NULL) {
		why_printf(why, why_len, "%s contains a NUL byte", path);
		r = MTLS_ERR_CONFIG;
		goto out;
	}
	r = authorized_matches(cert, buf, len, path, why, why_len);
out:
	if (dfd >= 0)
		close(dfd);
	free(buf);
	free(pwbuf);
	return r;
}

int
usermap_check(X509 *cert, const char *user, const struct usermap_opts *o, char *why, size_t why_len)
{
	int r;

	if (why != NULL && why_len > 0)
		why[0] = '\0';
	if (cert == NULL || o == NULL || user == NULL) {
		why_printf(why, why_len, "no certificate, user or options");
		return MTLS_ERR_INVALID_ARGUMENT;
	}
	/* The user name comes from a login prompt: nothing that could walk
	 * a path or hide in a log line. */
	if (user[0] == '\0' || user[0] == '.' || user[0] == '-' || strchr(user, '/') != NULL ||
	    strlen(user) > 256) {
		why_printf(why, why_len, "unusable user name");
		return MTLS_ERR_USER_MISMATCH;
	}
	for (const char *p = user; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			why_printf(why, why_len, "unusable user name");
			return MTLS_ERR_USER_MISMATCH;
		}
	switch (o->method) {
	case USERMAP_CN:
		r = map_subject_attr(cert, user, NID_commonName, "CN", why, why_len);
		break;
	case USERMAP_UID: r = map_subject_attr(cert, user, NID_userId, "UID", why, why_len); break;
	case USERMAP_EMAIL: r = map_email(cert, user, why, why_len); break;
	case USERMAP_UPN: r = map_upn(cert, user, why, why_len); break;
	case USERMAP_MAPFILE: r = map_file(cert, user, o->map_file, why, why_len); break;
	case USERMAP_AUTHORIZED:
		r = map_authorized(cert, user, o->authorized_file, why, why_len);
		break;
	default:
		why_printf(why, why_len, "unknown mapping method %d", (int)o->method);
		r = MTLS_ERR_CONFIG;
		break;
	}
	ERR_clear_error();
	return r;
}

int
usermap_method_from_name(const char *name)
{
	static const struct {
		const char *name;
		enum usermap_method m;
	} names[] = {
		{ "cn", USERMAP_CN },		{ "uid", USERMAP_UID },
		{ "email", USERMAP_EMAIL },	{ "upn", USERMAP_UPN },
		{ "mapfile", USERMAP_MAPFILE }, { "authorized", USERMAP_AUTHORIZED },
	};
	size_t i;

	if (name == NULL)
		return 0;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(names[i].name, name) == 0)
			return (int)names[i].m;
	return 0;
}
