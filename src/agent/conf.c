/*
 * conf.c - reading the agent's configuration file and PIN files.  See
 * conf.h and docs/CONFIGURATION.md for the format.
 *
 * The parser is strict on purpose: the file decides which keys the agent
 * will use and which PKCS#11 module it loads, so anything it does not
 * understand exactly is an error with "source:line: reason", never a
 * guess.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <p11-kit/uri.h>

#include "conf.h"
#include "log.h"
#include "mtls-agent.h"
#include "safefile.h"
#include "secmem.h"

/* How much of a user-supplied string an error message shows. */
#define SHOW_MAX 80

struct parser {
	const char *source;
	size_t line;
	struct config *cfg;
	struct config_identity *id; /* current [identity] section or NULL */
	size_t id_line;		    /* line of its header */
	uint64_t seen;		    /* keys already set in this section (bit = index in keys[]) */
	char *err;
	size_t err_len;
};

static void __attribute__((format(printf, 3, 4)))
errf(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || err_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

/* "source:line: reason" for the given line; returns MTLS_ERR_CONFIG. */
static int __attribute__((format(printf, 3, 4)))
perr_at(struct parser *p, size_t line, const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	errf(p->err, p->err_len, "%s:%zu: %s", p->source, line, reason);
	return MTLS_ERR_CONFIG;
}

#define perr(p, ...) perr_at((p), (p)->line, __VA_ARGS__)

static int
palloc(struct parser *p)
{
	errf(p->err, p->err_len, "%s:%zu: out of memory", p->source, p->line);
	return MTLS_ERR_ALLOC;
}

/*
 * Copies s for an error message: control characters become '?' so a
 * hostile file cannot put terminal escapes into logs, and long strings
 * are cut.
 */
static const char *
show(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < len && i < SHOW_MAX; i++)
		buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	if (s[i] != '\0' && i >= 3)
		memcpy(buf + i - 3, "...", 3);
	buf[i] = '\0';
	return buf;
}

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Trims in place; returns the first non-blank character. */
static char *
trim(char *s)
{
	size_t n;

	while (is_space(*s))
		s++;
	n = strlen(s);
	while (n > 0 && is_space(s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* --- values -------------------------------------------------------------- */

static int
set_string(struct parser *p, char **dst, const char *v)
{
	char *s;

	if ((s = strdup(v)) == NULL)
		return palloc(p);
	free(*dst);
	*dst = s;
	return 0;
}

void
config_peers_free(struct config_peer *peers, size_t n)
{
	size_t i;

	if (peers == NULL)
		return;
	for (i = 0; i < n; i++)
		free(peers[i].exe);
	free(peers);
}

static int
parse_uint(struct parser *p, const char *key, const char *v, unsigned long min, unsigned long max,
	   unsigned int *out)
{
	char shown[SHOW_MAX + 1];
	unsigned long n;
	char *end = NULL;

	/* strtoul alone would accept " 5", "+5" and "-5" (as a huge value). */
	if (v[0] < '0' || v[0] > '9')
		goto bad;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
		goto bad;
	*out = (unsigned int)n;
	return 0;
bad:
	return perr(p, "%s: '%s' is not a number from %lu to %lu", key,
		    show(v, shown, sizeof(shown)), min, max);
}

static int
parse_bool(struct parser *p, const char *key, const char *v, int *out)
{
	char shown[SHOW_MAX + 1];

	if (strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0) {
		*out = 1;
		return 0;
	}
	if (strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0) {
		*out = 0;
		return 0;
	}
	return perr(p, "%s: '%s' is not a boolean (yes, no, true, false, 1, 0)", key,
		    show(v, shown, sizeof(shown)));
}

static int
purpose_from_config_name(const char *name)
{
	/* Short forms for the file; the long ones are the protocol's names. */
	static const struct {
		const char *name;
		int purpose;
	} aliases[] = {
		{ "tls13", MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV },
		{ "tls12", MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV },
		{ "pam", MTLS_AGENT_PURPOSE_PAM_CHALLENGE },
		{ "ssh-userauth", MTLS_AGENT_PURPOSE_SSH },
	};
	size_t i;

	for (i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (strcmp(aliases[i].name, name) == 0)
			return aliases[i].purpose;
	return mtls_agent_purpose_from_name(name);
}

/* "tls13, pam" -> bits.  v is modified (it is the parser's line copy). */
static int
parse_purposes(struct parser *p, const char *key, char *v, uint32_t *out)
{
	char shown[SHOW_MAX + 1], *item, *next;
	uint32_t bits = 0;
	int purpose;

	for (item = v; item != NULL; item = next) {
		if ((next = strchr(item, ',')) != NULL)
			*next++ = '\0';
		item = trim(item);
		if (*item == '\0')
			return perr(p, "%s: empty purpose in list", key);
		if ((purpose = purpose_from_config_name(item)) <= 0 || purpose > 31)
			return perr(p,
				    "%s: unknown purpose '%s' (known: tls13, "
				    "tls12, pam, raw-digest, ssh, ssh-sig, csr, pkcs11-digest)",
				    key, show(item, shown, sizeof(shown)));
		bits |= 1U << purpose;
	}
	*out = bits;
	return 0;
}

/*
 * Checks an RFC 7512 URI with p11-kit.  A PIN must not come from the
 * URI: pin-value would put it in a file that only needs to be
 * non-writable, and pin-source would be silently ignored by the agent.
 * Unrecognized attributes are refused because they are most likely
 * typos that would widen what the URI matches.
 */
static int
check_uri(struct parser *p, const char *key, const char *v, int private_key)
{
	P11KitUri *uri;
	CK_ATTRIBUTE_PTR cls;
	CK_OBJECT_CLASS c;
	int r, pr;

	if ((uri = p11_kit_uri_new()) == NULL)
		return palloc(p);
	if ((pr = p11_kit_uri_parse(v, P11_KIT_URI_FOR_ANY, uri)) != P11_KIT_URI_OK) {
		r = perr(p, "%s: invalid PKCS#11 URI: %s", key, p11_kit_uri_message(pr));
		goto out;
	}
	if (p11_kit_uri_any_unrecognized(uri)) {
		r = perr(p, "%s: PKCS#11 URI has an unrecognized attribute", key);
		goto out;
	}
	if (p11_kit_uri_get_pin_value(uri) != NULL) {
		r = perr(p,
			 "%s: PKCS#11 URI contains pin-value; put the PIN "
			 "in a pin-file instead",
			 key);
		goto out;
	}
	if (p11_kit_uri_get_pin_source(uri) != NULL) {
		r = perr(p,
			 "%s: pin-source in PKCS#11 URI is not supported; "
			 "use pin-file",
			 key);
		goto out;
	}
	if (private_key && (cls = p11_kit_uri_get_attribute(uri, CKA_CLASS)) != NULL) {
		if (cls->ulValueLen != sizeof(c)) {
			r = perr(p, "%s: bad object type in PKCS#11 URI", key);
			goto out;
		}
		memcpy(&c, cls->pValue, sizeof(c));
		if (c != CKO_PRIVATE_KEY) {
			r = perr(p,
				 "%s: PKCS#11 URI names an object that is "
				 "not a private key (use type=private or no type)",
				 key);
			goto out;
		}
	}
	r = 0;
out:
	p11_kit_uri_free(uri);
	return r;
}

static int
check_abs_path(struct parser *p, const char *key, const char *v)
{
	char shown[SHOW_MAX + 1];

	/* The agent's working directory is not the file's: be explicit. */
	if (v[0] != '/')
		return perr(p, "%s: '%s' is not an absolute path", key,
			    show(v, shown, sizeof(shown)));
	return 0;
}

/* --- keys ---------------------------------------------------------------- */

static int
set_socket(struct parser *p, char *v)
{
	struct sockaddr_un sun;
	int r;

	if ((r = check_abs_path(p, "socket", v)) != 0)
		return r;
	if (strlen(v) >= sizeof(sun.sun_path))
		return perr(p, "socket: path longer than %zu bytes", sizeof(sun.sun_path) - 1);
	return set_string(p, &p->cfg->socket_path, v);
}

static int
set_ssh_socket(struct parser *p, char *v)
{
	struct sockaddr_un sun;
	int r;

	if (strcmp(v, "off") == 0) {
		p->cfg->ssh_socket_off = 1;
		free(p->cfg->ssh_socket);
		p->cfg->ssh_socket = NULL;
		return 0;
	}
	if ((r = check_abs_path(p, "ssh-socket", v)) != 0)
		return r;
	if (strlen(v) >= sizeof(sun.sun_path))
		return perr(p, "ssh-socket: path longer than %zu bytes", sizeof(sun.sun_path) - 1);
	p->cfg->ssh_socket_off = 0;
	return set_string(p, &p->cfg->ssh_socket, v);
}

static int
set_module(struct parser *p, char *v)
{
	return set_string(p, &p->cfg->module, v);
}

static int
set_token(struct parser *p, char *v)
{
	int r;

	if ((r = check_uri(p, "token", v, 0)) != 0)
		return r;
	return set_string(p, &p->cfg->token_uri, v);
}

static int
set_default_purposes(struct parser *p, char *v)
{
	return parse_purposes(p, "purposes", v, &p->cfg->default_purposes);
}

static int
set_login_timeout(struct parser *p, char *v)
{
	return parse_uint(p, "login-timeout", v, 0, CONFIG_MAX_LOGIN_TIMEOUT,
			  &p->cfg->login_timeout);
}

static int
set_allow_root(struct parser *p, char *v)
{
	return parse_bool(p, "allow-root", v, &p->cfg->allow_root);
}

static int
set_max_connections(struct parser *p, char *v)
{
	return parse_uint(p, "max-connections", v, CONFIG_MIN_MAX_CONNECTIONS,
			  CONFIG_MAX_MAX_CONNECTIONS, &p->cfg->max_connections);
}

static int
set_request_timeout(struct parser *p, char *v)
{
	return parse_uint(p, "request-timeout", v, CONFIG_MIN_REQUEST_TIMEOUT,
			  CONFIG_MAX_REQUEST_TIMEOUT, &p->cfg->request_timeout);
}

static int
set_log_level(struct parser *p, char *v)
{
	static const struct {
		const char *name;
		enum log_level level;
	} levels[] = {
		{ "error", LOG_LEVEL_ERROR },
		{ "warning", LOG_LEVEL_WARN },
		{ "info", LOG_LEVEL_INFO },
		{ "debug", LOG_LEVEL_DEBUG },
	};
	char shown[SHOW_MAX + 1];
	size_t i;

	for (i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		if (strcmp(levels[i].name, v) == 0) {
			p->cfg->log_level = (int)levels[i].level;
			return 0;
		}
	}
	return perr(p, "log-level: '%s' is not one of error, warning, info, debug",
		    show(v, shown, sizeof(shown)));
}

static int
set_id_key(struct parser *p, char *v)
{
	int r;

	if ((r = check_uri(p, "key", v, 1)) != 0)
		return r;
	return set_string(p, &p->id->key_uri, v);
}

static int
set_id_certificate(struct parser *p, char *v)
{
	int r;

	if ((r = check_abs_path(p, "certificate", v)) != 0)
		return r;
	return set_string(p, &p->id->cert_file, v);
}

static int
set_id_chain(struct parser *p, char *v)
{
	int r;

	if ((r = check_abs_path(p, "chain", v)) != 0)
		return r;
	return set_string(p, &p->id->chain_file, v);
}

static int
set_id_pin_file(struct parser *p, char *v)
{
	int r;

	if ((r = check_abs_path(p, "pin-file", v)) != 0)
		return r;
	return set_string(p, &p->id->pin_file, v);
}

static int
set_id_purposes(struct parser *p, char *v)
{
	return parse_purposes(p, "purposes", v, &p->id->purposes);
}

static int
set_module_dirs(struct parser *p, char *v)
{
	char shown[SHOW_MAX + 1], *copy, *dir, *save = NULL;
	int r = 0;

	if ((copy = strdup(v)) == NULL)
		return palloc(p);
	for (dir = strtok_r(copy, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
		if (dir[0] != '/') {
			r = perr(p, "module-dirs: '%s' is not an absolute directory",
				 show(dir, shown, sizeof(shown)));
			break;
		}
	}
	free(copy);
	if (r != 0)
		return r;
	return set_string(p, &p->cfg->module_dirs, v);
}

static int
set_askpass(struct parser *p, char *v)
{
	int r;

	if ((r = check_abs_path(p, "askpass", v)) != 0)
		return r;
	return set_string(p, &p->cfg->askpass, v);
}

static int
set_confirm_timeout(struct parser *p, char *v)
{
	return parse_uint(p, "confirm-timeout", v, 1, 600, &p->cfg->confirm_timeout);
}

static int
set_busy_poll(struct parser *p, char *v)
{
	return parse_uint(p, "busy-poll", v, 0, CONFIG_MAX_BUSY_POLL, &p->cfg->busy_poll);
}

static int
set_token_timeout(struct parser *p, char *v)
{
	return parse_uint(p, "token-timeout", v, 1, 3600, &p->cfg->token_timeout);
}

static int
set_expiry_warning_days(struct parser *p, char *v)
{
	return parse_uint(p, "expiry-warning-days", v, 0, 3650, &p->cfg->expiry_warning_days);
}

/* read-only (enrollment): no key generation or certificate import. */
static int
set_read_only(struct parser *p, char *v)
{
	return parse_bool(p, "read-only", v, &p->cfg->read_only);
}

static int
set_id_read_only(struct parser *p, char *v)
{
	return parse_bool(p, "read-only", v, &p->id->read_only);
}

static int
set_id_confirm(struct parser *p, char *v)
{
	return parse_bool(p, "confirm", v, &p->id->confirm);
}

static int
set_id_lifetime(struct parser *p, char *v)
{
	return parse_uint(p, "lifetime", v, 0, CONFIG_MAX_LOGIN_TIMEOUT, &p->id->lifetime);
}

static int
set_id_idle_logout(struct parser *p, char *v)
{
	return parse_uint(p, "idle-logout", v, 0, CONFIG_MAX_LOGIN_TIMEOUT, &p->id->idle_logout);
}

static int
set_id_rate_limit(struct parser *p, char *v)
{
	return parse_uint(p, "rate-limit", v, 0, 1000000, &p->id->rate_limit);
}

/* One entry of ssh-sig-namespaces: what ssh-keygen -Y sign -n takes. */
static int
ssh_namespace_ok(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("@._-", s[i]) != NULL))
			return 0;
	return i > 0 && i <= 64;
}

/* SHA256: and 43 base64 characters, as ssh-keygen -l prints it. */
static int
ssh_fingerprint_ok(const char *s)
{
	size_t i;

	if (strncmp(s, "SHA256:", 7) != 0 || strlen(s) != 7 + 43)
		return 0;
	for (i = 7; s[i] != '\0'; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '+' || s[i] == '/'))
			return 0;
	return 1;
}

/* known-hosts=/abs/file or known-hosts=/abs/file:PATTERN */
static int
ssh_known_hosts_ok(struct parser *p, const char *key, char *s)
{
	char shown[SHOW_MAX + 1], *pat;
	size_t i;
	int r;

	if ((pat = strchr(s, ':')) != NULL)
		*pat = '\0';
	r = check_abs_path(p, key, s);
	if (pat != NULL)
		*pat++ = ':';
	if (r != 0)
		return r;
	if (pat == NULL)
		return 0;
	for (i = 0; pat[i] != '\0'; i++)
		if (!((pat[i] >= 'A' && pat[i] <= 'Z') || (pat[i] >= 'a' && pat[i] <= 'z') ||
		      (pat[i] >= '0' && pat[i] <= '9') || strchr(".-_*?[]", pat[i]) != NULL))
			return perr(p,
				    "%s: host pattern '%s' has characters other than A-Z a-z 0-9 . "
				    "- _ * ? [ ]",
				    key, show(pat, shown, sizeof(shown)));
	if (i == 0)
		return perr(p, "%s: empty host pattern after ':'", key);
	return 0;
}

/* A comma-separated list, each item checked, kept as "a,b,c". */
static int
set_ssh_list(struct parser *p, const char *key, char *v, int destinations, char **out)
{
	char shown[SHOW_MAX + 1], *item, *next, *joined = NULL;
	size_t n = 0, len = 0;
	int r = 0;

	if ((joined = calloc(1, strlen(v) + 1)) == NULL)
		return palloc(p);
	for (item = v; item != NULL; item = next) {
		if ((next = strchr(item, ',')) != NULL)
			*next++ = '\0';
		item = trim(item);
		if (*item == '\0') {
			r = perr(p, "%s: empty entry in list", key);
			goto out;
		}
		if (++n > CONFIG_MAX_SSH_LIST) {
			r = perr(p, "%s: more than %u entries", key, CONFIG_MAX_SSH_LIST);
			goto out;
		}
		if (!destinations && !ssh_namespace_ok(item)) {
			r = perr(p, "%s: '%s' is not a namespace (A-Z a-z 0-9 @ . _ -, at most 64)",
				 key, show(item, shown, sizeof(shown)));
			goto out;
		}
		if (destinations && strncmp(item, "known-hosts=", 12) == 0) {
			if ((r = ssh_known_hosts_ok(p, key, item + 12)) != 0)
				goto out;
		} else if (destinations && !ssh_fingerprint_ok(item)) {
			r = perr(p,
				 "%s: '%s' is neither a SHA256:... fingerprint (as ssh-keygen -l "
				 "prints it) nor known-hosts=FILE[:PATTERN]",
				 key, show(item, shown, sizeof(shown)));
			goto out;
		}
		if (len > 0)
			joined[len++] = ',';
		memcpy(joined + len, item, strlen(item));
		len += strlen(item);
	}
	free(*out);
	*out = joined;
	joined = NULL;
out:
	free(joined);
	return r;
}

static int
set_id_ssh_sig_namespaces(struct parser *p, char *v)
{
	return set_ssh_list(p, "ssh-sig-namespaces", v, 0, &p->id->ssh_sig_namespaces);
}

static int
set_id_ssh_destinations(struct parser *p, char *v)
{
	return set_ssh_list(p, "ssh-destinations", v, 1, &p->id->ssh_destinations);
}

static int
set_id_ssh_forwarding(struct parser *p, char *v)
{
	return parse_bool(p, "ssh-forwarding", v, &p->id->ssh_forwarding);
}

static int
set_id_ssh_certificate(struct parser *p, char *v)
{
	int r;

	if ((r = check_abs_path(p, "ssh-certificate", v)) != 0)
		return r;
	return set_string(p, &p->id->ssh_certificate, v);
}

void
config_servers_free(struct config_server *servers, size_t n)
{
	size_t i;

	if (servers == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(servers[i].pattern);
		free(servers[i].ca_file);
	}
	free(servers);
}

/* A host name (a-z 0-9 - labels joined by dots), or "*." + one. */
static int
server_pattern_ok(const char *s)
{
	size_t i, label = 0;

	if (strncmp(s, "*.", 2) == 0)
		s += 2;
	if (*s == '\0' || strlen(s) > 253)
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '.') {
			if (label == 0 || s[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      (s[i] == '-' && label > 0)) ||
		    ++label > 63)
			return 0;
	}
	return label > 0 && s[i - 1] != '-';
}

/* "sha256:" + the standard base64 of 32 bytes (44 characters, one '='). */
static int
parse_pin(const char *v, unsigned char pin[32])
{
	unsigned char out[33];

	if (strncmp(v, "sha256:", 7) != 0)
		return 0;
	v += 7;
	if (strlen(v) != 44 || v[43] != '=' || v[42] == '=')
		return 0;
	if (EVP_DecodeBlock(out, (const unsigned char *)v, 44) != 33 || out[32] != 0)
		return 0;
	memcpy(pin, out, 32);
	return 1;
}

/* "servers = NAME-PATTERN [ca=FILE] [pin=sha256:BASE64]..." (repeatable) */
static int
set_id_servers(struct parser *p, char *v)
{
	struct config_identity *id = p->id;
	struct config_server srv, *all;
	char shown[SHOW_MAX + 1], *tok, *save = NULL;
	size_t i;
	int r = 0;

	memset(&srv, 0, sizeof(srv));
	if (id->n_servers >= CONFIG_MAX_SERVERS)
		return perr(p, "servers: more than %u lines in [identity %s]", CONFIG_MAX_SERVERS,
			    id->name);
	for (tok = strtok_r(v, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save)) {
		if (srv.pattern == NULL) {
			for (i = 0; tok[i] != '\0'; i++)
				if (tok[i] >= 'A' && tok[i] <= 'Z')
					tok[i] = (char)(tok[i] - 'A' + 'a');
			if (!server_pattern_ok(tok)) {
				r = perr(p,
					 "servers: '%s' is not a host name or *.NAME pattern (the "
					 "first word is the server name)",
					 show(tok, shown, sizeof(shown)));
				goto out;
			}
			if ((srv.pattern = strdup(tok)) == NULL) {
				r = palloc(p);
				goto out;
			}
		} else if (strncmp(tok, "ca=", 3) == 0) {
			if (srv.ca_file != NULL) {
				r = perr(p, "servers: ca= given twice on one line");
				goto out;
			}
			if ((r = check_abs_path(p, "servers: ca", tok + 3)) != 0)
				goto out;
			if ((srv.ca_file = strdup(tok + 3)) == NULL) {
				r = palloc(p);
				goto out;
			}
		} else if (strncmp(tok, "pin=", 4) == 0) {
			if (srv.n_pins >= CONFIG_MAX_PINS) {
				r = perr(p, "servers: more than %u pins on one line",
					 CONFIG_MAX_PINS);
				goto out;
			}
			if (!parse_pin(tok + 4, srv.pins[srv.n_pins])) {
				r = perr(p,
					 "servers: '%s' is not pin=sha256:BASE64 (the base64 "
					 "SHA-256 of the server key's SubjectPublicKeyInfo)",
					 show(tok, shown, sizeof(shown)));
				goto out;
			}
			srv.n_pins++;
		} else {
			r = perr(p, "servers: unknown option '%s' (ca=FILE or pin=sha256:BASE64)",
				 show(tok, shown, sizeof(shown)));
			goto out;
		}
	}
	if (srv.pattern == NULL) {
		r = perr(p, "servers: no server name");
		goto out;
	}
	if (srv.ca_file == NULL && srv.n_pins == 0) {
		r = perr(p,
			 "servers: %s: say how the server is recognised: ca=FILE and/or "
			 "pin=sha256:BASE64",
			 srv.pattern);
		goto out;
	}
	if ((all = reallocarray(id->servers, id->n_servers + 1, sizeof(*all))) == NULL) {
		r = palloc(p);
		goto out;
	}
	id->servers = all;
	all[id->n_servers++] = srv;
	memset(&srv, 0, sizeof(srv));
out:
	free(srv.pattern);
	free(srv.ca_file);
	return r;
}

/* "peers = uid:1000, gid:100, exe:/usr/bin/curl" */
static int
set_id_peers(struct parser *p, char *v)
{
	struct config_identity *id = p->id;
	char shown[SHOW_MAX + 1], *item, *save = NULL, *val;
	struct config_peer *peers = NULL, *pe;
	size_t n = 0, cap = 0; /* cap: entries allocated and zeroed */
	unsigned int num;
	int r = 0;

	for (item = strtok_r(v, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
		item = trim(item);
		if (n >= CONFIG_MAX_PEERS) {
			r = perr(p, "peers: more than %u entries", CONFIG_MAX_PEERS);
			goto out;
		}
		if ((pe = reallocarray(peers, n + 1, sizeof(*peers))) == NULL) {
			r = palloc(p);
			goto out;
		}
		peers = pe;
		pe = &peers[n];
		memset(pe, 0, sizeof(*pe));
		cap = n + 1;
		if ((val = strchr(item, ':')) == NULL) {
			r = perr(p, "peers: '%s' is not uid:N, gid:N or exe:/path",
				 show(item, shown, sizeof(shown)));
			goto out;
		}
		*val++ = '\0';
		if (strcmp(item, "uid") == 0 || strcmp(item, "gid") == 0) {
			if ((r = parse_uint(p, "peers", val, 0, 0xfffffffeU, &num)) != 0)
				goto out;
			pe->kind = item[0] == 'u' ? PEER_UID : PEER_GID;
			pe->id = num;
		} else if (strcmp(item, "exe") == 0) {
			if ((r = check_abs_path(p, "peers", val)) != 0)
				goto out;
			pe->kind = PEER_EXE;
			if ((pe->exe = strdup(val)) == NULL) {
				r = palloc(p);
				goto out;
			}
		} else {
			r = perr(p, "peers: unknown kind '%s' (uid, gid or exe)",
				 show(item, shown, sizeof(shown)));
			goto out;
		}
		n++;
	}
	if (n == 0) {
		r = perr(p, "peers: empty list");
		goto out;
	}
	config_peers_free(id->peers, id->n_peers);
	id->peers = peers;
	id->n_peers = n;
	peers = NULL;
out:
	config_peers_free(peers, cap);
	return r;
}

enum scope { GLOBAL, IDENTITY };

static const struct key_def {
	const char *name;
	enum scope scope;
	int (*set)(struct parser *, char *);
} keys[] = {
	{ "socket", GLOBAL, set_socket },
	{ "ssh-socket", GLOBAL, set_ssh_socket },
	{ "module", GLOBAL, set_module },
	{ "token", GLOBAL, set_token },
	{ "purposes", GLOBAL, set_default_purposes },
	{ "login-timeout", GLOBAL, set_login_timeout },
	{ "allow-root", GLOBAL, set_allow_root },
	{ "max-connections", GLOBAL, set_max_connections },
	{ "request-timeout", GLOBAL, set_request_timeout },
	{ "log-level", GLOBAL, set_log_level },
	{ "module-dirs", GLOBAL, set_module_dirs },
	{ "askpass", GLOBAL, set_askpass },
	{ "confirm-timeout", GLOBAL, set_confirm_timeout },
	{ "token-timeout", GLOBAL, set_token_timeout },
	{ "busy-poll", GLOBAL, set_busy_poll },
	{ "read-only", GLOBAL, set_read_only },
	{ "expiry-warning-days", GLOBAL, set_expiry_warning_days },
	{ "key", IDENTITY, set_id_key },
	{ "certificate", IDENTITY, set_id_certificate },
	{ "chain", IDENTITY, set_id_chain },
	{ "pin-file", IDENTITY, set_id_pin_file },
	{ "purposes", IDENTITY, set_id_purposes },
	{ "peers", IDENTITY, set_id_peers },
	{ "confirm", IDENTITY, set_id_confirm },
	{ "lifetime", IDENTITY, set_id_lifetime },
	{ "idle-logout", IDENTITY, set_id_idle_logout },
	{ "rate-limit", IDENTITY, set_id_rate_limit },
	{ "ssh-sig-namespaces", IDENTITY, set_id_ssh_sig_namespaces },
	{ "ssh-destinations", IDENTITY, set_id_ssh_destinations },
	{ "ssh-forwarding", IDENTITY, set_id_ssh_forwarding },
	{ "ssh-certificate", IDENTITY, set_id_ssh_certificate },
	{ "read-only", IDENTITY, set_id_read_only },
	{ "servers", IDENTITY, set_id_servers },
};
_Static_assert(sizeof(keys) / sizeof(keys[0]) <= 64, "conf.c: `seen` has a bit per key");

/* --- lines --------------------------------------------------------------- */

static int
valid_name(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (i >= CONFIG_MAX_NAME)
			return 0;
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	}
	return i > 0;
}

/* The section being left must be complete. */
static int
end_section(struct parser *p)
{
	if (p->id != NULL && p->id->key_uri == NULL)
		return perr_at(p, p->id_line, "[identity %s] has no 'key'", p->id->name);
	/* A digest could be any handshake's: binding would mean nothing. */
	if (p->id != NULL && p->id->n_servers > 0 &&
	    (p->id->purposes & (1U << MTLS_AGENT_PURPOSE_RAW_DIGEST)))
		return perr_at(p, p->id_line,
			       "[identity %s] has 'servers' and the raw-digest purpose: a raw "
			       "digest cannot be bound to a server",
			       p->id->name);
	if (p->id != NULL && p->id->n_servers > 0 &&
	    (p->id->purposes & (1U << MTLS_AGENT_PURPOSE_PKCS11_DIGEST)))
		return perr_at(p, p->id_line,
			       "[identity %s] has 'servers' and the pkcs11-digest purpose: a "
			       "digest from mtls-agent-pkcs11.so cannot be bound to a server",
			       p->id->name);
	return 0;
}

static int
section(struct parser *p, char *s)
{
	struct config *cfg = p->cfg;
	struct config_identity *ids, *id;
	char shown[SHOW_MAX + 1], *type, *name;
	size_t len = strlen(s), i;
	int r;

	if ((r = end_section(p)) != 0)
		return r;
	p->id = NULL;
	p->seen = 0;
	if (len < 2 || s[len - 1] != ']')
		return perr(p, "section header without closing ']'");
	s[len - 1] = '\0';
	type = trim(s + 1);
	for (name = type; *name != '\0' && !is_space(*name); name++)
		;
	if (*name != '\0')
		*name++ = '\0';
	name = trim(name);
	if (strcmp(type, "identity") != 0)
		return perr(p, "unknown section type '[%s]' (only [identity NAME])",
			    show(type, shown, sizeof(shown)));
	if (*name == '\0')
		return perr(p, "[identity] section without a name");
	if (!valid_name(name))
		return perr(p,
			    "invalid identity name '%s' (1 to %u of A-Z a-z "
			    "0-9 . _ -)",
			    show(name, shown, sizeof(shown)), CONFIG_MAX_NAME);
	for (i = 0; i < cfg->n_identities; i++)
		if (strcmp(cfg->identities[i].name, name) == 0)
			return perr(p, "duplicate identity name '%s'", name);

	if (cfg->n_identities >= SIZE_MAX / sizeof(*ids) - 1)
		return palloc(p);
	ids = realloc(cfg->identities, (cfg->n_identities + 1) * sizeof(*ids));
	if (ids == NULL)
		return palloc(p);
	cfg->identities = ids;
	id = &ids[cfg->n_identities];
	memset(id, 0, sizeof(*id));
	if ((id->name = strdup(name)) == NULL)
		return palloc(p);
	id->purposes = CONFIG_DEFAULT_PURPOSES;
	cfg->n_identities++;
	p->id = id;
	p->id_line = p->line;
	return 0;
}

static int
assignment(struct parser *p, char *s)
{
	char shown[SHOW_MAX + 1], *eq, *key, *v;
	enum scope scope = p->id != NULL ? IDENTITY : GLOBAL;
	size_t i, vlen;
	int other_scope = 0;

	if ((eq = strchr(s, '=')) == NULL)
		return perr(p, "expected 'key = value', found no '='");
	*eq = '\0';
	key = trim(s);
	v = trim(eq + 1);
	if (*key == '\0')
		return perr(p, "missing key before '='");

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (strcmp(keys[i].name, key) != 0)
			continue;
		if (keys[i].scope == scope)
			break;
		other_scope = 1;
	}
	if (i == sizeof(keys) / sizeof(keys[0])) {
		if (other_scope && scope == IDENTITY)
			return perr(p,
				    "unknown key '%s' in [identity %s] (global "
				    "keys go before the first section)",
				    key, p->id->name);
		if (other_scope)
			return perr(p,
				    "unknown key '%s' outside an [identity] "
				    "section",
				    key);
		return perr(p, "unknown key '%s'", show(key, shown, sizeof(shown)));
	}
	/* The table is short: its index is the key's bit in `seen` (at
	 * most 64 keys, checked where the table ends). */
	if ((p->seen & ((uint64_t)1 << i)) && keys[i].set != set_id_servers) {
		if (scope == IDENTITY)
			return perr(p, "duplicate key '%s' in [identity %s]", key, p->id->name);
		return perr(p, "duplicate key '%s'", key);
	}
	p->seen |= (uint64_t)1 << i;

	/* "..." keeps leading and trailing spaces; there are no escapes. */
	if (*v == '"') {
		vlen = strlen(v);
		if (vlen < 2 || v[vlen - 1] != '"')
			return perr(p, "%s: unterminated quoted value", key);
		v[vlen - 1] = '\0';
		v++;
		if (strchr(v, '"') != NULL)
			return perr(p, "%s: '\"' inside a quoted value", key);
	}
	if (*v == '\0')
		return perr(p, "%s: empty value", key);
	return keys[i].set(p, v);
}

static int
parse_line(struct parser *p, char *line)
{
	char *s = trim(line);

	if (*s == '\0' || *s == '#')
		return 0;
	if (*s == '[')
		return section(p, s);
	return assignment(p, s);
}

/* text need not be NUL-terminated: a NUL inside len is an error. */
static int
parse_text(const char *text, size_t len, const char *source, struct config **out, char *err,
	   size_t err_len)
{
	struct parser p;
	struct config *cfg = NULL;
	char line[CONFIG_MAX_LINE + 2];
	const char *start, *nl;
	size_t pos = 0, n, i;
	int r;

	*out = NULL;
	if ((r = config_defaults(&cfg)) != 0) {
		errf(err, err_len, "%s: out of memory", source);
		return r;
	}
	memset(&p, 0, sizeof(p));
	p.source = source;
	p.cfg = cfg;
	p.err = err;
	p.err_len = err_len;

	while (pos < len) {
		p.line++;
		start = text + pos;
		nl = memchr(start, '\n', len - pos);
		n = nl != NULL ? (size_t)(nl - start) : len - pos;
		pos += n + (nl != NULL);
		/* The limit is on the line's content, CRLF files alike. */
		if (n > 0 && start[n - 1] == '\r')
			n--;
		if (n > CONFIG_MAX_LINE) {
			r = perr(&p, "line longer than %u bytes", CONFIG_MAX_LINE);
			goto out;
		}
		if (memchr(start, '\0', n) != NULL) {
			r = perr(&p, "NUL byte in line");
			goto out;
		}
		for (i = 0; i < n; i++) {
			if (((unsigned char)start[i] < 0x20 && start[i] != '\t') ||
			    start[i] == 0x7f) {
				r = perr(&p, "control character 0x%02x in line",
					 (unsigned int)(unsigned char)start[i]);
				goto out;
			}
		}
		memcpy(line, start, n);
		line[n] = '\0';
		if ((r = parse_line(&p, line)) != 0)
			goto out;
	}
	if ((r = end_section(&p)) != 0)
		goto out;
	*out = cfg;
	cfg = NULL;
	r = 0;
out:
	config_free(cfg);
	return r;
}

/* --- public -------------------------------------------------------------- */

int
config_defaults(struct config **out)
{
	struct config *cfg;

	if (out == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	*out = NULL;
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL)
		return MTLS_ERR_ALLOC;
	if ((cfg->module = strdup(MTLS_DEFAULT_MODULE)) == NULL ||
	    (cfg->token_uri = strdup(CONFIG_DEFAULT_TOKEN_URI)) == NULL ||
	    (cfg->module_dirs = strdup(CONFIG_DEFAULT_MODULE_DIRS)) == NULL) {
		config_free(cfg);
		return MTLS_ERR_ALLOC;
	}
	cfg->socket_path = NULL;
	cfg->default_purposes = CONFIG_DEFAULT_PURPOSES;
	cfg->login_timeout = CONFIG_DEFAULT_LOGIN_TIMEOUT;
	cfg->allow_root = 0;
	cfg->max_connections = CONFIG_DEFAULT_MAX_CONNECTIONS;
	cfg->request_timeout = CONFIG_DEFAULT_REQUEST_TIMEOUT;
	cfg->confirm_timeout = CONFIG_DEFAULT_CONFIRM_TIMEOUT;
	cfg->token_timeout = CONFIG_DEFAULT_TOKEN_TIMEOUT;
	cfg->busy_poll = CONFIG_DEFAULT_BUSY_POLL;
	cfg->expiry_warning_days = CONFIG_DEFAULT_EXPIRY_WARNING_DAYS;
	cfg->log_level = (int)LOG_LEVEL_INFO;
	*out = cfg;
	return 0;
}

int
config_parse(const char *text, const char *source, struct config **out, char *err, size_t err_len)
{
	if (err != NULL && err_len > 0)
		err[0] = '\0';
	if (out == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	*out = NULL;
	if (text == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	return parse_text(text, strlen(text), source != NULL ? source : "(config)", out, err,
			  err_len);
}

/*
 * Words a refusal from safefile_read() as the agent always has, for the
 * configuration (pin 0) or a PIN file (pin 1, "pin-file " before the path).
 */
static void
file_refusal(const struct safefile *f, int pin, const char *path, size_t max, char *err,
	     size_t err_len)
{
	const char *what = pin ? "pin-file " : "";

	switch (f->fault) {
	case SAFEFILE_MISSING:
	case SAFEFILE_SYMLINK:
	case SAFEFILE_OPEN:
		errf(err, err_len, "%s%s: cannot open: %s", what, path, strerror(f->err));
		break;
	case SAFEFILE_STAT:
		errf(err, err_len, "%s%s: cannot stat: %s", what, path, strerror(f->err));
		break;
	case SAFEFILE_NOT_REGULAR:
		errf(err, err_len, "%s%s: not a regular file", what, path);
		break;
	case SAFEFILE_OWNER:
		errf(err, err_len, "%s%s: owned by uid %lu, %s (uid %lu)", what, path,
		     (unsigned long)f->uid,
		     pin ? "not by the agent's user" : "neither root nor the agent's user",
		     (unsigned long)geteuid());
		break;
	case SAFEFILE_MODE:
		if (pin)
			errf(err, err_len,
			     "pin-file %s: mode %04o gives group or others "
			     "access; run chmod 600",
			     path, (unsigned int)f->mode);
		else
			errf(err, err_len,
			     "%s: writable by group or others (mode %04o); "
			     "run chmod go-w",
			     path, (unsigned int)f->mode);
		break;
	case SAFEFILE_TOO_BIG:
		errf(err, err_len, "%s%s: larger than %zu bytes", what, path, max);
		break;
	case SAFEFILE_READ:
		errf(err, err_len, "%s%s: read error: %s", what, path, strerror(f->err));
		break;
	case SAFEFILE_ALLOC: errf(err, err_len, "%s%s: out of memory", what, path); break;
	case SAFEFILE_OK: break;
	}
}

int
config_load(const char *path, struct config **out, char *err, size_t err_len)
{
	/* Whoever can write this file chooses the module the agent loads.
	 * Symlinks are followed, the checks are on what was opened. */
	const struct safefile_rules rules = {
		.owner = geteuid(),
		.forbidden = S_IWGRP | S_IWOTH,
		.max = CONFIG_MAX_FILE_SIZE,
		.flags = SAFEFILE_FOLLOW,
	};
	struct safefile f = { 0 };
	int r;

	if (err != NULL && err_len > 0)
		err[0] = '\0';
	if (out == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	*out = NULL;
	if (path == NULL)
		return config_defaults(out);

	if ((r = safefile_read(AT_FDCWD, path, &rules, &f)) != 0) {
		file_refusal(&f, 0, path, CONFIG_MAX_FILE_SIZE, err, err_len);
		goto out;
	}
	r = parse_text(f.data, f.len, path, out, err, err_len);
out:
	safefile_free(&f);
	return r;
}

int
config_read_pin_file(const char *path, char **pin, char *err, size_t err_len)
{
	/* Read straight into secure memory: no other copy of the PIN exists. */
	const struct safefile_rules rules = {
		.owner = geteuid(),
		.forbidden = S_IRWXG | S_IRWXO,
		.max = CONFIG_MAX_PIN_FILE,
		.flags = SAFEFILE_FOLLOW | SAFEFILE_OWNER_ONLY | SAFEFILE_SECRET,
	};
	struct safefile f = { 0 };
	char *buf;
	size_t n;
	int r;

	if (err != NULL && err_len > 0)
		err[0] = '\0';
	if (pin == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	*pin = NULL;
	if (path == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;

	if ((r = safefile_read(AT_FDCWD, path, &rules, &f)) != 0) {
		file_refusal(&f, 1, path, CONFIG_MAX_PIN_FILE, err, err_len);
		goto out;
	}
	r = MTLS_ERR_CONFIG;
	buf = f.data;
	n = f.len;
	if (memchr(buf, '\0', n) != NULL) {
		errf(err, err_len, "pin-file %s: contains a NUL byte", path);
		goto out;
	}
	if (n > 0 && buf[n - 1] == '\n') {
		n--;
		if (n > 0 && buf[n - 1] == '\r')
			n--;
	}
	mtls_wipe(buf + n, f.size - n);
	if (n == 0) {
		errf(err, err_len, "pin-file %s: is empty", path);
		goto out;
	}
	if (memchr(buf, '\n', n) != NULL || memchr(buf, '\r', n) != NULL) {
		errf(err, err_len, "pin-file %s: has more than one line", path);
		goto out;
	}
	*pin = buf;
	f.data = NULL;
	r = 0;
out:
	safefile_free(&f);
	return r;
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->n_identities; i++) {
		free(cfg->identities[i].name);
		free(cfg->identities[i].key_uri);
		free(cfg->identities[i].cert_file);
		free(cfg->identities[i].chain_file);
		free(cfg->identities[i].pin_file);
		config_peers_free(cfg->identities[i].peers, cfg->identities[i].n_peers);
		free(cfg->identities[i].ssh_sig_namespaces);
		free(cfg->identities[i].ssh_destinations);
		free(cfg->identities[i].ssh_certificate);
		config_servers_free(cfg->identities[i].servers, cfg->identities[i].n_servers);
	}
	free(cfg->identities);
	free(cfg->module_dirs);
	free(cfg->askpass);
	free(cfg->socket_path);
	free(cfg->ssh_socket);
	free(cfg->module);
	free(cfg->token_uri);
	free(cfg);
}

static int
replace_string(char **dst, const char *src)
{
	char *d;

	if (src == NULL)
		return 0;
	if ((d = strdup(src)) == NULL)
		return MTLS_ERR_ALLOC;
	free(*dst);
	*dst = d;
	return 0;
}

int
config_apply_overrides(struct config *cfg, const struct config_overrides *ov)
{
	int r;

	if ((r = replace_string(&cfg->socket_path, ov->socket_path)) != 0 ||
	    (r = replace_string(&cfg->module, ov->module)) != 0 ||
	    (r = replace_string(&cfg->token_uri, ov->token_uri)) != 0 ||
	    (r = replace_string(&cfg->module_dirs, ov->module_dirs)) != 0)
		return r;
	if (ov->ssh_socket != NULL && strcmp(ov->ssh_socket, "off") == 0) {
		cfg->ssh_socket_off = 1;
	} else if (ov->ssh_socket != NULL) {
		cfg->ssh_socket_off = 0;
		if ((r = replace_string(&cfg->ssh_socket, ov->ssh_socket)) != 0)
			return r;
	}
	if (ov->allow_root)
		cfg->allow_root = 1;
	if (ov->debug)
		cfg->log_level = LOG_LEVEL_DEBUG;
	return 0;
}
