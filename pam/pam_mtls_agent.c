/*
 * pam_mtls_agent.c - smart-card login through mtls-agent.
 *
 * auth: ask the agent for its identities, validate each certificate
 * (certval.c) and map it to the user (usermap.c), take the first that
 * passes, log its token in with a PIN asked through the PAM conversation,
 * then have the agent sign a fresh random challenge bound to service and
 * user and verify that signature here, with the certificate's public key.
 * The agent is not trusted to say "yes": only a signature that verifies
 * against a certificate that validated lets anyone in.
 *
 * account: the certificate is re-validated.  password: PIN change and
 * unblock through the agent.  setcred and session: nothing.
 *
 * Fail closed: every path that is not a verified signature returns an
 * error; PAM_IGNORE only where the administrator asked for it (nullok), and
 * only for "no agent", "no identity" and "no card".  PINs live in secure
 * memory (secmem.h) and every copy, the conversation's included, is wiped.
 * Options are documented in pam_mtls_agent(8).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#define PAM_SM_PASSWORD
#define PAM_SM_SESSION
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "certval.h"
#include "client.h"
#include "log.h"
#include "mtls-agent.h"
#include "purpose.h"
#include "safefile.h"
#include "secmem.h"
#include "usermap.h"
#include "wbuf.h"

#define PUBLIC __attribute__((visibility("default")))

/*
 * Every line this module logs goes through log_vformat() (log.c), which
 * escapes control characters and invalid UTF-8: identity names, token
 * labels and reasons come from the agent, user names from the caller,
 * and none of them may forge a line of its own.  The macro below sends
 * every pam_syslog() call of this file through it.
 */
static void pam_log(pam_handle_t *pamh, int prio, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
pam_log(pam_handle_t *pamh, int prio, const char *fmt, ...)
{
	char line[LOG_LINE_MAX * 2];
	va_list ap;

	va_start(ap, fmt);
	(void)log_vformat(line, sizeof(line), fmt, ap);
	va_end(ap);
	pam_syslog(pamh, prio, "%s", line);
}
#define pam_syslog pam_log

#define DEFAULT_SOCKET	"/run/mtls-agent/agent.sock"
#define USER_SOCKET_FMT "/run/user/%lu/mtls-agent/agent.sock"
#define DATA_KEPT	"pam_mtls_agent:certificate"
#define CONFIG_MAX	(64 * 1024)
#define NONCE_LEN	32
#define TIMEOUT_MAX	3600

/* Options: every string is an owned copy (options_clear frees them). */
struct options {
	char *socket; /* NULL: the default for the mode */
	int user_agent;
	char *identity;
	char *ca_file, *ca_dir, *crl_file, *crl_dir, *ocsp_url;
	int crl_required;
	enum certval_ocsp ocsp;
	int ocsp_timeout; /* 0: certval's default */
	int eku_any;
	int x509_strict; /* RFC 5280 rules for every CA (certval.h) */
	enum usermap_method map;
	char *map_file, *authorized_file;
	int nullok, debug, unblock, trust_logged_in;
	int timeout;		 /* seconds; 0: the library's default */
	int expiry_warning_days; /* log a certificate this close to its end */
	char *pin_prompt;
};

/* What auth keeps for account (pam_set_data). */
struct kept {
	X509 *cert;
	STACK_OF(X509) * chain;
};

/* The identity auth settled on. */
struct pick {
	const struct mtls_agent_identity *id;
	X509 *cert;
	STACK_OF(X509) * chain;
};

/* ---------------------------------------------------------------------- */
/* The private copy of client.c is compiled with -Dgetenv=pam_mtls_agent_getenv
 * (Makefile.am), so that the library reads its settings from here and never
 * from the environment of the application that loaded us (su, sudo, login:
 * the environment may be the caller's). */

char *pam_mtls_agent_getenv(const char *name);

static __thread char client_timeout[16];

char *
pam_mtls_agent_getenv(const char *name)
{
	if (name != NULL && strcmp(name, "MTLS_AGENT_TIMEOUT") == 0 && client_timeout[0] != '\0')
		return client_timeout;
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* options */

static void
options_clear(struct options *o)
{
	free(o->socket);
	free(o->identity);
	free(o->ca_file);
	free(o->ca_dir);
	free(o->crl_file);
	free(o->crl_dir);
	free(o->ocsp_url);
	free(o->map_file);
	free(o->authorized_file);
	free(o->pin_prompt);
	memset(o, 0, sizeof(*o));
}

static int
set_str(pam_handle_t *pamh, char **dst, const char *key, const char *v)
{
	char *s;

	if (*v == '\0') {
		pam_syslog(pamh, LOG_ERR, "option %s needs a value", key);
		return -1;
	}
	if ((s = strdup(v)) == NULL) {
		pam_syslog(pamh, LOG_CRIT, "out of memory");
		return -1;
	}
	free(*dst);
	*dst = s;
	return 0;
}

static int
set_path(pam_handle_t *pamh, char **dst, const char *key, const char *v)
{
	if (*v != '/') {
		pam_syslog(pamh, LOG_ERR, "option %s=%s: an absolute path is needed", key, v);
		return -1;
	}
	return set_str(pamh, dst, key, v);
}

static int
set_int(pam_handle_t *pamh, int *dst, const char *key, const char *v, long min, long max)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (!isdigit((unsigned char)*v) || errno != 0 || *end != '\0' || n < min || n > max) {
		pam_syslog(pamh, LOG_ERR, "option %s=%s: a number from %ld to %ld is needed", key,
			   v, min, max);
		return -1;
	}
	*dst = (int)n;
	return 0;
}

static int parse_config(pam_handle_t *pamh, struct options *o, const char *path);

/*
 * One option, "key" or "key=value".  Unknown options and bad values are
 * errors: a typo in a security option must not silently weaken it.
 */
static int
parse_option(pam_handle_t *pamh, struct options *o, const char *arg, int in_config)
{
	const char *eq = strchr(arg, '=');
	char key[32];
	const char *v;
	size_t klen = eq != NULL ? (size_t)(eq - arg) : strlen(arg);

	if (klen == 0 || klen >= sizeof(key)) {
		pam_syslog(pamh, LOG_ERR, "unknown option \"%s\"", arg);
		return -1;
	}
	memcpy(key, arg, klen);
	key[klen] = '\0';
	v = eq != NULL ? eq + 1 : NULL;

	if (v == NULL) {
		if (strcmp(key, "user_agent") == 0)
			o->user_agent = 1;
		else if (strcmp(key, "crl_required") == 0)
			o->crl_required = 1;
		else if (strcmp(key, "x509_strict") == 0)
			o->x509_strict = 1;
		else if (strcmp(key, "nullok") == 0)
			o->nullok = 1;
		else if (strcmp(key, "debug") == 0)
			o->debug = 1;
		else if (strcmp(key, "unblock") == 0)
			o->unblock = 1;
		else if (strcmp(key, "trust_logged_in") == 0)
			o->trust_logged_in = 1;
		else {
			pam_syslog(pamh, LOG_ERR, "unknown option \"%s\"", arg);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "socket") == 0)
		return set_path(pamh, &o->socket, key, v);
	if (strcmp(key, "identity") == 0)
		return set_str(pamh, &o->identity, key, v);
	if (strcmp(key, "ca_file") == 0)
		return set_path(pamh, &o->ca_file, key, v);
	if (strcmp(key, "ca_dir") == 0)
		return set_path(pamh, &o->ca_dir, key, v);
	if (strcmp(key, "crl_file") == 0)
		return set_path(pamh, &o->crl_file, key, v);
	if (strcmp(key, "crl_dir") == 0)
		return set_path(pamh, &o->crl_dir, key, v);
	if (strcmp(key, "ocsp_url") == 0)
		return set_str(pamh, &o->ocsp_url, key, v);
	if (strcmp(key, "map_file") == 0)
		return set_path(pamh, &o->map_file, key, v);
	if (strcmp(key, "authorized_file") == 0)
		return set_str(pamh, &o->authorized_file, key, v);
	if (strcmp(key, "pin_prompt") == 0)
		return set_str(pamh, &o->pin_prompt, key, v);
	if (strcmp(key, "ocsp_timeout") == 0)
		return set_int(pamh, &o->ocsp_timeout, key, v, 1, 300);
	if (strcmp(key, "timeout") == 0)
		return set_int(pamh, &o->timeout, key, v, 1, TIMEOUT_MAX);
	if (strcmp(key, "expiry_warning_days") == 0)
		return set_int(pamh, &o->expiry_warning_days, key, v, 0, 3650);
	if (strcmp(key, "ocsp") == 0) {
		if (strcmp(v, "off") == 0)
			o->ocsp = CERTVAL_OCSP_OFF;
		else if (strcmp(v, "soft") == 0)
			o->ocsp = CERTVAL_OCSP_SOFT;
		else if (strcmp(v, "hard") == 0)
			o->ocsp = CERTVAL_OCSP_HARD;
		else {
			pam_syslog(pamh, LOG_ERR, "option ocsp=%s: off, soft or hard", v);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "eku") == 0) {
		if (strcmp(v, "clientAuth") == 0)
			o->eku_any = 0;
		else if (strcmp(v, "any") == 0)
			o->eku_any = 1;
		else {
			pam_syslog(pamh, LOG_ERR, "option eku=%s: clientAuth or any", v);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "map") == 0) {
		int m = usermap_method_from_name(v);

		if (m == 0) {
			pam_syslog(pamh, LOG_ERR,
				   "option map=%s: cn, uid, email, upn, mapfile or authorized", v);
			return -1;
		}
		o->map = (enum usermap_method)m;
		return 0;
	}
	if (strcmp(key, "config") == 0) {
		if (in_config) {
			pam_syslog(pamh, LOG_ERR, "config= inside a configuration file");
			return -1;
		}
		if (*v != '/') {
			pam_syslog(pamh, LOG_ERR, "option config=%s: an absolute path is needed",
				   v);
			return -1;
		}
		return parse_config(pamh, o, v);
	}
	pam_syslog(pamh, LOG_ERR, "unknown option \"%s\"", arg);
	return -1;
}

/*
 * The configuration file: one option per line, "key=value" or "key"
 * (blanks around "=" and a pair of double quotes around the value are
 * dropped), "#" comments.  It decides who may log in, so it must be a
 * regular file owned by root (or by the user the application runs as) and
 * writable by no one else.
 */
static int
parse_config(pam_handle_t *pamh, struct options *o, const char *path)
{
	const struct safefile_rules rules = {
		.owner = geteuid(),
		.forbidden = S_IWGRP | S_IWOTH,
		.max = CONFIG_MAX,
		.flags = SAFEFILE_FOLLOW,
	};
	struct safefile f = { 0 };
	char *text, *line, *save = NULL, *eq, *k, *v, *end, *arg = NULL;
	size_t len, lineno = 0;
	int r = -1;

	if (safefile_read(AT_FDCWD, path, &rules, &f) != 0) {
		switch (f.fault) {
		case SAFEFILE_MISSING:
		case SAFEFILE_SYMLINK:
		case SAFEFILE_OPEN:
			pam_syslog(pamh, LOG_ERR, "config %s: %s", path, strerror(f.err));
			break;
		case SAFEFILE_STAT:
		case SAFEFILE_NOT_REGULAR:
			pam_syslog(pamh, LOG_ERR, "config %s: not a regular file", path);
			break;
		case SAFEFILE_OWNER:
		case SAFEFILE_MODE:
			pam_syslog(pamh, LOG_ERR,
				   "config %s: must be owned by root and writable by no one else",
				   path);
			break;
		case SAFEFILE_TOO_BIG:
			pam_syslog(pamh, LOG_ERR, "config %s: larger than %d bytes", path,
				   CONFIG_MAX);
			break;
		case SAFEFILE_READ: pam_syslog(pamh, LOG_ERR, "config %s: read error", path); break;
		case SAFEFILE_ALLOC:
		case SAFEFILE_OK: break;
		}
		goto out;
	}
	text = f.data;
	len = f.len;
	if (strlen(text) != len) {
		pam_syslog(pamh, LOG_ERR, "config %s: contains a NUL byte", path);
		goto out;
	}
	for (line = text;; line = NULL) {
		char *nl;

		/* strtok_r would skip empty lines and throw off the count. */
		if (line == NULL) {
			if (save == NULL)
				break;
			line = save;
		}
		if ((nl = strchr(line, '\n')) != NULL) {
			*nl = '\0';
			save = nl + 1;
		} else {
			save = NULL;
		}
		lineno++;
		while (*line == ' ' || *line == '\t')
			line++;
		end = line + strlen(line);
		while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			*--end = '\0';
		if (*line == '\0' || *line == '#') {
			if (save == NULL)
				break;
			continue;
		}
		k = line;
		if ((eq = strchr(line, '=')) != NULL) {
			v = eq + 1;
			for (end = eq; end > k && (end[-1] == ' ' || end[-1] == '\t'); end--)
				;
			*end = '\0';
			while (*v == ' ' || *v == '\t')
				v++;
			len = strlen(v);
			if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
				v[len - 1] = '\0';
				v++;
			}
			free(arg);
			if (asprintf(&arg, "%s=%s", k, v) == -1) {
				arg = NULL;
				goto out;
			}
		} else {
			free(arg);
			if ((arg = strdup(k)) == NULL)
				goto out;
		}
		if (parse_option(pamh, o, arg, 1) != 0) {
			pam_syslog(pamh, LOG_ERR, "config %s line %zu: refused", path, lineno);
			goto out;
		}
		if (save == NULL)
			break;
	}
	r = 0;
out:
	free(arg);
	safefile_free(&f);
	return r;
}

static int
parse_args(pam_handle_t *pamh, struct options *o, int argc, const char **argv)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->map = USERMAP_CN;
	o->ocsp = CERTVAL_OCSP_OFF;
	o->expiry_warning_days = 30;
	for (i = 0; i < argc; i++) {
		if (parse_option(pamh, o, argv[i], 0) != 0) {
			options_clear(o);
			return -1;
		}
	}
	return 0;
}

#define DEBUG(pamh, o, ...)                                                                        \
	do {                                                                                       \
		if ((o)->debug)                                                                    \
			pam_syslog((pamh), LOG_DEBUG, __VA_ARGS__);                                \
	} while (0)

static void
certval_options(const struct options *o, struct certval_opts *cv)
{
	certval_opts_init(cv);
	cv->ca_file = o->ca_file;
	cv->ca_dir = o->ca_dir;
	cv->crl_file = o->crl_file;
	cv->crl_dir = o->crl_dir;
	cv->crl_required = o->crl_required;
	cv->ocsp = o->ocsp;
	cv->ocsp_url = o->ocsp_url;
	if (o->ocsp_timeout > 0)
		cv->ocsp_timeout = o->ocsp_timeout;
	if (o->eku_any)
		cv->require_client_eku = 0;
	cv->x509_strict = o->x509_strict;
}

static void
usermap_options(const struct options *o, struct usermap_opts *um)
{
	memset(um, 0, sizeof(*um));
	um->method = o->map;
	um->map_file = o->map_file;
	um->authorized_file = o->authorized_file;
}

/* "No agent", "no identity", "no card": an error unless nullok. */
static int
unavailable(pam_handle_t *pamh, const struct options *o, const char *user, const char *why)
{
	pam_syslog(pamh, LOG_NOTICE, "user %s: %s%s", user, why,
		   o->nullok ? " (nullok: ignored)" : "");
	return o->nullok ? PAM_IGNORE : PAM_AUTHINFO_UNAVAIL;
}

/* The user name and its passwd entry; the name must fit the challenge. */
static int
get_user(pam_handle_t *pamh, const char **userp, uid_t *uidp)
{
	const char *user = NULL;
	struct passwd pwbuf, *pw = NULL;
	char buf[4096];
	size_t i;
	int r;

	*userp = NULL;
	if ((r = pam_get_user(pamh, &user, NULL)) != PAM_SUCCESS) {
		pam_syslog(pamh, LOG_ERR, "cannot get the user name: %s", pam_strerror(pamh, r));
		return r == PAM_CONV_AGAIN ? PAM_INCOMPLETE : PAM_SERVICE_ERR;
	}
	if (user == NULL || *user == '\0' || strlen(user) > 256) {
		pam_syslog(pamh, LOG_NOTICE, "empty or overlong user name");
		return PAM_USER_UNKNOWN;
	}
	for (i = 0; user[i] != '\0'; i++) {
		if (user[i] < 0x21 || user[i] > 0x7e) {
			pam_syslog(pamh, LOG_NOTICE, "user name with unusable characters");
			return PAM_USER_UNKNOWN;
		}
	}
	if (getpwnam_r(user, &pwbuf, buf, sizeof(buf), &pw) != 0 || pw == NULL) {
		pam_syslog(pamh, LOG_NOTICE, "user %s: unknown user", user);
		return PAM_USER_UNKNOWN;
	}
	*userp = user;
	if (uidp != NULL)
		*uidp = pw->pw_uid;
	return PAM_SUCCESS;
}

/* ---------------------------------------------------------------------- */
/* the agent */

/*
 * Who may own what on the way to the agent.  `owner` is the user the agent
 * must belong to: the target user with user_agent, else the application's
 * euid.  With user_agent, socket, its directory and the listener must be
 * the owner's (root's system agent is not the user's agent); otherwise
 * root's are fine too.  Directories above the socket's may be root's.
 */
struct trust {
	uid_t owner;
	int owner_only;
};

static int
trusted_uid(const struct trust *t, uid_t uid, int last)
{
	if (uid == t->owner)
		return 1;
	return uid == 0 && !(t->owner_only && last);
}

/* The next component of path at *pos into comp; 0 at the end, -1 if bad. */
static int
next_component(const char *path, size_t *pos, char *comp, size_t comp_len)
{
	size_t n;

	while (path[*pos] == '/')
		(*pos)++;
	if (path[*pos] == '\0')
		return 0;
	n = strcspn(path + *pos, "/");
	if (n >= comp_len)
		return -1;
	memcpy(comp, path + *pos, n);
	comp[n] = '\0';
	*pos += n;
	if (strcmp(comp, ".") == 0 || strcmp(comp, "..") == 0)
		return -1;
	return 1;
}

/* A directory we are about to walk through (or hold the socket, `last`). */
static int
check_dir(const struct trust *t, const struct stat *st, const char *dir, int last, char *why,
	  size_t why_len)
{
	if (!S_ISDIR(st->st_mode)) {
		snprintf(why, why_len, "socket directory %s is not a directory", dir);
		return -1;
	}
	if (!trusted_uid(t, st->st_uid, last)) {
		snprintf(why, why_len, "socket directory %s: owned by uid %lu, not %lu%s", dir,
			 (unsigned long)st->st_uid, (unsigned long)t->owner,
			 (t->owner_only && last) || t->owner == 0 ? "" : " or root");
		return -1;
	}
	/* A sticky directory (/tmp) above is fine: no one else can replace
	 * the entry below it, which is checked in turn.  Not the last one. */
	if ((st->st_mode & 022) != 0 && (last || !(st->st_mode & S_ISVTX))) {
		snprintf(why, why_len, "socket directory %s is writable by others", dir);
		return -1;
	}
	return 0;
}

/*
 * Walks `path` from "/" one component at a time with openat(O_PATH |
 * O_NOFOLLOW), checking each directory, and connects to the socket inode
 * that was checked (through /proc/self/fd, so nothing is looked up by name
 * twice): no symlink anywhere, no entry swapped between check and connect.
 * Returns the connected descriptor (0), 1 for "no agent" (nothing there,
 * nobody listening), -1 for a refusal; why says which.
 */
static int
open_checked_socket(const char *path, const struct trust *t, int *fdp, char *why, size_t why_len)
{
	char comp[NAME_MAX + 1], next[NAME_MAX + 1], shown[PATH_MAX];
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct stat st;
	size_t pos = 0, shown_len = 0;
	int dfd = -1, nfd = -1, sock = -1, r = -1, k;

	*fdp = -1;
	if (*path != '/') {
		snprintf(why, why_len, "socket %s is not an absolute path", path);
		return -1;
	}
	if ((dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) == -1 || fstat(dfd, &st) != 0) {
		snprintf(why, why_len, "/: %s", strerror(errno));
		goto out;
	}
	/* shown: the path of dfd, for messages ("/" until the first step). */
	snprintf(shown, sizeof(shown), "/");
	if ((k = next_component(path, &pos, comp, sizeof(comp))) != 1) {
		snprintf(why, why_len, "socket path %s is not usable", path);
		goto out;
	}
	for (;;) {
		if ((k = next_component(path, &pos, next, sizeof(next))) < 0) {
			snprintf(why, why_len, "socket path %s is not usable", path);
			goto out;
		}
		/* The directory dfd holds comp: the socket's own when k == 0. */
		if (check_dir(t, &st, shown, k == 0, why, why_len) != 0)
			goto out;
		if (shown_len + strlen(comp) + 2 >= sizeof(shown)) {
			snprintf(why, why_len, "socket path too long");
			goto out;
		}
		shown_len +=
		    (size_t)snprintf(shown + shown_len, sizeof(shown) - shown_len, "/%s", comp);
		if (k == 0)
			break;
		nfd = openat(dfd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (nfd == -1) {
			snprintf(why, why_len, "socket directory %s: %s", shown, strerror(errno));
			r = errno == ENOENT ? 1 : -1;
			goto out;
		}
		if (fstat(nfd, &st) != 0) {
			snprintf(why, why_len, "socket directory %s: %s", shown, strerror(errno));
			goto out;
		}
		if (S_ISLNK(st.st_mode)) {
			snprintf(why, why_len, "socket directory %s is a symbolic link", shown);
			goto out;
		}
		close(dfd);
		dfd = nfd;
		nfd = -1;
		memcpy(comp, next, sizeof(comp));
	}
	/* comp is the socket, in the checked directory dfd. */
	if ((nfd = openat(dfd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		snprintf(why, why_len, "socket %s: %s", path, strerror(errno));
		r = errno == ENOENT ? 1 : -1;
		goto out;
	}
	if (fstat(nfd, &st) != 0) {
		snprintf(why, why_len, "socket %s: %s", path, strerror(errno));
		goto out;
	}
	if (S_ISLNK(st.st_mode)) {
		snprintf(why, why_len, "socket %s is a symbolic link", path);
		goto out;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(why, why_len, "%s is not a socket", path);
		goto out;
	}
	if (!trusted_uid(t, st.st_uid, 1) || (st.st_mode & 022) != 0) {
		snprintf(why, why_len, "socket %s: owned by uid %lu or writable by others", path,
			 (unsigned long)st.st_uid);
		goto out;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "/proc/self/fd/%d", nfd);
	if ((sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(why, why_len, "socket: %s", strerror(errno));
		r = 1;
		goto out;
	}
	if (connect(sock, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		if (errno == ENOENT && access("/proc/self/fd", F_OK) != 0) {
			/* Refuse rather than connect by name unchecked. */
			snprintf(why, why_len, "cannot connect to %s: /proc is not mounted", path);
			goto out;
		}
		snprintf(why, why_len, "cannot connect to %s: %s", path, strerror(errno));
		r = 1;
		goto out;
	}
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || clen != sizeof(cred)) {
		snprintf(why, why_len, "SO_PEERCRED on %s: %s", path, strerror(errno));
		goto out;
	}
	if (!trusted_uid(t, cred.uid, 1)) {
		snprintf(why, why_len, "the agent at %s runs as uid %lu, not %lu%s", path,
			 (unsigned long)cred.uid, (unsigned long)t->owner,
			 t->owner_only || t->owner == 0 ? "" : " or root");
		goto out;
	}
	*fdp = sock;
	sock = -1;
	r = 0;
out:
	if (sock != -1)
		close(sock);
	if (nfd != -1)
		close(nfd);
	if (dfd != -1)
		close(dfd);
	return r;
}

/*
 * Connects to the agent.  The socket is `socket=`, else the system socket,
 * or with user_agent the target user's (/run/user/UID/...): never a path
 * from the environment, which under su or sudo is the caller's.  The
 * checks of open_checked_socket() apply, and the library is handed that
 * very connection; it never opens another.  A socket that fails the checks
 * may be someone collecting PINs: that is PAM_AUTH_ERR, never ignorable.
 */
static int
agent_open(pam_handle_t *pamh, const struct options *o, const char *user, uid_t uid,
	   mtls_agent **out)
{
	char path[PATH_MAX], why[PATH_MAX + 128];
	struct trust t = { o->user_agent ? uid : geteuid(), o->user_agent };
	int r, fd = -1;

	*out = NULL;
	why[0] = '\0';
	if (o->socket != NULL)
		r = snprintf(path, sizeof(path), "%s", o->socket);
	else if (o->user_agent)
		r = snprintf(path, sizeof(path), USER_SOCKET_FMT, (unsigned long)uid);
	else
		r = snprintf(path, sizeof(path), "%s", DEFAULT_SOCKET);
	if (r < 0 || r >= (int)sizeof(path)) {
		pam_syslog(pamh, LOG_ERR, "user %s: agent socket path too long", user);
		return PAM_AUTH_ERR;
	}
	DEBUG(pamh, o, "user %s: agent socket %s", user, path);

	if ((r = open_checked_socket(path, &t, &fd, why, sizeof(why))) > 0)
		return unavailable(pamh, o, user, why);
	if (r < 0) {
		pam_syslog(pamh, LOG_ERR, "user %s: refusing agent: %s", user, why);
		return PAM_AUTH_ERR;
	}
	if (o->timeout > 0)
		snprintf(client_timeout, sizeof(client_timeout), "%d", o->timeout);
	else
		client_timeout[0] = '\0';
	/* Takes fd, also on failure. */
	if ((r = client_connect_fd(fd, out)) != 0) {
		snprintf(why, sizeof(why), "cannot use the agent at %s: %s", path,
			 mtls_agent_strerror(r));
		if (r == MTLS_ERR_CONNECT || r == MTLS_ERR_NO_SOCKET)
			return unavailable(pamh, o, user, why);
		pam_syslog(pamh, LOG_ERR, "user %s: %s", user, why);
		return PAM_AUTHINFO_UNAVAIL;
	}
	return PAM_SUCCESS;
}

/* agent_open(), then the identities the agent offers; the caller frees both. */
static int
agent_list(pam_handle_t *pamh, const struct options *o, const char *user, uid_t uid,
	   mtls_agent **agent, struct mtls_agent_identity **ids, size_t *n)
{
	int r, ret;

	if ((ret = agent_open(pamh, o, user, uid, agent)) != PAM_SUCCESS)
		return ret;
	if ((r = mtls_agent_list(*agent, ids, n)) != 0) {
		pam_syslog(pamh, LOG_ERR, "user %s: cannot list identities: %s", user,
			   mtls_agent_strerror(r));
		return PAM_AUTHINFO_UNAVAIL;
	}
	return PAM_SUCCESS;
}

/* ---------------------------------------------------------------------- */
/* certificates */

static void
pick_clear(struct pick *p)
{
	X509_free(p->cert);
	sk_X509_pop_free(p->chain, X509_free);
	memset(p, 0, sizeof(*p));
}

static int
parse_chain(const struct mtls_agent_identity *id, STACK_OF(X509) * *out)
{
	STACK_OF(X509) *sk = NULL;
	X509 *x;
	size_t i;

	*out = NULL;
	if (id->n_chain == 0)
		return 0;
	if ((sk = sk_X509_new_null()) == NULL)
		return MTLS_ERR_ALLOC;
	for (i = 0; i < id->n_chain; i++) {
		if ((x = certval_parse_der(id->chain_der[i], id->chain_der_len[i])) == NULL) {
			sk_X509_pop_free(sk, X509_free);
			return MTLS_ERR_CERT_INVALID;
		}
		if (sk_X509_push(sk, x) <= 0) {
			X509_free(x);
			sk_X509_pop_free(sk, X509_free);
			return MTLS_ERR_ALLOC;
		}
	}
	*out = sk;
	return 0;
}

/*
 * Picks the first identity whose certificate validates and maps to the
 * user.  Returns PAM_SUCCESS with *p filled, or the refusal:
 *   a certificate belongs to someone else / the mapping refused it
 *     -> PAM_AUTH_ERR (also when other certificates were invalid);
 *   only certificate-validity failures -> PAM_CRED_INSUFFICIENT;
 *   no identity with a certificate, no card -> unavailable().
 */
static void tell_user(pam_handle_t *pamh, int flags, const char *text);

/*
 * The user hears why a certificate was refused (PAM_ERROR_MSG), not only
 * the log: "Insufficient credentials" alone tells them nothing to fix.
 */
static void
tell_refused(pam_handle_t *pamh, int flags, const char *name, int r, const char *why)
{
	char text[768];

	snprintf(text, sizeof(text), "Certificate%s%s refused: %s%s%s", name != NULL ? " of " : "",
		 name != NULL ? name : "", mtls_agent_strerror(r), why[0] != '\0' ? ": " : "", why);
	tell_user(pamh, flags, text);
}

/* A certificate that works but ends soon is logged, so it is renewed in
 * time (mtls-agentctl renew). */
static void
warn_expiry(pam_handle_t *pamh, const struct options *o, const char *user, const char *name,
	    X509 *cert)
{
	int days = 0, secs = 0;

	if (o->expiry_warning_days == 0 ||
	    ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(cert)) != 1 ||
	    days >= o->expiry_warning_days)
		return;
	pam_syslog(pamh, LOG_WARNING,
		   "user %s: identity %s: the certificate expires in %d day%s; renew it "
		   "(mtls-agentctl renew %s)",
		   user, name, days, days == 1 ? "" : "s", name);
}

static int
select_identity(pam_handle_t *pamh, int flags, const struct options *o, const char *user,
		const struct mtls_agent_identity *ids, size_t n, struct pick *p)
{
	struct certval_opts cv;
	struct usermap_opts um;
	char why[512], refused[512] = "";
	const char *refused_name = NULL;
	int refused_r = 0;
	size_t i, n_invalid = 0, n_mismatch = 0, n_nocard = 0;
	int r;

	memset(p, 0, sizeof(*p));
	certval_options(o, &cv);
	usermap_options(o, &um);
	for (i = 0; i < n; i++) {
		const struct mtls_agent_identity *id = &ids[i];

		if (o->identity != NULL && strcmp(id->name, o->identity) != 0)
			continue;
		if (id->cert_der == NULL || id->cert_der_len == 0) {
			DEBUG(pamh, o, "identity %s: no certificate; skipped", id->name);
			continue;
		}
		if (!(id->purposes & (1u << MTLS_AGENT_PURPOSE_PAM_CHALLENGE))) {
			DEBUG(pamh, o, "identity %s: may not sign PAM challenges; skipped",
			      id->name);
			continue;
		}
		if (!(id->flags & MTLS_AGENT_ID_TOKEN_PRESENT)) {
			pam_syslog(pamh, LOG_NOTICE, "user %s: identity %s: token not present",
				   user, id->name);
			n_nocard++;
			continue;
		}
		if ((p->cert = certval_parse_der(id->cert_der, id->cert_der_len)) == NULL) {
			pam_syslog(pamh, LOG_WARNING,
				   "user %s: identity %s: certificate does not parse; skipped",
				   user, id->name);
			n_invalid++;
			continue;
		}
		if ((r = parse_chain(id, &p->chain)) != 0) {
			pick_clear(p);
			if (r == MTLS_ERR_ALLOC)
				return PAM_BUF_ERR;
			pam_syslog(
			    pamh, LOG_WARNING,
			    "user %s: identity %s: a chain certificate does not parse; skipped",
			    user, id->name);
			n_invalid++;
			continue;
		}
		why[0] = '\0';
		r = certval_verify(p->cert, p->chain, &cv, why, sizeof(why));
		if (r == MTLS_ERR_ALLOC || r == MTLS_ERR_CONFIG) {
			pam_syslog(pamh, LOG_ERR, "user %s: certificate validation failed: %s: %s",
				   user, mtls_agent_strerror(r), why);
			pick_clear(p);
			return r == MTLS_ERR_ALLOC ? PAM_BUF_ERR : PAM_SERVICE_ERR;
		}
		if (r != 0) {
			pam_syslog(pamh, LOG_NOTICE,
				   "user %s: identity %s: certificate refused: %s: %s", user,
				   id->name, mtls_agent_strerror(r), why);
			if (refused_name == NULL) {
				refused_name = id->name;
				refused_r = r;
				snprintf(refused, sizeof(refused), "%s", why);
			}
			pick_clear(p);
			n_invalid++;
			continue;
		}
		why[0] = '\0';
		r = usermap_check(p->cert, user, &um, why, sizeof(why));
		if (r == MTLS_ERR_ALLOC) {
			pick_clear(p);
			return PAM_BUF_ERR;
		}
		if (r != 0) {
			pam_syslog(
			    pamh, LOG_NOTICE,
			    "user %s: identity %s: certificate not mapped to the user: %s: %s",
			    user, id->name, mtls_agent_strerror(r), why);
			pick_clear(p);
			n_mismatch++;
			continue;
		}
		DEBUG(pamh, o, "user %s: identity %s: certificate valid and mapped", user,
		      id->name);
		warn_expiry(pamh, o, user, id->name, p->cert);
		p->id = id;
		return PAM_SUCCESS;
	}
	if (refused_name != NULL)
		tell_refused(pamh, flags, refused_name, refused_r, refused);
	if (n_mismatch > 0) {
		pam_syslog(pamh, LOG_NOTICE, "user %s: no certificate maps to the user", user);
		return PAM_AUTH_ERR;
	}
	if (n_invalid > 0) {
		pam_syslog(pamh, LOG_NOTICE, "user %s: no valid certificate", user);
		return PAM_CRED_INSUFFICIENT;
	}
	if (n_nocard > 0)
		return unavailable(pamh, o, user, "no token present");
	return unavailable(pamh, o, user,
			   o->identity != NULL ? "the agent does not offer that identity"
					       : "the agent offers no identity with a certificate");
}

/* ---------------------------------------------------------------------- */
/* PIN */

/* Asks one secret through the conversation; *out is secure memory. */
static int
ask_secret(pam_handle_t *pamh, const char *prompt, char **out)
{
	const struct pam_conv *conv = NULL;
	struct pam_message msg;
	const struct pam_message *msgp = &msg;
	struct pam_response *resp = NULL;
	int r;

	*out = NULL;
	r = pam_get_item(pamh, PAM_CONV, (const void **)&conv);
	if (r != PAM_SUCCESS || conv == NULL || conv->conv == NULL) {
		pam_syslog(pamh, LOG_ERR, "no conversation function");
		return PAM_CONV_ERR;
	}
	msg.msg_style = PAM_PROMPT_ECHO_OFF;
	msg.msg = prompt;
	r = conv->conv(1, &msgp, &resp, conv->appdata_ptr);
	if (r != PAM_SUCCESS || resp == NULL || resp->resp == NULL) {
		pam_syslog(pamh, LOG_NOTICE, "conversation failed: %s",
			   pam_strerror(pamh, r != PAM_SUCCESS ? r : PAM_CONV_ERR));
		r = r == PAM_CONV_AGAIN ? PAM_INCOMPLETE : PAM_CONV_ERR;
		goto out;
	}
	if ((*out = mtls_secure_strdup(resp->resp)) == NULL) {
		r = PAM_BUF_ERR;
		goto out;
	}
	r = PAM_SUCCESS;
out:
	if (resp != NULL) {
		if (resp->resp != NULL) {
			mtls_wipe(resp->resp, strlen(resp->resp));
			free(resp->resp);
		}
		free(resp);
	}
	return r;
}

static void
tell_user(pam_handle_t *pamh, int flags, const char *text)
{
	if (!(flags & PAM_SILENT))
		(void)pam_error(pamh, "%s", text);
}

/* A PIN the agent will take: 1..MTLS_AGENT_PIN_MAX bytes. */
static int
pin_usable(const char *pin)
{
	size_t len = strnlen(pin, MTLS_AGENT_PIN_MAX + 1);

	return len > 0 && len <= MTLS_AGENT_PIN_MAX;
}

/* The prompt: pin_prompt (its "%l" becomes the token label) or "PIN for
 * LABEL: ", with the retry hint before the colon. */
/* " (N tries left)" for a log line, or "" when the token does not say. */
static const char *
tries_text(int retries, char *buf, size_t len)
{
	if (retries < 0)
		return "";
	snprintf(buf, len, " (%d tr%s left)", retries, retries == 1 ? "y" : "ies");
	return buf;
}

static void
pin_prompt(const struct options *o, const struct mtls_agent_identity *id, char *buf, size_t len)
{
	const char *hint = "";
	const char *label =
	    id->token_label != NULL && *id->token_label != '\0' ? id->token_label : id->name;
	const char *t;
	size_t off = 0;

	if (id->flags & MTLS_AGENT_ID_PIN_FINAL_TRY)
		hint = " (1 try left)";
	else if (id->flags & MTLS_AGENT_ID_PIN_COUNT_LOW)
		hint = " (few tries left)";
	if (o->pin_prompt == NULL) {
		snprintf(buf, len, "PIN for %s%s: ", label, hint);
		return;
	}
	buf[0] = '\0';
	for (t = o->pin_prompt; *t != '\0' && off + 1 < len; t++) {
		if (t[0] == '%' && t[1] == 'l') {
			off += (size_t)snprintf(buf + off, len - off, "%s", label);
			t++;
		} else {
			buf[off++] = *t;
			buf[off] = '\0';
		}
		if (off >= len)
			off = len - 1;
	}
	if (*hint != '\0' && off + 1 < len)
		snprintf(buf + off, len - off, "%s", hint);
}

/*
 * Logs the identity's token in, asking the PIN.  The token checks the PIN
 * every time (LOGIN with the verify flag), also when it is logged in
 * already: an unlocked screen or `sudo` must not open for a wrong PIN just
 * because the card was used before.  Only `trust_logged_in` skips the PIN
 * for a logged-in token.
 */
static int
token_login(pam_handle_t *pamh, int flags, const struct options *o, const char *user,
	    mtls_agent *agent, const struct mtls_agent_identity *id)
{
	char prompt[512], *pin = NULL;
	int r, retries = -1, ret;
	char tries[32];

	if (id->flags & MTLS_AGENT_ID_PIN_LOCKED) {
		pam_syslog(pamh, LOG_NOTICE, "user %s: identity %s: the PIN of token %s is locked",
			   user, id->name, id->token_label);
		tell_user(pamh, flags, "The PIN of the token is locked.");
		return PAM_MAXTRIES;
	}
	if ((id->flags & MTLS_AGENT_ID_LOGGED_IN) && o->trust_logged_in) {
		DEBUG(pamh, o, "user %s: token %s logged in; no PIN asked (trust_logged_in)", user,
		      id->token_label);
		return PAM_SUCCESS;
	}
	pin_prompt(o, id, prompt, sizeof(prompt));
	if ((ret = ask_secret(pamh, prompt, &pin)) != PAM_SUCCESS)
		return ret;
	if (!pin_usable(pin)) {
		pam_syslog(pamh, LOG_NOTICE, "user %s: empty or overlong PIN; not tried", user);
		ret = PAM_AUTH_ERR;
		goto out;
	}
	if (o->trust_logged_in)
		r = mtls_agent_login(agent, id->name, pin, &retries);
	else
		r = client_login_verify(agent, id->name, pin, &retries);
	switch (r) {
	case 0: ret = PAM_SUCCESS; break;
	case MTLS_ERR_PIN_INCORRECT:
		pam_syslog(pamh, LOG_NOTICE, "user %s: token %s: wrong PIN%s", user,
			   id->token_label, tries_text(retries, tries, sizeof(tries)));
		tell_user(pamh, flags, "Wrong PIN.");
		ret = retries == 0 ? PAM_MAXTRIES : PAM_AUTH_ERR;
		break;
	case MTLS_ERR_PIN_LOCKED:
		pam_syslog(pamh, LOG_NOTICE, "user %s: token %s: PIN locked", user,
			   id->token_label);
		tell_user(pamh, flags, "The PIN of the token is locked.");
		ret = PAM_MAXTRIES;
		break;
	case MTLS_ERR_PIN_INVALID:
		pam_syslog(pamh, LOG_NOTICE, "user %s: token %s: PIN refused as invalid", user,
			   id->token_label);
		ret = PAM_AUTH_ERR;
		break;
	case MTLS_ERR_TOKEN_ABSENT:
		ret = unavailable(pamh, o, user, "token removed before login");
		break;
	default:
		pam_syslog(pamh, LOG_ERR, "user %s: token %s: login failed: %s (%s)", user,
			   id->token_label, mtls_agent_strerror(r), mtls_agent_last_message());
		ret = PAM_AUTHINFO_UNAVAIL;
		break;
	}
out:
	mtls_secure_free(pin);
	return ret;
}

/* ---------------------------------------------------------------------- */
/* proof of possession */

/* Scheme and digest for the certificate's key; 0 if unsupported. */
static uint16_t
scheme_for(EVP_PKEY *pkey, const EVP_MD **md)
{
	char group[64];
	size_t glen = 0;
	int nid;

	*md = NULL;
	if (EVP_PKEY_is_a(pkey, "RSA")) {
		*md = EVP_sha256();
		return MTLS_AGENT_RSA_PSS_RSAE_SHA256;
	}
	if (!EVP_PKEY_is_a(pkey, "EC") ||
	    EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) != 1)
		return 0;
	nid = OBJ_sn2nid(group);
	if (nid == NID_undef)
		nid = EC_curve_nist2nid(group);
	if (nid == NID_X9_62_prime256v1) {
		*md = EVP_sha256();
		return MTLS_AGENT_ECDSA_SECP256R1_SHA256;
	}
	if (nid == NID_secp384r1) {
		*md = EVP_sha384();
		return MTLS_AGENT_ECDSA_SECP384R1_SHA384;
	}
	return 0;
}

/* 1 if sig is a valid signature by the certificate's key over data. */
static int
signature_ok(X509 *cert, uint16_t scheme, const EVP_MD *md, const unsigned char *sig,
	     size_t sig_len, const unsigned char *data, size_t len)
{
	EVP_PKEY *pkey = X509_get0_pubkey(cert);
	EVP_PKEY_CTX *pctx = NULL;
	EVP_MD_CTX *ctx;
	int ok = 0;

	if (pkey == NULL || (ctx = EVP_MD_CTX_new()) == NULL)
		return 0;
	if (EVP_DigestVerifyInit(ctx, &pctx, md, NULL, pkey) != 1)
		goto out;
	if (scheme == MTLS_AGENT_RSA_PSS_RSAE_SHA256 &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
	     EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1))
		goto out;
	ok = EVP_DigestVerify(ctx, sig, sig_len, data, len) == 1;
out:
	EVP_MD_CTX_free(ctx);
	return ok;
}

/*
 * A fresh challenge, signed by the agent, verified here.  The nonce comes
 * from the kernel RNG and is never reused, so an old signature (replayed by
 * a malicious agent or anyone in between) cannot verify.
 */
static int
prove_possession(pam_handle_t *pamh, const struct options *o, const char *user, const char *service,
		 mtls_agent *agent, const struct pick *p)
{
	unsigned char nonce[NONCE_LEN], *sig = NULL;
	size_t got = 0, sig_len = 0;
	struct wbuf *c = NULL;
	const EVP_MD *md;
	uint16_t scheme;
	ssize_t n;
	int r, ret = PAM_AUTH_ERR;

	if ((scheme = scheme_for(X509_get0_pubkey(p->cert), &md)) == 0) {
		pam_syslog(pamh, LOG_NOTICE,
			   "user %s: identity %s: key type of the certificate not supported", user,
			   p->id->name);
		return PAM_AUTH_ERR;
	}
	while (got < sizeof(nonce)) {
		n = getrandom(nonce + got, sizeof(nonce) - got, 0);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			pam_syslog(pamh, LOG_CRIT, "getrandom: %s", strerror(errno));
			return PAM_SYSTEM_ERR;
		}
		got += (size_t)n;
	}
	if ((c = wbuf_new()) == NULL) {
		ret = PAM_BUF_ERR;
		goto out;
	}
	if ((r = pam_challenge_put(c, nonce, sizeof(nonce), service, user)) != 0) {
		pam_syslog(pamh, LOG_ERR, "cannot build the challenge: %s", mtls_agent_strerror(r));
		ret = r == MTLS_ERR_ALLOC ? PAM_BUF_ERR : PAM_SERVICE_ERR;
		goto out;
	}
	r = mtls_agent_sign(agent, p->id->name, scheme, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
			    wbuf_ptr(c), wbuf_len(c), &sig, &sig_len);
	if (r != 0) {
		pam_syslog(pamh, LOG_NOTICE,
			   "user %s: identity %s: the agent did not sign: %s (%s)", user,
			   p->id->name, mtls_agent_strerror(r), mtls_agent_last_message());
		switch (r) {
		case MTLS_ERR_TOKEN_ABSENT:
			ret = unavailable(pamh, o, user, "token removed before signing");
			break;
		case MTLS_ERR_PIN_LOCKED: ret = PAM_MAXTRIES; break;
		case MTLS_ERR_CONNECT:
		case MTLS_ERR_IO:
		case MTLS_ERR_CONNECTION_CLOSED:
		case MTLS_ERR_TIMEOUT: ret = PAM_AUTHINFO_UNAVAIL; break;
		default: ret = PAM_AUTH_ERR; break;
		}
		goto out;
	}
	if (!signature_ok(p->cert, scheme, md, sig, sig_len, wbuf_ptr(c), wbuf_len(c))) {
		pam_syslog(pamh, LOG_WARNING,
			   "user %s: identity %s: the signature over the challenge does not verify "
			   "with the certificate's key: refused",
			   user, p->id->name);
		ret = PAM_AUTH_ERR;
		goto out;
	}
	DEBUG(pamh, o, "user %s: identity %s: %s signature verified", user, p->id->name,
	      mtls_agent_scheme_name(scheme));
	ret = PAM_SUCCESS;
out:
	free(sig);
	wbuf_free(c);
	mtls_wipe(nonce, sizeof(nonce));
	return ret;
}

/* ---------------------------------------------------------------------- */
/* kept certificate */

static void
kept_cleanup(pam_handle_t *pamh, void *data, int error_status)
{
	struct kept *k = data;

	if (k == NULL)
		return;
	X509_free(k->cert);
	sk_X509_pop_free(k->chain, X509_free);
	free(k);
}

static int
keep_certificate(pam_handle_t *pamh, struct pick *p)
{
	struct kept *k;

	if ((k = calloc(1, sizeof(*k))) == NULL)
		return PAM_BUF_ERR;
	k->cert = p->cert;
	k->chain = p->chain;
	p->cert = NULL;
	p->chain = NULL;
	if (pam_set_data(pamh, DATA_KEPT, k, kept_cleanup) != PAM_SUCCESS) {
		kept_cleanup(pamh, k, 0);
		return PAM_BUF_ERR;
	}
	return PAM_SUCCESS;
}

/* ---------------------------------------------------------------------- */
/* auth */

PUBLIC int
pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	struct mtls_agent_identity *ids = NULL;
	struct options o;
	struct pick p = { 0 };
	mtls_agent *agent = NULL;
	const char *user = NULL, *service = NULL;
	size_t n = 0, i;
	uid_t uid = (uid_t)-1;
	int ret;

	if (parse_args(pamh, &o, argc, argv) != 0)
		return PAM_SERVICE_ERR;
	if ((ret = get_user(pamh, &user, &uid)) != PAM_SUCCESS)
		goto out;
	if (pam_get_item(pamh, PAM_SERVICE, (const void **)&service) != PAM_SUCCESS ||
	    service == NULL || *service == '\0' || strlen(service) > 256) {
		pam_syslog(pamh, LOG_ERR, "no usable PAM service name");
		ret = PAM_SERVICE_ERR;
		goto out;
	}
	for (i = 0; service[i] != '\0'; i++) {
		if (service[i] < 0x21 || service[i] > 0x7e) {
			pam_syslog(pamh, LOG_ERR, "PAM service name with unusable characters");
			ret = PAM_SERVICE_ERR;
			goto out;
		}
	}
	if ((ret = agent_list(pamh, &o, user, uid, &agent, &ids, &n)) != PAM_SUCCESS)
		goto out;
	DEBUG(pamh, &o, "user %s: agent offers %zu identities", user, n);
	if ((ret = select_identity(pamh, flags, &o, user, ids, n, &p)) != PAM_SUCCESS)
		goto out;
	if ((ret = token_login(pamh, flags, &o, user, agent, p.id)) != PAM_SUCCESS)
		goto out;
	if ((ret = prove_possession(pamh, &o, user, service, agent, &p)) != PAM_SUCCESS)
		goto out;
	pam_syslog(pamh, LOG_INFO, "user %s: authenticated with identity %s (token %s)", user,
		   p.id->name, p.id->token_label);
	ret = keep_certificate(pamh, &p);
out:
	pick_clear(&p);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(agent);
	options_clear(&o);
	return ret;
}

/* No credentials to set: the token stays logged in at the agent. */
PUBLIC int
pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	return PAM_SUCCESS;
}

/* ---------------------------------------------------------------------- */
/* account */

static int
account_code(pam_handle_t *pamh, int flags, const char *user, int r, const char *why)
{
	if (r != 0 && r != MTLS_ERR_ALLOC && r != MTLS_ERR_CONFIG)
		tell_refused(pamh, flags, NULL, r, why);
	switch (r) {
	case 0: return PAM_SUCCESS;
	case MTLS_ERR_ALLOC: return PAM_BUF_ERR;
	case MTLS_ERR_CONFIG:
		pam_syslog(pamh, LOG_ERR, "user %s: account: %s", user, why);
		return PAM_SERVICE_ERR;
	case MTLS_ERR_CERT_EXPIRED:
		pam_syslog(pamh, LOG_NOTICE, "user %s: account: certificate expired: %s", user,
			   why);
		return PAM_ACCT_EXPIRED;
	default:
		pam_syslog(pamh, LOG_NOTICE, "user %s: account: %s: %s", user,
			   mtls_agent_strerror(r), why);
		return PAM_PERM_DENIED;
	}
}

/*
 * The certificate auth used (or, if auth did not run in this handle, the
 * first identity whose certificate maps to the user) must still be valid,
 * still map to the user, and not be revoked.
 */
PUBLIC int
pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	struct mtls_agent_identity *ids = NULL;
	struct certval_opts cv;
	struct usermap_opts um;
	struct options o;
	const void *data = NULL;
	const struct kept *k;
	struct pick p = { 0 };
	mtls_agent *agent = NULL;
	const char *user = NULL;
	char why[512] = "";
	size_t n = 0, i;
	uid_t uid;
	int r, ret;

	if (parse_args(pamh, &o, argc, argv) != 0)
		return PAM_SERVICE_ERR;
	certval_options(&o, &cv);
	usermap_options(&o, &um);
	if ((ret = get_user(pamh, &user, &uid)) != PAM_SUCCESS)
		goto out;
	if (pam_get_data(pamh, DATA_KEPT, &data) == PAM_SUCCESS && data != NULL) {
		k = data;
		r = certval_verify(k->cert, k->chain, &cv, why, sizeof(why));
		if (r == 0)
			r = usermap_check(k->cert, user, &um, why, sizeof(why));
		ret = account_code(pamh, flags, user, r, why);
		goto out;
	}
	if ((ret = agent_list(pamh, &o, user, uid, &agent, &ids, &n)) != PAM_SUCCESS)
		goto out;
	for (i = 0; i < n; i++) {
		if (o.identity != NULL && strcmp(ids[i].name, o.identity) != 0)
			continue;
		if (ids[i].cert_der == NULL ||
		    (p.cert = certval_parse_der(ids[i].cert_der, ids[i].cert_der_len)) == NULL)
			continue;
		if (usermap_check(p.cert, user, &um, why, sizeof(why)) != 0 ||
		    parse_chain(&ids[i], &p.chain) != 0) {
			pick_clear(&p);
			continue;
		}
		r = certval_verify(p.cert, p.chain, &cv, why, sizeof(why));
		ret = account_code(pamh, flags, user, r, why);
		goto out;
	}
	pam_syslog(pamh, LOG_NOTICE, "user %s: account: no certificate maps to the user", user);
	ret = o.nullok ? PAM_IGNORE : PAM_PERM_DENIED;
out:
	pick_clear(&p);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(agent);
	options_clear(&o);
	return ret;
}

/* ---------------------------------------------------------------------- */
/* password: the token PIN */

/* Asks a new PIN twice; PAM_AUTHTOK_ERR if they differ or are unusable. */
static int
ask_new_pin(pam_handle_t *pamh, int flags, const char *label, char **out)
{
	char prompt[512], *a = NULL, *b = NULL;
	int ret;

	*out = NULL;
	snprintf(prompt, sizeof(prompt), "New PIN for %s: ", label);
	if ((ret = ask_secret(pamh, prompt, &a)) != PAM_SUCCESS)
		goto out;
	snprintf(prompt, sizeof(prompt), "Repeat new PIN for %s: ", label);
	if ((ret = ask_secret(pamh, prompt, &b)) != PAM_SUCCESS)
		goto out;
	if (!pin_usable(a) || strlen(a) != strlen(b) || mtls_memcmp_ct(a, b, strlen(a)) != 0) {
		pam_syslog(pamh, LOG_NOTICE, "new PINs differ, are empty or too long");
		tell_user(pamh, flags, "The new PINs differ or are not usable.");
		ret = PAM_AUTHTOK_ERR;
		goto out;
	}
	*out = a;
	a = NULL;
	ret = PAM_SUCCESS;
out:
	mtls_secure_free(a);
	mtls_secure_free(b);
	return ret;
}

/*
 * PAM_PRELIM_CHECK: the agent answers and offers the user's identity.
 * PAM_UPDATE_AUTHTOK: old PIN (or, with `unblock`, the PUK) and the new PIN
 * twice through the conversation, then CHANGE/UNBLOCK at the agent for the
 * token of the identity that auth would pick.  PAM_OLDAUTHTOK/PAM_AUTHTOK
 * are neither read nor set: a PIN is not a password.
 */
PUBLIC int
pam_sm_chauthtok(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	struct mtls_agent_identity *ids = NULL;
	struct options o;
	struct pick p = { 0 };
	mtls_agent *agent = NULL;
	const char *user = NULL, *label;
	char prompt[512], *old = NULL, *new = NULL;
	size_t n = 0;
	uid_t uid;
	int r, ret, retries = -1;
	char tries[32];

	if (parse_args(pamh, &o, argc, argv) != 0)
		return PAM_SERVICE_ERR;
	if ((ret = get_user(pamh, &user, &uid)) != PAM_SUCCESS)
		goto out;
	if ((ret = agent_list(pamh, &o, user, uid, &agent, &ids, &n)) != PAM_SUCCESS)
		goto prelim_fail;
	if ((ret = select_identity(pamh, flags, &o, user, ids, n, &p)) != PAM_SUCCESS)
		goto prelim_fail;
	if (flags & PAM_PRELIM_CHECK) {
		ret = PAM_SUCCESS;
		goto out;
	}
	if (!(flags & PAM_UPDATE_AUTHTOK)) {
		ret = PAM_SERVICE_ERR;
		goto out;
	}
	label = p.id->token_label != NULL && *p.id->token_label != '\0' ? p.id->token_label
									: p.id->name;
	snprintf(prompt, sizeof(prompt),
		 o.unblock ? "PUK for %s: " : "Current PIN for %s: ", label);
	if ((ret = ask_secret(pamh, prompt, &old)) != PAM_SUCCESS)
		goto out;
	if (!pin_usable(old)) {
		ret = PAM_AUTHTOK_ERR;
		goto out;
	}
	if ((ret = ask_new_pin(pamh, flags, label, &new)) != PAM_SUCCESS)
		goto out;
	if (o.unblock)
		r = mtls_agent_unblock_pin(agent, p.id->name, old, new, &retries);
	else
		r = mtls_agent_change_pin(agent, p.id->name, old, new, &retries);
	switch (r) {
	case 0:
		pam_syslog(pamh, LOG_INFO, "user %s: token %s: PIN %s", user, label,
			   o.unblock ? "unblocked and set" : "changed");
		ret = PAM_SUCCESS;
		break;
	case MTLS_ERR_PIN_INCORRECT:
		pam_syslog(pamh, LOG_NOTICE, "user %s: token %s: wrong %s%s", user, label,
			   o.unblock ? "PUK" : "PIN", tries_text(retries, tries, sizeof(tries)));
		tell_user(pamh, flags, o.unblock ? "Wrong PUK." : "Wrong PIN.");
		ret = retries == 0 ? PAM_MAXTRIES : PAM_PERM_DENIED;
		break;
	case MTLS_ERR_PIN_LOCKED:
		pam_syslog(pamh, LOG_NOTICE, "user %s: token %s: %s locked", user, label,
			   o.unblock ? "PUK" : "PIN");
		tell_user(pamh, flags, "Locked.");
		ret = PAM_MAXTRIES;
		break;
	case MTLS_ERR_PIN_INVALID:
		pam_syslog(pamh, LOG_NOTICE, "user %s: token %s: new PIN refused", user, label);
		ret = PAM_AUTHTOK_ERR;
		break;
	default:
		pam_syslog(pamh, LOG_ERR, "user %s: token %s: PIN change failed: %s (%s)", user,
			   label, mtls_agent_strerror(r), mtls_agent_last_message());
		ret = PAM_AUTHTOK_ERR;
		break;
	}
	goto out;
prelim_fail:
	/* In the preliminary pass "cannot do it now" is PAM_TRY_AGAIN. */
	if ((flags & PAM_PRELIM_CHECK) && ret != PAM_IGNORE)
		ret = PAM_TRY_AGAIN;
	else if (ret != PAM_IGNORE && ret != PAM_BUF_ERR && ret != PAM_SERVICE_ERR)
		ret = PAM_AUTHTOK_ERR;
out:
	mtls_secure_free(old);
	mtls_secure_free(new);
	pick_clear(&p);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(agent);
	options_clear(&o);
	return ret;
}

/* ---------------------------------------------------------------------- */
/* session: nothing to do, nothing exported */

PUBLIC int
pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	return PAM_SUCCESS;
}

PUBLIC int
pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	return PAM_SUCCESS;
}
