/*
 * client.c - libmtls-agent: the client side of the agent protocol.
 *
 * A handle owns one connection to the agent and the socket path it came
 * from, so it can reconnect after the agent restarts.  Every request is one
 * frame out and one frame back, serialized by the handle's mutex.  All wire
 * bytes go through the codecs in src/common; nothing here touches them.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "mtls-agent.h"
#include "proto.h"
#include "spin.h"
#include "wbuf.h"

/* The agent may be waiting for a PIN pad or a slow token. */
#define DEFAULT_TIMEOUT_S 120
#define TIMEOUT_ENV	  "MTLS_AGENT_TIMEOUT"
#define SOCK_SUBPATH	  "/mtls-agent/agent.sock"
/*
 * Busy-polling for a SIGN reply: at most this many microseconds, and only
 * while signatures take less than that (a slow token is waited for asleep).
 */
#define DEFAULT_BUSY_POLL_US 2000
#define MAX_BUSY_POLL_US     100000
#define BUSY_POLL_ENV	     "MTLS_AGENT_BUSY_POLL"

struct mtls_agent {
	pthread_mutex_t lock;
	int fd;			  /* -1 while disconnected */
	pid_t pid;		  /* process that opened fd */
	unsigned long fork_gen;	  /* fork_gen when fd was opened */
	struct frame_rx rx;	  /* bytes read from fd, not yet a frame */
	char *path;		  /* where to reconnect */
	int timeout_ms;		  /* -1: wait forever */
	int rcvtimeo;		  /* fd is ours, blocking, with SO_RCVTIMEO timeout_ms */
	unsigned int spin_max_us; /* busy-poll limit; 0: never */
	unsigned int sign_us;	  /* running mean of SIGN round trips; 0: none yet */
	int spin_cap;		  /* threads that may busy-poll at once on this agent */
	struct spin_ctl spin;	  /* holds busy-polling off after spins that did not pay */
};

/* Detail text of the last error reply this thread received. */
static __thread char last_message[MTLS_TEXT_MAX + 1];

static void
set_last_message(const char *s)
{
	if (s == NULL)
		s = "";
	snprintf(last_message, sizeof(last_message), "%s", s);
}

const char *
mtls_agent_last_message(void)
{
	return last_message;
}

/* $MTLS_AGENT_TIMEOUT in seconds; 0 waits forever; junk is ignored. */
static int
timeout_from_env(void)
{
	const char *s = getenv(TIMEOUT_ENV);
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return DEFAULT_TIMEOUT_S * 1000;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0)
		return DEFAULT_TIMEOUT_S * 1000;
	if (v == 0)
		return -1;
	if (v > INT_MAX / 1000)
		return INT_MAX;
	return (int)v * 1000;
}

/*
 * Busy-polling helps only while a CPU is free for the agent: at most half
 * the CPUs this process may run on (affinity and cpusets, not the
 * machine's count) have a thread of ours busy-polling, unless the agent
 * runs on CPUs of its own (spin_max_spinners); the others sleep.
 */
static int spinners, spin_cpus;

/* $MTLS_AGENT_BUSY_POLL in microseconds (0 turns busy-polling off); junk is
 * ignored. */

static unsigned int
busy_poll_from_env(void)
{
	const char *s = getenv(BUSY_POLL_ENV);
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return DEFAULT_BUSY_POLL_US;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0)
		return DEFAULT_BUSY_POLL_US;
	return v > MAX_BUSY_POLL_US ? MAX_BUSY_POLL_US : (unsigned int)v;
}

/*
 * How long to busy-poll for the reply to the next SIGN: a little over the
 * running mean of the last round trips, or the limit while there is none;
 * nothing once signatures take longer than the limit.
 */
static unsigned int
sign_spin_budget(const struct mtls_agent *a)
{
	unsigned int want;

	if (a->spin_max_us == 0 || a->sign_us > a->spin_max_us)
		return 0;
	if (a->sign_us == 0)
		return a->spin_max_us;
	want = a->sign_us + a->sign_us / 2 + 50;
	return want < a->spin_max_us ? want : a->spin_max_us;
}

/* The socket path the caller asked for, or the one the environment names. */
static int
resolve_path(const char *path, char **outp)
{
	struct sockaddr_un sun;
	const char *env;
	char *p = NULL;
	size_t len;

	*outp = NULL;
	if (path != NULL && *path != '\0') {
		p = strdup(path);
	} else if ((env = getenv(MTLS_AGENT_SOCK_ENV)) != NULL && *env != '\0') {
		p = strdup(env);
	} else if ((env = getenv("XDG_RUNTIME_DIR")) != NULL && *env != '\0') {
		len = strlen(env) + sizeof(SOCK_SUBPATH);
		if ((p = malloc(len)) != NULL)
			snprintf(p, len, "%s%s", env, SOCK_SUBPATH);
	} else {
		return MTLS_ERR_NO_SOCKET;
	}
	if (p == NULL)
		return MTLS_ERR_ALLOC;
	/* sun_path needs room for the terminating NUL as well. */
	if (strlen(p) >= sizeof(sun.sun_path)) {
		free(p);
		return MTLS_ERR_INVALID_ARGUMENT;
	}
	*outp = p;
	return 0;
}

/* close() only, never shutdown(): a forked child's copy of the
 * connection is also its parent's, and the parent goes on using it. */
static void
drop_connection(struct mtls_agent *a)
{
	if (a->fd != -1) {
		close(a->fd);
		a->fd = -1;
	}
	a->rcvtimeo = 0;
	frame_rx_reset(&a->rx);
}

/*
 * Fork detection without a system call per request: a child handler
 * counts forks (glibc drops it if this library is dlclose()d).  Should
 * registering fail, getpid() is compared instead.
 */
static unsigned long fork_gen;
static int fork_watched;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void
fork_child(void)
{
	__atomic_add_fetch(&fork_gen, 1, __ATOMIC_RELAXED);
}

static void
fork_watch(void)
{
	fork_watched = pthread_atfork(NULL, NULL, fork_child) == 0;
	spin_cpus = spin_cpus_allowed(0);
}

/*
 * A handle inherited across fork() shares its connection with the parent:
 * requests from both would interleave on one stream and the agent would
 * see the parent's credentials.  The child drops its copy and connects on
 * its own.
 */
static void
check_fork(struct mtls_agent *a)
{
	if (a->fd == -1)
		return;
	if (fork_watched ? a->fork_gen != __atomic_load_n(&fork_gen, __ATOMIC_RELAXED)
			 : a->pid != getpid())
		drop_connection(a);
}

/*
 * Reads one reply frame and checks its type.  On success `reply` holds the
 * payload (type byte consumed).  An ERROR reply becomes its code, its text
 * goes to last_message, its retries to *retries (if not NULL), and
 * *was_error_reply is set.
 */
static int
read_reply(struct mtls_agent *a, uint8_t expect, struct wbuf *reply, int *retries,
	   int *was_error_reply)
{
	struct msg_error err = { 0 };
	uint8_t type;
	int r;

	/* A socket of our own has the timeout as SO_RCVTIMEO (open_connection):
	 * one blocking recv waits for the reply.  A descriptor handed in
	 * (client_connect_fd) may be non-blocking: recv + poll. */
	r = a->rcvtimeo
		? frame_read_timed(a->fd, &a->rx, reply, MTLS_FRAME_MAX, a->timeout_ms)
		: frame_read(a->fd, &a->rx, reply, MTLS_FRAME_MAX, a->timeout_ms, a->timeout_ms);
	if (r != 0 || (r = wbuf_get_u8(reply, &type)) != 0)
		return r;
	if (type == expect)
		return 0;
	if (type != MSG_ERROR)
		return MTLS_ERR_BAD_REQUEST; /* the agent broke the protocol */
	if ((r = msg_error_get(reply, &err)) != 0)
		return r;
	set_last_message(err.message);
	*was_error_reply = 1;
	if (retries != NULL)
		*retries = err.retries;
	r = err.code;
	msg_error_clear(&err);
	return r;
}

/*
 * After a failed write: the ERROR frame the agent sent before it closed,
 * as its code (its text in last_message); `failed` if there is none.  The
 * peer is gone, so the read ends at once with the frame or at EOF.
 */
static int
pending_error(struct mtls_agent *a, struct wbuf *b, int failed)
{
	int r, was_error_reply = 0;

	wbuf_reset(b);
	r = read_reply(a, MSG_HELLO | MSG_REPLY, b, NULL, &was_error_reply);
	return was_error_reply ? r : failed;
}

/* Sends HELLO on a fresh connection and checks the version we get. */
static int
hello(struct mtls_agent *a)
{
	struct msg_hello_req req = { 0 };
	struct msg_hello_resp resp = { 0 };
	struct wbuf *b = NULL;
	int r, was_error_reply = 0;

	req.min_version = MTLS_PROTO_MIN;
	req.max_version = MTLS_PROTO_MAX;
	req.client = program_invocation_short_name;
	if (req.client == NULL || *req.client == '\0')
		req.client = (char *)"libmtls-agent";
	if ((b = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_hello_req_put(b, &req)) != 0)
		goto out;
	if ((r = frame_write(a->fd, b, a->timeout_ms)) != 0) {
		/*
		 * An agent that refuses us (PEER_DENIED, BUSY) writes its
		 * ERROR at once and closes, so our HELLO may hit a closed
		 * socket: the reason is still waiting to be read.
		 */
		if (r == MTLS_ERR_CONNECTION_CLOSED || r == MTLS_ERR_IO)
			r = pending_error(a, b, r);
		goto out;
	}
	if ((r = read_reply(a, MSG_HELLO | MSG_REPLY, b, NULL, &was_error_reply)) != 0 ||
	    (r = msg_hello_resp_get(b, &resp)) != 0)
		goto out;
	if (resp.version < MTLS_PROTO_MIN || resp.version > MTLS_PROTO_MAX)
		r = MTLS_ERR_UNSUPPORTED_VERSION;
out:
	msg_hello_resp_clear(&resp);
	wbuf_free(b);
	return r;
}

/* "cannot connect to the agent" says where and why, in last_message. */
static void
connect_failed(const char *path, int e)
{
	char text[MTLS_TEXT_MAX + 1];

	snprintf(text, sizeof(text), "%s: %s", path, strerror(e));
	set_last_message(text);
}

/* Opens a connection to a->path and performs the handshake. */
static int
open_connection(struct mtls_agent *a)
{
	struct sockaddr_un sun;
	struct pollfd pfd;
	socklen_t elen;
	int fd, r, e;

	drop_connection(a);
	/* A handle from client_connect_fd() has no path: never by path. */
	if (a->path == NULL)
		return MTLS_ERR_CONNECTION_CLOSED;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	/* resolve_path() made sure it fits. */
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", a->path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		connect_failed(a->path, errno);
		return MTLS_ERR_CONNECT;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		/* An interrupted connect goes on in the background. */
		if ((e = errno) != EINTR && e != EINPROGRESS)
			goto fail;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		while ((r = poll(&pfd, 1, a->timeout_ms)) == -1 && errno == EINTR)
			;
		elen = sizeof(e);
		if (r != 1)
			e = r == 0 ? ETIMEDOUT : errno;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) == -1)
			e = errno;
		if (e != 0)
			goto fail;
	}
	if (a->timeout_ms > 0 && frame_set_rcvtimeo(fd, a->timeout_ms) != 0) {
		e = errno;
		goto fail;
	}
	a->rcvtimeo = a->timeout_ms > 0;
	a->fd = fd;
	a->spin_cap = spin_max_spinners(spin_cpus, spin_peer_has_own_cpu(fd));
	a->pid = getpid();
	a->fork_gen = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	if ((r = hello(a)) != 0)
		drop_connection(a);
	return r;
fail:
	close(fd);
	connect_failed(a->path, e);
	return MTLS_ERR_CONNECT;
}

/*
 * One request/reply exchange, reconnecting once if the agent went away.
 * A request that could not be sent was never seen by the agent and is
 * always retried.  When the reply never comes, only requests listed as
 * `retry_after_send` are retried: LOGIN is not, since the agent may have
 * counted a wrong PIN already.  Any failure other than an error reply
 * leaves the stream out of step, so the connection is dropped and the next
 * call starts afresh.
 */
static int
exchange(struct mtls_agent *a, const struct wbuf *req, uint8_t expect, int retry_after_send,
	 struct wbuf *reply, int *retries)
{
	int attempt, r = MTLS_ERR_INTERNAL, was_error_reply = 0;
	int is_sign = expect == (MSG_SIGN | MSG_REPLY);
	unsigned long long t0 = 0, us;
	unsigned int spin_us;

	check_fork(a);
	for (attempt = 0; attempt < 2; attempt++) {
		if (a->fd == -1 && (r = open_connection(a)) != 0)
			return r;
		if (is_sign)
			t0 = spin_now_us();
		r = frame_write(a->fd, req, a->timeout_ms);
		if (r == MTLS_ERR_CONNECTION_CLOSED || r == MTLS_ERR_IO) {
			drop_connection(a);
			continue;
		}
		if (r != 0)
			break;
		if (is_sign && (spin_us = sign_spin_budget(a)) > 0) {
			if (__atomic_add_fetch(&spinners, 1, __ATOMIC_RELAXED) <= a->spin_cap)
				(void)spin_wait(&a->spin, a->fd, &a->rx, spin_us);
			(void)__atomic_sub_fetch(&spinners, 1, __ATOMIC_RELAXED);
		}
		r = read_reply(a, expect, reply, retries, &was_error_reply);
		if (is_sign && r == 0) {
			us = spin_now_us() - t0;
			if (us > UINT_MAX / 4)
				us = UINT_MAX / 4;
			a->sign_us = a->sign_us == 0 ? (unsigned int)us
						     : (unsigned int)((3ULL * a->sign_us + us) / 4);
		}
		if (r == MTLS_ERR_CONNECTION_CLOSED && retry_after_send) {
			drop_connection(a);
			continue;
		}
		break;
	}
	/* Error replies come in a complete frame; anything else desyncs. */
	if (r != 0 && !was_error_reply)
		drop_connection(a);
	return r;
}

int
mtls_agent_connect(const char *path, mtls_agent **out)
{
	struct mtls_agent *a = NULL;
	int r;

	set_last_message(NULL);
	if (out == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	*out = NULL;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return MTLS_ERR_ALLOC;
	a->fd = -1;
	(void)pthread_once(&fork_once, fork_watch);
	a->timeout_ms = timeout_from_env();
	a->spin_max_us = busy_poll_from_env();
	if ((r = pthread_mutex_init(&a->lock, NULL)) != 0) {
		free(a);
		return MTLS_ERR_INTERNAL;
	}
	if ((r = resolve_path(path, &a->path)) != 0 || (r = open_connection(a)) != 0)
		goto out;
	*out = a;
	a = NULL;
out:
	mtls_agent_free(a);
	return r;
}

int
client_connect_fd(int fd, mtls_agent **out)
{
	struct mtls_agent *a = NULL;
	int r;

	set_last_message(NULL);
	if (out != NULL)
		*out = NULL;
	if (out == NULL || fd < 0) {
		if (fd >= 0)
			close(fd);
		return MTLS_ERR_INVALID_ARGUMENT;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		close(fd);
		return MTLS_ERR_ALLOC;
	}
	(void)pthread_once(&fork_once, fork_watch);
	a->timeout_ms = timeout_from_env();
	a->spin_max_us = busy_poll_from_env();
	if (pthread_mutex_init(&a->lock, NULL) != 0) {
		close(fd);
		free(a);
		return MTLS_ERR_INTERNAL;
	}
	/* a->path stays NULL: open_connection() refuses to reconnect. */
	a->fd = fd;
	a->pid = getpid();
	a->fork_gen = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	if ((r = hello(a)) != 0)
		goto out;
	*out = a;
	a = NULL;
out:
	mtls_agent_free(a);
	return r;
}

void
mtls_agent_free(mtls_agent *a)
{
	if (a == NULL)
		return;
	drop_connection(a);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
}

int
mtls_agent_list(mtls_agent *a, struct mtls_agent_identity **ids, size_t *n)
{
	struct msg_list_resp resp = { 0 };
	struct wbuf *req = NULL, *reply = NULL;
	int r;

	set_last_message(NULL);
	if (ids != NULL)
		*ids = NULL;
	if (n != NULL)
		*n = 0;
	if (a == NULL || ids == NULL || n == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((req = wbuf_new()) == NULL || (reply = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_list_req_put(req)) != 0)
		goto out;
	pthread_mutex_lock(&a->lock);
	r = exchange(a, req, MSG_LIST | MSG_REPLY, 1, reply, NULL);
	if (r == 0 && (r = msg_list_resp_get(reply, &resp)) != 0)
		drop_connection(a);
	pthread_mutex_unlock(&a->lock);
	if (r != 0)
		goto out;
	*ids = resp.ids;
	*n = resp.n;
	resp.ids = NULL;
	resp.n = 0;
out:
	msg_list_resp_clear(&resp);
	wbuf_free(req);
	wbuf_free(reply);
	return r;
}

int
mtls_agent_sign(mtls_agent *a, const char *identity, uint16_t scheme, int purpose,
		const unsigned char *content, size_t content_len, unsigned char **sig,
		size_t *sig_len)
{
	struct msg_sign_req req = { 0 };
	struct msg_sign_resp resp = { 0 };
	struct wbuf *b = NULL, *reply = NULL;
	int r;

	set_last_message(NULL);
	if (sig != NULL)
		*sig = NULL;
	if (sig_len != NULL)
		*sig_len = 0;
	if (a == NULL || identity == NULL || sig == NULL || sig_len == NULL ||
	    (content == NULL && content_len != 0) || purpose < 0 || purpose > UINT8_MAX)
		return MTLS_ERR_INVALID_ARGUMENT;
	if (content_len > MTLS_CONTENT_MAX)
		return MTLS_ERR_FRAME_TOO_LARGE;
	req.identity = (char *)identity;
	req.scheme = scheme;
	req.purpose = (uint8_t)purpose;
	req.content = (unsigned char *)content;
	req.content_len = content_len;
	if ((b = wbuf_new()) == NULL || (reply = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_sign_req_put(b, &req)) != 0)
		goto out;
	pthread_mutex_lock(&a->lock);
	r = exchange(a, b, MSG_SIGN | MSG_REPLY, 1, reply, NULL);
	if (r == 0 && (r = msg_sign_resp_get(reply, &resp)) != 0)
		drop_connection(a);
	pthread_mutex_unlock(&a->lock);
	if (r != 0)
		goto out;
	*sig = resp.sig;
	*sig_len = resp.sig_len;
	resp.sig = NULL;
out:
	msg_sign_resp_clear(&resp);
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}

/*
 * Sends a request that carries a PIN or a passphrase and gets an empty
 * reply.  Never resent once sent: a wrong PIN must not count twice, a
 * failed unlock counts towards the back-off.  The request buffer wipes
 * itself when freed.
 */
static int
secret_exchange(mtls_agent *a, const struct wbuf *b, uint8_t type, int *retries_left)
{
	struct wbuf *reply;
	int r, retries = -1;

	if ((reply = wbuf_new()) == NULL)
		return MTLS_ERR_ALLOC;
	pthread_mutex_lock(&a->lock);
	r = exchange(a, b, type | MSG_REPLY, 0, reply, &retries);
	if (r == 0 && (r = msg_empty_get(reply)) != 0)
		drop_connection(a);
	pthread_mutex_unlock(&a->lock);
	if ((r == MTLS_ERR_PIN_INCORRECT || r == MTLS_ERR_PIN_LOCKED) && retries_left != NULL)
		*retries_left = retries;
	wbuf_free(reply);
	return r;
}

static int
login_request(mtls_agent *a, const char *identity, const char *pin, uint8_t flags,
	      int *retries_left)
{
	struct msg_login_req req = { 0 };
	struct wbuf *b;
	size_t pin_len;
	int r;

	set_last_message(NULL);
	if (retries_left != NULL)
		*retries_left = -1;
	if (a == NULL || pin == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	pin_len = strnlen(pin, MTLS_PIN_MAX + 1);
	if (pin_len == 0 || pin_len > MTLS_PIN_MAX)
		return MTLS_ERR_PIN_INVALID;
	/* The PIN is copied only into wire buffers, which wipe when freed. */
	req.identity = (char *)(identity == NULL ? "" : identity);
	req.pin = (char *)pin;
	req.flags = flags;
	if ((b = wbuf_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if ((r = msg_login_req_put(b, &req)) == 0)
		r = secret_exchange(a, b, MSG_LOGIN, retries_left);
	wbuf_free(b);
	return r;
}

int
mtls_agent_login(mtls_agent *a, const char *identity, const char *pin, int *retries_left)
{
	return login_request(a, identity, pin, 0, retries_left);
}

int
mtls_agent_login_prompt(mtls_agent *a, const char *identity, int *retries_left)
{
	struct msg_login_prompt_req req = { (char *)(identity == NULL ? "" : identity) };
	struct wbuf *b;
	int r;

	set_last_message(NULL);
	if (retries_left != NULL)
		*retries_left = -1;
	if (a == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((b = wbuf_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if ((r = msg_login_prompt_req_put(b, &req)) == 0)
		r = secret_exchange(a, b, MSG_LOGIN_PROMPT, retries_left);
	wbuf_free(b);
	return r;
}

int
client_login_verify(mtls_agent *a, const char *identity, const char *pin, int *retries_left)
{
	return login_request(a, identity, pin, LOGIN_VERIFY, retries_left);
}

static int
set_pin(mtls_agent *a, const char *identity, uint8_t mode, const char *old_pin, const char *new_pin,
	int *retries_left)
{
	struct msg_set_pin_req req = { 0 };
	struct wbuf *b;
	int r;

	set_last_message(NULL);
	if (retries_left != NULL)
		*retries_left = -1;
	if (a == NULL || old_pin == NULL || new_pin == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	/* The PINs are copied only into wire buffers, which wipe when freed. */
	req.identity = (char *)(identity == NULL ? "" : identity);
	req.mode = mode;
	req.old_pin = (char *)old_pin;
	req.new_pin = (char *)new_pin;
	if ((b = wbuf_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if ((r = msg_set_pin_req_put(b, &req)) == 0)
		r = secret_exchange(a, b, MSG_SET_PIN, retries_left);
	wbuf_free(b);
	return r;
}

static int
lock_request(mtls_agent *a, uint8_t type, const char *passphrase)
{
	struct msg_lock_req req = { (char *)passphrase };
	struct wbuf *b;
	int r;

	set_last_message(NULL);
	if (a == NULL || passphrase == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((b = wbuf_new()) == NULL)
		return MTLS_ERR_ALLOC;
	if ((r = msg_lock_req_put(b, type, &req)) == 0)
		r = secret_exchange(a, b, type, NULL);
	wbuf_free(b);
	return r;
}

int
mtls_agent_lock(mtls_agent *a, const char *passphrase)
{
	return lock_request(a, MSG_LOCK, passphrase);
}

int
mtls_agent_unlock(mtls_agent *a, const char *passphrase)
{
	return lock_request(a, MSG_UNLOCK, passphrase);
}

int
mtls_agent_change_pin(mtls_agent *a, const char *identity, const char *old_pin, const char *new_pin,
		      int *retries_left)
{
	return set_pin(a, identity, SET_PIN_CHANGE, old_pin, new_pin, retries_left);
}

int
mtls_agent_unblock_pin(mtls_agent *a, const char *identity, const char *puk, const char *new_pin,
		       int *retries_left)
{
	return set_pin(a, identity, SET_PIN_UNBLOCK, puk, new_pin, retries_left);
}

int
mtls_agent_logout(mtls_agent *a, const char *identity)
{
	struct msg_logout_req req = { 0 };
	struct wbuf *b = NULL, *reply = NULL;
	int r;

	set_last_message(NULL);
	if (a == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	req.identity = (char *)(identity == NULL ? "" : identity);
	if ((b = wbuf_new()) == NULL || (reply = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_logout_req_put(b, &req)) != 0)
		goto out;
	pthread_mutex_lock(&a->lock);
	r = exchange(a, b, MSG_LOGOUT | MSG_REPLY, 1, reply, NULL);
	if (r == 0 && (r = msg_empty_get(reply)) != 0)
		drop_connection(a);
	pthread_mutex_unlock(&a->lock);
out:
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}

int
mtls_agent_get_status(mtls_agent *a, struct mtls_agent_status *st)
{
	struct wbuf *b = NULL, *reply = NULL;
	int r;

	set_last_message(NULL);
	if (st != NULL)
		memset(st, 0, sizeof(*st));
	if (a == NULL || st == NULL)
		return MTLS_ERR_INVALID_ARGUMENT;
	if ((b = wbuf_new()) == NULL || (reply = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_status_req_put(b)) != 0)
		goto out;
	pthread_mutex_lock(&a->lock);
	r = exchange(a, b, MSG_STATUS | MSG_REPLY, 1, reply, NULL);
	if (r == 0 && (r = msg_status_resp_get(reply, st)) != 0)
		drop_connection(a);
	pthread_mutex_unlock(&a->lock);
out:
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}

/* ---- enrollment --------------------------------------------------------- */

int
mtls_agent_key_kind_from_name(const char *name)
{
	static const struct {
		const char *name;
		int kind;
	} kinds[] = {
		{ "ec:p256", MTLS_AGENT_KEYGEN_EC_P256 },
		{ "ec:p384", MTLS_AGENT_KEYGEN_EC_P384 },
		{ "rsa:2048", MTLS_AGENT_KEYGEN_RSA_2048 },
		{ "rsa:3072", MTLS_AGENT_KEYGEN_RSA_3072 },
		{ "rsa:4096", MTLS_AGENT_KEYGEN_RSA_4096 },
	};
	size_t i;

	for (i = 0; name != NULL && i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kinds[i].name, name) == 0)
			return kinds[i].kind;
	return 0;
}

int
mtls_agent_keygen(mtls_agent *a, const char *token_uri, const char *label, int kind, char **name,
		  unsigned char **spki, size_t *spki_len)
{
	struct msg_keygen_req req = { 0 };
	struct msg_keygen_resp resp = { 0 };
	struct wbuf *b = NULL, *reply = NULL;
	int r;

	set_last_message(NULL);
	if (name != NULL)
		*name = NULL;
	if (spki != NULL)
		*spki = NULL;
	if (spki_len != NULL)
		*spki_len = 0;
	if (a == NULL || label == NULL || name == NULL || spki == NULL || spki_len == NULL ||
	    kind <= 0 || kind > 255)
		return MTLS_ERR_INVALID_ARGUMENT;
	req.token = (char *)(token_uri == NULL ? "" : token_uri);
	req.label = (char *)label;
	req.kind = (uint8_t)kind;
	if ((b = wbuf_new()) == NULL || (reply = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_keygen_req_put(b, &req)) != 0)
		goto out;
	/* Never sent twice: a second try would make a second key. */
	pthread_mutex_lock(&a->lock);
	r = exchange(a, b, MSG_KEYGEN | MSG_REPLY, 0, reply, NULL);
	if (r == 0 && (r = msg_keygen_resp_get(reply, &resp)) != 0)
		drop_connection(a);
	pthread_mutex_unlock(&a->lock);
	if (r != 0)
		goto out;
	*name = resp.name;
	*spki = resp.spki;
	*spki_len = resp.spki_len;
	resp.name = NULL;
	resp.spki = NULL;
out:
	msg_keygen_resp_clear(&resp);
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}

int
mtls_agent_import_cert(mtls_agent *a, const unsigned char *der, size_t len, unsigned int flags,
		       char **name)
{
	struct msg_import_req req = { 0 };
	struct msg_import_resp resp = { 0 };
	struct wbuf *b = NULL, *reply = NULL;
	int r;

	set_last_message(NULL);
	if (name != NULL)
		*name = NULL;
	if (a == NULL || der == NULL || name == NULL || (flags & ~IMPORT_FLAGS_KNOWN) != 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	req.cert = (unsigned char *)der;
	req.cert_len = len;
	req.flags = (uint8_t)flags;
	if ((b = wbuf_new()) == NULL || (reply = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_import_req_put(b, &req)) != 0)
		goto out;
	pthread_mutex_lock(&a->lock);
	r = exchange(a, b, MSG_IMPORT_CERT | MSG_REPLY, 0, reply, NULL);
	if (r == 0 && (r = msg_import_resp_get(reply, &resp)) != 0)
		drop_connection(a);
	pthread_mutex_unlock(&a->lock);
	if (r != 0)
		goto out;
	*name = resp.name;
	resp.name = NULL;
out:
	msg_import_resp_clear(&resp);
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}

int
mtls_agent_delete_key(mtls_agent *a, const char *name, unsigned int flags)
{
	struct msg_delete_key_req req = { 0 };
	struct wbuf *b = NULL, *reply = NULL;
	int r;

	set_last_message(NULL);
	if (a == NULL || name == NULL || (flags & ~DELETE_FLAGS_KNOWN) != 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	req.identity = (char *)name;
	req.flags = (uint8_t)flags;
	if ((b = wbuf_new()) == NULL || (reply = wbuf_new()) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	if ((r = msg_delete_key_req_put(b, &req)) != 0)
		goto out;
	pthread_mutex_lock(&a->lock);
	r = exchange(a, b, MSG_DELETE_KEY | MSG_REPLY, 0, reply, NULL);
	if (r == 0 && (r = msg_empty_get(reply)) != 0)
		drop_connection(a);
	pthread_mutex_unlock(&a->lock);
out:
	wbuf_free(b);
	wbuf_free(reply);
	return r;
}
