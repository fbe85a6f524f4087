/*
 * test_pam.c - pam_mtls_agent through libpamtest and pam_wrapper, against
 * the real agent on a SoftHSM2 token.
 *
 * Run by tests/pam/test_pam.sh, which preloads pam_wrapper (service files
 * from the templates in tests/pam/pam.d, module path made absolute) and nss_wrapper
 * (users alice, with this process's uid, and bob, uid 4243), and points
 * MTLS_PAM_TEST_DIR at a temp directory it removes afterwards.  The service
 * files read the module options from $MTLS_PAM_TEST_DIR/pam.conf, which each
 * test writes: pam_wrapper copies the service files once, at start-up.
 *
 * Each test starts its own agents; the teardown kills every agent, the OCSP
 * responder and the proxy, so a failed assertion leaves nothing running.
 * Certificates with CN=alice / CN=bob are issued in the group setup for the
 * token's public keys.  Negative tests check that the login fails with the
 * documented PAM code; several also check that no PIN was asked.
 *
 * The "proxy" sits between the module and the agent, forwarding frames with
 * the src/common codecs; it can replay an earlier signature, put junk in
 * place of a certificate, or swap one identity's certificate for another's.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpamtest.h>
#include <security/pam_appl.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "agent_fixture.h"
#include "mtls-agent.h"
#include "proto.h"
#include "wbuf.h"

/* snprintf that must fit. */
#define SNP(buf, ...) assert_true(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))

#define SERVICE	       "mtls-test"
#define SERVICE_BADOPT "mtls-badopt"
#define SERVICE_LINE   "mtls-line"
#define TOKEN_URI      "pkcs11:token=mtls-test"
#define SO_PIN	       "12345678"
#define WRONG_PIN      "000000"
#define ALICE	       "alice"
#define BOB	       "bob"
#define BOB_UID	       4243

static struct agent_fixture fx;
static const char *tdir; /* $MTLS_PAM_TEST_DIR */
static char pam_conf[PATH_MAX];
static struct agent_proc ag;
static pid_t helper_pid; /* OCSP responder or fake listener */

/* The fixture's keys (softhsm-setup.sh). */
static const struct key {
	const char *label;
	const char *id;
} keys[] = {
	{ "rsa2048", "01" },
	{ "rsa3072", "02" },
	{ "p256", "03" },
	{ "p384", "04" },
};

/* ---------------------------------------------------------------------- */
/* helpers */

static const char *
pam_name(int r)
{
	switch (r) {
	case PAM_SUCCESS: return "PAM_SUCCESS";
	case PAM_AUTH_ERR: return "PAM_AUTH_ERR";
	case PAM_AUTHINFO_UNAVAIL: return "PAM_AUTHINFO_UNAVAIL";
	case PAM_CRED_INSUFFICIENT: return "PAM_CRED_INSUFFICIENT";
	case PAM_MAXTRIES: return "PAM_MAXTRIES";
	case PAM_USER_UNKNOWN: return "PAM_USER_UNKNOWN";
	case PAM_IGNORE: return "PAM_IGNORE";
	case PAM_SERVICE_ERR: return "PAM_SERVICE_ERR";
	case PAM_ACCT_EXPIRED: return "PAM_ACCT_EXPIRED";
	case PAM_PERM_DENIED: return "PAM_PERM_DENIED";
	case PAM_AUTHTOK_ERR: return "PAM_AUTHTOK_ERR";
	case PAM_TRY_AGAIN: return "PAM_TRY_AGAIN";
	case PAM_CONV_ERR: return "PAM_CONV_ERR";
	case PAM_SYSTEM_ERR: return "PAM_SYSTEM_ERR";
	default: return "other";
	}
}

static void
dump_log(const struct agent_proc *p)
{
	char *log = agent_log(p);

	print_message("---- agent log %s ----\n%s---- end of agent log ----\n", p->log, log);
	free(log);
}

static void
fpath(const char *name, char *buf)
{
	assert_int_equal(fixture_path(&fx, name, buf, PATH_MAX), 0);
}

static void
run(const char *const *argv)
{
	if (fixture_run(argv) != 0)
		fail_msg("command failed: %s", argv[0]);
}

/* Issues CN=<cn> for the token key `label` with more mkcert options. */
static void
issue(const char *out_name, const char *cn, const char *label, const char *ca, ...)
{
	const char *argv[32];
	char out[PATH_MAX], pub[PATH_MAX], cacert[PATH_MAX], cakey[PATH_MAX], subj[128], name[64];
	const char *mk = getenv("MKCERT");
	size_t n = 0;
	va_list ap;

	fpath(out_name, out);
	snprintf(name, sizeof(name), "%s.pub.pem", label);
	fpath(name, pub);
	snprintf(name, sizeof(name), "%s.pem", ca);
	fpath(name, cacert);
	snprintf(name, sizeof(name), "%s.key", ca);
	fpath(name, cakey);
	snprintf(subj, sizeof(subj), "/O=mtls-agent tests/CN=%s", cn);
	argv[n++] = mk != NULL ? mk : "tests/fixtures/mkcert";
	argv[n++] = "issue";
	argv[n++] = "--ca-cert";
	argv[n++] = cacert;
	argv[n++] = "--ca-key";
	argv[n++] = cakey;
	argv[n++] = "--pubkey";
	argv[n++] = pub;
	argv[n++] = "--subj";
	argv[n++] = subj;
	argv[n++] = "--out";
	argv[n++] = out;
	va_start(ap, ca);
	while (n < 30 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	run(argv);
}

/* Writes the module's options file: socket, CA, then `extra` lines. */
static void
write_pam_conf(const char *sock, const char *fmt, ...)
{
	char ca[PATH_MAX], *extra = NULL, *all = NULL;
	va_list ap;

	fpath("ca.pem", ca);
	va_start(ap, fmt);
	assert_true(vasprintf(&extra, fmt, ap) >= 0);
	va_end(ap);
	assert_true(asprintf(&all, "# written by test_pam.c\nsocket = %s\nca_file=%s\n%s", sock, ca,
			     extra) >= 0);
	assert_int_equal(fixture_write_file(pam_conf, all, 0600), 0);
	free(extra);
	free(all);
}

/* An [identity NAME] section for token key `id` with a certificate file. */
static char *
identity_text(const char *name, const char *id, const char *cert_name)
{
	char cert[PATH_MAX], *s = NULL;

	fpath(cert_name, cert);
	assert_true(asprintf(&s,
			     "[identity %s]\nkey = %s;id=%%%s;type=private\n"
			     "certificate = %s\npurposes = tls13, pam\n",
			     name, TOKEN_URI, id, cert) >= 0);
	return s;
}

static void
start_agent_text(const char *config, const char *const *args)
{
	if (agent_start(&fx, config, args, &ag) != 0) {
		dump_log(&ag);
		fail_msg("agent did not start");
	}
}

/* Starts an agent offering exactly one identity. */
static void
start_agent_one(const char *name, const char *id, const char *cert_name)
{
	char *t = identity_text(name, id, cert_name);

	start_agent_text(t, NULL);
	free(t);
}

/* ---------------------------------------------------------------------- */
/* conversation */

struct conv {
	const char *answers[6]; /* for PAM_PROMPT_ECHO_OFF, in order */
	size_t next;
	char prompts[6][256]; /* what was asked */
	size_t n_prompts;
	char errors[512]; /* PAM_ERROR_MSG texts, concatenated */
};

static int
conv_fn(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
	struct conv *c = data;
	struct pam_response *r;
	int i;

	if ((r = calloc((size_t)n, sizeof(*r))) == NULL)
		return PAM_BUF_ERR;
	for (i = 0; i < n; i++) {
		switch (msg[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
			if (c->n_prompts < 6)
				snprintf(c->prompts[c->n_prompts++], sizeof(c->prompts[0]), "%s",
					 msg[i]->msg);
			if (c->next >= 6 || c->answers[c->next] == NULL)
				goto fail;
			if ((r[i].resp = strdup(c->answers[c->next++])) == NULL)
				goto fail;
			break;
		case PAM_ERROR_MSG:
		case PAM_TEXT_INFO:
			strncat(c->errors, msg[i]->msg, sizeof(c->errors) - strlen(c->errors) - 2);
			strcat(c->errors, "\n");
			break;
		default: goto fail;
		}
	}
	*resp = r;
	return PAM_SUCCESS;
fail:
	for (i = 0; i < n; i++)
		free(r[i].resp);
	free(r);
	return PAM_CONV_ERR;
}

/* Runs one PAM operation (or two: auth then `then`); returns the last rv
 * and fails the test if an earlier one did not succeed. */
static int
pam_op2(const char *service, const char *user, struct conv *c, enum pamtest_ops op, int then)
{
	struct pam_testcase cases[2] = {
		pam_test(op, PAM_SUCCESS),
		pam_test(then >= 0 ? (enum pamtest_ops)then : op, PAM_SUCCESS),
	};
	size_t n = then >= 0 ? 2 : 1;
	enum pamtest_err e;

	e = _pamtest_conv(service, user, conv_fn, c, cases, n, NULL);
	if (e != PAMTEST_ERR_OK && e != PAMTEST_ERR_CASE)
		fail_msg("libpamtest: %s", pamtest_strerror(e));
	if (n == 2 && cases[0].op_rv != PAM_SUCCESS)
		fail_msg("first operation: %s (%d)", pam_name(cases[0].op_rv), cases[0].op_rv);
	return cases[n - 1].op_rv;
}

static int
pam_op(const char *service, const char *user, struct conv *c, enum pamtest_ops op)
{
	return pam_op2(service, user, c, op, -1);
}

#define assert_pam(got, want)                                                                      \
	do {                                                                                       \
		int got_ = (got), want_ = (want);                                                  \
		if (got_ != want_) {                                                               \
			if (ag.pid > 0)                                                            \
				dump_log(&ag);                                                     \
			fail_msg("PAM returned %s (%d), expected %s (%d)", pam_name(got_), got_,   \
				 pam_name(want_), want_);                                          \
		}                                                                                  \
	} while (0)

/* auth as `user` with `pin` (NULL: no answer) expecting `want`. */
static struct conv
login(const char *user, const char *pin, int want)
{
	struct conv c = { .answers = { pin } };

	assert_pam(pam_op(SERVICE, user, &c, PAMTEST_AUTHENTICATE), want);
	return c;
}

/*
 * pam_sm_authenticate() called directly (dlopen), for the exact code the
 * module returns: libpam turns a stack where every module said PAM_IGNORE
 * into PAM_PERM_DENIED, so PAM_IGNORE cannot be seen through pam_authenticate.
 */
static int
direct_auth(const char *user, const char *pin)
{
	struct conv c = { .answers = { pin } };
	struct pam_conv pc = { conv_fn, &c };
	const char *module = getenv("MTLS_PAM_MODULE");
	int (*fn)(pam_handle_t *, int, int, const char **);
	pam_handle_t *ph = NULL;
	char arg[PATH_MAX + 16];
	const char *argv[1] = { arg };
	void *h;
	int r;

	assert_non_null(module);
	snprintf(arg, sizeof(arg), "config=%s", pam_conf);
	assert_int_equal(pam_start(SERVICE, user, &pc, &ph), PAM_SUCCESS);
	if ((h = dlopen(module, RTLD_NOW | RTLD_LOCAL)) == NULL)
		fail_msg("dlopen %s: %s", module, dlerror());
	*(void **)&fn = dlsym(h, "pam_sm_authenticate");
	assert_non_null(fn);
	r = fn(ph, 0, 1, argv);
	pam_end(ph, r);
	dlclose(h);
	return r;
}

/* nullok: PAM_IGNORE from the module, and still no success for the stack. */
static void
assert_ignored(const char *user)
{
	struct conv c = { .answers = { fx.pin } };

	assert_pam(direct_auth(user, fx.pin), PAM_IGNORE);
	assert_pam(pam_op(SERVICE, user, &c, PAMTEST_AUTHENTICATE), PAM_PERM_DENIED);
}

/* ---------------------------------------------------------------------- */
/* helper processes: OCSP responder, fake listener */

static void
kill_helper(void)
{
	if (helper_pid > 0) {
		(void)kill(helper_pid, SIGKILL);
		while (waitpid(helper_pid, NULL, 0) == -1 && errno == EINTR)
			;
		helper_pid = 0;
	}
}

/* A TCP port on 127.0.0.1 free right now. */
static int
free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd, port;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

/*
 * Whether `openssl ocsp` listens: it says "ACCEPT" in its log.  (Probing
 * with a connection does not do: the 3.0 responder hangs on a client that
 * closes without a request.)
 */
static int
ocsp_ready(const char *log)
{
	char *text = fixture_read_file(log, NULL);
	int ok = text != NULL && strstr(text, "ACCEPT") != NULL;

	free(text);
	return ok;
}

/* `openssl ocsp` answering from the fixture's index, signed by the CA. */
static int
start_ocsp(void)
{
	char index[PATH_MAX], ca[PATH_MAX], key[PATH_MAX], log[PATH_MAX], portbuf[16];
	int port = free_port(), i, fd;

	fpath("ocsp-index.txt", index);
	fpath("ca.pem", ca);
	fpath("ca.key", key);
	fpath("ocsp.log", log);
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	fflush(NULL);
	assert_true((helper_pid = fork()) >= 0);
	if (helper_pid == 0) {
		if ((fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("openssl", "openssl", "ocsp", "-port", portbuf, "-index", index, "-CA", ca,
		       "-rsigner", ca, "-rkey", key, "-nmin", "10", (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 200 && !ocsp_ready(log); i++)
		usleep(25000);
	if (!ocsp_ready(log))
		fail_msg("openssl ocsp did not listen on port %d (see %s)", port, log);
	return port;
}

/* ---------------------------------------------------------------------- */
/* the proxy */

enum proxy_mode { PROXY_REPLAY, PROXY_JUNK_CERT, PROXY_SWAP_CERT, PROXY_FORGE_LABEL };

/* A token label that tries to start log lines of its own. */
#define FORGED_LABEL "mtls-test\nforged: user root: authenticated\r\x1b[2K"

static struct proxy {
	enum proxy_mode mode;
	char upstream[PATH_MAX];
	char path[PATH_MAX];
	int lfd;
	pthread_t thread;
	int running;
	pthread_mutex_t lock;
	struct wbuf *recorded; /* first SIGN reply body (replay) */
	const char *target;    /* identity whose certificate is replaced */
	unsigned char *cert;   /* replacement certificate DER */
	size_t cert_len;
	int replayed; /* replies replaced */
} px = { .lfd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };

static int
unix_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path) >= (int)sizeof(sun.sun_path))
		return -1;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Rewrites a LIST reply (body incl. type byte) as the mode says. */
static int
rewrite_list(struct wbuf *body)
{
	struct msg_list_resp resp = { 0 };
	struct wbuf *copy = NULL, *out = NULL;
	uint8_t type;
	size_t i;
	int r = -1;

	if ((copy = wbuf_from(wbuf_ptr(body), wbuf_len(body))) == NULL ||
	    wbuf_get_u8(copy, &type) != 0 || msg_list_resp_get(copy, &resp) != 0)
		goto out;
	for (i = 0; i < resp.n; i++) {
		struct mtls_agent_identity *id = &resp.ids[i];
		unsigned char *d;

		if (px.target != NULL && strcmp(id->name, px.target) != 0)
			continue;
		if (px.mode == PROXY_FORGE_LABEL) {
			/* The token label becomes an attempt at a log line. */
			free(id->token_label);
			if ((id->token_label = strdup(FORGED_LABEL)) == NULL)
				goto out;
			continue;
		}
		if ((d = malloc(px.cert_len)) == NULL)
			goto out;
		memcpy(d, px.cert, px.cert_len);
		free(id->cert_der);
		id->cert_der = d;
		id->cert_der_len = px.cert_len;
	}
	if ((out = wbuf_new()) == NULL || msg_list_resp_put(out, &resp) != 0)
		goto out;
	wbuf_reset(body);
	if (wbuf_put(body, wbuf_ptr(out), wbuf_len(out)) != 0)
		goto out;
	r = 0;
out:
	msg_list_resp_clear(&resp);
	wbuf_free(copy);
	wbuf_free(out);
	return r;
}

static void *
proxy_conn(void *arg)
{
	int cfd = (int)(intptr_t)arg, ufd;
	struct wbuf *b = wbuf_new();
	struct frame_rx crx = { 0 }, urx = { 0 };

	if (b == NULL || (ufd = unix_connect(px.upstream)) < 0)
		goto out_c;
	for (;;) {
		if (frame_read(cfd, &crx, b, MTLS_FRAME_MAX, -1, 5000) != 0 ||
		    frame_write(ufd, b, 5000) != 0 ||
		    frame_read(ufd, &urx, b, MTLS_FRAME_MAX, 30000, 30000) != 0)
			break;
		pthread_mutex_lock(&px.lock);
		if (wbuf_len(b) > 0 && wbuf_ptr(b)[0] == (MSG_SIGN | MSG_REPLY) &&
		    px.mode == PROXY_REPLAY) {
			if (px.recorded == NULL) {
				px.recorded = wbuf_from(wbuf_ptr(b), wbuf_len(b));
			} else {
				wbuf_reset(b);
				if (wbuf_put(b, wbuf_ptr(px.recorded), wbuf_len(px.recorded)) != 0)
					abort();
				px.replayed++;
			}
		}
		if (wbuf_len(b) > 0 && wbuf_ptr(b)[0] == (MSG_LIST | MSG_REPLY) &&
		    px.mode != PROXY_REPLAY) {
			if (rewrite_list(b) != 0)
				abort();
			px.replayed++;
		}
		pthread_mutex_unlock(&px.lock);
		if (frame_write(cfd, b, 5000) != 0)
			break;
	}
	close(ufd);
out_c:
	close(cfd);
	wbuf_free(b);
	return NULL;
}

static void *
proxy_main(void *arg)
{
	pthread_t t;
	int cfd;

	for (;;) {
		if ((cfd = accept4(px.lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL; /* the listener was shut down */
		}
		if (pthread_create(&t, NULL, proxy_conn, (void *)(intptr_t)cfd) != 0) {
			close(cfd);
			continue;
		}
		pthread_detach(t);
	}
}

/* Listens in a 0700 directory of the fixture and forwards to `upstream`. */
static void
proxy_start(enum proxy_mode mode, const char *upstream)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char dir[PATH_MAX];

	px.mode = mode;
	px.replayed = 0;
	snprintf(px.upstream, sizeof(px.upstream), "%s", upstream);
	assert_int_equal(fixture_unique_path(&fx, "proxy", "", dir, sizeof(dir)), 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_true(snprintf(px.path, sizeof(px.path), "%s/agent.sock", dir) <
		    (int)sizeof(sun.sun_path));
	SNP(sun.sun_path, "%s", px.path);
	assert_true((px.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0);
	assert_int_equal(bind(px.lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(chmod(px.path, 0600), 0);
	assert_int_equal(listen(px.lfd, 16), 0);
	assert_int_equal(pthread_create(&px.thread, NULL, proxy_main, NULL), 0);
	px.running = 1;
}

static void
proxy_stop(void)
{
	if (px.running) {
		shutdown(px.lfd, SHUT_RDWR);
		pthread_join(px.thread, NULL);
		px.running = 0;
	}
	if (px.lfd >= 0)
		close(px.lfd);
	px.lfd = -1;
	wbuf_free(px.recorded);
	px.recorded = NULL;
	free(px.cert);
	px.cert = NULL;
	px.target = NULL;
}

/* The DER of a PEM certificate file of the fixture. */
static unsigned char *
cert_der(const char *name, size_t *len)
{
	char path[PATH_MAX];
	unsigned char *der = NULL;
	X509 *x;
	FILE *f;
	int n;

	fpath(name, path);
	assert_non_null(f = fopen(path, "r"));
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	n = i2d_X509(x, &der);
	X509_free(x);
	assert_true(n > 0);
	*len = (size_t)n;
	return der;
}

/* ---------------------------------------------------------------------- */
/* setup / teardown */

static void
write_ca_db(void)
{
	char path[PATH_MAX], crl[PATH_MAX], cnf[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
	char *text;
	const char *exp = "991231235959Z";

	/* Serial 1000 (0x03E8) good, 1001 (0x03E9) revoked. */
	assert_true(asprintf(&text,
			     "V\t%s\t\t03E8\tunknown\t/O=mtls-agent tests/CN=alice\n"
			     "R\t%s\t240101000000Z\t03E9\tunknown\t/O=mtls-agent tests/CN=alice\n",
			     exp, exp) >= 0);
	fpath("ocsp-index.txt", path);
	assert_int_equal(fixture_write_file(path, text, 0600), 0);
	free(text);
	fpath("ocsp-index.txt.attr", path);
	assert_int_equal(fixture_write_file(path, "unique_subject = no\n", 0600), 0);
	fpath("ca.cnf", cnf);
	fpath("ocsp-index.txt", path);
	assert_true(asprintf(&text,
			     "[ca]\ndefault_ca = tca\n[tca]\ndatabase = %s\ndefault_md = sha256\n"
			     "default_crl_days = 30\n",
			     path) >= 0);
	assert_int_equal(fixture_write_file(cnf, text, 0600), 0);
	free(text);
	fpath("crl.pem", crl);
	fpath("ca.key", key);
	fpath("ca.pem", ca);
	{
		const char *argv[] = { "openssl", "ca",	      "-batch", "-gencrl", "-config",
				       cnf,	  "-keyfile", key,	"-cert",   ca,
				       "-out",	  crl,	      NULL };

		run(argv);
	}
}

static int
group_setup(void **state)
{
	size_t i;
	char name[64], home[PATH_MAX];

	signal(SIGPIPE, SIG_IGN);
	if ((tdir = getenv("MTLS_PAM_TEST_DIR")) == NULL || getenv("PAM_WRAPPER") == NULL) {
		fprintf(stderr, "test_pam: run me through tests/pam/test_pam.sh "
				"(pam_wrapper, nss_wrapper, MTLS_PAM_TEST_DIR)\n");
		return -1;
	}
	snprintf(pam_conf, sizeof(pam_conf), "%s/pam.conf", tdir);
	/* The wrappers are for this process; agents and openssl run plain. */
	unsetenv("LD_PRELOAD");
	if (fixture_setup(&fx) != 0)
		return -1;
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(name, sizeof(name), "alice-%s.pem", keys[i].label);
		issue(name, ALICE, keys[i].label, "ca", "--eku", "clientAuth", NULL);
	}
	issue("alice-p256-expired.pem", ALICE, "p256", "ca", "--eku", "clientAuth", "--not-before",
	      "-864000", "--not-after", "-86400", NULL);
	issue("alice-p256-notyet.pem", ALICE, "p256", "ca", "--eku", "clientAuth", "--not-before",
	      "864000", "--not-after", "1728000", NULL);
	issue("alice-p256-wrongca.pem", ALICE, "p256", "other-ca", "--eku", "clientAuth", NULL);
	issue("alice-p256-noeku.pem", ALICE, "p256", "ca", "--eku", "serverAuth", NULL);
	issue("alice-p256-good.pem", ALICE, "p256", "ca", "--eku", "clientAuth", "--serial", "1000",
	      NULL);
	issue("alice-p256-revoked.pem", ALICE, "p256", "ca", "--eku", "clientAuth", "--serial",
	      "1001", NULL);
	issue("bob-p256.pem", BOB, "p256", "ca", "--eku", "clientAuth", NULL);
	write_ca_db();
	snprintf(home, sizeof(home), "%s/home/alice", tdir);
	(void)mkdir(home, 0755);
	return 0;
}

static int
group_teardown(void **state)
{
	fixture_teardown(&fx);
	return 0;
}

static int
setup(void **state)
{
	memset(&ag, 0, sizeof(ag));
	ag.out_fd = -1;
	unsetenv("MTLS_AGENT_SOCK");
	return 0;
}

static int
teardown(void **state)
{
	proxy_stop();
	kill_helper();
	if (ag.pid > 0)
		(void)agent_stop(&ag);
	fixture_kill_all(&fx);
	(void)unlink(pam_conf);
	(void)rmdir(pam_conf);
	unsetenv("MTLS_AGENT_SOCK");
	return 0;
}

/* ---------------------------------------------------------------------- */
/* positive */

static void
login_with(const char *label, const char *id)
{
	char name[64], cert[64];
	struct conv c = { .answers = { fx.pin } };

	snprintf(name, sizeof(name), "alice-%s", label);
	snprintf(cert, sizeof(cert), "alice-%s.pem", label);
	start_agent_one(name, id, cert);
	write_pam_conf(ag.sock, "");
	/* auth, then account in the same handle (the kept certificate). */
	assert_pam(pam_op2(SERVICE, ALICE, &c, PAMTEST_AUTHENTICATE, PAMTEST_ACCOUNT), PAM_SUCCESS);
	assert_int_equal(c.n_prompts, 1);
	assert_string_equal(c.prompts[0], "PIN for mtls-test: ");
}

static void
test_login_rsa2048(void **state)
{
	login_with("rsa2048", "01");
}

static void
test_login_rsa3072(void **state)
{
	login_with("rsa3072", "02");
}

static void
test_login_p256(void **state)
{
	login_with("p256", "03");
}

static void
test_login_p384(void **state)
{
	login_with("p384", "04");
}

/*
 * Token already logged in: the PIN is asked and checked by the token all
 * the same, so an empty, missing or wrong PIN does not get in.
 */
static void
test_pin_checked_when_logged_in(void **state)
{
	struct conv c;

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	login(ALICE, fx.pin, PAM_SUCCESS);
	c = login(ALICE, fx.pin, PAM_SUCCESS);
	assert_int_equal(c.n_prompts, 1);
	assert_string_equal(c.prompts[0], "PIN for mtls-test: ");
	c = login(ALICE, "", PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 1);
	c = login(ALICE, NULL, PAM_CONV_ERR);
	assert_int_equal(c.n_prompts, 1);
	c = login(ALICE, WRONG_PIN, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 1);
	/* The wrong PIN logged the token out: even trust_logged_in asks now. */
	write_pam_conf(ag.sock, "trust_logged_in\n");
	c = login(ALICE, NULL, PAM_CONV_ERR);
	assert_int_equal(c.n_prompts, 1);
	write_pam_conf(ag.sock, "");
	login(ALICE, fx.pin, PAM_SUCCESS);
}

/* trust_logged_in: a logged-in token needs no PIN, as documented (what it
 * gives up: anyone reaching the PAM stack gets in while it is logged in). */
static void
test_trust_logged_in(void **state)
{
	struct conv c;

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "trust_logged_in\n");
	c = login(ALICE, NULL, PAM_CONV_ERR);
	assert_int_equal(c.n_prompts, 1);
	c = login(ALICE, fx.pin, PAM_SUCCESS);
	assert_int_equal(c.n_prompts, 1);
	c = login(ALICE, NULL, PAM_SUCCESS);
	assert_int_equal(c.n_prompts, 0);
	c = login(ALICE, WRONG_PIN, PAM_SUCCESS);
	assert_int_equal(c.n_prompts, 0);
}

/*
 * On the card-like shim: a wrong PIN after a good login reaches the card
 * (its counter goes down: "few tries left"), and a good one resets it; the
 * re-logins leave the token's other identities able to sign.
 */
static void
test_relogin_card(void **state)
{
	const char *args[] = { "--module", fx.lockout_module, NULL };
	char *a = identity_text("alice-p256", "03", "alice-p256.pem");
	char *b = identity_text("alice-rsa2048", "01", "alice-rsa2048.pem");
	char *t = NULL;
	struct conv c;

	if (access(fx.lockout_module, R_OK) != 0)
		fail_msg("lockout module %s missing (make tests/fixtures/p11-lockout.la)",
			 fx.lockout_module);
	assert_true(asprintf(&t, "%s%s", a, b) >= 0);
	start_agent_text(t, args);
	free(t);
	free(a);
	free(b);
	write_pam_conf(ag.sock, "identity = alice-p256\n");
	c = login(ALICE, fx.pin, PAM_SUCCESS);
	assert_string_equal(c.prompts[0], "PIN for mtls-test: ");
	c = login(ALICE, WRONG_PIN, PAM_AUTH_ERR);
	assert_string_equal(c.prompts[0], "PIN for mtls-test: ");
	c = login(ALICE, fx.pin, PAM_SUCCESS);
	assert_string_equal(c.prompts[0], "PIN for mtls-test (few tries left): ");
	c = login(ALICE, fx.pin, PAM_SUCCESS);
	assert_string_equal(c.prompts[0], "PIN for mtls-test: ");
	/* The other identity's key survived the logouts and logins. */
	write_pam_conf(ag.sock, "identity = alice-rsa2048\ntrust_logged_in\n");
	c = login(ALICE, NULL, PAM_SUCCESS);
	assert_int_equal(c.n_prompts, 0);
}

/* The PAM line's options (with [...] for blanks) before config=. */
static void
test_pin_prompt_option(void **state)
{
	struct conv c = { .answers = { fx.pin } };

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	assert_pam(pam_op(SERVICE_LINE, ALICE, &c, PAMTEST_AUTHENTICATE), PAM_SUCCESS);
	assert_int_equal(c.n_prompts, 1);
	assert_string_equal(c.prompts[0], "Card PIN (mtls-test): ");
}

/* ---------------------------------------------------------------------- */
/* certificate refused: PAM_CRED_INSUFFICIENT, and no PIN asked */

static void
refused_cert(const char *cert, const char *extra, int want)
{
	struct conv c;

	start_agent_one("alice-p256", "03", cert);
	write_pam_conf(ag.sock, "%s", extra);
	c = login(ALICE, fx.pin, want);
	assert_int_equal(c.n_prompts, 0);
}

static void
test_expired(void **state)
{
	refused_cert("alice-p256-expired.pem", "", PAM_CRED_INSUFFICIENT);
}

static void
test_not_yet_valid(void **state)
{
	refused_cert("alice-p256-notyet.pem", "", PAM_CRED_INSUFFICIENT);
}

static void
test_unknown_ca(void **state)
{
	refused_cert("alice-p256-wrongca.pem", "", PAM_CRED_INSUFFICIENT);
}

static void
test_wrong_eku(void **state)
{
	refused_cert("alice-p256-noeku.pem", "", PAM_CRED_INSUFFICIENT);
}

/* The user hears why the certificate was refused (PAM_ERROR_MSG), not only
 * "Insufficient credentials"; the log says it too. */
static void
test_refusal_shown(void **state)
{
	struct conv c;

	start_agent_one("alice-p256", "03", "alice-p256-expired.pem");
	write_pam_conf(ag.sock, "");
	c = login(ALICE, fx.pin, PAM_CRED_INSUFFICIENT);
	if (strstr(c.errors, "Certificate of alice-p256 refused: certificate expired") == NULL)
		fail_msg("conversation errors: \"%s\"", c.errors);
	assert_non_null(strstr(c.errors, "CN=alice"));

	/* Account management says it the same way. */
	memset(&c, 0, sizeof(c));
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_ACCOUNT), PAM_ACCT_EXPIRED);
	if (strstr(c.errors, "Certificate refused: certificate expired") == NULL)
		fail_msg("account: conversation errors: \"%s\"", c.errors);
}

/* A CA made the usual way, `openssl req -x509` without keyUsage, is
 * accepted as nginx accepts it; x509_strict refuses it, saying why. */
static void
test_plain_ca(void **state)
{
	char key[PATH_MAX], pem[PATH_MAX];
	const char *req[] = { "openssl",
			      "req",
			      "-x509",
			      "-newkey",
			      "ec",
			      "-pkeyopt",
			      "ec_paramgen_curve:P-256",
			      "-nodes",
			      "-keyout",
			      key,
			      "-out",
			      pem,
			      "-subj",
			      "/CN=Plain CA",
			      "-days",
			      "30",
			      NULL };
	struct conv c;

	fpath("plain-ca.key", key);
	fpath("plain-ca.pem", pem);
	run(req);
	issue("alice-p256-plainca.pem", ALICE, "p256", "plain-ca", "--eku", "clientAuth", NULL);
	start_agent_one("alice-p256", "03", "alice-p256-plainca.pem");
	write_pam_conf(ag.sock, "ca_file = %s\n", pem);
	c = login(ALICE, fx.pin, PAM_SUCCESS);
	assert_null(strstr(c.errors, "refused"));

	write_pam_conf(ag.sock, "ca_file = %s\nx509_strict\n", pem);
	c = login(ALICE, fx.pin, PAM_CRED_INSUFFICIENT);
	assert_int_equal(c.n_prompts, 0);
	if (strstr(c.errors, "Certificate of alice-p256 refused") == NULL ||
	    strstr(c.errors, "key usage") == NULL)
		fail_msg("conversation errors: \"%s\"", c.errors);
}

/* eku=any lets the serverAuth-only certificate through: the option works
 * (and the refusal above is the EKU check, nothing else). */
static void
test_eku_any(void **state)
{
	start_agent_one("alice-p256", "03", "alice-p256-noeku.pem");
	write_pam_conf(ag.sock, "eku = any\n");
	login(ALICE, fx.pin, PAM_SUCCESS);
}

static void
test_revoked_crl(void **state)
{
	char crl[PATH_MAX], *extra;
	char *t1 = identity_text("good", "03", "alice-p256-good.pem");

	fpath("crl.pem", crl);
	assert_true(asprintf(&extra, "crl_file = %s\n", crl) >= 0);
	/* The good certificate passes with the same CRL... */
	start_agent_text(t1, NULL);
	write_pam_conf(ag.sock, "%s", extra);
	login(ALICE, fx.pin, PAM_SUCCESS);
	(void)agent_stop(&ag);
	/* ...the revoked one does not. */
	refused_cert("alice-p256-revoked.pem", extra, PAM_CRED_INSUFFICIENT);
	free(extra);
	free(t1);
}

static void
test_revoked_ocsp(void **state)
{
	char *extra;
	int port = start_ocsp();

	assert_true(asprintf(&extra,
			     "ocsp = hard\nocsp_url = http://127.0.0.1:%d/\n"
			     "ocsp_timeout = 5\n",
			     port) >= 0);
	start_agent_one("good", "03", "alice-p256-good.pem");
	write_pam_conf(ag.sock, "%s", extra);
	login(ALICE, fx.pin, PAM_SUCCESS);
	(void)agent_stop(&ag);
	refused_cert("alice-p256-revoked.pem", extra, PAM_CRED_INSUFFICIENT);
	free(extra);
}

/* ---------------------------------------------------------------------- */
/* mapping */

static void
test_other_user(void **state)
{
	struct conv c;

	start_agent_one("bob-p256", "03", "bob-p256.pem");
	write_pam_conf(ag.sock, "");
	c = login(ALICE, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 0);
	/* and bob cannot use alice's */
	(void)agent_stop(&ag);
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	c = login(BOB, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 0);
}

static void
test_user_unknown(void **state)
{
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	login("nosuchuser", fx.pin, PAM_USER_UNKNOWN);
}

static void
test_authorized_file(void **state)
{
	char auth[PATH_MAX], cert[PATH_MAX], *pem;

	snprintf(auth, sizeof(auth), "%s/home/alice/authorized_certs", tdir);
	fpath("alice-p384.pem", cert);
	assert_non_null(pem = fixture_read_file(cert, NULL));
	assert_int_equal(fixture_write_file(auth, pem, 0600), 0);
	free(pem);
	start_agent_one("alice-p384", "04", "alice-p384.pem");
	write_pam_conf(ag.sock,
		       "map = authorized\nauthorized_file = %s/home/%%u/authorized_certs\n", tdir);
	login(ALICE, fx.pin, PAM_SUCCESS);
	/* Writable by others: refused, whatever it says. */
	assert_int_equal(chmod(auth, 0666), 0);
	login(ALICE, NULL, PAM_AUTH_ERR);
	assert_int_equal(chmod(auth, 0600), 0);
	login(ALICE, fx.pin, PAM_SUCCESS);
	(void)unlink(auth);
	login(ALICE, NULL, PAM_AUTH_ERR);
}

/* ---------------------------------------------------------------------- */
/* PIN */

static void
test_wrong_pin(void **state)
{
	struct conv c;

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	c = login(ALICE, WRONG_PIN, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 1);
	assert_non_null(strstr(c.prompts[0], "PIN for mtls-test"));
	/* The right PIN still works (and resets SoftHSM's "count low"). */
	login(ALICE, fx.pin, PAM_SUCCESS);
}

static void
test_no_pin_answer(void **state)
{
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	login(ALICE, NULL, PAM_CONV_ERR);
	login(ALICE, "", PAM_AUTH_ERR);
}

static void
test_locked_pin(void **state)
{
	const char *args[] = { "--module", fx.lockout_module, NULL };
	char *t = identity_text("alice-p256", "03", "alice-p256.pem");
	struct conv c;
	int r;

	if (access(fx.lockout_module, R_OK) != 0)
		fail_msg("lockout module %s missing (make tests/fixtures/p11-lockout.la)",
			 fx.lockout_module);
	start_agent_text(t, args);
	free(t);
	write_pam_conf(ag.sock, "");
	c = login(ALICE, WRONG_PIN, PAM_AUTH_ERR);
	c = login(ALICE, WRONG_PIN, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 1);
	assert_string_equal(c.prompts[0], "PIN for mtls-test (few tries left): ");
	/* The card says "final try" now. */
	{
		struct conv c3 = { .answers = { WRONG_PIN } };

		r = pam_op(SERVICE, ALICE, &c3, PAMTEST_AUTHENTICATE);
		assert_int_equal(c3.n_prompts, 1);
		assert_string_equal(c3.prompts[0], "PIN for mtls-test (1 try left): ");
		assert_true(r == PAM_MAXTRIES || r == PAM_AUTH_ERR);
	}
	/* Locked: PAM_MAXTRIES without asking, even with the right PIN at hand. */
	c = login(ALICE, fx.pin, PAM_MAXTRIES);
	assert_int_equal(c.n_prompts, 0);
}

/* ---------------------------------------------------------------------- */
/* no agent, no card */

static void
test_no_agent(void **state)
{
	char sock[PATH_MAX];

	SNP(sock, "%s/no-such-dir/agent.sock", fx.dir);
	write_pam_conf(sock, "");
	login(ALICE, fx.pin, PAM_AUTHINFO_UNAVAIL);
	assert_pam(direct_auth(ALICE, fx.pin), PAM_AUTHINFO_UNAVAIL);
	write_pam_conf(sock, "nullok\n");
	assert_ignored(ALICE);
	/* The default socket (the system one) is not this test's business,
	 * but a dead socket file is "no agent" as well. */
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	snprintf(sock, sizeof(sock), "%s", ag.sock);
	(void)agent_signal(&ag, SIGKILL);
	(void)agent_wait(&ag, 5000);
	if (access(sock, F_OK) == 0) {
		write_pam_conf(sock, "");
		login(ALICE, fx.pin, PAM_AUTHINFO_UNAVAIL);
	}
}

static void
test_token_absent(void **state)
{
	char cert[PATH_MAX], *t;
	struct conv c;

	fpath("alice-p256.pem", cert);
	assert_true(asprintf(&t,
			     "[identity absent]\nkey = pkcs11:token=absent-token;id=%%03;"
			     "type=private\ncertificate = %s\npurposes = pam\n",
			     cert) >= 0);
	start_agent_text(t, NULL);
	free(t);
	write_pam_conf(ag.sock, "");
	c = login(ALICE, fx.pin, PAM_AUTHINFO_UNAVAIL);
	assert_int_equal(c.n_prompts, 0);
	write_pam_conf(ag.sock, "nullok\n");
	assert_ignored(ALICE);
}

/* An agent without any identity: "no card" too. */
static void
test_no_identity(void **state)
{
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "identity = not-there\n");
	login(ALICE, fx.pin, PAM_AUTHINFO_UNAVAIL);
	write_pam_conf(ag.sock, "identity = not-there\nnullok\n");
	assert_ignored(ALICE);
	/* nullok does not soften a refusal: a certificate of bob's. */
	(void)agent_stop(&ag);
	start_agent_one("bob-p256", "03", "bob-p256.pem");
	write_pam_conf(ag.sock, "nullok\n");
	assert_pam(direct_auth(ALICE, fx.pin), PAM_AUTH_ERR);
}

/* ---------------------------------------------------------------------- */
/* possession */

/*
 * The agent itself refuses a key that does not match the certificate
 * file; the login fails.
 */
static void
test_victim_cert_other_key_agent(void **state)
{
	start_agent_one("evil", "02", "alice-rsa2048.pem");
	write_pam_conf(ag.sock, "");
	login(ALICE, fx.pin, PAM_AUTH_ERR);
}

/*
 * A token (here: an agent, through the proxy) that shows the victim's
 * certificate but holds another key: the signature check catches it.
 */
static void
test_victim_cert_other_key(void **state)
{
	start_agent_one("evil", "02", "alice-rsa3072.pem");
	proxy_start(PROXY_SWAP_CERT, ag.sock);
	px.target = "evil";
	px.cert = cert_der("alice-rsa2048.pem", &px.cert_len);
	write_pam_conf(px.path, "");
	login(ALICE, fx.pin, PAM_AUTH_ERR);
	assert_true(px.replayed > 0);
}

/* A certificate that does not parse: skipped, no crash. */
static void
test_junk_certificate(void **state)
{
	static unsigned char junk[] = { 0x30, 0x82, 0x01, 0x00, 0xde, 0xad,
					0xbe, 0xef, 0x01, 0x02, 0x03 };
	char *t1 = identity_text("junk", "03", "alice-p256.pem");
	char *t2 = identity_text("alice-p384", "04", "alice-p384.pem");
	char *both = NULL;
	struct conv c;

	start_agent_text(t1, NULL);
	proxy_start(PROXY_JUNK_CERT, ag.sock);
	px.target = "junk";
	assert_non_null(px.cert = malloc(sizeof(junk)));
	memcpy(px.cert, junk, sizeof(junk));
	px.cert_len = sizeof(junk);
	write_pam_conf(px.path, "");
	c = login(ALICE, fx.pin, PAM_CRED_INSUFFICIENT);
	assert_int_equal(c.n_prompts, 0);
	proxy_stop();
	(void)agent_stop(&ag);

	/* Junk first, a good identity second: the good one is used. */
	assert_true(asprintf(&both, "%s%s", t1, t2) >= 0);
	start_agent_text(both, NULL);
	proxy_start(PROXY_JUNK_CERT, ag.sock);
	px.target = "junk";
	assert_non_null(px.cert = malloc(sizeof(junk)));
	memcpy(px.cert, junk, sizeof(junk));
	px.cert_len = sizeof(junk);
	write_pam_conf(px.path, "");
	login(ALICE, fx.pin, PAM_SUCCESS);
	free(both);
	free(t1);
	free(t2);
}

/*
 * pam_wrapper writes the module's pam_syslog() lines to stderr
 * ("PWRAP_...(pid) - SYSLOG(prio): message") at PAM_WRAPPER_DEBUGLEVEL 3:
 * log_capture_end() returns what was logged since log_capture_begin()
 * (free it).
 */
struct log_capture {
	char path[PATH_MAX];
	char *old_level;
	int saved;
};

static void
log_capture_begin(struct log_capture *lc)
{
	const char *old = getenv("PAM_WRAPPER_DEBUGLEVEL");
	int fd;

	lc->old_level = old != NULL ? strdup(old) : NULL;
	assert_int_equal(fixture_unique_path(&fx, "pam-log", ".txt", lc->path, sizeof(lc->path)),
			 0);
	assert_true((fd = open(lc->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) >= 0);
	fflush(stderr);
	assert_true((lc->saved = dup(STDERR_FILENO)) >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
	setenv("PAM_WRAPPER_DEBUGLEVEL", "3", 1);
}

static char *
log_capture_end(struct log_capture *lc)
{
	char *text;

	if (lc->old_level != NULL)
		setenv("PAM_WRAPPER_DEBUGLEVEL", lc->old_level, 1);
	else
		unsetenv("PAM_WRAPPER_DEBUGLEVEL");
	free(lc->old_level);
	fflush(stderr);
	assert_int_equal(dup2(lc->saved, STDERR_FILENO), STDERR_FILENO);
	close(lc->saved);
	assert_non_null(text = fixture_read_file(lc->path, NULL));
	return text;
}

/*
 * Issue 10 item 7: names and labels from the agent are escaped in every
 * line the module logs: a label with a newline cannot start a line.
 */
static void
test_log_injection(void **state)
{
	struct log_capture lc;
	char *text, *copy, *line, *save = NULL;
	int n_lines = 0, escaped = 0;

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	proxy_start(PROXY_FORGE_LABEL, ag.sock);
	write_pam_conf(px.path, "");
	log_capture_begin(&lc);
	login(ALICE, fx.pin, PAM_SUCCESS);
	text = log_capture_end(&lc);
	assert_true(px.replayed > 0);

	assert_non_null(copy = strdup(text));
	for (line = strtok_r(copy, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if (strstr(line, "SYSLOG(") == NULL)
			continue;
		n_lines++;
		if (strstr(line, "forged: user root") != NULL &&
		    strstr(line, "mtls-test\\x0aforged: user root: authenticated\\x0d\\x1b[2K") ==
			NULL)
			fail_msg("unescaped label in \"%s\"", line);
		if (strstr(line, "(token mtls-test\\x0aforged: user root: authenticated") != NULL)
			escaped++;
	}
	free(copy);
	if (n_lines == 0 || escaped == 0)
		fail_msg("pam_wrapper logged %d lines, %d with the escaped label", n_lines,
			 escaped);
	/* Nothing the module logged started a line of its own. */
	assert_null(strstr(text, "\nforged:"));
	assert_null(strchr(text, '\r'));
	assert_null(strchr(text, '\x1b'));
	free(text);
}

/* SoftHSM2 does not report tries left: the log says nothing of them
 * rather than "tries left: -1". */
static void
test_wrong_pin_logged(void **state)
{
	struct log_capture lc;
	char *text;

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	log_capture_begin(&lc);
	login(ALICE, WRONG_PIN, PAM_AUTH_ERR);
	text = log_capture_end(&lc);
	if (strstr(text, "token mtls-test: wrong PIN") == NULL)
		fail_msg("no wrong-PIN line in the log:\n%s", text);
	assert_null(strstr(text, "-1"));
	assert_null(strstr(text, "tries left: "));
	free(text);
}

/* The proxy answers the second challenge with the first signature. */
static void
test_replayed_signature(void **state)
{
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	proxy_start(PROXY_REPLAY, ag.sock);
	write_pam_conf(px.path, "");
	login(ALICE, fx.pin, PAM_SUCCESS);
	assert_non_null(px.recorded);
	login(ALICE, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(px.replayed, 1);
}

/* ---------------------------------------------------------------------- */
/* socket checks and the user's agent */

static void
test_user_agent(void **state)
{
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "user_agent\n");
	login(ALICE, fx.pin, PAM_SUCCESS);
	/* bob (uid 4243) may not use an agent of alice's (or root's). */
	login(BOB, fx.pin, PAM_AUTH_ERR);
}

/*
 * user_agent without socket=: the socket is the target user's, never the
 * one MTLS_AGENT_SOCK of the application's environment names (under su,
 * that is the caller's choice).
 */
static void
test_user_agent_env_ignored(void **state)
{
	char ca[PATH_MAX], dflt[PATH_MAX], *text;
	struct conv c;

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	fpath("ca.pem", ca);
	assert_true(asprintf(&text, "user_agent\nca_file=%s\n", ca) >= 0);
	assert_int_equal(fixture_write_file(pam_conf, text, 0600), 0);
	free(text);
	SNP(dflt, "/run/user/%lu/mtls-agent/agent.sock", (unsigned long)getuid());
	if (access(dflt, F_OK) == 0) {
		print_message("%s exists (a real agent?): not testing the default\n", dflt);
		skip();
	}
	setenv("MTLS_AGENT_SOCK", ag.sock, 1);
	c = login(ALICE, fx.pin, PAM_AUTHINFO_UNAVAIL);
	assert_int_equal(c.n_prompts, 0);
}

/*
 * user_agent: socket, its directory and the listener must all be the
 * target user's; root's (the system agent) are refused too.  Needs root
 * to run an agent as root with a certificate for bob.
 */
static void
test_user_agent_root_socket(void **state)
{
	char dir[PATH_MAX], *slash;
	struct conv c;

	if (getuid() != 0)
		skip();
	start_agent_one("bob-p256", "03", "bob-p256.pem");
	/* The system agent for bob: fine without user_agent... */
	write_pam_conf(ag.sock, "");
	login(BOB, fx.pin, PAM_SUCCESS);
	/* ...but not as bob's own agent. */
	write_pam_conf(ag.sock, "user_agent\n");
	c = login(BOB, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 0);
	/* Directory bob's, socket root's. */
	snprintf(dir, sizeof(dir), "%s", ag.sock);
	assert_non_null(slash = strrchr(dir, '/'));
	*slash = '\0';
	assert_int_equal(chown(dir, BOB_UID, BOB_UID), 0);
	c = login(BOB, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 0);
	/* Both bob's, the listener root. */
	assert_int_equal(chown(ag.sock, BOB_UID, BOB_UID), 0);
	c = login(BOB, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 0);
}

struct flipper {
	char link[PATH_MAX], tmp[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
	int stop;
};

/* Points `link` at a, then b, then a...: rename(2) swaps it atomically. */
static void *
flip_run(void *arg)
{
	struct flipper *f = arg;
	unsigned int i;

	for (i = 0; !__atomic_load_n(&f->stop, __ATOMIC_RELAXED); i++) {
		(void)unlink(f->tmp);
		if (symlink(i % 2 ? f->b : f->a, f->tmp) != 0 || rename(f->tmp, f->link) != 0)
			break;
		usleep(200);
	}
	return NULL;
}

/*
 * The socket path is walked without following symlinks, and the module
 * connects to the socket it checked.  A symlink anywhere in the path is
 * refused, so one flipped between the real agent and an attacker's never
 * gets a PIN to the attacker: no prompt, ever.
 */
static void
test_socket_symlinks(void **state)
{
	struct agent_proc evil = { .out_fd = -1 };
	char real_dir[PATH_MAX], evil_dir[PATH_MAX], link[PATH_MAX], sock[PATH_MAX], *slash;
	const char *base;
	struct flipper f = { 0 };
	struct conv c;
	pthread_t th;
	int i;

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	snprintf(real_dir, sizeof(real_dir), "%s", ag.sock);
	assert_non_null(slash = strrchr(real_dir, '/'));
	*slash = '\0';
	base = strrchr(ag.sock, '/') + 1;
	/* The attacker's agent: same user, a second listener. */
	{
		char *t = identity_text("alice-p256", "03", "alice-p256.pem");

		assert_int_equal(agent_start(&fx, t, NULL, &evil), 0);
		free(t);
	}
	snprintf(evil_dir, sizeof(evil_dir), "%s", evil.sock);
	assert_non_null(slash = strrchr(evil_dir, '/'));
	*slash = '\0';
	assert_string_equal(strrchr(evil.sock, '/') + 1, base);

	/* The socket itself a symlink (to the real one). */
	SNP(link, "%s/alias.sock", real_dir);
	assert_int_equal(symlink(ag.sock, link), 0);
	write_pam_conf(link, "nullok\n");
	c = login(ALICE, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 0);
	/* The socket's directory a symlink. */
	SNP(link, "%s/dirlink", fx.dir);
	assert_int_equal(symlink(real_dir, link), 0);
	SNP(sock, "%s/%s", link, base);
	write_pam_conf(sock, "nullok\n");
	c = login(ALICE, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 0);
	/* A directory further up a symlink (to the tree holding both). */
	SNP(link, "%s/treelink", fx.dir);
	assert_int_equal(symlink(fx.dir, link), 0);
	SNP(sock, "%s%s", link, ag.sock + strlen(fx.dir));
	write_pam_conf(sock, "nullok\n");
	c = login(ALICE, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(c.n_prompts, 0);

	/* A directory symlink flipping between the real and the evil agent. */
	SNP(f.link, "%s/flip", fx.dir);
	SNP(f.tmp, "%s/flip.tmp", fx.dir);
	SNP(f.a, "%s", real_dir);
	SNP(f.b, "%s", evil_dir);
	assert_int_equal(symlink(f.a, f.link), 0);
	SNP(sock, "%s/%s", f.link, base);
	write_pam_conf(sock, "nullok\n");
	assert_int_equal(pthread_create(&th, NULL, flip_run, &f), 0);
	for (i = 0; i < 20; i++) {
		c = login(ALICE, fx.pin, PAM_AUTH_ERR);
		if (c.n_prompts != 0) {
			__atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
			(void)pthread_join(th, NULL);
			fail_msg("login %d through a flipping symlink asked a PIN", i);
		}
	}
	__atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
	assert_int_equal(pthread_join(th, NULL), 0);
	(void)agent_stop(&evil);
	/* The real path still works. */
	write_pam_conf(ag.sock, "");
	login(ALICE, fx.pin, PAM_SUCCESS);
}

/* Socket or directory writable by others: refused, even with nullok. */
static void
test_socket_permissions(void **state)
{
	char dir[PATH_MAX], *slash;

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "nullok\n");
	snprintf(dir, sizeof(dir), "%s", ag.sock);
	assert_non_null(slash = strrchr(dir, '/'));
	*slash = '\0';
	assert_int_equal(chmod(dir, 0777), 0);
	login(ALICE, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(chmod(ag.sock, 0666), 0);
	login(ALICE, fx.pin, PAM_AUTH_ERR);
	assert_int_equal(chmod(ag.sock, 0600), 0);
	login(ALICE, fx.pin, PAM_SUCCESS);
	if (getuid() == 0) {
		/* Owned by someone else than root and the user. */
		assert_int_equal(chown(ag.sock, BOB_UID, BOB_UID), 0);
		login(ALICE, NULL, PAM_AUTH_ERR);
	}
}

/*
 * A listener whose process runs as another uid, behind a socket file and
 * directory that pass the ownership checks: SO_PEERCRED refuses it.
 * Needs root (to become another uid after binding).
 */
static void
test_peer_uid(void **state)
{
	char dir[PATH_MAX], sock[PATH_MAX];
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd, i;

	if (getuid() != 0)
		skip();
	assert_int_equal(fixture_unique_path(&fx, "peer", "", dir, sizeof(dir)), 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	SNP(sock, "%s/agent.sock", dir);
	SNP(sun.sun_path, "%s", sock);
	fflush(NULL);
	assert_true((helper_pid = fork()) >= 0);
	if (helper_pid == 0) {
		if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 ||
		    bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || chmod(sock, 0600) != 0 ||
		    setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0 ||
		    listen(fd, 8) != 0)
			_exit(1);
		for (;;)
			pause();
	}
	for (i = 0; i < 200 && access(sock, F_OK) != 0; i++)
		usleep(10000);
	usleep(50000);
	write_pam_conf(sock, "nullok\n");
	login(ALICE, fx.pin, PAM_AUTH_ERR);
}

/* ---------------------------------------------------------------------- */
/* options */

static void
test_bad_options(void **state)
{
	struct conv c = { .answers = { NULL } };

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	/* On the PAM line. */
	assert_pam(pam_op(SERVICE_BADOPT, ALICE, &c, PAMTEST_AUTHENTICATE), PAM_SERVICE_ERR);
	/* In the file, for each interface. */
	write_pam_conf(ag.sock, "no_such_option = 1\n");
	login(ALICE, fx.pin, PAM_SERVICE_ERR);
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_ACCOUNT), PAM_SERVICE_ERR);
	write_pam_conf(ag.sock, "ocsp = sometimes\n");
	login(ALICE, fx.pin, PAM_SERVICE_ERR);
	write_pam_conf(ag.sock, "timeout = -1\n");
	login(ALICE, fx.pin, PAM_SERVICE_ERR);
	/* A config file others may write is refused. */
	write_pam_conf(ag.sock, "");
	assert_int_equal(chmod(pam_conf, 0646), 0);
	login(ALICE, fx.pin, PAM_SERVICE_ERR);
	/* An unreadable CA file is a service error, not a refusal. */
	write_pam_conf(ag.sock, "ca_file = %s/no-such-ca.pem\n", fx.dir);
	login(ALICE, fx.pin, PAM_SERVICE_ERR);
	/* All fine again, with debug and timeout. */
	write_pam_conf(ag.sock, "debug\ntimeout = 30\n");
	login(ALICE, fx.pin, PAM_SUCCESS);
}

/*
 * The options file must be a regular file.  A FIFO in its place is refused
 * at once (it is opened O_NONBLOCK), not waited on for a writer that never
 * comes: SIGALRM would end the test if it hung.  A directory is refused.
 */
static void
test_config_not_regular(void **state)
{
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	(void)unlink(pam_conf);
	assert_int_equal(mkfifo(pam_conf, 0600), 0);
	alarm(20);
	login(ALICE, fx.pin, PAM_SERVICE_ERR);
	alarm(0);
	assert_int_equal(unlink(pam_conf), 0);
	assert_int_equal(mkdir(pam_conf, 0700), 0);
	login(ALICE, fx.pin, PAM_SERVICE_ERR);
	assert_int_equal(rmdir(pam_conf), 0);
	write_pam_conf(ag.sock, "");
	login(ALICE, fx.pin, PAM_SUCCESS);
}

/* ---------------------------------------------------------------------- */
/* account */

static void
test_account(void **state)
{
	struct conv c = { .answers = { NULL } };
	char crl[PATH_MAX];

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_ACCOUNT), PAM_SUCCESS);
	assert_pam(pam_op(SERVICE, BOB, &c, PAMTEST_ACCOUNT), PAM_PERM_DENIED);
	(void)agent_stop(&ag);

	start_agent_one("alice-p256", "03", "alice-p256-expired.pem");
	write_pam_conf(ag.sock, "");
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_ACCOUNT), PAM_ACCT_EXPIRED);
	(void)agent_stop(&ag);

	fpath("crl.pem", crl);
	start_agent_one("alice-p256", "03", "alice-p256-revoked.pem");
	write_pam_conf(ag.sock, "crl_file = %s\n", crl);
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_ACCOUNT), PAM_PERM_DENIED);
	assert_int_equal(c.n_prompts, 0);
}

/* ---------------------------------------------------------------------- */
/* password: PIN change and unblock */

static void
test_change_pin(void **state)
{
	struct conv c = { .answers = { fx.pin, "654321", "654321" } };
	struct conv bad = { .answers = { fx.pin, "111111", "222222" } };
	struct conv back = { .answers = { "654321", fx.pin, fx.pin } };
	struct conv wrong = { .answers = { WRONG_PIN, "111111", "111111" } };

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	assert_pam(pam_op(SERVICE, ALICE, &bad, PAMTEST_CHAUTHTOK), PAM_AUTHTOK_ERR);
	assert_pam(pam_op(SERVICE, ALICE, &wrong, PAMTEST_CHAUTHTOK), PAM_PERM_DENIED);
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_CHAUTHTOK), PAM_SUCCESS);
	assert_string_equal(c.prompts[0], "Current PIN for mtls-test: ");
	assert_string_equal(c.prompts[1], "New PIN for mtls-test: ");
	assert_string_equal(c.prompts[2], "Repeat new PIN for mtls-test: ");
	(void)agent_stop(&ag);
	/* A fresh agent: the new PIN logs in, the old one does not. */
	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "");
	login(ALICE, fx.pin, PAM_AUTH_ERR);
	login(ALICE, "654321", PAM_SUCCESS);
	assert_pam(pam_op(SERVICE, ALICE, &back, PAMTEST_CHAUTHTOK), PAM_SUCCESS);
}

static void
test_unblock_pin(void **state)
{
	struct conv c = { .answers = { SO_PIN, fx.pin, fx.pin } };
	struct conv wrong = { .answers = { "87654321", fx.pin, fx.pin } };

	start_agent_one("alice-p256", "03", "alice-p256.pem");
	write_pam_conf(ag.sock, "unblock\n");
	assert_pam(pam_op(SERVICE, ALICE, &wrong, PAMTEST_CHAUTHTOK), PAM_PERM_DENIED);
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_CHAUTHTOK), PAM_SUCCESS);
	assert_string_equal(c.prompts[0], "PUK for mtls-test: ");
	write_pam_conf(ag.sock, "");
	login(ALICE, fx.pin, PAM_SUCCESS);
}

static void
test_chauthtok_no_agent(void **state)
{
	struct conv c = { .answers = { NULL } };
	char sock[PATH_MAX];

	SNP(sock, "%s/no-such-dir/agent.sock", fx.dir);
	write_pam_conf(sock, "");
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_CHAUTHTOK), PAM_TRY_AGAIN);
}

/* setcred and session: nothing, successfully. */
static void
test_session(void **state)
{
	struct conv c = { .answers = { NULL } };

	write_pam_conf("/nonexistent/agent.sock", "");
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_OPEN_SESSION), PAM_SUCCESS);
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_CLOSE_SESSION), PAM_SUCCESS);
	assert_pam(pam_op(SERVICE, ALICE, &c, PAMTEST_SETCRED), PAM_SUCCESS);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_login_rsa2048),
		T(test_login_rsa3072),
		T(test_login_p256),
		T(test_login_p384),
		T(test_pin_checked_when_logged_in),
		T(test_trust_logged_in),
		T(test_relogin_card),
		T(test_pin_prompt_option),
		T(test_expired),
		T(test_not_yet_valid),
		T(test_unknown_ca),
		T(test_wrong_eku),
		T(test_eku_any),
		T(test_refusal_shown),
		T(test_plain_ca),
		T(test_revoked_crl),
		T(test_revoked_ocsp),
		T(test_other_user),
		T(test_user_unknown),
		T(test_authorized_file),
		T(test_wrong_pin),
		T(test_no_pin_answer),
		T(test_no_agent),
		T(test_token_absent),
		T(test_no_identity),
		T(test_victim_cert_other_key_agent),
		T(test_victim_cert_other_key),
		T(test_junk_certificate),
		T(test_replayed_signature),
		T(test_log_injection),
		T(test_wrong_pin_logged),
		T(test_user_agent),
		T(test_user_agent_env_ignored),
		T(test_user_agent_root_socket),
		T(test_socket_symlinks),
		T(test_socket_permissions),
		T(test_peer_uid),
		T(test_bad_options),
		T(test_config_not_regular),
		T(test_account),
		T(test_change_pin),
		T(test_unblock_pin),
		T(test_chauthtok_no_agent),
		T(test_session),
		/* Last: it leaves the token's PIN locked. */
		T(test_locked_pin),
	};

	/* TEST_PAM_FILTER=test_name (or a pattern) runs a subset. */
	if (getenv("TEST_PAM_FILTER") != NULL)
		cmocka_set_test_filter(getenv("TEST_PAM_FILTER"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
