/*
 * test_config.c - unit tests of the configuration file and PIN file
 * readers (src/agent/conf.c).
 *
 * Every refusal is checked for the exact error code and for the
 * "source:line:" prefix, so that a message pointing at the wrong line is a
 * failure too.  File tests run in a fresh mkdtemp directory per test that
 * the teardown removes.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "log.h"
#include "mtls-agent.h"
#include "secmem.h"

#define P(x)	   (1U << MTLS_AGENT_PURPOSE_##x)
#define NOBODY_UID 65534

/* --- helpers ------------------------------------------------------------- */

struct tmp {
	char dir[64];
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
tmp_setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return -1;
	snprintf(t->dir, sizeof(t->dir), "/tmp/test_config.XXXXXX");
	if (mkdtemp(t->dir) == NULL) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static int
tmp_teardown(void **state)
{
	struct tmp *t = *state;
	int r;

	/* Depth first, without following symlinks out of the directory. */
	r = nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(t);
	return r;
}

/* Writes len bytes to dir/name with exactly `mode`; returns the path. */
static char *
write_file(const struct tmp *t, const char *name, const void *data, size_t len, mode_t mode)
{
	char *path;
	int fd;

	assert_true(asprintf(&path, "%s/%s", t->dir, name) > 0);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	if (len > 0)
		assert_int_equal(write(fd, data, len), (ssize_t)len);
	/* fchmod, not the open mode: the umask must not change the test. */
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
	return path;
}

static char *
write_text(const struct tmp *t, const char *name, const char *text, mode_t mode)
{
	return write_file(t, name, text, strlen(text), mode);
}

/* Parses text that must be valid. */
static struct config *
parse_ok(const char *text)
{
	struct config *cfg = (struct config *)0x1;
	char err[512] = "";
	int r;

	r = config_parse(text, "test.conf", &cfg, err, sizeof(err));
	if (r != 0)
		fail_msg("config_parse refused valid text: %d: %s", r, err);
	assert_non_null(cfg);
	assert_string_equal(err, "");
	return cfg;
}

/*
 * Parses text that must be refused on `line` with a message containing
 * `what`; also checks *out stays NULL.
 */
static void
parse_fails(const char *text, unsigned int line, const char *what)
{
	struct config *cfg = (struct config *)0x1;
	char err[512] = "", prefix[64];
	int r;

	r = config_parse(text, "test.conf", &cfg, err, sizeof(err));
	if (r != MTLS_ERR_CONFIG)
		fail_msg("expected MTLS_ERR_CONFIG for <<%s>>, got %d (%s)", text, r, err);
	assert_null(cfg);
	snprintf(prefix, sizeof(prefix), "test.conf:%u: ", line);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("for <<%s>>: expected prefix '%s', got '%s'", text, prefix, err);
	if (strstr(err, what) == NULL)
		fail_msg("for <<%s>>: expected '%s' in '%s'", text, what, err);
}

static void
assert_defaults(const struct config *cfg)
{
	assert_null(cfg->socket_path);
	assert_non_null(cfg->module);
	assert_string_equal(cfg->module, MTLS_DEFAULT_MODULE);
	assert_string_equal(cfg->token_uri, "pkcs11:");
	assert_int_equal(cfg->default_purposes, CONFIG_DEFAULT_PURPOSES);
	assert_int_equal(cfg->default_purposes, P(TLS13_CLIENT_CV) | P(PAM_CHALLENGE) | P(SSH));
	assert_int_equal(cfg->ssh_socket_off, 0);
	assert_null(cfg->ssh_socket);
	assert_int_equal(cfg->login_timeout, 0);
	assert_int_equal(cfg->allow_root, 0);
	assert_int_equal(cfg->max_connections, 256);
	assert_int_equal(cfg->request_timeout, 10000);
	assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
	assert_null(cfg->identities);
	assert_int_equal(cfg->n_identities, 0);
}

/* --- defaults and valid files -------------------------------------------- */

static void
test_defaults(void **state)
{
	struct config *cfg = NULL;
	char err[256];

	(void)state;
	assert_int_equal(config_defaults(&cfg), 0);
	assert_non_null(cfg);
	assert_defaults(cfg);
	config_free(cfg);

	/* No file: the same defaults. */
	cfg = (struct config *)0x1;
	assert_int_equal(config_load(NULL, &cfg, err, sizeof(err)), 0);
	assert_non_null(cfg);
	assert_defaults(cfg);
	config_free(cfg);

	/* An empty file and one with only comments and blanks, too. */
	cfg = parse_ok("");
	assert_defaults(cfg);
	config_free(cfg);
	cfg = parse_ok("# nothing here\n\n   \t\n   # indented comment\n");
	assert_defaults(cfg);
	config_free(cfg);

	config_free(NULL);
}

static void
test_full(void **state)
{
	static const char text[] = "# every key\n"
				   "socket = /run/user/1000/mtls-agent/agent.sock\n"
				   "  module=/usr/lib/softhsm/libsofthsm2.so  \n"
				   "token = pkcs11:token=mtls-demo\n"
				   "purposes = tls13, tls12,raw-digest\n"
				   "login-timeout = 2678400\n"
				   "allow-root = yes\n"
				   "max-connections = 65536\n"
				   "request-timeout = 600000\r\n"
				   "log-level = debug\n"
				   "\n"
				   "[identity p256]\n"
				   "key = pkcs11:token=mtls-demo;id=%03;type=private\n"
				   "certificate = /etc/mtls-agent/p256.pem\n"
				   "chain = \"/etc/mtls agent/chain.pem\"\n"
				   "pin-file = /etc/mtls-agent/p256.pin\n"
				   "purposes = pam-challenge\n"
				   "\n"
				   "[ identity rsa.2048_x-1 ]\n"
				   "\tkey\t=\tpkcs11:token=mtls-demo;object=rsa2048\n";
	struct config *cfg = parse_ok(text);
	const struct config_identity *id;

	(void)state;
	assert_string_equal(cfg->socket_path, "/run/user/1000/mtls-agent/agent.sock");
	assert_string_equal(cfg->module, "/usr/lib/softhsm/libsofthsm2.so");
	assert_string_equal(cfg->token_uri, "pkcs11:token=mtls-demo");
	assert_int_equal(cfg->default_purposes,
			 P(TLS13_CLIENT_CV) | P(TLS12_CLIENT_CV) | P(RAW_DIGEST));
	assert_int_equal(cfg->login_timeout, 31 * 24 * 3600);
	assert_int_equal(cfg->allow_root, 1);
	assert_int_equal(cfg->max_connections, 65536);
	assert_int_equal(cfg->request_timeout, 600000);
	assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
	assert_int_equal(cfg->n_identities, 2);

	id = &cfg->identities[0];
	assert_string_equal(id->name, "p256");
	assert_string_equal(id->key_uri, "pkcs11:token=mtls-demo;id=%03;type=private");
	assert_string_equal(id->cert_file, "/etc/mtls-agent/p256.pem");
	/* Quotes keep the space and are not part of the value. */
	assert_string_equal(id->chain_file, "/etc/mtls agent/chain.pem");
	assert_string_equal(id->pin_file, "/etc/mtls-agent/p256.pin");
	assert_int_equal(id->purposes, P(PAM_CHALLENGE));

	id = &cfg->identities[1];
	assert_string_equal(id->name, "rsa.2048_x-1");
	assert_string_equal(id->key_uri, "pkcs11:token=mtls-demo;object=rsa2048");
	assert_null(id->cert_file);
	assert_null(id->chain_file);
	assert_null(id->pin_file);
	assert_int_equal(id->purposes, CONFIG_DEFAULT_PURPOSES);
	config_free(cfg);
}

static void
test_values_at_limits(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = parse_ok("login-timeout = 0\nmax-connections = 1\n"
		       "request-timeout = 100\nallow-root = false\nlog-level = error\n");
	assert_int_equal(cfg->login_timeout, 0);
	assert_int_equal(cfg->max_connections, 1);
	assert_int_equal(cfg->request_timeout, 100);
	assert_int_equal(cfg->allow_root, 0);
	assert_int_equal(cfg->log_level, LOG_LEVEL_ERROR);
	config_free(cfg);

	/* busy-poll: microseconds, 0 (off) to 1000, default 50. */
	cfg = parse_ok("busy-poll = 0\n");
	assert_int_equal(cfg->busy_poll, 0);
	config_free(cfg);
	cfg = parse_ok("busy-poll = 1000\n");
	assert_int_equal(cfg->busy_poll, 1000);
	config_free(cfg);
	cfg = parse_ok("log-level = info\n");
	assert_int_equal(cfg->busy_poll, CONFIG_DEFAULT_BUSY_POLL);
	config_free(cfg);
	parse_fails("busy-poll = 1001\n", 1, "from 0 to 1000");
	parse_fails("busy-poll = -1\n", 1, "is not a number");
	parse_fails("[identity a]\nbusy-poll = 5\n", 2, "busy-poll");
	/* Enrollment: read-only (global and per identity), expiry-warning-days,
	 * the csr purpose. */
	cfg = parse_ok("log-level = info\n");
	assert_int_equal(cfg->read_only, 0);
	assert_int_equal(cfg->expiry_warning_days, CONFIG_DEFAULT_EXPIRY_WARNING_DAYS);
	config_free(cfg);
	cfg = parse_ok("read-only = yes\nexpiry-warning-days = 0\npurposes = tls13, csr\n"
		       "[identity a]\nkey = pkcs11:token=t;id=%01\nread-only = yes\n");
	assert_int_equal(cfg->read_only, 1);
	assert_int_equal(cfg->expiry_warning_days, 0);
	assert_int_equal(cfg->default_purposes, (1U << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV) |
						    (1U << MTLS_AGENT_PURPOSE_CSR));
	assert_int_equal(cfg->identities[0].read_only, 1);
	config_free(cfg);
	parse_fails("expiry-warning-days = 3651\n", 1, "expiry-warning-days");
	parse_fails("read-only = maybe\n", 1, "read-only");
	/* Leading zeros are still decimal. */
	cfg = parse_ok("max-connections = 0010\nlog-level = warning\nallow-root = 1\n");
	assert_int_equal(cfg->max_connections, 10);
	assert_int_equal(cfg->log_level, LOG_LEVEL_WARN);
	assert_int_equal(cfg->allow_root, 1);
	config_free(cfg);

	cfg = parse_ok("allow-root = TRUE\nlog-level = info\n");
	assert_int_equal(cfg->allow_root, 1);
	assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
	config_free(cfg);
	cfg = parse_ok("allow-root = No\n");
	assert_int_equal(cfg->allow_root, 0);
	config_free(cfg);
	cfg = parse_ok("allow-root = 0\n");
	assert_int_equal(cfg->allow_root, 0);
	config_free(cfg);

	/* A quoted value keeps its inner spaces; a module may be a bare name. */
	cfg = parse_ok("module = \" p11-kit-proxy.so \"\n");
	assert_string_equal(cfg->module, " p11-kit-proxy.so ");
	config_free(cfg);
	cfg = parse_ok("module = p11-kit-proxy.so # not a comment\n");
	assert_string_equal(cfg->module, "p11-kit-proxy.so # not a comment");
	config_free(cfg);

	/* A line of exactly the maximum length is fine. */
	{
		char *text = malloc(CONFIG_MAX_LINE + 2);

		assert_non_null(text);
		memset(text, 'x', CONFIG_MAX_LINE);
		text[0] = '#';
		text[CONFIG_MAX_LINE] = '\n';
		text[CONFIG_MAX_LINE + 1] = '\0';
		cfg = parse_ok(text);
		assert_defaults(cfg);
		config_free(cfg);
		free(text);
	}
}

static void
test_identity_purposes(void **state)
{
	static const struct {
		const char *value;
		uint32_t bits;
	} cases[] = {
		{ "tls13", P(TLS13_CLIENT_CV) },
		{ "tls13-client-certificate-verify", P(TLS13_CLIENT_CV) },
		{ "tls12", P(TLS12_CLIENT_CV) },
		{ "tls12-client-certificate-verify", P(TLS12_CLIENT_CV) },
		{ "pam", P(PAM_CHALLENGE) },
		{ "pam-challenge", P(PAM_CHALLENGE) },
		{ "raw-digest", P(RAW_DIGEST) },
		{ "tls13,pam", P(TLS13_CLIENT_CV) | P(PAM_CHALLENGE) },
		{ " tls12 , raw-digest ", P(TLS12_CLIENT_CV) | P(RAW_DIGEST) },
		{ "tls13, tls13-client-certificate-verify", P(TLS13_CLIENT_CV) },
		{ "tls13,tls12,pam,raw-digest",
		  P(TLS13_CLIENT_CV) | P(TLS12_CLIENT_CV) | P(PAM_CHALLENGE) | P(RAW_DIGEST) },
	};
	char text[256];
	struct config *cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "[identity a]\nkey = pkcs11:id=%%01\npurposes = %s\n",
			 cases[i].value);
		cfg = parse_ok(text);
		assert_int_equal(cfg->n_identities, 1);
		if (cfg->identities[0].purposes != cases[i].bits)
			fail_msg("purposes = %s: got 0x%x, want 0x%x", cases[i].value,
				 cfg->identities[0].purposes, cases[i].bits);
		/* The global default is untouched by an identity's list. */
		assert_int_equal(cfg->default_purposes, CONFIG_DEFAULT_PURPOSES);
		config_free(cfg);
	}

	parse_fails("[identity a]\nkey = pkcs11:id=%01\npurposes = smtp\n", 3,
		    "unknown purpose 'smtp'");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\npurposes = tls13,,pam\n", 3,
		    "empty purpose");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\npurposes = tls13,\n", 3, "empty purpose");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\npurposes = ,\n", 3, "empty purpose");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\npurposes = TLS13\n", 3,
		    "unknown purpose 'TLS13'");
	parse_fails("purposes = tls13 pam\n", 1, "unknown purpose 'tls13 pam'");
}

/* --- refusals ------------------------------------------------------------ */

/* The SSH front end's keys (ssh.c, ssh_policy.c). */
static void
test_ssh_keys(void **state)
{
	static const char id[] = "[identity a]\nkey = pkcs11:token=t;id=%01;type=private\n";
	char text[1024];
	struct config *cfg;

	(void)state;
	cfg = parse_ok("ssh-socket = /run/s/ssh.sock\n[identity a]\n"
		       "key = pkcs11:token=t;id=%01;type=private\n"
		       "purposes = ssh, ssh-sig\n"
		       "ssh-sig-namespaces = git ,  file,x@example.com\n"
		       "ssh-destinations = SHA256:pjHZrgrYDkp2z/CAcGVB49daw1647htPPZlk5sYkOno, "
		       "known-hosts=/k/h:*.example.com, known-hosts=/k/h2\n"
		       "ssh-forwarding = yes\nssh-certificate = /c/cert.pub\n");
	assert_string_equal(cfg->ssh_socket, "/run/s/ssh.sock");
	assert_int_equal(cfg->identities[0].purposes, P(SSH) | P(SSH_SIG));
	assert_string_equal(cfg->identities[0].ssh_sig_namespaces, "git,file,x@example.com");
	assert_string_equal(cfg->identities[0].ssh_destinations,
			    "SHA256:pjHZrgrYDkp2z/CAcGVB49daw1647htPPZlk5sYkOno,"
			    "known-hosts=/k/h:*.example.com,known-hosts=/k/h2");
	assert_int_equal(cfg->identities[0].ssh_forwarding, 1);
	assert_string_equal(cfg->identities[0].ssh_certificate, "/c/cert.pub");
	config_free(cfg);
	cfg = parse_ok("ssh-socket = off\n");
	assert_int_equal(cfg->ssh_socket_off, 1);
	assert_null(cfg->ssh_socket);
	config_free(cfg);

	parse_fails("ssh-socket = ssh.sock\n", 1, "ssh-socket: 'ssh.sock' is not an absolute path");
	snprintf(text, sizeof(text), "%sssh-destinations = SHA256:short\n", id);
	parse_fails(text, 3, "neither a SHA256:... fingerprint");
	snprintf(text, sizeof(text), "%sssh-destinations = MD5:aa:bb\n", id);
	parse_fails(text, 3, "neither a SHA256:... fingerprint");
	snprintf(text, sizeof(text), "%sssh-destinations = known-hosts=k/h\n", id);
	parse_fails(text, 3, "not an absolute path");
	snprintf(text, sizeof(text), "%sssh-destinations = known-hosts=/k/h:a,b;c\n", id);
	parse_fails(text, 3, "neither a SHA256");
	snprintf(text, sizeof(text), "%sssh-destinations = known-hosts=/k/h:a;b\n", id);
	parse_fails(text, 3, "host pattern 'a;b'");
	snprintf(text, sizeof(text),
		 "%sssh-destinations = SHA256:pjHZrgrYDkp2z/CAcGVB49daw1647htPPZlk5sYkOno,\n", id);
	parse_fails(text, 3, "empty entry");
	snprintf(text, sizeof(text), "%sssh-sig-namespaces = git, a b\n", id);
	parse_fails(text, 3, "'a b' is not a namespace");
	snprintf(text, sizeof(text), "%sssh-forwarding = maybe\n", id);
	parse_fails(text, 3, "ssh-forwarding");
	snprintf(text, sizeof(text), "%sssh-certificate = c.pub\n", id);
	parse_fails(text, 3, "not an absolute path");
	parse_fails("ssh-forwarding = yes\n", 1, "ssh-forwarding");
	snprintf(text, sizeof(text), "%spurposes = ssh, sshsig\n", id);
	parse_fails(text, 3, "unknown purpose 'sshsig'");
}

static void
test_errors_syntax(void **state)
{
	(void)state;
	parse_fails("socket = /tmp/s\nbogus = 1\n", 2, "unknown key 'bogus'");
	parse_fails("Socket = /tmp/s\n", 1, "unknown key 'Socket'");
	parse_fails("\n\nsocket /tmp/s\n", 3, "no '='");
	parse_fails("= value\n", 1, "missing key");
	parse_fails("# c\nmodule =\n", 2, "module: empty value");
	parse_fails("module = \"\"\n", 1, "module: empty value");
	parse_fails("module = \"abc\n", 1, "unterminated quoted value");
	parse_fails("module = \"\n", 1, "unterminated quoted value");
	parse_fails("module = \"a\"b\"\n", 1, "inside a quoted value");
	parse_fails("log-level = info\nlog-level = debug\n", 2, "duplicate key 'log-level'");
	parse_fails("socket = /a\n# x\nsocket = /a\n", 3, "duplicate key 'socket'");
	parse_fails("module = a\x01"
		    "b\n",
		    1, "control character 0x01");
	parse_fails("module = a\rb\n", 1, "control character 0x0d");
}

static void
test_errors_sections(void **state)
{
	(void)state;
	parse_fails("[server x]\n", 1, "unknown section type '[server]'");
	parse_fails("[]\n", 1, "unknown section type");
	parse_fails("[identity x\n", 1, "without closing ']'");
	parse_fails("[identity]\n", 1, "without a name");
	parse_fails("[identity   ]\n", 1, "without a name");
	parse_fails("[identity bad/name]\n", 1, "invalid identity name 'bad/name'");
	parse_fails("[identity two words]\n", 1, "invalid identity name 'two words'");
	parse_fails("[identity \xc3\xa9t\xc3\xa9]\n", 1, "invalid identity name");
	{
		/* 64 characters is the maximum and is accepted; 65 is not. */
		char text[128], name[CONFIG_MAX_NAME + 2];
		struct config *cfg;

		memset(name, 'n', CONFIG_MAX_NAME);
		name[CONFIG_MAX_NAME] = '\0';
		snprintf(text, sizeof(text), "[identity %s]\nkey = pkcs11:id=%%01\n", name);
		cfg = parse_ok(text);
		assert_int_equal(strlen(cfg->identities[0].name), CONFIG_MAX_NAME);
		config_free(cfg);
		memcpy(name + CONFIG_MAX_NAME, "n", 2);
		snprintf(text, sizeof(text), "[identity %s]\nkey = pkcs11:id=%%01\n", name);
		parse_fails(text, 1, "invalid identity name");
	}
	parse_fails("[identity a]\nkey = pkcs11:id=%01\n\n[identity a]\n"
		    "key = pkcs11:id=%02\n",
		    4, "duplicate identity name 'a'");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\nkey = pkcs11:id=%02\n", 3,
		    "duplicate key 'key' in [identity a]");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\npurposes = pam\n"
		    "purposes = tls13\n",
		    4, "duplicate key 'purposes' in [identity a]");
	/* The same key in two sections is not a duplicate. */
	{
		struct config *cfg = parse_ok("purposes = pam\n[identity a]\n"
					      "key = pkcs11:id=%01\npurposes = tls12\n"
					      "[identity b]\nkey = pkcs11:id=%02\n"
					      "purposes = tls13\n");

		assert_int_equal(cfg->default_purposes, P(PAM_CHALLENGE));
		assert_int_equal(cfg->identities[0].purposes, P(TLS12_CLIENT_CV));
		assert_int_equal(cfg->identities[1].purposes, P(TLS13_CLIENT_CV));
		config_free(cfg);
	}

	/* A section without key: the error names it, at its header line. */
	parse_fails("[identity nokey]\ncertificate = /c.pem\n", 1, "[identity nokey] has no 'key'");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\n[identity nokey]\n\n"
		    "[identity c]\nkey = pkcs11:id=%03\n",
		    3, "[identity nokey] has no 'key'");

	/* Keys in the wrong place. */
	parse_fails("[identity a]\nkey = pkcs11:id=%01\nsocket = /s\n", 3,
		    "unknown key 'socket' in [identity a]");
	parse_fails("certificate = /c.pem\n", 1,
		    "unknown key 'certificate' outside an [identity] section");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\nfoo = 1\n", 3, "unknown key 'foo'");
}

static void
test_errors_values(void **state)
{
	(void)state;
	/* Numbers: sign, junk, blanks, range, overflow. */
	parse_fails("max-connections = 0\n", 1,
		    "max-connections: '0' is not a number from 1 to 65536");
	parse_fails("max-connections = 65537\n", 1, "from 1 to 65536");
	parse_fails("max-connections = -1\n", 1, "'-1' is not a number");
	parse_fails("max-connections = +5\n", 1, "'+5' is not a number");
	parse_fails("max-connections = 12abc\n", 1, "'12abc' is not a number");
	parse_fails("max-connections = 1 2\n", 1, "'1 2' is not a number");
	parse_fails("max-connections = 0x10\n", 1, "'0x10' is not a number");
	parse_fails("max-connections = \" 5\"\n", 1, "' 5' is not a number");
	parse_fails("max-connections = 99999999999999999999999999\n", 1, "is not a number");
	parse_fails("max-connections = 4294967552\n", 1, "is not a number");
	parse_fails("request-timeout = 99\n", 1, "from 100 to 600000");
	parse_fails("request-timeout = 600001\n", 1, "from 100 to 600000");
	parse_fails("login-timeout = 2678401\n", 1, "from 0 to 2678400");
	parse_fails("login-timeout = -0\n", 1, "is not a number");

	parse_fails("allow-root = maybe\n", 1, "allow-root: 'maybe' is not a boolean");
	parse_fails("allow-root = 2\n", 1, "is not a boolean");
	parse_fails("allow-root = yess\n", 1, "is not a boolean");
	parse_fails("log-level = verbose\n", 1, "log-level: 'verbose'");
	parse_fails("log-level = DEBUG\n", 1, "log-level: 'DEBUG'");
	parse_fails("\n\npurposes = tls13, smtp\n", 3, "unknown purpose 'smtp'");

	/* Paths must be absolute; the socket must fit in sun_path. */
	parse_fails("socket = agent.sock\n", 1, "not an absolute path");
	parse_fails("socket = /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
		    1, "socket: path longer than");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\ncertificate = a.pem\n", 3,
		    "certificate: 'a.pem' is not an absolute path");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\nchain = ./c.pem\n", 3,
		    "chain: './c.pem' is not an absolute path");
	parse_fails("[identity a]\nkey = pkcs11:id=%01\npin-file = ~/pin\n", 3,
		    "pin-file: '~/pin' is not an absolute path");

	/* PKCS#11 URIs are checked by p11-kit. */
	parse_fails("[identity a]\nkey = file:/etc/key.pem\n", 2, "key: invalid PKCS#11 URI");
	parse_fails("[identity a]\nkey = pkcs11:id=%zz\n", 2, "key: invalid PKCS#11 URI");
	parse_fails("[identity a]\nkey = pkcs11:token=t;type=cert\n", 2, "not a private key");
	parse_fails("[identity a]\nkey = pkcs11:id=%01?pin-value=123456\n", 2, "pin-value");
	parse_fails("[identity a]\nkey = pkcs11:id=%01?pin-source=/p\n", 2, "pin-source");
	parse_fails("[identity a]\nkey = pkcs11:tokn=x\n", 2, "unrecognized attribute");
	parse_fails("token = mtls-demo\n", 1, "token: invalid PKCS#11 URI");
	{
		struct config *cfg = parse_ok("[identity a]\n"
					      "key = pkcs11:token=t;object=k;type=private\n");

		config_free(cfg);
	}
}

static void
test_errors_long_line(void **state)
{
	char *text = malloc(CONFIG_MAX_LINE + 64);
	size_t n;

	(void)state;
	assert_non_null(text);
	/* Line 2 is one byte over. */
	n = (size_t)snprintf(text, 64, "# ok\n");
	memset(text + n, '#', CONFIG_MAX_LINE + 1);
	n += CONFIG_MAX_LINE + 1;
	memcpy(text + n, "\n", 2);
	parse_fails(text, 2, "line longer than 4096 bytes");

	/* A last line without newline is measured the same way. */
	text[n] = '\0';
	parse_fails(text, 2, "line longer than 4096 bytes");

	/* The CR of a CRLF file does not count. */
	memcpy(text + n - 1, "\r\n", 3);
	{
		struct config *cfg = parse_ok(text);

		config_free(cfg);
	}
	free(text);
}

static void
test_errors_out_args(void **state)
{
	struct config *cfg = (struct config *)0x1;
	char *pin = (char *)0x1;

	(void)state;
	assert_int_equal(config_parse(NULL, "x", &cfg, NULL, 0), MTLS_ERR_INVALID_ARGUMENT);
	assert_null(cfg);
	assert_int_equal(config_parse("x", "x", NULL, NULL, 0), MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(config_defaults(NULL), MTLS_ERR_INVALID_ARGUMENT);
	/* No error buffer: still refused, no crash. */
	cfg = (struct config *)0x1;
	assert_int_equal(config_parse("bogus = 1\n", NULL, &cfg, NULL, 0), MTLS_ERR_CONFIG);
	assert_null(cfg);
	assert_int_equal(config_read_pin_file(NULL, &pin, NULL, 0), MTLS_ERR_INVALID_ARGUMENT);
	assert_null(pin);
	/* A short error buffer is truncated, not overrun. */
	{
		char err[8];

		memset(err, 'Z', sizeof(err));
		assert_int_equal(config_parse("bogus = 1\n", "test.conf", &cfg, err, 6),
				 MTLS_ERR_CONFIG);
		assert_string_equal(err, "test.");
		assert_int_equal(err[6], 'Z');
	}
}

/* Is line (at p) "#[..." or "#key = ..." with key in [a-z-]? */
static int
commented_setting(const char *p)
{
	size_t n;

	if (p[0] != '#')
		return 0;
	if (p[1] == '[')
		return 1;
	n = strspn(p + 1, "abcdefghijklmnopqrstuvwxyz-");
	return n > 0 && strncmp(p + 1 + n, " = ", 3) == 0;
}

/*
 * The shipped example must stay valid, both as shipped and with every
 * commented-out "#key = value" line (and section header) enabled.
 */
static void
test_example_file(void **state)
{
	const char *top = getenv("top_srcdir");
	char *path, *text, *on, *p, *q, err[512];
	struct config *cfg = NULL;
	struct stat st;
	FILE *f;

	(void)state;
	assert_true(asprintf(&path, "%s/etc/mtls-agent.conf.example", top != NULL ? top : ".") > 0);
	if (stat(path, &st) != 0) {
		free(path);
		skip();
	}
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(text = calloc(1, (size_t)st.st_size + 1));
	assert_int_equal(fread(text, 1, (size_t)st.st_size, f), (size_t)st.st_size);
	fclose(f);
	/* Not config_load: a checkout's file mode depends on the umask. */
	if (config_parse(text, path, &cfg, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(cfg->module, "/usr/lib/softhsm/libsofthsm2.so");
	assert_string_equal(cfg->token_uri, "pkcs11:token=mtls-demo");
	assert_true(cfg->n_identities >= 2);
	assert_string_equal(cfg->identities[0].name, "p256");
	config_free(cfg);

	/* Uncomment "#[identity ...]" and "#some-key = ..." lines. */
	assert_non_null(on = calloc(1, (size_t)st.st_size + 1));
	for (p = text, q = on; *p != '\0';) {
		if ((p == text || p[-1] == '\n') && commented_setting(p))
			p++;
		*q++ = *p++;
	}
	cfg = NULL;
	if (config_parse(on, path, &cfg, err, sizeof(err)) != 0)
		fail_msg("with every key enabled: %s", err);
	assert_non_null(cfg->socket_path);
	assert_int_equal(cfg->n_identities, 3);
	assert_non_null(cfg->identities[2].pin_file);
	config_free(cfg);
	free(on);
	free(text);
	free(path);
}

/* --- config_load ------------------------------------------------------------ */

static void
load_fails(const char *path, const char *what)
{
	struct config *cfg = (struct config *)0x1;
	char err[512] = "";

	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), MTLS_ERR_CONFIG);
	assert_null(cfg);
	/* The message names the file. */
	if (strncmp(err, path, strlen(path)) != 0 || strstr(err, what) == NULL)
		fail_msg("expected '%s: ...%s...', got '%s'", path, what, err);
}

static void
test_load(void **state)
{
	struct tmp *t = *state;
	struct config *cfg = NULL;
	char err[512], *path;

	path = write_text(t, "agent.conf",
			  "log-level = warning\n[identity x]\nkey = pkcs11:id=%01\n", 0644);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg->log_level, LOG_LEVEL_WARN);
	assert_int_equal(cfg->n_identities, 1);
	assert_string_equal(cfg->identities[0].name, "x");
	config_free(cfg);
	free(path);

	/* Parse errors name the file as source. */
	path = write_text(t, "bad.conf", "# one\nbogus = 2\n", 0600);
	cfg = (struct config *)0x1;
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), MTLS_ERR_CONFIG);
	assert_null(cfg);
	{
		char want[300];

		snprintf(want, sizeof(want), "%s:2: unknown key 'bogus'", path);
		assert_string_equal(err, want);
	}
	free(path);

	/* Symlinks are followed; the target is what is checked. */
	{
		char *link;

		path = write_text(t, "target.conf", "max-connections = 7\n", 0640);
		assert_true(asprintf(&link, "%s/link.conf", t->dir) > 0);
		assert_int_equal(symlink(path, link), 0);
		assert_int_equal(config_load(link, &cfg, err, sizeof(err)), 0);
		assert_int_equal(cfg->max_connections, 7);
		config_free(cfg);
		assert_int_equal(chmod(path, 0662), 0);
		load_fails(link, "writable by group or others");
		free(link);
		free(path);
	}
}

static void
test_load_refused(void **state)
{
	struct tmp *t = *state;
	char *path, *big, *missing;
	size_t n;

	path = write_text(t, "gw.conf", "log-level = info\n", 0664);
	load_fails(path, "writable by group or others (mode 0664)");
	assert_int_equal(chmod(path, 0646), 0);
	load_fails(path, "writable by group or others (mode 0646)");
	/* Readable by others is fine: the file holds no secrets. */
	assert_int_equal(chmod(path, 0644), 0);
	{
		struct config *cfg = NULL;
		char err[256];

		assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
		config_free(cfg);
	}
	free(path);

	/* A directory. */
	load_fails(t->dir, "not a regular file");

	/* Missing file. */
	assert_true(asprintf(&missing, "%s/none.conf", t->dir) > 0);
	load_fails(missing, "cannot open");
	free(missing);

	/* Over 1 MiB: refused before parsing, even though it is all comments. */
	n = CONFIG_MAX_FILE_SIZE + 1;
	big = malloc(n);
	assert_non_null(big);
	memset(big, '\n', n);
	big[0] = '#';
	path = write_file(t, "big.conf", big, n, 0600);
	load_fails(path, "larger than 1048576 bytes");
	free(path);
	/* Exactly 1 MiB is accepted. */
	path = write_file(t, "max.conf", big, n - 1, 0600);
	{
		struct config *cfg = NULL;
		char err[256];

		assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
		config_free(cfg);
	}
	free(path);
	free(big);

	/* A NUL byte in the file, on line 3. */
	{
		static const char text[] = "# a\nlog-level = info\nmodule = x\0y\n";
		struct config *cfg = (struct config *)0x1;
		char err[512], want[300];

		path = write_file(t, "nul.conf", text, sizeof(text) - 1, 0600);
		assert_int_equal(config_load(path, &cfg, err, sizeof(err)), MTLS_ERR_CONFIG);
		assert_null(cfg);
		snprintf(want, sizeof(want), "%s:3: NUL byte in line", path);
		assert_string_equal(err, want);
		free(path);
	}
}

static void
test_load_owner(void **state)
{
	struct tmp *t = *state;
	char *path;

	if (geteuid() != 0)
		skip();
	/* Whoever owns the file could point "module" at their own code. */
	path = write_text(t, "other.conf", "log-level = info\n", 0644);
	assert_int_equal(chown(path, NOBODY_UID, NOBODY_UID), 0);
	load_fails(path, "owned by uid 65534");
	free(path);
}

/* --- PIN files ----------------------------------------------------------- */

static void
pin_ok(const struct tmp *t, const char *content, size_t len, const char *want)
{
	char *path, *pin = (char *)0x1, err[512] = "";

	path = write_file(t, "ok.pin", content, len, 0600);
	if (config_read_pin_file(path, &pin, err, sizeof(err)) != 0)
		fail_msg("pin file refused: %s", err);
	assert_non_null(pin);
	assert_string_equal(pin, want);
	mtls_secure_free(pin);
	assert_int_equal(unlink(path), 0);
	free(path);
}

static void
pin_fails(const char *path, const char *what)
{
	char *pin = (char *)0x1, err[512] = "", prefix[300];

	assert_int_equal(config_read_pin_file(path, &pin, err, sizeof(err)), MTLS_ERR_CONFIG);
	assert_null(pin);
	snprintf(prefix, sizeof(prefix), "pin-file %s: ", path);
	if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, what) == NULL)
		fail_msg("expected '%s...%s', got '%s'", prefix, what, err);
}

static void
test_pin_file(void **state)
{
	struct tmp *t = *state;
	char *path, long_pin[CONFIG_MAX_PIN_FILE + 2];

	pin_ok(t, "123456\n", 7, "123456");
	pin_ok(t, "123456\r\n", 8, "123456");
	pin_ok(t, "123456", 6, "123456");
	/* Only one newline goes; spaces are part of the PIN. */
	pin_ok(t, " 12 34 \n", 8, " 12 34 ");

	/* 256 bytes is the limit, newline included. */
	memset(long_pin, '7', sizeof(long_pin));
	long_pin[CONFIG_MAX_PIN_FILE - 1] = '\n';
	long_pin[CONFIG_MAX_PIN_FILE] = '\0';
	{
		char want[CONFIG_MAX_PIN_FILE];

		memset(want, '7', CONFIG_MAX_PIN_FILE - 1);
		want[CONFIG_MAX_PIN_FILE - 1] = '\0';
		pin_ok(t, long_pin, CONFIG_MAX_PIN_FILE, want);
	}
	memset(long_pin, '7', sizeof(long_pin));
	path = write_file(t, "long.pin", long_pin, CONFIG_MAX_PIN_FILE + 1, 0600);
	pin_fails(path, "larger than 256 bytes");
	free(path);

	path = write_text(t, "mode.pin", "123456\n", 0644);
	pin_fails(path, "mode 0644 gives group or others access");
	assert_int_equal(chmod(path, 0640), 0);
	pin_fails(path, "mode 0640");
	assert_int_equal(chmod(path, 0604), 0);
	pin_fails(path, "mode 0604");
	assert_int_equal(chmod(path, 0610), 0);
	pin_fails(path, "mode 0610");
	/* The same file is accepted once private. */
	assert_int_equal(chmod(path, 0600), 0);
	{
		char *pin = NULL, err[256];

		assert_int_equal(config_read_pin_file(path, &pin, err, sizeof(err)), 0);
		assert_string_equal(pin, "123456");
		mtls_secure_free(pin);
	}
	assert_int_equal(chmod(path, 0400), 0);
	{
		char *pin = NULL, err[256];

		assert_int_equal(config_read_pin_file(path, &pin, err, sizeof(err)), 0);
		assert_string_equal(pin, "123456");
		mtls_secure_free(pin);
	}
	free(path);

	path = write_text(t, "empty.pin", "", 0600);
	pin_fails(path, "is empty");
	free(path);
	path = write_text(t, "nl.pin", "\n", 0600);
	pin_fails(path, "is empty");
	free(path);
	path = write_text(t, "crlf.pin", "\r\n", 0600);
	pin_fails(path, "is empty");
	free(path);
	path = write_file(t, "nul.pin",
			  "12\0"
			  "34\n",
			  6, 0600);
	pin_fails(path, "NUL byte");
	free(path);
	path = write_text(t, "two.pin", "1234\n5678\n", 0600);
	pin_fails(path, "more than one line");
	free(path);
	path = write_text(t, "twonl.pin", "1234\n\n", 0600);
	pin_fails(path, "more than one line");
	free(path);

	pin_fails(t->dir, "not a regular file");
	{
		char *missing;

		assert_true(asprintf(&missing, "%s/none.pin", t->dir) > 0);
		pin_fails(missing, "cannot open");
		free(missing);
	}
}

static void
test_pin_file_owner(void **state)
{
	struct tmp *t = *state;
	char *path;

	if (geteuid() != 0)
		skip();
	path = write_text(t, "nobody.pin", "123456\n", 0600);
	assert_int_equal(chown(path, NOBODY_UID, NOBODY_UID), 0);
	pin_fails(path, "owned by uid 65534, not by the agent's user (uid 0)");
	free(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_values_at_limits),
		cmocka_unit_test(test_identity_purposes),
		cmocka_unit_test(test_errors_syntax),
		cmocka_unit_test(test_ssh_keys),
		cmocka_unit_test(test_errors_sections),
		cmocka_unit_test(test_errors_values),
		cmocka_unit_test(test_errors_long_line),
		cmocka_unit_test(test_errors_out_args),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test_setup_teardown(test_load, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_load_refused, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_load_owner, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_pin_file, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_pin_file_owner, tmp_setup, tmp_teardown),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
