/*
 * test_client_fd.c - client_connect_fd(), the PAM module's way into its
 * private copy of the client library (pam/libpam-client.la): the handle
 * uses the connection the module checked and never opens another by path.
 *
 * A small agent stand-in, built on the real codecs, answers HELLO and LIST
 * on one accepted connection and hangs up; then a second listener (the
 * "attacker") takes over the same socket path.  The descriptor handle must
 * fail without connecting to it, where a path handle does connect.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
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
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "client.h"
#include "mtls-agent.h"
#include "proto.h"
#include "wbuf.h"

#define IO_MS 5000

/* The private client copy reads its settings through this (Makefile.am:
 * -Dgetenv=pam_mtls_agent_getenv); a short timeout keeps the path-handle
 * case quick. */
char *pam_mtls_agent_getenv(const char *name);

char *
pam_mtls_agent_getenv(const char *name)
{
	static char one[] = "1";

	return name != NULL && strcmp(name, "MTLS_AGENT_TIMEOUT") == 0 ? one : NULL;
}

static char dir[256], sock_path[PATH_MAX];

static int
listen_at(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	assert_true(strlen(path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_true((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) != -1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

static int
connect_to(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_true((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) != -1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return fd;
}

/* 1 if a connection waits on the listener within ms. */
static int
pending(int lfd, int ms)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

struct stand_in {
	int fd;
	int served; /* requests answered */
	int failed;
};

/* Answers HELLO, then LIST (no identities), then hangs up.  No cmocka
 * asserts in a thread. */
static void *
stand_in_run(void *arg)
{
	struct stand_in *s = arg;
	struct msg_hello_resp hr = { MTLS_PROTO_MAX, (char *)"stand-in" };
	struct msg_list_resp lr = { NULL, 0 };
	struct msg_hello_req hq;
	struct frame_rx rx;
	struct wbuf *in = wbuf_new(), *out = wbuf_new();
	uint8_t type;

	frame_rx_reset(&rx);
	if (in == NULL || out == NULL || frame_read(s->fd, &rx, in, MTLS_FRAME_MAX, IO_MS, IO_MS) ||
	    wbuf_get_u8(in, &type) || type != MSG_HELLO || msg_hello_req_get(in, &hq)) {
		s->failed = 1;
		goto out;
	}
	msg_hello_req_clear(&hq);
	if (msg_hello_resp_put(out, &hr) || frame_write(s->fd, out, IO_MS)) {
		s->failed = 1;
		goto out;
	}
	s->served++;
	wbuf_reset(out);
	if (frame_read(s->fd, &rx, in, MTLS_FRAME_MAX, IO_MS, IO_MS) || wbuf_get_u8(in, &type) ||
	    type != MSG_LIST || msg_list_resp_put(out, &lr) || frame_write(s->fd, out, IO_MS)) {
		s->failed = 1;
		goto out;
	}
	s->served++;
out:
	close(s->fd);
	wbuf_free(in);
	wbuf_free(out);
	return NULL;
}

static int
setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "%s/mtls-client-fd.XXXXXX", P_tmpdir);
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/agent.sock", dir);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	(void)unlink(sock_path);
	(void)rmdir(dir);
	return 0;
}

static void
test_fd_handle_never_reconnects(void **state)
{
	struct mtls_agent_identity *ids = NULL;
	struct stand_in s = { 0 };
	mtls_agent *a = NULL, *p = NULL;
	pthread_t th;
	size_t n = 9;
	int l1, l2, cfd;

	(void)state;
	l1 = listen_at(sock_path);
	cfd = connect_to(sock_path);
	assert_true((s.fd = accept4(l1, NULL, NULL, SOCK_CLOEXEC)) != -1);
	assert_int_equal(pthread_create(&th, NULL, stand_in_run, &s), 0);
	assert_int_equal(client_connect_fd(cfd, &a), 0);
	assert_int_equal(mtls_agent_list(a, &ids, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(s.failed, 0);
	assert_int_equal(s.served, 2);

	/* The agent is gone; someone else listens at its path now. */
	close(l1);
	assert_int_equal(unlink(sock_path), 0);
	l2 = listen_at(sock_path);
	assert_true(mtls_agent_list(a, &ids, &n) < 0);
	assert_true(mtls_agent_list(a, &ids, &n) < 0);
	assert_false(pending(l2, 200));
	mtls_agent_free(a);

	/* A handle made from the path, by contrast, does go there. */
	assert_true(mtls_agent_connect(sock_path, &p) < 0);
	assert_null(p);
	assert_true(pending(l2, 0));
	close(l2);
}

/* Bad arguments, and a peer that hangs up before HELLO: an error, and the
 * descriptor is closed either way. */
static void
test_fd_handle_errors(void **state)
{
	mtls_agent *a = NULL;
	int sv[2];

	(void)state;
	assert_int_equal(client_connect_fd(-1, &a), MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(client_connect_fd(sv[0], NULL), MTLS_ERR_INVALID_ARGUMENT);
	assert_int_equal(fcntl(sv[0], F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	close(sv[1]);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	assert_true(client_connect_fd(sv[0], &a) < 0);
	assert_null(a);
	assert_int_equal(fcntl(sv[0], F_GETFD), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fd_handle_never_reconnects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_handle_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
