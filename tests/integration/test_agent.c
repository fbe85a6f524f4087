/*
 * test_agent.c - mtls-agent end to end: the real daemon on a SoftHSM2 token,
 * driven through libmtls-agent and, for protocol abuse, raw frames.
 * This file holds the token and module tests (PIN, login check, module
 * hang, removal, key mismatch, default module); signing, policy, protocol
 * and reload are in test_agent_{sign,policy,protocol,reload}.c, and what
 * they share in agent_helpers.c.
 *
 * The token is made once for the whole run (group setup); each test starts
 * the agents it needs and the per-test teardown kills whatever is left, so
 * a failed assertion never leaves a daemon behind.  Every signature the
 * agent returns is checked with OpenSSL against the certificate on disk,
 * with expectations written out here rather than taken from the agent's
 * own scheme table.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
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

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "agent_fixture.h"
#include "agent_helpers.h"
#include "mtls-agent.h"
#include "proto.h"
#include "purpose.h"
#include "wbuf.h"

/* ---------------------------------------------------------------------- */
/* 11. pin-file */

static void
test_pin_file(void **state)
{
	char pin_path[PATH_MAX], config[PATH_MAX + 256], pin_text[80];
	struct wbuf *c;
	struct agent_proc bad;
	mtls_agent *a;
	char *log;

	assert_int_equal(fixture_unique_path(&fx, "pin", NULL, pin_path, sizeof(pin_path)), 0);
	format_into(pin_text, "%s\n", fx.pin);
	assert_int_equal(fixture_write_file(pin_path, pin_text, 0600), 0);
	format_into(config, "[identity auto]\nkey = " TOKEN_URI ";id=%%03\npin-file = %s\n",
		    pin_path);

	start_agent(config, NULL, &ag);
	a = connect_to(ag.sock);
	/* Logged in at start: usable without mtls_agent_login(). */
	assert_true(flags_of(a, "auto") & MTLS_AGENT_ID_LOGGED_IN);
	c = tls13_client(48);
	sign_and_verify(a, "auto", "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);

	/* A PIN file others can read is refused, loudly. */
	assert_int_equal(chmod(pin_path, 0644), 0);
	memset(&bad, 0, sizeof(bad));
	if (agent_start(&fx, config, NULL, &bad) == 0) {
		(void)agent_stop(&bad);
		fail_msg("agent started with a world-readable pin-file");
	}
	assert_true(bad.reaped);
	assert_true(WIFEXITED(bad.status));
	assert_int_not_equal(WEXITSTATUS(bad.status), 0);
	log = agent_log(&bad);
	if (strstr(log, pin_path) == NULL) {
		print_message("agent stderr:\n%s", log);
		fail_msg("agent stderr does not name %s", pin_path);
	}
	/* And the PIN itself is not in the log. */
	assert_null(strstr(log, fx.pin));
	free(log);
}

/* ---------------------------------------------------------------------- */
/* 12. a token that locks its PIN (p11-lockout shim) */

static void
test_pin_locked(void **state)
{
	const char *args[] = { "--module", fx.lockout_module, NULL };
	struct wbuf *c = pam_content();
	mtls_agent *a;
	uint32_t flags;
	int retries, r;

	if (access(fx.lockout_module, R_OK) != 0)
		fail_msg("lockout module %s: %s (make tests/fixtures/p11-lockout.la)",
			 fx.lockout_module, strerror(errno));
	start_agent(NULL, args, &ag);
	a = connect_to(ag.sock);
	assert_int_equal(count_identities(a), N_KEYS);

	/*
	 * 1st wrong PIN: the card says "count low", not how low.  (SoftHSM2
	 * below the shim also sets COUNT_LOW in its token file, which stays
	 * since the right PIN never reaches it; no later test minds.)
	 */
	retries = -2;
	assert_err(mtls_agent_login(a, NULL, WRONG_PIN, &retries), MTLS_ERR_PIN_INCORRECT);
	assert_true(retries == -1 || retries >= 1);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_PIN_COUNT_LOW);

	/* 2nd: "final try", i.e. one left. */
	retries = -2;
	assert_err(mtls_agent_login(a, NULL, WRONG_PIN, &retries), MTLS_ERR_PIN_INCORRECT);
	if (retries != 1)
		fail_msg("second wrong PIN: retries %d, want 1 (CKF_USER_PIN_FINAL_TRY); "
			 "is %s the p11-lockout shim?",
			 retries, fx.lockout_module);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_PIN_FINAL_TRY);

	/* 3rd locks the PIN: reported as locked, or as wrong with none left. */
	retries = -2;
	r = mtls_agent_login(a, NULL, WRONG_PIN, &retries);
	if (r == MTLS_ERR_PIN_INCORRECT)
		assert_true(retries == 0 || retries == -1);
	else
		assert_err(r, MTLS_ERR_PIN_LOCKED);
	print_message("third wrong PIN: %s (retries %d)\n", errname(r), retries);

	/* Now even the right PIN is refused: locked means locked. */
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), MTLS_ERR_PIN_LOCKED);
	assert_err(mtls_agent_login(a, "p256", fx.pin, &retries), MTLS_ERR_PIN_LOCKED);
	flags = flags_of(a, "p256");
	assert_true(flags & MTLS_AGENT_ID_PIN_LOCKED);
	assert_false(flags & MTLS_AGENT_ID_LOGGED_IN);
	{
		unsigned char *sig = NULL;
		size_t sig_len = 0;

		r = sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			 MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len);
		assert_true(r == MTLS_ERR_LOGIN_REQUIRED || r == MTLS_ERR_PIN_LOCKED);
		assert_null(sig);
	}

	/* Unblocking needs the right unblocking code (the SO PIN)... */
	assert_err(mtls_agent_unblock_pin(a, NULL, "87654321", fx.pin, &retries),
		   MTLS_ERR_PIN_INCORRECT);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_PIN_LOCKED);
	/* ...and then sets the PIN, resets the counter and logs in with it. */
	assert_err(mtls_agent_unblock_pin(a, NULL, SO_PIN, fx.pin, &retries), 0);
	flags = flags_of(a, "p256");
	assert_false(flags & MTLS_AGENT_ID_PIN_LOCKED);
	assert_true(flags & MTLS_AGENT_ID_LOGGED_IN);
	{
		unsigned char *sig = NULL;
		size_t sig_len = 0;

		assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
			   0);
		free(sig);
	}
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* ---------------------------------------------------------------------- */
/* 12a. LOGIN with the verify flag: the token checks the PIN every time */

/* LOGIN with LOGIN_VERIFY over a raw connection (the public library has no
 * call for it); returns 0 or the ERROR code, its text into msg. */
static int
login_verify(const char *sock, const char *identity, const char *pin, int *retries, char *msg,
	     size_t msg_len)
{
	struct msg_login_req req = { (char *)identity, (char *)pin, LOGIN_VERIFY };
	struct msg_error err = { 0 };
	struct wbuf *body = wbuf_new();
	uint8_t type = 0;
	int fd, r;

	assert_non_null(body);
	fd = raw_connect(sock);
	raw_hello(fd);
	assert_err(msg_login_req_put(body, &req), 0);
	raw_send_body(fd, body);
	assert_non_null(body = wbuf_new());
	assert_err(raw_read(fd, &type, body), 0);
	*retries = -1;
	msg[0] = '\0';
	if (type == (MSG_LOGIN | MSG_REPLY)) {
		assert_err(msg_empty_get(body), 0);
		r = 0;
	} else {
		assert_int_equal(type, MSG_ERROR);
		assert_err(msg_error_get(body, &err), 0);
		r = err.code;
		*retries = err.retries;
		snprintf(msg, msg_len, "%s", err.message);
		msg_error_clear(&err);
	}
	wbuf_free(body);
	close(fd);
	return r;
}

struct verify_signer {
	const char *sock;
	int stop;
	int ok, failed;
	char why[256];
};

/* Signs with rsa2048 until told to stop; no cmocka asserts in a thread. */
static void *
verify_signer_run(void *arg)
{
	struct verify_signer *w = arg;
	unsigned char nonce[32], *sig;
	size_t sig_len;
	mtls_agent *a = NULL;
	struct wbuf *c;
	int r;

	if ((r = mtls_agent_connect(w->sock, &a)) != 0) {
		snprintf(w->why, sizeof(w->why), "connect: %s", errname(r));
		w->failed++;
		return NULL;
	}
	memset(nonce, 0x5a, sizeof(nonce));
	while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
		if ((c = wbuf_new()) == NULL)
			break;
		nonce[0]++;
		if (pam_challenge_put(c, nonce, sizeof(nonce), "sshd", "alice") != 0) {
			wbuf_free(c);
			break;
		}
		sig = NULL;
		r = mtls_agent_sign(a, "rsa2048", MTLS_AGENT_RSA_PSS_RSAE_SHA256,
				    MTLS_AGENT_PURPOSE_PAM_CHALLENGE, wbuf_ptr(c), wbuf_len(c),
				    &sig, &sig_len);
		wbuf_free(c);
		free(sig);
		if (r == 0) {
			w->ok++;
		} else {
			snprintf(w->why, sizeof(w->why), "sign: %s (%s)", errname(r),
				 mtls_agent_last_message());
			w->failed++;
		}
	}
	mtls_agent_free(a);
	return NULL;
}

static void
test_login_verify(void **state)
{
	const char *args[] = { "--module", fx.lockout_module, NULL };
	struct verify_signer w = { 0 };
	struct wbuf *c = pam_content();
	char msg[MTLS_TEXT_MAX + 1];
	pthread_t th;
	uint32_t flags;
	mtls_agent *a;
	int retries, i;

	if (access(fx.lockout_module, R_OK) != 0)
		fail_msg("lockout module %s: %s (make tests/fixtures/p11-lockout.la)",
			 fx.lockout_module, strerror(errno));
	start_agent(NULL, args, &ag);
	a = connect_to(ag.sock);
	login(a, NULL);
	/* A plain LOGIN on a logged-in token does not check the PIN. */
	assert_err(mtls_agent_login(a, "p256", WRONG_PIN, &retries), 0);
	assert_false(flags_of(a, "p256") & MTLS_AGENT_ID_PIN_COUNT_LOW);

	/* Re-logins with the right PIN while another identity of the same
	 * token signs: its signatures wait, none fails. */
	w.sock = ag.sock;
	assert_int_equal(pthread_create(&th, NULL, verify_signer_run, &w), 0);
	for (i = 0; i < 5; i++) {
		assert_err(login_verify(ag.sock, "p256", fx.pin, &retries, msg, sizeof(msg)), 0);
		sleep_ms(20);
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELAXED);
	assert_int_equal(pthread_join(th, NULL), 0);
	if (w.failed != 0 || w.ok == 0)
		fail_msg("signer during re-logins: %d ok, %d failed (%s)", w.ok, w.failed, w.why);
	print_message("signer during 5 re-logins: %d signatures, none failed\n", w.ok);
	sign_and_verify(a, "p256", "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c);

	/* A wrong PIN on the logged-in token reaches the card: its counter
	 * goes down, and the token is logged out and says so. */
	assert_err(login_verify(ag.sock, "p256", WRONG_PIN, &retries, msg, sizeof(msg)),
		   MTLS_ERR_PIN_INCORRECT);
	if (strstr(msg, "logged out") == NULL)
		fail_msg("wrong PIN on a logged-in token: \"%s\" does not say it is logged out",
			 msg);
	flags = flags_of(a, "p256");
	assert_true(flags & MTLS_AGENT_ID_PIN_COUNT_LOW);
	assert_false(flags & MTLS_AGENT_ID_LOGGED_IN);
	sign_refused(a, "rsa2048", MTLS_AGENT_RSA_PSS_RSAE_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
		     c, MTLS_ERR_LOGIN_REQUIRED);
	/* An empty PIN never reaches the card. */
	{
		struct wbuf *b = wbuf_new();
		int fd = raw_connect(ag.sock);

		assert_non_null(b);
		raw_hello(fd);
		assert_err(wbuf_put_u8(b, MSG_LOGIN), 0);
		assert_err(wbuf_put_cstring(b, "p256"), 0);
		assert_err(wbuf_put_cstring(b, ""), 0);
		assert_err(wbuf_put_u8(b, LOGIN_VERIFY), 0);
		raw_send_body(fd, b);
		assert_err(raw_read_error(fd), MTLS_ERR_PIN_INVALID);
		close(fd);
	}
	/* Second wrong PIN: "final try" (the shim counts 3, 2, 1). */
	assert_err(login_verify(ag.sock, "p256", WRONG_PIN, &retries, msg, sizeof(msg)),
		   MTLS_ERR_PIN_INCORRECT);
	assert_int_equal(retries, 1);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_PIN_FINAL_TRY);
	/* The right PIN: logged in again, counter reset, every key back. */
	assert_err(login_verify(ag.sock, "p256", fx.pin, &retries, msg, sizeof(msg)), 0);
	flags = flags_of(a, "p256");
	assert_true(flags & MTLS_AGENT_ID_LOGGED_IN);
	assert_false(flags & (MTLS_AGENT_ID_PIN_FINAL_TRY | MTLS_AGENT_ID_PIN_LOCKED));
	sign_and_verify(a, "rsa2048", "rsa2048", MTLS_AGENT_RSA_PSS_RSAE_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c);
	sign_and_verify(a, "p256", "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* ---------------------------------------------------------------------- */
/* 12b. changing the PIN */

static void
test_change_pin(void **state)
{
	static const char new_pin[] = "24680135";
	mtls_agent *a;
	int retries;

	start_agent(NULL, NULL, &ag);
	a = connect_to(ag.sock);
	/* The old PIN must be right; a wrong one changes nothing. */
	assert_err(mtls_agent_change_pin(a, NULL, WRONG_PIN, new_pin, &retries),
		   MTLS_ERR_PIN_INCORRECT);
	assert_err(mtls_agent_change_pin(a, NULL, fx.pin, "", &retries), MTLS_ERR_PIN_INVALID);
	assert_err(mtls_agent_change_pin(a, NULL, fx.pin, new_pin, &retries), 0);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), MTLS_ERR_PIN_INCORRECT);
	assert_err(mtls_agent_login(a, NULL, new_pin, &retries), 0);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_LOGGED_IN);
	/* Back, so the fixture's PIN holds for every later test. */
	assert_err(mtls_agent_change_pin(a, NULL, new_pin, fx.pin, &retries), 0);
	assert_err(mtls_agent_logout(a, NULL), 0);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* ---------------------------------------------------------------------- */
/* 14. the card is pulled and put back (shim plays the reader) */

static void
test_token_removal(void **state)
{
	const char *args[] = { "--module", fx.lockout_module, NULL };
	char pulled[PATH_MAX], env_absent[PATH_MAX + 32];
	const char *env[] = { env_absent, NULL };
	struct agent_opts o = { 0 };
	struct wbuf *c = pam_content();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	int retries, i, r;
	FILE *f;

	assert_int_equal(fixture_path(&fx, "pulled", pulled, sizeof(pulled)), 0);
	(void)unlink(pulled);
	snprintf(env_absent, sizeof(env_absent), "MTLS_SHIM_ABSENT_FILE=%s", pulled);
	o.args = args;
	o.env = env;
	if (agent_start_opts(&fx, &o, &ag) != 0) {
		dump_log(&ag);
		fail_msg("agent did not start");
	}
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	sig = NULL;

	/* Pulled: the very next signature hears "absent", at once. */
	assert_non_null(f = fopen(pulled, "w"));
	fclose(f);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_TOKEN_ABSENT);
	/* After the agent's rescan the identity is still listed, as absent. */
	for (i = 0; i < 40 && (flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT); i++)
		usleep(100 * 1000);
	assert_int_equal(count_identities(a), N_KEYS);
	assert_false(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_TOKEN_ABSENT);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), MTLS_ERR_TOKEN_ABSENT);
	assert_true(agent_alive(&ag));

	/* Back: the identity returns without a restart, login required. */
	assert_int_equal(unlink(pulled), 0);
	for (i = 0; i < 40 && !(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT); i++)
		usleep(100 * 1000);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT);
	assert_false(flags_of(a, "p256") & MTLS_AGENT_ID_LOGGED_IN);
	r = sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c,
		 &sig, &sig_len);
	assert_err(r, MTLS_ERR_LOGIN_REQUIRED);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* ---------------------------------------------------------------------- */
/* 14b. the default module: p11-kit-proxy and the modules registered with
 * p11-kit, as a user with a card registered there meets it (issue 11) */

/* Is SoftHSM2 registered with p11-kit (its Debian package does that)? */
static int
softhsm_registered(void)
{
	return access("/usr/share/p11-kit/modules/softhsm2.module", R_OK) == 0 ||
	       access("/etc/pkcs11/modules/softhsm2.module", R_OK) == 0;
}

/* No --module: the fixture's token reached through p11-kit's registry,
 * `token=` picking it among the proxy's slots; list, login, sign. */
static void
test_default_module(void **state)
{
	const char *args[] = { "--token", TOKEN_URI, NULL };
	struct agent_opts o = { 0 };
	struct wbuf *c;
	mtls_agent *a;
	size_t i;

	if (!softhsm_registered()) {
		print_message("SoftHSM2 is not registered with p11-kit: skipped\n");
		skip();
	}
	o.args = args;
	o.default_module = 1;
	if (agent_start_opts(&fx, &o, &ag) != 0) {
		dump_log(&ag);
		fail_msg("agent with the default module did not start");
	}
	assert_true(agent_logged(&ag, "p11-kit-proxy.so"));
	a = connect_to(ag.sock);
	assert_int_equal(count_identities(a), N_KEYS);
	for (i = 0; i < N_KEYS; i++)
		assert_true(flags_of(a, keys[i].label) & MTLS_AGENT_ID_TOKEN_PRESENT);
	login(a, NULL);
	for (i = 0; i < N_KEYS; i++) {
		uint16_t scheme = keys[i].type == MTLS_AGENT_KEY_RSA
				      ? MTLS_AGENT_RSA_PSS_RSAE_SHA256
				  : keys[i].bits == 256 ? MTLS_AGENT_ECDSA_SECP256R1_SHA256
							: MTLS_AGENT_ECDSA_SECP384R1_SHA384;

		assert_true(flags_of(a, keys[i].label) & MTLS_AGENT_ID_LOGGED_IN);
		c = pam_content();
		sign_and_verify(a, keys[i].label, keys[i].label, scheme,
				MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c);
		wbuf_free(c);
	}
	/* The once-a-second poll sees the same tokens: no rescan loop. */
	sleep_ms(2500);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_LOGGED_IN);
	if (agent_logged(&ag, "tokens changed")) {
		dump_log(&ag);
		fail_msg("the agent keeps seeing its tokens change");
	}
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* A p11-kit module config under DIR named NAME (".module" added). */
static void
write_module_config(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];

	format_into(path, "%s/%s.module", dir, name);
	assert_int_equal(fixture_write_file(path, text, 0644), 0);
}

/* Every module registered in the system DIR is disabled for the proxy by
 * a same-named user config, so only the test's own module is loaded. */
static void
disable_registered(const char *sysdir, const char *userdir)
{
	struct dirent *de;
	char name[256];
	size_t n;
	DIR *d;

	if ((d = opendir(sysdir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		n = strlen(de->d_name);
		if (n <= 7 || n - 7 >= sizeof(name) || strcmp(de->d_name + n - 7, ".module") != 0)
			continue;
		memcpy(name, de->d_name, n - 7);
		name[n - 7] = '\0';
		write_module_config(userdir, name, "disable-in: p11-kit-proxy\n");
	}
	closedir(d);
}

/*
 * The card is pulled and put back behind p11-kit-proxy: the shim (playing
 * the reader) is registered with p11-kit through a private user config
 * ($HOME/.config/pkcs11), the only module the proxy loads.  p11-kit reads
 * no user config as root, so as root the agent runs as nobody on a copy of
 * the token (as in test_peer_uid).
 */
static void
test_default_module_removal(void **state)
{
	char *base = peer_base;
	char home[PATH_MAX], mods[PATH_MAX], run[PATH_MAX], sock[PATH_MAX], pulled[PATH_MAX];
	char shim[PATH_MAX], bin[PATH_MAX], tok[PATH_MAX], conf[PATH_MAX], text[2 * PATH_MAX];
	char env_home[PATH_MAX + 8], env_absent[PATH_MAX + 32], env_conf[PATH_MAX + 16];
	char owner[64];
	const char *env[] = { env_home, env_absent, NULL, NULL };
	const char *args[] = { "--socket", sock, NULL, NULL };
	struct agent_opts o = { 0 };
	struct passwd *pw = NULL;
	struct wbuf *c = pam_content();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	int retries, i;
	FILE *f;

	if (geteuid() == 0 && (pw = getpwnam("nobody")) == NULL) {
		print_message("root and no user nobody: skipped\n");
		skip();
	}
	snprintf(peer_base, sizeof(peer_base), "/tmp/mtls-proxy.XXXXXX");
	if (mkdtemp(peer_base) == NULL) {
		peer_base[0] = '\0';
		fail_msg("mkdtemp: %s", strerror(errno));
	}
	assert_int_equal(chmod(base, 0711), 0);
	format_into(home, "%s/home", base);
	format_into(mods, "%s/.config/pkcs11/modules", home);
	format_into(run, "%s/run", base);
	format_into(sock, "%s/agent.sock", run);
	format_into(pulled, "%s/pulled", base);
	format_into(env_home, "HOME=%s", home);
	format_into(env_absent, "MTLS_SHIM_ABSENT_FILE=%s", pulled);
	{
		const char *mk[] = { "mkdir", "-p", mods, NULL };

		assert_int_equal(fixture_run(mk), 0);
	}
	assert_int_equal(mkdir(run, 0700), 0);
	format_into(shim, "%s", fx.lockout_module);
	if (pw != NULL) {
		char src_tokens[PATH_MAX], dst_tokens[PATH_MAX];

		/* nobody must reach all it uses: copies under the 0711 base. */
		format_into(tok, "%s/token", base);
		format_into(dst_tokens, "%s/tokens", tok);
		format_into(conf, "%s/softhsm2.conf", tok);
		format_into(env_conf, "SOFTHSM2_CONF=%s", conf);
		format_into(shim, "%s/p11-lockout.so", base);
		format_into(bin, "%s/mtls-agent", base);
		format_into(owner, "%ld:%ld", (long)pw->pw_uid, (long)pw->pw_gid);
		assert_int_equal(fixture_path(&fx, "tokens", src_tokens, sizeof(src_tokens)), 0);
		assert_int_equal(mkdir(tok, 0700), 0);
		format_into(text,
			    "directories.tokendir = %s\nobjectstore.backend = file\n"
			    "log.level = ERROR\nslots.removable = false\n",
			    dst_tokens);
		assert_int_equal(fixture_write_file(conf, text, 0600), 0);
		{
			const char *cp_tok[] = { "cp", "-a", src_tokens, dst_tokens, NULL };
			const char *cp_shim[] = { "cp", fx.lockout_module, shim, NULL };
			const char *cp_bin[] = { "cp", fx.agent_bin, bin, NULL };
			const char *chown_r[] = { "chown", "-R", owner, tok, home, run, NULL };

			assert_int_equal(fixture_run(cp_tok), 0);
			assert_int_equal(fixture_run(cp_shim), 0);
			assert_int_equal(fixture_run(cp_bin), 0);
			assert_int_equal(chmod(shim, 0755), 0);
			assert_int_equal(chmod(bin, 0755), 0);
			assert_int_equal(fixture_run(chown_r), 0);
		}
		env[2] = env_conf;
		args[2] = "--allow-root";
		o.agent_bin = bin;
		o.set_user = 1;
		o.uid = pw->pw_uid;
		o.gid = pw->pw_gid;
	}
	disable_registered("/usr/share/p11-kit/modules", mods);
	disable_registered("/etc/pkcs11/modules", mods);
	format_into(text, "module: %s\n", shim);
	write_module_config(mods, "mtls-test-reader", text);
	if (pw != NULL) {
		const char *chown_r[] = { "chown", "-R", owner, home, NULL };

		assert_int_equal(fixture_run(chown_r), 0);
	}

	o.args = args;
	o.env = env;
	o.default_module = 1;
	if (agent_start_opts(&fx, &o, &ag) != 0) {
		dump_log(&ag);
		fail_msg("agent with the default module did not start");
	}
	assert_true(agent_logged(&ag, "p11-kit-proxy.so"));
	a = connect_to(sock);
	assert_int_equal(count_identities(a), N_KEYS);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	sig = NULL;

	/* Pulled: the proxy's poll sees it, the identity stays listed. */
	assert_non_null(f = fopen(pulled, "w"));
	fclose(f);
	for (i = 0; i < 40 && (flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT); i++)
		usleep(100 * 1000);
	assert_int_equal(count_identities(a), N_KEYS);
	assert_false(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_TOKEN_ABSENT);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), MTLS_ERR_TOKEN_ABSENT);

	/* Back: present again, login required, then signing again. */
	assert_int_equal(unlink(pulled), 0);
	for (i = 0; i < 40 && !(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT); i++)
		usleep(100 * 1000);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT);
	assert_false(flags_of(a, "p256") & MTLS_AGENT_ID_LOGGED_IN);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* ---------------------------------------------------------------------- */
/* 15. hardening and policies (issue 5) */

/* A module outside the allowed directories, or writable by others, is
 * never loaded. */
static void
test_module_allowlist(void **state)
{
	char copy[PATH_MAX];
	const char *args[] = { "--module", copy, NULL };
	const char *args_dirs[] = { "--module", copy, "--module-dirs", fx.dir, NULL };
	const char *cp[] = { "cp", fx.module, copy, NULL };
	char *log;

	assert_int_equal(fixture_path(&fx, "copied-module.so", copy, sizeof(copy)), 0);
	assert_int_equal(fixture_run(cp), 0);
	assert_int_equal(chmod(copy, 0755), 0);
	assert_int_not_equal(agent_start(&fx, NULL, args, &ag), 0);
	assert_non_null(log = fixture_read_file(ag.log, NULL));
	assert_non_null(strstr(log, "outside the allowed directories"));
	free(log);
	/* Allowed directory, but others may write the file. */
	assert_int_equal(chmod(copy, 0666), 0);
	assert_int_not_equal(agent_start(&fx, NULL, args_dirs, &ag), 0);
	assert_non_null(log = fixture_read_file(ag.log, NULL));
	assert_non_null(strstr(log, "may be written by others"));
	free(log);
	/* Allowed directory and safe mode: it loads. */
	assert_int_equal(chmod(copy, 0755), 0);
	start_agent(NULL, args_dirs, &ag);
	assert_int_equal(agent_stop(&ag), 0);
}

/*
 * Starts `ag` on the PKCS#11 shim with token-timeout = 1 and the shim's
 * hang switch `var` pointing at a fresh path (returned in hang, not yet
 * created: create it to make the module hang).
 */
static void
start_hanging_agent(const char *var, const char *name, char *hang, size_t hang_len)
{
	const char *args[] = { "--module", fx.lockout_module, NULL };
	static char env_hang[PATH_MAX + 64];
	const char *env[] = { env_hang, NULL };
	struct agent_opts o = { 0 };

	assert_int_equal(fixture_path(&fx, name, hang, hang_len), 0);
	(void)unlink(hang);
	snprintf(env_hang, sizeof(env_hang), "%s=%s", var, hang);
	o.config_text = "token-timeout = 1\n";
	o.args = args;
	o.env = env;
	if (agent_start_opts(&fx, &o, &ag) != 0) {
		dump_log(&ag);
		fail_msg("agent did not start");
	}
}

/* After the module recovers: a P-256 signature within 5 s, or fail. */
static void
sign_after_recovery(mtls_agent *a, const struct wbuf *c)
{
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	int i, r = -1;

	for (i = 0; i < 50 && r != 0; i++) {
		free(sig);
		sig = NULL;
		usleep(100 * 1000);
		r = sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			 MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len);
	}
	free(sig);
	if (r != 0) {
		dump_log(&ag);
		fail_msg("no signature after the module recovered: %s", errname(r));
	}
}

struct hung_signer {
	const char *sock;
	int result;
};

static void *
sign_hung(void *arg)
{
	struct hung_signer *w = arg;
	struct wbuf *c = pam_content();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a = NULL;

	w->result = mtls_agent_connect(w->sock, &a);
	if (w->result == 0)
		w->result = mtls_agent_sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
					    MTLS_AGENT_PURPOSE_PAM_CHALLENGE, wbuf_ptr(c),
					    wbuf_len(c), &sig, &sig_len);
	free(sig);
	mtls_agent_free(a);
	wbuf_free(c);
	return NULL;
}

/*
 * A module that stops answering inside C_Sign (it runs in mtls-agent-p11):
 * that client gets TIMEOUT after token-timeout, the helper is killed and
 * started again, the token needs a login (LOGIN_REQUIRED, at once), and
 * after one the next signature works, without restarting the agent.
 */
static void
test_module_hang(void **state)
{
	char hang[PATH_MAX];
	struct hung_signer w = { 0 };
	struct wbuf *c;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	struct timespec t0, t1;
	pthread_t th;
	mtls_agent *a;
	int retries, r;
	long ms;
	FILE *f;

	skip_under_valgrind("hang timing");
	c = pam_content();
	start_hanging_agent("MTLS_SHIM_HANG_FILE", "hang", hang, sizeof(hang));
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);

	/* The module hangs under one signature: the agent answers it with
	 * TIMEOUT after token-timeout (1 s), before the library gives up. */
	assert_non_null(f = fopen(hang, "w"));
	fclose(f);
	setenv("MTLS_AGENT_TIMEOUT", "5", 1);
	w.sock = ag.sock;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(pthread_create(&th, NULL, sign_hung, &w), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	unsetenv("MTLS_AGENT_TIMEOUT");
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_int_equal(w.result, MTLS_ERR_TIMEOUT);
	assert_true(ms < 4000);
	assert_true(agent_logged(&ag, "no answer within 1000 ms"));
	assert_true(agent_alive(&ag));

	/* A new helper, not logged in: the next signature hears so at once. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = sign(a, "p384", MTLS_AGENT_ECDSA_SECP384R1_SHA384, MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c,
		 &sig, &sig_len);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_err(r, MTLS_ERR_LOGIN_REQUIRED);
	assert_true(ms < 1000);
	/* Listing works; the agent is up and accepts connections. */
	assert_int_equal(count_identities(a), N_KEYS);
	{
		mtls_agent *b = connect_to(ag.sock);

		assert_int_equal(count_identities(b), N_KEYS);
		mtls_agent_free(b);
	}

	/* The module answers again: a login, and signatures work. */
	assert_int_equal(unlink(hang), 0);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	sign_after_recovery(a, c);
	free(sig);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

struct hung_login {
	const char *sock;
	const char *pin;
	int result;
};

static void *
login_hung(void *arg)
{
	struct hung_login *w = arg;
	mtls_agent *a = NULL;
	int retries;

	w->result = mtls_agent_connect(w->sock, &a);
	if (w->result == 0)
		w->result = mtls_agent_login(a, NULL, w->pin, &retries);
	mtls_agent_free(a);
	return NULL;
}

/* A module that hangs inside C_Login: after token-timeout the login gets
 * TIMEOUT and the helper is started again; everyone else is served (after
 * waiting at most that long), and a login on the new helper works. */
static void
test_module_hang_login(void **state)
{
	char hang[PATH_MAX];
	struct hung_login w = { 0 };
	struct mtls_agent_status st = { 0 };
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	struct timespec t0, t1;
	struct wbuf *c;
	pthread_t th;
	mtls_agent *a, *b;
	int r, retries;
	long ms;
	FILE *f;

	skip_under_valgrind("hang timing");
	c = pam_content();
	start_hanging_agent("MTLS_SHIM_HANG_LOGIN_FILE", "hang-login", hang, sizeof(hang));
	a = connect_to(ag.sock);

	/* The login hangs in the module: TIMEOUT from the agent. */
	assert_non_null(f = fopen(hang, "w"));
	fclose(f);
	setenv("MTLS_AGENT_TIMEOUT", "5", 1);
	w.sock = ag.sock;
	w.pin = fx.pin;
	assert_int_equal(pthread_create(&th, NULL, login_hung, &w), 0);
	usleep(300 * 1000);
	/* Meanwhile: served within token-timeout, typed answers. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c,
		 &sig, &sig_len);
	assert_err(r, MTLS_ERR_LOGIN_REQUIRED);
	assert_int_equal(count_identities(a), N_KEYS);
	assert_err(mtls_agent_get_status(a, &st), 0);
	mtls_agent_status_clear(&st);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms < 2500);
	b = connect_to(ag.sock);
	mtls_agent_free(b);
	assert_int_equal(pthread_join(th, NULL), 0);
	unsetenv("MTLS_AGENT_TIMEOUT");
	assert_err(w.result, MTLS_ERR_TIMEOUT);
	assert_true(agent_alive(&ag));
	assert_true(agent_logged(&ag, "no answer within 1000 ms"));

	/* The module answers again: a login on the new helper, signatures. */
	assert_int_equal(unlink(hang), 0);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	sign_after_recovery(a, c);
	assert_int_equal(count_identities(a), N_KEYS);
	free(sig);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* ---------------------------------------------------------------------- */
/* A key of the wrong type under a certificate (issue 10, item 5) */

/* After login, `name` is listed as mismatched and signs nothing. */
static void
assert_mismatch_refused(mtls_agent *a, const char *name, uint16_t scheme)
{
	struct wbuf *c = tls13_client(scheme == MTLS_AGENT_ECDSA_SECP384R1_SHA384 ? 48 : 32);
	uint32_t f = flags_of(a, name);

	if (!(f & MTLS_AGENT_ID_KEY_MISMATCH) || (f & MTLS_AGENT_ID_KEY_FOUND))
		fail_msg("%s: flags 0x%x, want KEY_MISMATCH without KEY_FOUND", name, f);
	sign_refused(a, name, scheme, MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c, MTLS_ERR_TOKEN);
	assert_non_null(strstr(mtls_agent_last_message(), "key does not match certificate"));
	wbuf_free(c);
}

/* Configured mode: certificate files for the other key type. */
static void
test_key_mismatch_configured(void **state)
{
	char config[3 * PATH_MAX + 512], p256[PATH_MAX], rsa[PATH_MAX];
	struct wbuf *c = tls13_client(32);
	mtls_agent *a;
	int retries;

	assert_int_equal(fixture_path(&fx, "p256.pem", p256, sizeof(p256)), 0);
	assert_int_equal(fixture_path(&fx, "rsa2048.pem", rsa, sizeof(rsa)), 0);
	format_into(config,
		    "[identity ec-on-rsa]\nkey = " TOKEN_URI ";id=%%01\ncertificate = %s\n"
		    "[identity rsa-on-ec]\nkey = " TOKEN_URI ";id=%%03\ncertificate = %s\n"
		    "[identity p384-on-p256]\nkey = " TOKEN_URI ";id=%%03\n"
		    "certificate = %s/p384.pem\n"
		    "[identity good]\nkey = " TOKEN_URI ";id=%%03\ncertificate = %s\n",
		    p256, rsa, fx.dir, p256);
	start_agent(config, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_mismatch_refused(a, "ec-on-rsa", MTLS_AGENT_ECDSA_SECP256R1_SHA256);
	assert_mismatch_refused(a, "rsa-on-ec", MTLS_AGENT_RSA_PSS_RSAE_SHA256);
	assert_mismatch_refused(a, "p384-on-p256", MTLS_AGENT_ECDSA_SECP384R1_SHA384);
	/* The right certificate on the same key still signs. */
	assert_true(flags_of(a, "good") & MTLS_AGENT_ID_KEY_FOUND);
	sign_and_verify(a, "good", "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c);
	assert_true(agent_logged(&ag, "does not match its certificate"));
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* pkcs11-tool on the test's own token. */
static void
p11tool(const char *a1, const char *a2, const char *a3, const char *a4, const char *a5,
	const char *a6, const char *a7, const char *a8)
{
	const char *argv[] = { "pkcs11-tool",
			       "--module",
			       fx.module,
			       "--token-label",
			       extra_token,
			       "--login",
			       "--pin",
			       fx.pin,
			       a1,
			       a2,
			       a3,
			       a4,
			       a5,
			       a6,
			       a7,
			       a8,
			       NULL };

	assert_int_equal(fixture_run(argv), 0);
}

/* Discovery mode: certificates stored at the CKA_ID of a key of the other
 * type, on a token made here. */
static void
test_key_mismatch_discovered(void **state)
{
	char tok_uri[128], p256[PATH_MAX], rsa[PATH_MAX];
	const char *args[] = { "--token", tok_uri, NULL };
	const char *init[] = {
		"softhsm2-util", "--init-token", "--free", "--label", "mtls-mismatch",
		"--so-pin",	 SO_PIN,	 "--pin",  fx.pin,    NULL
	};
	mtls_agent *a;
	int retries;

	skip_under_valgrind("key generation on an extra token");
	snprintf(extra_token, sizeof(extra_token), "mtls-mismatch");
	snprintf(tok_uri, sizeof(tok_uri), "pkcs11:token=%s", extra_token);
	assert_int_equal(fixture_path(&fx, "p256.der", p256, sizeof(p256)), 0);
	assert_int_equal(fixture_path(&fx, "rsa2048.der", rsa, sizeof(rsa)), 0);
	assert_int_equal(fixture_run(init), 0);
	p11tool("--keypairgen", "--key-type", "rsa:2048", "--id", "11", "--label", "k-rsa",
		"--usage-sign");
	p11tool("--keypairgen", "--key-type", "EC:secp384r1", "--id", "12", "--label", "k-ec",
		"--usage-sign");
	p11tool("--write-object", p256, "--type", "cert", "--id", "11", "--label", "ec-on-rsa");
	p11tool("--write-object", rsa, "--type", "cert", "--id", "12", "--label", "rsa-on-ec");

	start_agent(NULL, args, &ag);
	a = connect_to(ag.sock);
	assert_int_equal(count_identities(a), 2);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_mismatch_refused(a, "ec-on-rsa", MTLS_AGENT_ECDSA_SECP256R1_SHA256);
	assert_mismatch_refused(a, "rsa-on-ec", MTLS_AGENT_RSA_PSS_RSAE_SHA384);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

static void
test_pin_not_in_memory(void **state)
{
	struct wbuf *c;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	long hits;
	int retries;

	if (geteuid() != 0) {
		print_message("not root: reading the agent's memory needs root; skipped\n");
		skip();
	}
	/* Before anything is allocated: skip() does not come back. */
	skip_under_valgrind("memory scan of the agent");
	c = pam_content();
	assert_int_equal(change_token_pin(fx.pin, DISTINCT_PIN), 0);
	pin_changed = 1;
	start_agent(NULL, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, DISTINCT_PIN, &retries), 0);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	assert_err(mtls_agent_logout(a, NULL), 0);
	hits = fixture_count_in_memory(ag.pid, DISTINCT_PIN);
	assert_true(hits >= 0);
	if (hits != 0)
		fail_msg("the PIN is in the agent's memory %ld time(s) after logout", hits);
	/* Nor once the connection that sent it is gone. */
	mtls_agent_free(a);
	sleep_ms(200);
	hits = fixture_count_in_memory(ag.pid, DISTINCT_PIN);
	assert_true(hits >= 0);
	if (hits != 0)
		fail_msg("the PIN is in the agent's memory %ld time(s) after the client left",
			 hits);
	assert_int_equal(agent_stop(&ag), 0);
	assert_int_equal(change_token_pin(DISTINCT_PIN, fx.pin), 0);
	pin_changed = 0;
	wbuf_free(c);
}

/* ---------------------------------------------------------------------- */
/* A SoftHSM2 token moved away and back (issue 10, item 13) */

/* The one token directory under DIR/tokens into buf. */
static void
token_dir(char *buf, size_t len)
{
	char tokens[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int n = 0;

	assert_int_equal(fixture_path(&fx, "tokens", tokens, sizeof(tokens)), 0);
	assert_non_null(d = opendir(tokens));
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		assert_true((size_t)snprintf(buf, len, "%s/%s", tokens, de->d_name) < len);
		n++;
	}
	closedir(d);
	assert_int_equal(n, 1);
}

/* Waits up to 10 s for p256's TOKEN_PRESENT flag to be `want`. */
static void
wait_present(mtls_agent *a, int want)
{
	long deadline = now_ms() + 10000;

	while (!!(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT) != want) {
		if (now_ms() > deadline) {
			dump_log(&ag);
			fail_msg("p256 not listed as %s after 10 s", want ? "present" : "absent");
		}
		sleep_ms(100);
	}
}

static void
assert_status(mtls_agent *a, uint32_t present, uint32_t logged_in)
{
	struct mtls_agent_status st;

	memset(&st, 0, sizeof(st));
	assert_err(mtls_agent_get_status(a, &st), 0);
	if (st.tokens_present != present || st.tokens_logged_in != logged_in)
		fail_msg("status says %u present, %u logged in; want %u, %u", st.tokens_present,
			 st.tokens_logged_in, present, logged_in);
	mtls_agent_status_clear(&st);
}

static void
test_token_moved(void **state)
{
	struct wbuf *c = pam_content();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	int retries, i;

	token_dir(moved_from, sizeof(moved_from));
	assert_int_equal(fixture_path(&fx, "moved-token", moved_to, sizeof(moved_to)), 0);
	start_agent(NULL, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	sig = NULL;

	/* Gone: every request about it hears "absent". */
	assert_int_equal(rename(moved_from, moved_to), 0);
	wait_present(a, 0);
	assert_int_equal(count_identities(a), N_KEYS);
	assert_status(a, 0, 0);
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
		     c, MTLS_ERR_TOKEN_ABSENT);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), MTLS_ERR_TOKEN_ABSENT);
	assert_err(mtls_agent_login(a, "p256", fx.pin, &retries), MTLS_ERR_TOKEN_ABSENT);
	assert_err(mtls_agent_change_pin(a, "p256", fx.pin, fx.pin, &retries),
		   MTLS_ERR_TOKEN_ABSENT);
	/* A reload while it is away keeps its identities (as absent). */
	assert_int_equal(agent_signal(&ag, SIGHUP), 0);
	sleep_ms(300);
	assert_int_equal(count_identities(a), N_KEYS);
	assert_false(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT);
	/* Still absent after the agent restarted the module. */
	for (i = 0; i < 100 && !agent_logged(&ag, "initialized again"); i++)
		sleep_ms(100);
	assert_true(agent_logged(&ag, "keeps failing for a token it had"));
	assert_true(agent_logged(&ag, "initialized again"));
	assert_int_equal(count_identities(a), N_KEYS);
	assert_status(a, 0, 0);
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
		     c, MTLS_ERR_TOKEN_ABSENT);
	assert_err(mtls_agent_login(a, "p256", fx.pin, &retries), MTLS_ERR_TOKEN_ABSENT);

	/* Back: listed, logged out, and usable after a login. */
	assert_int_equal(rename(moved_to, moved_from), 0);
	moved_to[0] = '\0';
	wait_present(a, 1);
	assert_status(a, 1, 0);
	assert_false(flags_of(a, "p256") & MTLS_AGENT_ID_LOGGED_IN);
	sign_refused(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
		     c, MTLS_ERR_LOGIN_REQUIRED);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	sig = NULL;
	assert_status(a, 1, 1);
	/* And a reload keeps them. */
	assert_int_equal(agent_signal(&ag, SIGHUP), 0);
	sleep_ms(300);
	assert_int_equal(count_identities(a), N_KEYS);
	assert_true(flags_of(a, "p256") & MTLS_AGENT_ID_TOKEN_PRESENT);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pin_file, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_login_verify, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_pin_locked, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_change_pin, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_token_removal, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_default_module, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_default_module_removal, setup_none,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_module_allowlist, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_module_hang, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_module_hang_login, setup_none,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_key_mismatch_configured, setup_none,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_key_mismatch_discovered, setup_none,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_pin_not_in_memory, setup_none,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_token_moved, setup_none, teardown_agents),
	};

	/* MTLS_TEST_FILTER=test_name (a shell pattern) runs only those. */
	if (getenv("MTLS_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("MTLS_TEST_FILTER"));
	return cmocka_run_group_tests_name("mtls-agent integration", tests, group_setup,
					   group_teardown);
}
