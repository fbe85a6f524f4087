/*
 * test_agent_policy.c - mtls-agent end to end: who may sign what: peer
 * uid, the peers list, a peer whose exe changed, the rate limit,
 * confirmation by askpass, login lifetime and idle expiry.
 *
 * The real daemon on the SoftHSM2 fixture token, driven through
 * libmtls-agent and raw frames; the shared helpers, setup and teardown are
 * in agent_helpers.c (see test_agent.c for how a run is laid out).
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
/* 8. peer credentials */

static void
test_peer_uid(void **state)
{
	char *base = peer_base;
	char tok[PATH_MAX], run[PATH_MAX], conf[PATH_MAX], sock[PATH_MAX];
	char src_tokens[PATH_MAX], dst_tokens[PATH_MAX], bin[PATH_MAX], owner[64],
	    env_conf[PATH_MAX + 16];
	char conf_text[PATH_MAX + 128];
	const char *env[] = { env_conf, NULL };
	const char *args[] = { "--socket", sock, NULL };
	const char *args_root[] = { "--socket", sock, "--allow-root", NULL };
	struct agent_opts o = { 0 };
	struct passwd *pw;
	mtls_agent *a = NULL;
	int r;

	if (geteuid() != 0) {
		print_message("not root: peer uid test skipped\n");
		skip();
	}
	if ((pw = getpwnam("nobody")) == NULL) {
		print_message("no user nobody: peer uid test skipped\n");
		skip();
	}
	/* The agent runs as nobody: the path to its files must be
	 * traversable (0711 here), the files themselves nobody's. */
	snprintf(peer_base, sizeof(peer_base), "/tmp/mtls-peer.XXXXXX");
	if (mkdtemp(peer_base) == NULL) {
		peer_base[0] = '\0';
		fail_msg("mkdtemp: %s", strerror(errno));
	}
	assert_int_equal(chmod(base, 0711), 0);
	format_into(tok, "%s/token", base);
	format_into(run, "%s/run", base);
	format_into(sock, "%s/agent.sock", run);
	format_into(conf, "%s/softhsm2.conf", tok);
	format_into(env_conf, "SOFTHSM2_CONF=%s", conf);
	format_into(dst_tokens, "%s/tokens", tok);
	format_into(bin, "%s/mtls-agent", base);
	format_into(owner, "%ld:%ld", (long)pw->pw_uid, (long)pw->pw_gid);
	assert_int_equal(fixture_path(&fx, "tokens", src_tokens, sizeof(src_tokens)), 0);
	assert_int_equal(mkdir(tok, 0700), 0);
	assert_int_equal(mkdir(run, 0700), 0);
	{
		const char *cp[] = { "cp", "-a", src_tokens, dst_tokens, NULL };
		const char *chown_tok[] = { "chown", "-R", owner, tok, NULL };
		const char *chown_run[] = { "chown", owner, run, NULL };

		format_into(conf_text,
			    "directories.tokendir = %s\nobjectstore.backend = file\n"
			    "log.level = ERROR\nslots.removable = false\n",
			    dst_tokens);
		assert_int_equal(fixture_write_file(conf, conf_text, 0600), 0);
		const char *cp_bin[] = { "cp", fx.agent_bin, bin, NULL };

		assert_int_equal(fixture_run(cp), 0);
		/* The build tree may sit where nobody cannot reach (under
		 * /root): run a copy of the agent from the 0711 directory. */
		assert_int_equal(fixture_run(cp_bin), 0);
		assert_int_equal(chmod(bin, 0755), 0);
		assert_int_equal(fixture_run(chown_tok), 0);
		assert_int_equal(fixture_run(chown_run), 0);
	}

	o.args = args;
	o.env = env;
	o.agent_bin = bin;
	o.set_user = 1;
	o.uid = pw->pw_uid;
	o.gid = pw->pw_gid;
	if (agent_start_opts(&fx, &o, &ag) != 0) {
		dump_log(&ag);
		fail_msg("agent as nobody did not start");
	}
	r = mtls_agent_connect(sock, &a);
	mtls_agent_free(a);
	a = NULL;
	if (r != MTLS_ERR_PEER_DENIED) {
		dump_log(&ag);
		fail_msg("root connecting to nobody's agent: got %d (%s), want PEER_DENIED", r,
			 errname(r));
	}
	/* The refusal is per connection; the agent goes on. */
	assert_true(agent_alive(&ag));
	assert_int_equal(agent_stop(&ag), 0);

	o.args = args_root;
	if (agent_start_opts(&fx, &o, &ag) != 0) {
		dump_log(&ag);
		fail_msg("agent as nobody with --allow-root did not start");
	}
	a = connect_to(sock);
	assert_int_equal(count_identities(a), N_KEYS);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

static void
test_peers_policy(void **state)
{
	char config[PATH_MAX + 1024], self[PATH_MAX];
	struct wbuf *c;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	ssize_t n;
	int retries;

	skip_under_valgrind("peer executable");
	c = pam_content();

	assert_true((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) > 0);
	self[n] = '\0';
	snprintf(config, sizeof(config),
		 "[identity other-uid]\n" P256_ID_FMT "peers = uid:%u\n"
		 "[identity my-uid]\n" P256_ID_FMT "peers = uid:%u\n"
		 "[identity my-exe]\n" P256_ID_FMT "peers = uid:%u, exe:%s\n"
		 "[identity other-exe]\n" P256_ID_FMT "peers = exe:/usr/bin/true\n"
		 "[identity my-gid]\n" P256_ID_FMT "peers = gid:%u\n",
		 (unsigned)getuid() + 4242, (unsigned)getuid(), (unsigned)getuid() + 4242, self,
		 (unsigned)getgid());
	start_agent(config, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "other-uid", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_POLICY_DENIED);
	assert_err(sign(a, "other-exe", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_POLICY_DENIED);
	assert_null(sig);
	assert_err(sign(a, "my-uid", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	sig = NULL;
	assert_err(sign(a, "my-exe", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	sig = NULL;
	assert_err(sign(a, "my-gid", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

/* Sends descriptor fd over the socketpair end sp. */
static int
send_fd(int sp, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 }, byte = 'f';
	struct iovec iov = { &byte, 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sp, &mh, 0) == 1 ? 0 : -1;
}

static int
recv_fd(int sp)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 }, byte;
	struct iovec iov = { &byte, 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	int fd = -1;

	assert_int_equal(recvmsg(sp, &mh, MSG_CMSG_CLOEXEC), 1);
	assert_non_null(cm = CMSG_FIRSTHDR(&mh));
	assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	assert_true(fd >= 0);
	frame_rx_reset(rx_of(fd));
	return fd;
}

/*
 * Forks a process that connects to the agent, says HELLO, hands a copy
 * of its connection to us, and then either executes argv (keeping the
 * connection open across exec) or, with argv NULL, exits.  Returns the
 * connection; *pidp is the child (to kill or reap).
 */
static int
connect_in_child(const char *sock, char *const *argv, pid_t *pidp)
{
	struct wbuf *hello = hello_body(MTLS_PROTO_MIN, MTLS_PROTO_MAX), *reply = wbuf_new();
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int sp[2], fd;
	pid_t pid;

	assert_non_null(reply);
	assert_true(strlen(sock) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, sock, strlen(sock) + 1);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		/* No cmocka here: a failure is an exit status. */
		static struct frame_rx rx;

		fd = socket(AF_UNIX, SOCK_STREAM, 0); /* no close-on-exec: kept */
		if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
			_exit(2);
		frame_rx_reset(&rx);
		if (frame_write(fd, hello, IO_TIMEOUT_MS) != 0 ||
		    frame_read(fd, &rx, reply, MTLS_FRAME_MAX, IO_TIMEOUT_MS, IO_TIMEOUT_MS) != 0)
			_exit(3);
		if (send_fd(sp[1], fd) != 0)
			_exit(4);
		if (argv != NULL)
			execvp(argv[0], argv);
		_exit(argv != NULL ? 5 : 0);
	}
	close(sp[1]);
	wbuf_free(hello);
	wbuf_free(reply);
	fd = recv_fd(sp[0]);
	close(sp[0]);
	*pidp = pid;
	return fd;
}

/* SIGN on a raw connection; the code (0: signed), the agent's message. */
static int
raw_sign(int fd, const char *identity, char *msg, size_t msg_len)
{
	struct wbuf *content = pam_content(), *body = wbuf_new();
	struct msg_sign_req req = { .identity = (char *)identity,
				    .scheme = MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				    .purpose = MTLS_AGENT_PURPOSE_PAM_CHALLENGE };
	struct msg_error err = { 0 };
	uint8_t type = 0;
	int r;

	assert_non_null(body);
	req.content = (unsigned char *)wbuf_ptr(content);
	req.content_len = wbuf_len(content);
	assert_int_equal(msg_sign_req_put(body, &req), 0);
	raw_send_body(fd, body);
	wbuf_free(content);
	assert_non_null(body = wbuf_new());
	assert_err(raw_read(fd, &type, body), 0);
	msg[0] = '\0';
	if (type == (MSG_SIGN | MSG_REPLY)) {
		r = 0;
	} else {
		assert_int_equal(type, MSG_ERROR);
		assert_err(msg_error_get(body, &err), 0);
		r = err.code;
		snprintf(msg, msg_len, "%s", err.message != NULL ? err.message : "");
		msg_error_clear(&err);
	}
	wbuf_free(body);
	return r;
}

/*
 * Issue 10 item 8: the exe a policy names is read again at each request,
 * through a pidfd of the process that connected.  A process that connects
 * and then executes another program, or exits leaving the connection to
 * another process, no longer passes an `exe` rule (uid rules still work),
 * and the prompt and the audit line say what the kernel reported.
 */
static void
test_peer_exe_changed(void **state)
{
	char config[3 * PATH_MAX + 1024], self[PATH_MAX], now[PATH_MAX], askpass[PATH_MAX];
	char prompt_file[PATH_MAX], script[2 * PATH_MAX], msg[512], needle[PATH_MAX + 128];
	char *const sleeper[] = { (char *)"sleep", (char *)"30", NULL };
	char *prompt;
	mtls_agent *a;
	long deadline;
	ssize_t n;
	pid_t pid;
	int fd, status, retries;

	skip_under_valgrind("peer executable");
	assert_true((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) > 0);
	self[n] = '\0';
	assert_int_equal(fixture_path(&fx, "askpass-record", askpass, sizeof(askpass)), 0);
	assert_int_equal(fixture_path(&fx, "prompt.txt", prompt_file, sizeof(prompt_file)), 0);
	format_into(script, "#!/bin/sh\nprintf '%%s\\n' \"$1\" >> '%s'\nexit 0\n", prompt_file);
	assert_int_equal(fixture_write_file(askpass, script, 0755), 0);
	format_into(config,
		    "askpass = %s\n"
		    "[identity by-exe]\n" P256_ID_FMT "peers = exe:%s\n"
		    "[identity by-uid]\n" P256_ID_FMT "peers = uid:%u\n"
		    "[identity confirmed]\n" P256_ID_FMT "confirm = yes\n",
		    askpass, self, (unsigned)getuid());
	start_agent(config, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);

	/* The normal case: the program that connected asks. */
	fd = raw_connect(ag.sock);
	raw_hello(fd);
	assert_err(raw_sign(fd, "by-exe", msg, sizeof(msg)), 0);
	assert_err(raw_sign(fd, "confirmed", msg, sizeof(msg)), 0);
	close(fd);
	assert_non_null(prompt = fixture_read_file(prompt_file, NULL));
	format_into(needle, "Allow %s (executable as the kernel reports it; pid %ld,", self,
		    (long)getpid());
	if (strstr(prompt, needle) == NULL)
		fail_msg("prompt \"%s\" lacks \"%s\"", prompt, needle);
	free(prompt);
	assert_int_equal(unlink(prompt_file), 0);

	/* Connects, then executes another program keeping the connection. */
	fd = connect_in_child(ag.sock, sleeper, &pid);
	for (deadline = now_ms() + 5000;; sleep_ms(5)) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%ld/exe", (long)pid);
		n = readlink(path, now, sizeof(now) - 1);
		if (n > 0 && (now[n] = '\0', strcmp(now, self) != 0))
			break;
		if (now_ms() > deadline)
			fail_msg("child %ld did not execute sleep", (long)pid);
	}
	assert_err(raw_sign(fd, "by-exe", msg, sizeof(msg)), MTLS_ERR_POLICY_DENIED);
	format_into(needle, "exe !changed:%s may not use identity by-exe", now);
	if (strstr(msg, needle) == NULL)
		fail_msg("refusal \"%s\" lacks \"%s\"", msg, needle);
	format_into(needle, "audit: sign refused: peer pid=%ld uid=%u exe=!changed:%s ", (long)pid,
		    (unsigned)getuid(), now);
	assert_true(agent_logged(&ag, needle));
	/* A rule that does not rest on the exe still holds. */
	assert_err(raw_sign(fd, "by-uid", msg, sizeof(msg)), 0);
	assert_err(raw_sign(fd, "confirmed", msg, sizeof(msg)), 0);
	assert_non_null(prompt = fixture_read_file(prompt_file, NULL));
	format_into(needle, "Allow !changed:%s (executable as the kernel reports it; pid %ld,", now,
		    (long)pid);
	if (strstr(prompt, needle) == NULL)
		fail_msg("prompt \"%s\" lacks \"%s\"", prompt, needle);
	free(prompt);
	close(fd);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);

	/* Connects, then exits: whoever holds the connection is not it. */
	fd = connect_in_child(ag.sock, NULL, &pid);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_err(raw_sign(fd, "by-exe", msg, sizeof(msg)), MTLS_ERR_POLICY_DENIED);
	format_into(needle, "exe !exited:%s may not use identity by-exe", self);
	if (strstr(msg, needle) == NULL)
		fail_msg("refusal \"%s\" lacks \"%s\"", msg, needle);
	assert_err(raw_sign(fd, "by-uid", msg, sizeof(msg)), 0);
	close(fd);

	/* And the library's own connection still signs by exe. */
	{
		struct wbuf *c = pam_content();
		unsigned char *sig = NULL;
		size_t sig_len = 0;

		assert_err(sign(a, "by-exe", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
			   0);
		free(sig);
		wbuf_free(c);
	}
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

static void
test_rate_limit(void **state)
{
	struct wbuf *c = pam_content();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	int retries, i;
	char *log;

	start_agent("[identity slow]\n" P256_ID "rate-limit = 3\n"
		    "[identity free]\n" P256_ID,
		    NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	for (i = 0; i < 3; i++) {
		assert_err(sign(a, "slow", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
			   0);
		free(sig);
		sig = NULL;
	}
	assert_err(sign(a, "slow", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_RATE_LIMITED);
	/* Another identity on the same key is not held back. */
	assert_err(sign(a, "free", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	assert_non_null(log = fixture_read_file(ag.log, NULL));
	assert_non_null(strstr(log, "rate limit hit: identity slow"));
	free(log);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

static void
test_confirm(void **state)
{
	char yes[PATH_MAX], no[PATH_MAX], slow[PATH_MAX], config[PATH_MAX + 1024];
	struct slow_signer w = { 0 };
	struct wbuf *c;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	struct timespec t0, t1;
	pthread_t th;
	mtls_agent *a;
	int retries;
	long ms;

	skip_under_valgrind("confirmation timing");
	c = pam_content();

	assert_int_equal(fixture_path(&fx, "askpass-yes", yes, sizeof(yes)), 0);
	assert_int_equal(fixture_path(&fx, "askpass-no", no, sizeof(no)), 0);
	assert_int_equal(fixture_path(&fx, "askpass-slow", slow, sizeof(slow)), 0);
	/* The prompt must name the asking program and the purpose. */
	assert_int_equal(
	    fixture_write_file(
		yes,
		"#!/bin/sh\n"
		"case \"$1\" in *pam-challenge*test_agent*|*test_agent*pam-challenge*) exit 0;; "
		"esac\n"
		"exit 3\n",
		0755),
	    0);
	assert_int_equal(fixture_write_file(no, "#!/bin/sh\nexit 1\n", 0755), 0);
	assert_int_equal(fixture_write_file(slow, "#!/bin/sh\nexec sleep 30\n", 0755), 0);
	snprintf(config, sizeof(config),
		 "askpass = %s\nconfirm-timeout = 1\n"
		 "[identity confirmed]\n" P256_ID_FMT "confirm = yes\n"
		 "[identity unconfirmed]\n" P256_ID_FMT,
		 yes);
	start_agent(config, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "confirmed", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	sig = NULL;
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);

	snprintf(config, sizeof(config),
		 "askpass = %s\nconfirm-timeout = 1\n"
		 "[identity confirmed]\n" P256_ID_FMT "confirm = yes\n"
		 "[identity unconfirmed]\n" P256_ID_FMT,
		 no);
	start_agent(config, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "confirmed", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_CONFIRM_DENIED);
	assert_null(sig);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);

	/* A confirmation that never comes times out, and while it is
	 * pending another identity is served at once. */
	snprintf(config, sizeof(config),
		 "askpass = %s\nconfirm-timeout = 2\n"
		 "[identity confirmed-slow]\n" P256_ID_FMT "confirm = yes\n"
		 "[identity unconfirmed]\n" P256_ID_FMT,
		 slow);
	start_agent(config, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	w.sock = ag.sock;
	assert_int_equal(pthread_create(&th, NULL, sign_in_thread, &w), 0);
	usleep(300 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_err(sign(a, "unconfirmed", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	free(sig);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms < 1000);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(w.result, MTLS_ERR_CONFIRM_DENIED);
	assert_true(w.ms >= 1500 && w.ms < 10000);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

static void
test_lifetime_idle(void **state)
{
	struct wbuf *c = pam_content();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	int retries, i;

	start_agent("[identity short]\n" P256_ID "lifetime = 2\n"
		    "[identity idle]\n key = " TOKEN_URI ";id=%01\nidle-logout = 2\n",
		    NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	assert_err(sign(a, "short", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   0);
	free(sig);
	sig = NULL;
	/* Keep "idle" busy for a while: only "short" must expire. */
	for (i = 0; i < 6; i++) {
		usleep(500 * 1000);
		assert_err(sign(a, "idle", MTLS_AGENT_RSA_PSS_RSAE_SHA256,
				MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
			   0);
		free(sig);
		sig = NULL;
	}
	assert_err(sign(a, "short", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_TOKEN);
	assert_false(flags_of(a, "short") & MTLS_AGENT_ID_KEY_FOUND);
	/* Now leave "idle" alone: its key goes, and with no identity left
	 * using it the token is logged out. */
	for (i = 0; i < 50 && (flags_of(a, "idle") & MTLS_AGENT_ID_LOGGED_IN); i++)
		usleep(100 * 1000);
	assert_false(flags_of(a, "idle") & MTLS_AGENT_ID_LOGGED_IN);
	assert_err(sign(a, "idle", MTLS_AGENT_RSA_PSS_RSAE_SHA256, MTLS_AGENT_PURPOSE_PAM_CHALLENGE,
			c, &sig, &sig_len),
		   MTLS_ERR_LOGIN_REQUIRED);
	wbuf_free(c);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_peer_uid, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_peers_policy, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_peer_exe_changed, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_rate_limit, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_confirm, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_lifetime_idle, setup_none, teardown_agents),
	};

	/* MTLS_TEST_FILTER=test_name (a shell pattern) runs only those. */
	if (getenv("MTLS_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("MTLS_TEST_FILTER"));
	return cmocka_run_group_tests_name("mtls-agent integration: policy", tests, group_setup,
					   group_teardown);
}
