/*
 * fuzz_config - the agent's configuration parser on arbitrary text.
 *
 * Input: the file's contents (cut at the first NUL, as config_parse() sees
 * a C string).  A refusal must say why; an accepted configuration must
 * satisfy the limits mtls-agent.conf(5) promises, and writing it back out
 * as text must parse to the same configuration.
 */
#include "config.h"

#include <string.h>

#include "conf.h"
#include "fuzz.h"
#include "mtls-agent.h"

#define ALL_PURPOSES                                                                               \
	((1U << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV) | (1U << MTLS_AGENT_PURPOSE_PAM_CHALLENGE) |   \
	 (1U << MTLS_AGENT_PURPOSE_RAW_DIGEST) | (1U << MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV) |      \
	 (1U << MTLS_AGENT_PURPOSE_SSH) | (1U << MTLS_AGENT_PURPOSE_SSH_SIG) |                     \
	 (1U << MTLS_AGENT_PURPOSE_CSR) | (1U << MTLS_AGENT_PURPOSE_PKCS11_DIGEST))

struct text {
	char *s;
	size_t len, cap;
};

static void
add(struct text *t, const char *s)
{
	size_t n = strlen(s);

	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		FUZZ_CHECK((t->s = realloc(t->s, t->cap)) != NULL);
	}
	memcpy(t->s + t->len, s, n + 1);
	t->len += n;
}

/* key=value, quoted when the value has blanks at either end (the parser
 * never yields a value that would need more). */
static void
add_kv(struct text *t, const char *key, const char *v)
{
	size_t n;

	if (v == NULL)
		return;
	n = strlen(v);
	FUZZ_CHECK(n > 0 && strchr(v, '\n') == NULL);
	add(t, key);
	add(t, "=");
	if (v[0] == ' ' || v[0] == '\t' || v[n - 1] == ' ' || v[n - 1] == '\t') {
		FUZZ_CHECK(strchr(v, '"') == NULL);
		add(t, "\"");
		add(t, v);
		add(t, "\"");
	} else {
		add(t, v);
	}
	add(t, "\n");
}

static void
add_purposes(struct text *t, uint32_t bits)
{
	static const struct {
		int purpose;
		const char *name;
	} names[] = {
		{ MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, "tls13" },
		{ MTLS_AGENT_PURPOSE_TLS12_CLIENT_CV, "tls12" },
		{ MTLS_AGENT_PURPOSE_PAM_CHALLENGE, "pam" },
		{ MTLS_AGENT_PURPOSE_RAW_DIGEST, "raw-digest" },
		{ MTLS_AGENT_PURPOSE_SSH, "ssh" },
		{ MTLS_AGENT_PURPOSE_SSH_SIG, "ssh-sig" },
		{ MTLS_AGENT_PURPOSE_CSR, "csr" },
		{ MTLS_AGENT_PURPOSE_PKCS11_DIGEST, "pkcs11-digest" },
	};
	const char *sep = "";
	size_t i;

	add(t, "purposes=");
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (bits & (1U << names[i].purpose)) {
			add(t, sep);
			add(t, names[i].name);
			sep = ",";
		}
	}
	add(t, "\n");
}

static char *
write_config(const struct config *c)
{
	static const char *levels[] = { "error", "warning", "info", "debug" };
	struct text t = { 0 };
	char num[32];
	size_t i;

	add(&t, "");
	add_kv(&t, "socket", c->socket_path);
	if (c->ssh_socket_off)
		add_kv(&t, "ssh-socket", "off");
	else
		add_kv(&t, "ssh-socket", c->ssh_socket);
	add_kv(&t, "module", c->module);
	add_kv(&t, "token", c->token_uri);
	add_purposes(&t, c->default_purposes);
	snprintf(num, sizeof(num), "%u", c->login_timeout);
	add_kv(&t, "login-timeout", num);
	add_kv(&t, "allow-root", c->allow_root ? "yes" : "no");
	snprintf(num, sizeof(num), "%u", c->max_connections);
	add_kv(&t, "max-connections", num);
	snprintf(num, sizeof(num), "%u", c->request_timeout);
	add_kv(&t, "request-timeout", num);
	FUZZ_CHECK(c->log_level >= 0 && c->log_level < 4);
	add_kv(&t, "log-level", levels[c->log_level]);
	add_kv(&t, "module-dirs", c->module_dirs);
	add_kv(&t, "askpass", c->askpass);
	snprintf(num, sizeof(num), "%u", c->confirm_timeout);
	add_kv(&t, "confirm-timeout", num);
	snprintf(num, sizeof(num), "%u", c->token_timeout);
	add_kv(&t, "token-timeout", num);
	FUZZ_CHECK(c->busy_poll <= CONFIG_MAX_BUSY_POLL);
	snprintf(num, sizeof(num), "%u", c->busy_poll);
	add_kv(&t, "busy-poll", num);
	for (i = 0; i < c->n_identities; i++) {
		add(&t, "[identity ");
		add(&t, c->identities[i].name);
		add(&t, "]\n");
		add_kv(&t, "key", c->identities[i].key_uri);
		add_kv(&t, "certificate", c->identities[i].cert_file);
		add_kv(&t, "chain", c->identities[i].chain_file);
		add_kv(&t, "pin-file", c->identities[i].pin_file);
		add_purposes(&t, c->identities[i].purposes);
		add_kv(&t, "confirm", c->identities[i].confirm ? "yes" : "no");
		snprintf(num, sizeof(num), "%u", c->identities[i].lifetime);
		add_kv(&t, "lifetime", num);
		snprintf(num, sizeof(num), "%u", c->identities[i].idle_logout);
		add_kv(&t, "idle-logout", num);
		snprintf(num, sizeof(num), "%u", c->identities[i].rate_limit);
		add_kv(&t, "rate-limit", num);
		add_kv(&t, "ssh-sig-namespaces", c->identities[i].ssh_sig_namespaces);
		add_kv(&t, "ssh-destinations", c->identities[i].ssh_destinations);
		add_kv(&t, "ssh-forwarding", c->identities[i].ssh_forwarding ? "yes" : "no");
		add_kv(&t, "ssh-certificate", c->identities[i].ssh_certificate);
		if (c->identities[i].n_peers > 0) {
			const char *sep = "";
			size_t k;

			add(&t, "peers=");
			for (k = 0; k < c->identities[i].n_peers; k++) {
				const struct config_peer *pe = &c->identities[i].peers[k];

				add(&t, sep);
				if (pe->kind == PEER_EXE) {
					add(&t, "exe:");
					add(&t, pe->exe);
				} else {
					snprintf(num, sizeof(num), "%s:%lu",
						 pe->kind == PEER_UID ? "uid" : "gid", pe->id);
					add(&t, num);
				}
				sep = ",";
			}
			add(&t, "\n");
		}
	}
	return t.s;
}

static int
streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
check_same(const struct config *a, const struct config *b)
{
	size_t i;

	FUZZ_CHECK(streq(a->socket_path, b->socket_path));
	FUZZ_CHECK(streq(a->ssh_socket, b->ssh_socket));
	FUZZ_CHECK(a->ssh_socket_off == b->ssh_socket_off);
	FUZZ_CHECK(streq(a->module, b->module));
	FUZZ_CHECK(streq(a->token_uri, b->token_uri));
	FUZZ_CHECK(a->default_purposes == b->default_purposes);
	FUZZ_CHECK(a->login_timeout == b->login_timeout);
	FUZZ_CHECK(a->allow_root == b->allow_root);
	FUZZ_CHECK(a->max_connections == b->max_connections);
	FUZZ_CHECK(a->request_timeout == b->request_timeout);
	FUZZ_CHECK(a->log_level == b->log_level);
	FUZZ_CHECK(streq(a->module_dirs, b->module_dirs));
	FUZZ_CHECK(streq(a->askpass, b->askpass));
	FUZZ_CHECK(a->confirm_timeout == b->confirm_timeout);
	FUZZ_CHECK(a->token_timeout == b->token_timeout);
	FUZZ_CHECK(a->n_identities == b->n_identities);
	for (i = 0; i < a->n_identities; i++) {
		FUZZ_CHECK(streq(a->identities[i].name, b->identities[i].name));
		FUZZ_CHECK(streq(a->identities[i].key_uri, b->identities[i].key_uri));
		FUZZ_CHECK(streq(a->identities[i].cert_file, b->identities[i].cert_file));
		FUZZ_CHECK(streq(a->identities[i].chain_file, b->identities[i].chain_file));
		FUZZ_CHECK(streq(a->identities[i].pin_file, b->identities[i].pin_file));
		FUZZ_CHECK(a->identities[i].purposes == b->identities[i].purposes);
		FUZZ_CHECK(a->identities[i].confirm == b->identities[i].confirm);
		FUZZ_CHECK(a->identities[i].lifetime == b->identities[i].lifetime);
		FUZZ_CHECK(a->identities[i].idle_logout == b->identities[i].idle_logout);
		FUZZ_CHECK(a->identities[i].rate_limit == b->identities[i].rate_limit);
		FUZZ_CHECK(streq(a->identities[i].ssh_sig_namespaces,
				 b->identities[i].ssh_sig_namespaces));
		FUZZ_CHECK(
		    streq(a->identities[i].ssh_destinations, b->identities[i].ssh_destinations));
		FUZZ_CHECK(a->identities[i].ssh_forwarding == b->identities[i].ssh_forwarding);
		FUZZ_CHECK(
		    streq(a->identities[i].ssh_certificate, b->identities[i].ssh_certificate));
		FUZZ_CHECK(a->identities[i].n_peers == b->identities[i].n_peers);
		for (size_t k = 0; k < a->identities[i].n_peers; k++) {
			FUZZ_CHECK(a->identities[i].peers[k].kind ==
				   b->identities[i].peers[k].kind);
			FUZZ_CHECK(a->identities[i].peers[k].id == b->identities[i].peers[k].id);
			FUZZ_CHECK(
			    streq(a->identities[i].peers[k].exe, b->identities[i].peers[k].exe));
		}
	}
}

static int
valid_name(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= CONFIG_MAX_NAME &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			 "0123456789._-") == n;
}

/* p11-kit ignores blanks inside a URI (RFC 7512 allows them when a URI
 * is wrapped) and the scheme is case-insensitive. */
static int
is_pkcs11_uri(const char *s)
{
	static const char scheme[] = "pkcs11:";
	size_t i = 0;

	for (; *s != '\0' && i < sizeof(scheme) - 1; s++) {
		if (*s == ' ' || *s == '\t')
			continue;
		if ((*s | 0x20) != scheme[i] && *s != scheme[i])
			return 0;
		i++;
	}
	return i == sizeof(scheme) - 1;
}

static void
check_limits(const struct config *c)
{
	const struct config_identity *id;
	size_t i, j;

	FUZZ_CHECK(c->module != NULL && c->token_uri != NULL);
	FUZZ_CHECK(c->socket_path == NULL || c->socket_path[0] == '/');
	FUZZ_CHECK(c->default_purposes != 0 && (c->default_purposes & ~ALL_PURPOSES) == 0);
	FUZZ_CHECK(c->login_timeout <= CONFIG_MAX_LOGIN_TIMEOUT);
	FUZZ_CHECK(c->allow_root == 0 || c->allow_root == 1);
	FUZZ_CHECK(c->max_connections >= CONFIG_MIN_MAX_CONNECTIONS &&
		   c->max_connections <= CONFIG_MAX_MAX_CONNECTIONS);
	FUZZ_CHECK(c->request_timeout >= CONFIG_MIN_REQUEST_TIMEOUT &&
		   c->request_timeout <= CONFIG_MAX_REQUEST_TIMEOUT);
	FUZZ_CHECK((c->n_identities == 0) == (c->identities == NULL));
	for (i = 0; i < c->n_identities; i++) {
		id = &c->identities[i];
		FUZZ_CHECK(valid_name(id->name));
		FUZZ_CHECK(id->key_uri != NULL && is_pkcs11_uri(id->key_uri));
		FUZZ_CHECK(id->cert_file == NULL || id->cert_file[0] == '/');
		FUZZ_CHECK(id->chain_file == NULL || id->chain_file[0] == '/');
		FUZZ_CHECK(id->pin_file == NULL || id->pin_file[0] == '/');
		FUZZ_CHECK(id->purposes != 0 && (id->purposes & ~ALL_PURPOSES) == 0);
		for (j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(c->identities[j].name, id->name) != 0);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = NULL, *cfg2 = NULL;
	struct config_overrides ov = { .socket_path = "/tmp/fuzz.sock", .debug = 1 };
	char err[512], *text, *again;
	int r;

	if (size > CONFIG_MAX_FILE_SIZE)
		return 0;
	FUZZ_CHECK((text = malloc(size + 1)) != NULL);
	if (size > 0)
		memcpy(text, data, size);
	text[size] = '\0';

	memset(err, 'x', sizeof(err));
	r = config_parse(text, "fuzz.conf", &cfg, err, sizeof(err));
	FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
	if (r != 0) {
		FUZZ_CHECK(r == MTLS_ERR_CONFIG && cfg == NULL);
		FUZZ_CHECK(strncmp(err, "fuzz.conf:", 10) == 0);
		free(text);
		return 0;
	}
	FUZZ_CHECK(cfg != NULL);
	check_limits(cfg);

	again = write_config(cfg);
	r = config_parse(again, "rewritten", &cfg2, err, sizeof(err));
	if (r != 0)
		fprintf(stderr, "rewritten configuration refused: %s\n%s", err, again);
	FUZZ_CHECK(r == 0);
	check_same(cfg, cfg2);

	FUZZ_CHECK(config_apply_overrides(cfg, &ov) == 0);
	FUZZ_CHECK(streq(cfg->socket_path, ov.socket_path));
	config_free(cfg2);
	config_free(cfg);
	free(again);
	free(text);
	return 0;
}
