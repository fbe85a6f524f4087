/*
 * test_agent_protocol.c - mtls-agent end to end: the socket and its
 * frames: protocol abuse, stalled clients, parallel clients, many
 * connections, reconnecting, log injection, a refused socket directory, no
 * core dumps.
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

static void
raw_send(int fd, const void *p, size_t len)
{
	assert_int_equal(send(fd, p, len, MSG_NOSIGNAL), (ssize_t)len);
}

static struct wbuf *
bytes_body(const unsigned char *p, size_t len)
{
	struct wbuf *b = wbuf_from(p, len);

	assert_non_null(b);
	return b;
}

/* ---------------------------------------------------------------------- */
/* 5. protocol abuse */

static void
test_protocol_abuse(void **state)
{
	static const unsigned char list_trailing[] = { MSG_LIST, 0x00 };
	static const unsigned char unknown_type[] = { 0x42 };
	static const unsigned char list_only[] = { MSG_LIST };
	unsigned char hdr[4];
	uint32_t big = MTLS_FRAME_MAX + 1;
	mtls_agent *bystander = connect_to(ag.sock);
	int fd, r;

	/* A frame over the limit: refused before any body is read. */
	fd = raw_connect(ag.sock);
	raw_hello(fd);
	hdr[0] = (unsigned char)(big >> 24);
	hdr[1] = (unsigned char)(big >> 16);
	hdr[2] = (unsigned char)(big >> 8);
	hdr[3] = (unsigned char)big;
	raw_send(fd, hdr, sizeof(hdr));
	r = raw_read_error(fd);
	if (r != MTLS_ERR_FRAME_TOO_LARGE && r != MTLS_ERR_CONNECTION_CLOSED)
		fail_msg("oversized frame: got %d (%s)", r, errname(r));
	print_message("oversized frame: %s\n", errname(r));
	close(fd);
	assert_int_equal(count_identities(bystander), N_KEYS);
	assert_fresh_client_lists(ag.sock, N_KEYS);

	/* Pipelined: HELLO, LIST, LIST in one write get three replies, in
	 * order (the agent keeps what it read past a frame for the next). */
	{
		unsigned char wire[3 * 4 + 64];
		struct wbuf *h = hello_body(MTLS_PROTO_MIN, MTLS_PROTO_MAX);
		struct wbuf *body = wbuf_new();
		size_t off = 0, i;
		uint8_t type;

		assert_non_null(body);
		assert_true(wbuf_len(h) <= 64 - 2);
		wire[off++] = 0, wire[off++] = 0, wire[off++] = 0;
		wire[off++] = (unsigned char)wbuf_len(h);
		memcpy(wire + off, wbuf_ptr(h), wbuf_len(h));
		off += wbuf_len(h);
		for (i = 0; i < 2; i++) {
			wire[off++] = 0, wire[off++] = 0, wire[off++] = 0, wire[off++] = 1;
			wire[off++] = MSG_LIST;
		}
		wbuf_free(h);
		fd = raw_connect(ag.sock);
		raw_send(fd, wire, off);
		assert_err(raw_read(fd, &type, body), 0);
		assert_int_equal(type, MSG_HELLO | MSG_REPLY);
		for (i = 0; i < 2; i++) {
			assert_err(raw_read(fd, &type, body), 0);
			assert_int_equal(type, MSG_LIST | MSG_REPLY);
		}
		wbuf_free(body);
		close(fd);
	}

	/* Anything before HELLO. */
	fd = raw_connect(ag.sock);
	raw_send_body(fd, bytes_body(list_only, sizeof(list_only)));
	assert_err(raw_read_error(fd), MTLS_ERR_HELLO_REQUIRED);
	close(fd);
	assert_fresh_client_lists(ag.sock, N_KEYS);

	/* A byte after an (empty) LIST request. */
	fd = raw_connect(ag.sock);
	raw_hello(fd);
	raw_send_body(fd, bytes_body(list_trailing, sizeof(list_trailing)));
	assert_err(raw_read_error(fd), MTLS_ERR_TRAILING_DATA);
	close(fd);
	assert_fresh_client_lists(ag.sock, N_KEYS);

	/* A message type nobody defined. */
	fd = raw_connect(ag.sock);
	raw_hello(fd);
	raw_send_body(fd, bytes_body(unknown_type, sizeof(unknown_type)));
	assert_err(raw_read_error(fd), MTLS_ERR_UNSUPPORTED_MESSAGE);
	close(fd);
	assert_fresh_client_lists(ag.sock, N_KEYS);

	/* Versions from the future only. */
	fd = raw_connect(ag.sock);
	raw_send_body(fd, hello_body(7, 9));
	assert_err(raw_read_error(fd), MTLS_ERR_UNSUPPORTED_VERSION);
	close(fd);
	assert_fresh_client_lists(ag.sock, N_KEYS);

	/* A zero-length frame. */
	fd = raw_connect(ag.sock);
	raw_hello(fd);
	memset(hdr, 0, sizeof(hdr));
	raw_send(fd, hdr, sizeof(hdr));
	/* The agent says why, then closes: the stream cannot resync. */
	assert_err(raw_read_error(fd), MTLS_ERR_BAD_REQUEST);
	close(fd);

	/* A second HELLO on a working connection is not a crash either. */
	fd = raw_connect(ag.sock);
	raw_hello(fd);
	raw_send_body(fd, hello_body(MTLS_PROTO_MIN, MTLS_PROTO_MAX));
	{
		struct wbuf *body = wbuf_new();
		uint8_t type = 0;

		assert_non_null(body);
		r = raw_read(fd, &type, body);
		assert_true(r == 0 || r == MTLS_ERR_CONNECTION_CLOSED);
		if (r == 0)
			assert_true(type == MSG_ERROR || type == (MSG_HELLO | MSG_REPLY));
		wbuf_free(body);
	}
	close(fd);

	/* The bystander's connection survived all of it. */
	assert_int_equal(count_identities(bystander), N_KEYS);
	assert_true(agent_alive(&ag));
	mtls_agent_free(bystander);
}

/* ---------------------------------------------------------------------- */
/* 6. stalled clients do not hold up others */

static void
test_stalled_clients(void **state)
{
	static const unsigned char half_header[] = { 0x00, 0x00 };
	unsigned char frame[4 + 32];
	int silent, half_hdr, half_body, i;
	mtls_agent *a;
	long start, elapsed;

	silent = raw_connect(ag.sock);
	half_hdr = raw_connect(ag.sock);
	raw_send(half_hdr, half_header, sizeof(half_header));
	half_body = raw_connect(ag.sock);
	raw_hello(half_body);
	/* Header announcing 64 bytes, then 32 of them. */
	memset(frame, 0, sizeof(frame));
	frame[3] = 64;
	frame[4] = MSG_SIGN;
	raw_send(half_body, frame, sizeof(frame));

	start = now_ms();
	a = connect_to(ag.sock);
	login(a, NULL);
	for (i = 0; i < 20; i++) {
		struct wbuf *c = tls13_client(32);

		sign_and_verify(a, "p256", "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, c);
		wbuf_free(c);
	}
	elapsed = now_ms() - start;
	print_message("20 signatures next to 3 stalled clients: %ld ms\n", elapsed);
	assert_true(elapsed < 5000);
	assert_true(agent_alive(&ag));
	mtls_agent_free(a);
	close(silent);
	close(half_hdr);
	close(half_body);
	assert_fresh_client_lists(ag.sock, N_KEYS);
}

/* ---------------------------------------------------------------------- */
/* 7. parallel clients */

#define N_THREADS	8
#define SIGS_PER_THREAD 25

struct worker {
	const char *sock;
	unsigned char *cert_der;
	size_t cert_der_len;
	int verified;
	int failed;
	char why[256];
};

static void *
worker_run(void *arg)
{
	struct worker *w = arg;
	const unsigned char *p = w->cert_der;
	unsigned char pad[TLS13_CV_PAD_LEN],
	    content[TLS13_CV_PAD_LEN + sizeof(TLS13_CLIENT_CV_CONTEXT) + 48];
	unsigned char *sig;
	size_t len, sig_len;
	mtls_agent *a = NULL;
	EVP_PKEY *pk = NULL;
	X509 *x;
	int i, r;

	/* No cmocka asserts here: they longjmp, which a thread must not. */
	if ((x = d2i_X509(NULL, &p, (long)w->cert_der_len)) == NULL ||
	    (pk = X509_get_pubkey(x)) == NULL) {
		snprintf(w->why, sizeof(w->why), "cannot read certificate");
		w->failed++;
		goto out;
	}
	if ((r = mtls_agent_connect(w->sock, &a)) != 0) {
		snprintf(w->why, sizeof(w->why), "connect: %s", errname(r));
		w->failed++;
		goto out;
	}
	memset(pad, 0x20, sizeof(pad));
	for (i = 0; i < SIGS_PER_THREAD; i++) {
		memcpy(content, pad, sizeof(pad));
		len = sizeof(pad);
		memcpy(content + len, TLS13_CLIENT_CV_CONTEXT, sizeof(TLS13_CLIENT_CV_CONTEXT));
		len += sizeof(TLS13_CLIENT_CV_CONTEXT);
		if (RAND_bytes(content + len, 32) != 1) {
			w->failed++;
			continue;
		}
		len += 32;
		sig = NULL;
		r = mtls_agent_sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				    MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV, content, len, &sig,
				    &sig_len);
		if (r != 0) {
			snprintf(w->why, sizeof(w->why), "sign %d: %s", i, errname(r));
			w->failed++;
			continue;
		}
		if (verify_content(pk, MTLS_AGENT_ECDSA_SECP256R1_SHA256, content, len, sig,
				   sig_len))
			w->verified++;
		else {
			snprintf(w->why, sizeof(w->why), "signature %d does not verify", i);
			w->failed++;
		}
		free(sig);
	}
out:
	mtls_agent_free(a);
	EVP_PKEY_free(pk);
	X509_free(x);
	return NULL;
}

static void
test_parallel_clients(void **state)
{
	struct worker w[N_THREADS];
	pthread_t th[N_THREADS];
	mtls_agent *a = connect_to(ag.sock);
	unsigned char *der;
	size_t der_len;
	int i, total = 0;
	long start;

	login(a, NULL);
	der = cert_der_from_pem("p256", &der_len);
	memset(w, 0, sizeof(w));
	start = now_ms();
	for (i = 0; i < N_THREADS; i++) {
		w[i].sock = ag.sock;
		w[i].cert_der = der;
		w[i].cert_der_len = der_len;
		assert_int_equal(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
	}
	for (i = 0; i < N_THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	print_message("%d x %d parallel signatures: %ld ms\n", N_THREADS, SIGS_PER_THREAD,
		      now_ms() - start);
	for (i = 0; i < N_THREADS; i++) {
		if (w[i].failed != 0)
			fail_msg("thread %d: %d failures, last: %s", i, w[i].failed, w[i].why);
		total += w[i].verified;
	}
	assert_int_equal(total, N_THREADS * SIGS_PER_THREAD);
	OPENSSL_free(der);
	assert_true(agent_alive(&ag));
	mtls_agent_free(a);
}

/* A socket directory others can enter is refused. */
static void
test_socket_dir_refused(void **state)
{
	const char *args[] = { "--socket", NULL, NULL };
	char dir[PATH_MAX], sock[PATH_MAX];
	struct agent_proc bad;
	char *log;

	assert_int_equal(fixture_unique_path(&fx, "open", NULL, dir, sizeof(dir)), 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	/* chmod, not mkdir's mode: the umask must not hide the test. */
	assert_int_equal(chmod(dir, 0755), 0);
	format_into(sock, "%s/agent.sock", dir);
	args[1] = sock;
	memset(&bad, 0, sizeof(bad));
	if (agent_start(&fx, NULL, args, &bad) == 0) {
		(void)agent_stop(&bad);
		fail_msg("agent listened in a 0755 directory");
	}
	assert_true(bad.reaped);
	assert_true(WIFEXITED(bad.status));
	assert_int_not_equal(WEXITSTATUS(bad.status), 0);
	assert_int_equal(access(sock, F_OK), -1);
	log = agent_log(&bad);
	if (strstr(log, dir) == NULL) {
		print_message("agent stderr:\n%s", log);
		fail_msg("agent stderr does not name %s", dir);
	}
	free(log);
}

/* No core dumps; the process is not dumpable (its /proc files are root's
 * even though it runs as nobody: checked in test_peer_uid's agent). */
static void
test_no_core(void **state)
{
	char path[64], line[256], core[PATH_MAX];
	int soft_zero = 0, st;
	FILE *f;

	skip_under_valgrind("core dumps");

	start_agent(NULL, NULL, &ag);
	snprintf(path, sizeof(path), "/proc/%ld/limits", (long)ag.pid);
	assert_non_null(f = fopen(path, "r"));
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "Max core file size", 18) == 0)
			soft_zero = sscanf(line + 18, " %d", &st) == 1 && st == 0;
	fclose(f);
	assert_true(soft_zero);
	/* A signal that dumps core leaves no core behind. */
	(void)unlink("core");
	snprintf(core, sizeof(core), "core.%ld", (long)ag.pid);
	assert_int_equal(agent_signal(&ag, SIGQUIT), 0);
	assert_int_equal(agent_wait(&ag, 5000), 0);
	assert_int_not_equal(access("core", F_OK), 0);
	assert_int_not_equal(access(core, F_OK), 0);
}

/* Lines of the agent's log that hold `needle`; each checked to start as
 * the agent starts its lines. */
static int
log_lines_with(const struct agent_proc *p, const char *needle)
{
	char *log = agent_log(p), *line, *save = NULL;
	int n = 0;

	for (line = strtok_r(log, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "mtls-agent: ", 12) != 0)
			fail_msg("agent log line not its own: \"%s\"", line);
		if (strstr(line, needle) != NULL)
			n++;
	}
	free(log);
	return n;
}

/* Issue 10 item 7: names a client sends cannot forge audit lines. */
static void
test_log_injection(void **state)
{
	static const char forged[] = "x\naudit: sign ok: peer pid=1 uid=0 exe=/usr/sbin/sshd "
				     "identity=p256 scheme=ecdsa_secp256r1_sha256\r\x1b[2K";
	struct wbuf *c = pam_content();
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	mtls_agent *a;
	int retries;

	start_agent(NULL, NULL, &ag);
	a = connect_to(ag.sock);
	assert_err(sign(a, forged, MTLS_AGENT_ECDSA_SECP256R1_SHA256,
			MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
		   MTLS_ERR_NO_IDENTITY);
	assert_err(mtls_agent_login(a, forged, fx.pin, &retries), MTLS_ERR_NO_IDENTITY);
	assert_err(mtls_agent_logout(a, forged), MTLS_ERR_NO_IDENTITY);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
	/* The refusals are logged, with the name escaped on their line. */
	if (log_lines_with(&ag, "x\\x0aaudit: sign ok: peer pid=1") < 2 ||
	    !agent_logged(&ag, "scheme=ecdsa_secp256r1_sha256\\x0d\\x1b[2K")) {
		dump_log(&ag);
		fail_msg("the refusals are not logged with the name escaped");
	}
	/* No signature was made: no line may say one was. */
	if (log_lines_with(&ag, "audit: sign ok") != log_lines_with(&ag, "\\x0aaudit: sign ok")) {
		dump_log(&ag);
		fail_msg("a forged audit line reached the agent's log");
	}
	assert_false(agent_logged(&ag, "\n\x1b"));
	assert_false(agent_logged(&ag, "\r"));
	wbuf_free(c);
}

/* 1000 idle connections, and still a client signs; past the cap, BUSY. */
static void
test_many_connections(void **state)
{
	enum { IDLE = 1000 };
	struct wbuf *c;
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	struct rlimit rl;
	mtls_agent *a;
	int *fds, i, retries, busy;

	skip_under_valgrind("descriptor counts");
	c = pam_content();

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_max < IDLE + 64) {
		print_message("RLIMIT_NOFILE hard limit %lu: test skipped\n",
			      (unsigned long)rl.rlim_max);
		skip();
	}
	rl.rlim_cur = rl.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_non_null(fds = calloc(IDLE, sizeof(*fds)));
	start_agent("max-connections = 1100\n", NULL, &ag);
	for (i = 0; i < IDLE; i++)
		fds[i] = raw_connect(ag.sock);
	a = connect_to(ag.sock);
	assert_err(mtls_agent_login(a, NULL, fx.pin, &retries), 0);
	for (i = 0; i < 20; i++) {
		assert_err(sign(a, "p256", MTLS_AGENT_ECDSA_SECP256R1_SHA256,
				MTLS_AGENT_PURPOSE_PAM_CHALLENGE, c, &sig, &sig_len),
			   0);
		free(sig);
		sig = NULL;
	}
	mtls_agent_free(a);
	for (i = 0; i < IDLE; i++)
		close(fds[i]);
	assert_int_equal(agent_stop(&ag), 0);

	/* A small cap: the connection past it hears BUSY. */
	start_agent("max-connections = 5\n", NULL, &ag);
	for (i = 0; i < 5; i++)
		fds[i] = raw_connect(ag.sock);
	usleep(200 * 1000);
	busy = mtls_agent_connect(ag.sock, &a);
	assert_err(busy, MTLS_ERR_BUSY);
	for (i = 0; i < 5; i++)
		close(fds[i]);
	/* Freed slots are usable again. */
	for (i = 0; i < 50 && (busy = mtls_agent_connect(ag.sock, &a)) != 0; i++)
		usleep(100 * 1000);
	assert_err(busy, 0);
	mtls_agent_free(a);
	free(fds);
	wbuf_free(c);
	assert_int_equal(agent_stop(&ag), 0);
}

/* ---------------------------------------------------------------------- */
/* 13. a handle survives an agent restart */

static void
test_reconnect(void **state)
{
	const char *args[] = { "--socket", NULL, NULL };
	char sock[PATH_MAX];
	mtls_agent *a;

	start_agent(NULL, NULL, &ag);
	format_into(sock, "%s", ag.sock);
	a = connect_to(sock);
	assert_int_equal(count_identities(a), N_KEYS);

	/* No chance to clean up: the socket file stays behind. */
	assert_int_equal(agent_signal(&ag, SIGKILL), 0);
	assert_int_equal(agent_wait(&ag, 5000), 0);

	args[1] = sock;
	start_agent(NULL, args, &ag);
	assert_string_equal(ag.sock, sock);
	assert_int_equal(count_identities(a), N_KEYS);
	/* The handle keeps working on the new connection. */
	assert_int_equal(count_identities(a), N_KEYS);
	mtls_agent_free(a);
	assert_int_equal(agent_stop(&ag), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_protocol_abuse, setup_agent, teardown_agents),
		cmocka_unit_test_setup_teardown(test_stalled_clients, setup_agent, teardown_agents),
		cmocka_unit_test_setup_teardown(test_parallel_clients, setup_agent,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_socket_dir_refused, setup_none,
						teardown_agents),
		cmocka_unit_test_setup_teardown(test_no_core, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_log_injection, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_many_connections, setup_none, teardown_agents),
		cmocka_unit_test_setup_teardown(test_reconnect, setup_none, teardown_agents),
	};

	/* MTLS_TEST_FILTER=test_name (a shell pattern) runs only those. */
	if (getenv("MTLS_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("MTLS_TEST_FILTER"));
	return cmocka_run_group_tests_name("mtls-agent integration: protocol", tests, group_setup,
					   group_teardown);
}
