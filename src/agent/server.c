/*
 * server.c - connections, peer checks, dispatch and audit.  See server.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "log.h"
#include "mtls-agent.h"
#include "policy.h"
#include "proto.h"
#include "secmem.h"
#include "server.h"

#define CONN_STACK_SIZE (256 * 1024)

static char agent_version[] = PACKAGE_NAME " " PACKAGE_VERSION;

struct retired_cfg;

struct conn {
	struct server *srv;
	int fd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char exe[256];
	int hello_done;
	struct conn *prev, *next;
	struct frame_rx rx;
};

struct server {
	struct config *cfg;
	struct retired_cfg *retired; /* configs replaced by SIGHUP, freed at exit */
	char *config_path;
	const struct config_overrides *ov;
	struct tokenset *ts;
	int listen_fd;
	char *sock_path;
	int keep_socket; /* socket activation: the service manager's */
	uid_t uid;
	time_t started;
	pthread_mutex_t mu;
	pthread_cond_t idle;
	struct conn *conns;
	unsigned int nconn;
	int stopping;
	int watcher_done; /* the token watcher has left its loop */
	/*
	 * Busy-polling for a client's next request is worth it only while a
	 * CPU is free for the client: at most ncpu/2 connections at a time
	 * may be inside a request or busy-polling (0 on one CPU).
	 */
	int spin_max;
	int active; /* connections inside a request or busy-polling */
	/* lock/unlock: only a salted slow hash of the passphrase is kept */
	pthread_mutex_t lock_mu;
	int locked;
	unsigned char lock_salt[16];
	unsigned char lock_hash[32];
	unsigned int lock_failures;
	int unlock_busy;	       /* a slow hash is running */
	struct timespec lock_next_try; /* CLOCK_MONOTONIC */
};

#define LOCK_KDF_ITERATIONS  200000
#define LOCK_BACKOFF_BASE_MS 500
#define LOCK_BACKOFF_MAX_MS  30000

/* Configs retired by reload are chained through this list node. */
struct retired_cfg {
	struct config *cfg;
	struct retired_cfg *next;
};

void
server_keep_socket(struct server *s)
{
	s->keep_socket = 1;
}

char *
server_default_socket(void)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	char *p;

	if (rt == NULL || rt[0] != '/')
		return NULL;
	if (asprintf(&p, "%s/mtls-agent/agent.sock", rt) < 0)
		return NULL;
	return p;
}

int
server_listen(const char *path, int *fdp, char *err, size_t err_len)
{
	struct sockaddr_un sun;
	struct stat st;
	char dir[PATH_MAX], *slash;
	mode_t old;
	int fd = -1, probe, r = MTLS_ERR_CONFIG;

	*fdp = -1;
	if (path[0] != '/' || strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, err_len,
			 "socket path %s: must be absolute and shorter than %zu bytes", path,
			 sizeof(sun.sun_path));
		return MTLS_ERR_CONFIG;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	*(slash == dir ? slash + 1 : slash) = '\0';
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, err_len, "cannot create socket directory %s: %s", dir,
			 strerror(errno));
		return MTLS_ERR_CONFIG;
	}
	if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, err_len, "socket directory %s is not a directory", dir);
		return MTLS_ERR_CONFIG;
	}
	/* Others must not reach the socket, nor swap it under us. */
	if (st.st_uid != geteuid()) {
		snprintf(err, err_len, "socket directory %s is owned by uid %u, not by us (uid %u)",
			 dir, (unsigned)st.st_uid, (unsigned)geteuid());
		return MTLS_ERR_CONFIG;
	}
	if ((st.st_mode & 077) != 0) {
		snprintf(err, err_len,
			 "socket directory %s has mode %04o: group and others must have no access "
			 "(chmod 700)",
			 dir, (unsigned)(st.st_mode & 07777));
		return MTLS_ERR_CONFIG;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, err_len, "%s exists and is not a socket", path);
			return MTLS_ERR_CONFIG;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			close(probe);
			snprintf(err, err_len, "an agent is already listening on %s", path);
			return MTLS_ERR_CONFIG;
		}
		if (probe >= 0)
			close(probe);
		(void)unlink(path);
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		snprintf(err, err_len, "socket: %s", strerror(errno));
		return MTLS_ERR_IO;
	}
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		umask(old);
		snprintf(err, err_len, "bind %s: %s", path, strerror(errno));
		r = MTLS_ERR_IO;
		goto fail;
	}
	umask(old);
	if (chmod(path, 0600) != 0 || listen(fd, 128) != 0) {
		snprintf(err, err_len, "listen %s: %s", path, strerror(errno));
		(void)unlink(path);
		r = MTLS_ERR_IO;
		goto fail;
	}
	*fdp = fd;
	return 0;
fail:
	close(fd);
	return r;
}

int
server_new(struct config *cfg, const char *config_path, const struct config_overrides *ov,
	   struct tokenset *ts, int listen_fd, const char *sock_path, struct server **out)
{
	struct server *s;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return MTLS_ERR_ALLOC;
	if ((s->sock_path = strdup(sock_path)) == NULL ||
	    (config_path != NULL && (s->config_path = strdup(config_path)) == NULL)) {
		free(s->sock_path);
		free(s);
		return MTLS_ERR_ALLOC;
	}
	s->cfg = cfg;
	s->ov = ov;
	s->ts = ts;
	s->listen_fd = listen_fd;
	s->uid = geteuid();
	s->started = time(NULL);
	s->spin_max = (int)(sysconf(_SC_NPROCESSORS_ONLN) / 2);
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->lock_mu, NULL);
	pthread_cond_init(&s->idle, NULL);
	*out = s;
	return 0;
}

void
server_block_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static long
usec_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000000L + (t1.tv_nsec - t0->tv_nsec) / 1000;
}

/*
 * One audit line: "audit: WHAT: peer pid=P uid=U exe=E" and then `fmt`,
 * which brings its own separator (" identity=..." or ": reason").
 */
static void audit_peer(const struct conn *c, enum log_level level, const char *what,
		       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
audit_peer(const struct conn *c, enum log_level level, const char *what, const char *fmt, ...)
{
	char rest[1024];
	va_list ap;

	if (level > log_get_level())
		return;
	va_start(ap, fmt);
	vsnprintf(rest, sizeof(rest), fmt, ap);
	va_end(ap);
	log_msg(level, __func__, "audit: %s: peer pid=%ld uid=%u exe=%s%s", what, (long)c->pid,
		(unsigned)c->uid, c->exe, rest);
}

/* One line per signature and per refusal; never a PIN. */
static void
audit(const struct conn *c, const char *op, const char *identity, uint16_t scheme, int purpose,
      int r, const char *why, long usec)
{
	const char *sn = mtls_agent_scheme_name(scheme);
	const char *pn = mtls_agent_purpose_name(purpose);

	char what[32];

	snprintf(what, sizeof(what), "%s %s", op, r == 0 ? "ok" : "refused");
	if (r == 0)
		audit_peer(c, LOG_LEVEL_INFO, what,
			   " identity=%s scheme=%s purpose=%s latency=%ldus", identity,
			   sn ? sn : "?", pn ? pn : "?", usec);
	else
		audit_peer(c, LOG_LEVEL_WARN, what,
			   " identity=%s scheme=%s purpose=%s result=%s%s%s latency=%ldus",
			   identity, sn ? sn : "?", pn ? pn : "?", mtls_agent_strerror(r),
			   why[0] ? ": " : "", why, usec);
}

static int
put_error(struct wbuf *out, int code, int retries, const char *message)
{
	struct msg_error e = { .code = code, .retries = retries, .message = (char *)message };

	wbuf_reset(out);
	if (code >= 0 || code < MTLS_ERR_LAST_)
		e.code = MTLS_ERR_INTERNAL;
	return msg_error_put(out, &e);
}

static int
handle_hello(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_hello_req req;
	struct msg_hello_resp resp = { .agent = agent_version };
	int r;

	if ((r = msg_hello_req_get(in, &req)) != 0)
		return put_error(out, r, -1, "malformed HELLO");
	if (req.max_version < MTLS_PROTO_MIN || req.min_version > MTLS_PROTO_MAX) {
		char msg[128];

		snprintf(msg, sizeof(msg), "agent speaks versions %d..%d, client %u..%u",
			 MTLS_PROTO_MIN, MTLS_PROTO_MAX, req.min_version, req.max_version);
		msg_hello_req_clear(&req);
		return put_error(out, MTLS_ERR_UNSUPPORTED_VERSION, -1, msg);
	}
	resp.version = req.max_version < MTLS_PROTO_MAX ? req.max_version : MTLS_PROTO_MAX;
	debug("hello from pid %ld (%s), version %u", (long)c->pid, req.client, resp.version);
	msg_hello_req_clear(&req);
	c->hello_done = 1;
	return msg_hello_resp_put(out, &resp);
}

static int
handle_list(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_list_resp resp;
	char why[256] = "";
	int r;

	if ((r = msg_list_req_get(in)) != 0)
		return put_error(out, r, -1, "malformed LIST");
	if ((r = token_list(c->srv->ts, &resp, why, sizeof(why))) != 0)
		return put_error(out, r, -1, why);
	if ((r = msg_list_resp_put(out, &resp)) != 0) {
		warn("LIST reply does not fit a frame: %s", mtls_agent_strerror(r));
		r = put_error(out, r, -1, "the identity list does not fit in one frame");
	}
	msg_list_resp_clear(&resp);
	return r;
}

static int
handle_sign(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_sign_req req;
	struct msg_sign_resp resp = { 0 };
	struct timespec t0;
	char why[256] = "";
	int r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if ((r = msg_sign_req_get(in, &req)) != 0) {
		audit(c, "sign", "?", 0, 0, r, "malformed request", usec_since(&t0));
		return put_error(out, r, -1, "malformed SIGN");
	}
	{
		struct sign_peer peer = { c->pid, c->uid, c->gid, c->exe };

		r = token_sign(c->srv->ts, &peer, req.identity, req.scheme, req.purpose,
			       req.content, req.content_len, &resp.sig, &resp.sig_len, why,
			       sizeof(why));
	}
	audit(c, "sign", req.identity, req.scheme, req.purpose, r, why, usec_since(&t0));
	if (r == 0)
		r = msg_sign_resp_put(out, &resp);
	else
		r = put_error(out, r, -1, why);
	msg_sign_req_clear(&req);
	msg_sign_resp_clear(&resp);
	return r;
}

static int
handle_login(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_login_req req;
	char why[256] = "";
	int r, retries = -1;

	if ((r = msg_login_req_get(in, &req)) != 0) {
		audit_peer(c, LOG_LEVEL_WARN, "login refused", ": %s", mtls_agent_strerror(r));
		return put_error(out, r, -1, "malformed LOGIN");
	}
	r = token_login(c->srv->ts, req.identity, req.pin, &retries, why, sizeof(why));
	if (r == 0)
		audit_peer(c, LOG_LEVEL_INFO, "login ok", " identity=%s",
			   req.identity[0] ? req.identity : "(token)");
	else
		audit_peer(c, LOG_LEVEL_WARN, "login refused", " identity=%s result=%s: %s",
			   req.identity[0] ? req.identity : "(token)", mtls_agent_strerror(r), why);
	msg_login_req_clear(&req);
	return r == 0 ? msg_empty_resp_put(out, MSG_LOGIN) : put_error(out, r, retries, why);
}

static int
handle_set_pin(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_set_pin_req req;
	char why[256] = "";
	int r, retries = -1;

	if ((r = msg_set_pin_req_get(in, &req)) != 0) {
		audit_peer(c, LOG_LEVEL_WARN, "set-pin refused", ": %s", mtls_agent_strerror(r));
		return put_error(out, r, -1, "malformed SET_PIN");
	}
	r = token_set_pin(c->srv->ts, req.identity, req.mode, req.old_pin, req.new_pin, &retries,
			  why, sizeof(why));
	if (r == 0)
		audit_peer(c, LOG_LEVEL_INFO,
			   req.mode == SET_PIN_CHANGE ? "change-pin ok" : "unblock-pin ok",
			   " identity=%s", req.identity[0] ? req.identity : "(token)");
	else
		audit_peer(c, LOG_LEVEL_WARN,
			   req.mode == SET_PIN_CHANGE ? "change-pin refused"
						      : "unblock-pin refused",
			   " identity=%s result=%s: %s", req.identity[0] ? req.identity : "(token)",
			   mtls_agent_strerror(r), why);
	msg_set_pin_req_clear(&req);
	return r == 0 ? msg_empty_resp_put(out, MSG_SET_PIN) : put_error(out, r, retries, why);
}

static int
handle_logout(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_logout_req req;
	char why[256] = "";
	int r;

	if ((r = msg_logout_req_get(in, &req)) != 0)
		return put_error(out, r, -1, "malformed LOGOUT");
	r = token_logout(c->srv->ts, req.identity, why, sizeof(why));
	audit_peer(c, r == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_WARN, "logout",
		   " identity=%s result=%s%s%s", req.identity[0] ? req.identity : "(all)",
		   mtls_agent_strerror(r), why[0] ? ": " : "", why);
	msg_logout_req_clear(&req);
	return r == 0 ? msg_empty_resp_put(out, MSG_LOGOUT) : put_error(out, r, -1, why);
}

static int
handle_status(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct mtls_agent_status st = { .version = agent_version };
	char why[256] = "";
	int r;

	if ((r = msg_empty_get(in)) != 0)
		return put_error(out, r, -1, "malformed STATUS");
	st.pid = (uint32_t)getpid();
	st.uptime = (uint32_t)(time(NULL) - c->srv->started);
	pthread_mutex_lock(&c->srv->mu);
	st.connections = c->srv->nconn;
	pthread_mutex_unlock(&c->srv->mu);
	if ((r = token_status(c->srv->ts, &st, why, sizeof(why))) != 0)
		return put_error(out, r, -1, why);
	return msg_status_resp_put(out, &st);
}

static int
is_locked(struct server *s)
{
	int l;

	pthread_mutex_lock(&s->lock_mu);
	l = s->locked;
	pthread_mutex_unlock(&s->lock_mu);
	return l;
}

static int
kdf(const char *pass, const unsigned char *salt, unsigned char *out)
{
	return PKCS5_PBKDF2_HMAC(pass, (int)strlen(pass), salt, 16, LOCK_KDF_ITERATIONS,
				 EVP_sha256(), 32, out) == 1
		   ? 0
		   : MTLS_ERR_INTERNAL;
}

static int
handle_lock(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct server *s = c->srv;
	struct msg_lock_req req;
	unsigned char salt[16], hash[32];
	int r;

	if ((r = msg_lock_req_get(in, &req)) != 0)
		return put_error(out, r, -1, "malformed LOCK");
	if (RAND_bytes(salt, sizeof(salt)) != 1 || kdf(req.passphrase, salt, hash) != 0) {
		msg_lock_req_clear(&req);
		return put_error(out, MTLS_ERR_INTERNAL, -1, "cannot hash the passphrase");
	}
	msg_lock_req_clear(&req);
	pthread_mutex_lock(&s->lock_mu);
	if (s->locked) {
		pthread_mutex_unlock(&s->lock_mu);
		mtls_wipe(hash, sizeof(hash));
		return put_error(out, MTLS_ERR_AGENT_LOCKED, -1, "already locked");
	}
	memcpy(s->lock_salt, salt, sizeof(salt));
	memcpy(s->lock_hash, hash, sizeof(hash));
	s->locked = 1;
	s->lock_failures = 0;
	memset(&s->lock_next_try, 0, sizeof(s->lock_next_try));
	pthread_mutex_unlock(&s->lock_mu);
	mtls_wipe(hash, sizeof(hash));
	audit_peer(c, LOG_LEVEL_INFO, "lock", ": agent locked");
	return msg_empty_resp_put(out, MSG_LOCK);
}

static int
handle_unlock(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct server *s = c->srv;
	struct msg_lock_req req;
	unsigned char salt[16], hash[32];
	struct timespec now;
	char msg[128];
	long wait_ms;
	int r, ok;

	if ((r = msg_lock_req_get(in, &req)) != 0)
		return put_error(out, r, -1, "malformed UNLOCK");
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&s->lock_mu);
	if (!s->locked) {
		pthread_mutex_unlock(&s->lock_mu);
		msg_lock_req_clear(&req);
		return put_error(out, MTLS_ERR_INVALID_ARGUMENT, -1, "the agent is not locked");
	}
	wait_ms = (s->lock_next_try.tv_sec - now.tv_sec) * 1000 +
		  (s->lock_next_try.tv_nsec - now.tv_nsec) / 1000000;
	if (wait_ms > 0) {
		/* Back-off: a guesser gets no answer before its time. */
		pthread_mutex_unlock(&s->lock_mu);
		msg_lock_req_clear(&req);
		snprintf(msg, sizeof(msg), "too many failed unlocks: try again in %ld ms", wait_ms);
		audit_peer(c, LOG_LEVEL_WARN, "unlock refused", ": %s", msg);
		return put_error(out, MTLS_ERR_AGENT_LOCKED, -1, msg);
	}
	/* One guess at a time: parallel connections cannot each slip one
	 * into the same back-off window while the slow hash runs. */
	if (s->unlock_busy) {
		pthread_mutex_unlock(&s->lock_mu);
		msg_lock_req_clear(&req);
		return put_error(out, MTLS_ERR_AGENT_LOCKED, -1, "another unlock is in progress");
	}
	s->unlock_busy = 1;
	memcpy(salt, s->lock_salt, sizeof(salt));
	pthread_mutex_unlock(&s->lock_mu);
	/* The slow hash runs without the mutex held. */
	r = kdf(req.passphrase, salt, hash);
	msg_lock_req_clear(&req);
	if (r != 0) {
		pthread_mutex_lock(&s->lock_mu);
		s->unlock_busy = 0;
		pthread_mutex_unlock(&s->lock_mu);
		return put_error(out, r, -1, "cannot hash the passphrase");
	}
	pthread_mutex_lock(&s->lock_mu);
	s->unlock_busy = 0;
	ok = s->locked && CRYPTO_memcmp(hash, s->lock_hash, sizeof(hash)) == 0;
	if (ok) {
		s->locked = 0;
		s->lock_failures = 0;
		memset(&s->lock_next_try, 0, sizeof(s->lock_next_try));
		mtls_wipe(s->lock_hash, sizeof(s->lock_hash));
	} else {
		/* The window opens when the answer goes out. */
		long delay = LOCK_BACKOFF_BASE_MS
			     << (s->lock_failures < 10 ? s->lock_failures : 10);

		if (delay > LOCK_BACKOFF_MAX_MS)
			delay = LOCK_BACKOFF_MAX_MS;
		s->lock_failures++;
		clock_gettime(CLOCK_MONOTONIC, &s->lock_next_try);
		s->lock_next_try.tv_sec += delay / 1000;
		s->lock_next_try.tv_nsec += (delay % 1000) * 1000000;
		if (s->lock_next_try.tv_nsec >= 1000000000) {
			s->lock_next_try.tv_sec++;
			s->lock_next_try.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_unlock(&s->lock_mu);
	mtls_wipe(hash, sizeof(hash));
	if (!ok) {
		audit_peer(c, LOG_LEVEL_WARN, "unlock refused", ": wrong passphrase");
		return put_error(out, MTLS_ERR_AGENT_LOCKED, -1, "wrong passphrase");
	}
	audit_peer(c, LOG_LEVEL_INFO, "unlock", ": agent unlocked");
	return msg_empty_resp_put(out, MSG_UNLOCK);
}

/* Decodes one request body and builds the reply into out. */
static int
dispatch(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	uint8_t type;
	int r;

	if ((r = wbuf_get_u8(in, &type)) != 0)
		return put_error(out, MTLS_ERR_BAD_REQUEST, -1, "empty frame");
	if (!c->hello_done && type != MSG_HELLO)
		return put_error(out, MTLS_ERR_HELLO_REQUIRED, -1, "send HELLO first");
	/* Locked: nothing is listed, signed or logged in until UNLOCK. */
	if (is_locked(c->srv)) {
		struct msg_list_resp none = { NULL, 0 };

		switch (type) {
		case MSG_LIST:
			if ((r = msg_list_req_get(in)) != 0)
				return put_error(out, r, -1, "malformed LIST");
			return msg_list_resp_put(out, &none);
		case MSG_SIGN:
		case MSG_LOGIN:
		case MSG_SET_PIN:
			audit_peer(c, LOG_LEVEL_WARN,
				   type == MSG_SIGN    ? "sign refused"
				   : type == MSG_LOGIN ? "login refused"
						       : "set-pin refused",
				   ": agent locked");
			return put_error(out, MTLS_ERR_AGENT_LOCKED, -1, "the agent is locked");
		}
	}
	switch (type) {
	case MSG_HELLO: return handle_hello(c, in, out);
	case MSG_LIST: return handle_list(c, in, out);
	case MSG_SIGN: return handle_sign(c, in, out);
	case MSG_LOGIN: return handle_login(c, in, out);
	case MSG_LOGOUT: return handle_logout(c, in, out);
	case MSG_STATUS: return handle_status(c, in, out);
	case MSG_SET_PIN: return handle_set_pin(c, in, out);
	case MSG_LOCK: return handle_lock(c, in, out);
	case MSG_UNLOCK: return handle_unlock(c, in, out);
	}
	return put_error(out, MTLS_ERR_UNSUPPORTED_MESSAGE, -1, "unknown message type");
}

static void
conn_unlink(struct conn *c)
{
	struct server *s = c->srv;

	pthread_mutex_lock(&s->mu);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->nconn--;
	if (s->nconn == 0)
		pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->mu);
}

static void *
conn_main(void *arg)
{
	struct conn *c = arg;
	struct wbuf *in = NULL, *out = NULL;
	struct ucred cred;
	struct timespec replied = { 0, 0 }; /* when the last reply went out */
	long gap_us = -1; /* from the last reply to the next request, -1: none yet */
	int have_replied = 0;
	socklen_t clen = sizeof(cred);
	char path[64];
	ssize_t n;
	int r;

	if ((in = wbuf_new()) == NULL || (out = wbuf_new()) == NULL)
		goto done;
	/* Who is asking: checked on every connection, before any request. */
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		warn("cannot read peer credentials: %s", strerror(errno));
		goto done;
	}
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->gid = cred.gid;
	snprintf(path, sizeof(path), "/proc/%ld/exe", (long)cred.pid);
	n = readlink(path, c->exe, sizeof(c->exe) - 1);
	c->exe[n > 0 ? n : 0] = '\0';
	if (n <= 0)
		snprintf(c->exe, sizeof(c->exe), "?");
	if (!policy_peer_allowed(cred.uid, c->srv->uid, c->srv->cfg->allow_root)) {
		audit_peer(c, LOG_LEVEL_WARN, "connection refused", ": uid not allowed");
		if (put_error(out, MTLS_ERR_PEER_DENIED, -1,
			      "this agent serves only its own user") == 0)
			if (frame_write(c->fd, out, 1000) != 0)
				debug("peer pid=%ld gone before the refusal", (long)c->pid);
		goto done;
	}
	for (;;) {
		r = frame_read(c->fd, &c->rx, in, MTLS_FRAME_MAX, -1,
			       (int)c->srv->cfg->request_timeout);
		if (have_replied)
			gap_us = usec_since(&replied);
		if (r == MTLS_ERR_FRAME_TOO_LARGE || r == MTLS_ERR_BAD_REQUEST) {
			/* The stream cannot be resynchronised: say why, close. */
			warn("peer pid=%ld: %s; closing", (long)c->pid,
			     r == MTLS_ERR_BAD_REQUEST ? "empty frame"
						       : "frame over the size limit");
			if (put_error(out, r, -1,
				      r == MTLS_ERR_BAD_REQUEST
					  ? "empty frame"
					  : "frame larger than 1048576 bytes") == 0)
				if (frame_write(c->fd, out, 1000) != 0)
					debug("peer pid=%ld gone before the refusal", (long)c->pid);
			break;
		}
		if (r != 0) {
			if (r != MTLS_ERR_CONNECTION_CLOSED)
				debug("peer pid=%ld: %s; closing", (long)c->pid,
				      mtls_agent_strerror(r));
			break;
		}
		wbuf_reset(out);
		(void)__atomic_add_fetch(&c->srv->active, 1, __ATOMIC_RELAXED);
		r = dispatch(c, in, out);
		if (r != 0) {
			(void)__atomic_sub_fetch(&c->srv->active, 1, __ATOMIC_RELAXED);
			warn("cannot build reply: %s", mtls_agent_strerror(r));
			break;
		}
		wbuf_reset(in);
		r = frame_write(c->fd, out, (int)c->srv->cfg->request_timeout);
		/*
		 * A client signing in a loop asks again within microseconds:
		 * wait awake for it, unless this client's last pause was
		 * longer than that (one handshake now and then), or no CPU is
		 * left for the clients.
		 */
		if (r == 0 && gap_us <= (long)c->srv->cfg->busy_poll &&
		    __atomic_load_n(&c->srv->active, __ATOMIC_RELAXED) <= c->srv->spin_max)
			(void)frame_spin(c->fd, &c->rx, c->srv->cfg->busy_poll);
		clock_gettime(CLOCK_MONOTONIC, &replied);
		have_replied = 1;
		(void)__atomic_sub_fetch(&c->srv->active, 1, __ATOMIC_RELAXED);
		if (r != 0)
			break;
	}
done:
	wbuf_free(in);
	wbuf_free(out);
	frame_rx_reset(&c->rx);
	close(c->fd);
	conn_unlink(c);
	free(c);
	return NULL;
}

static void
accept_one(struct server *s, pthread_attr_t *attr)
{
	struct conn *c;
	pthread_t th;
	int fd;

	fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
			warn("accept: %s", strerror(errno));
		return;
	}
	pthread_mutex_lock(&s->mu);
	if (s->nconn >= s->cfg->max_connections) {
		struct wbuf *out = wbuf_new();

		pthread_mutex_unlock(&s->mu);
		warn("connection refused: %u connections open (max-connections)", s->nconn);
		if (out != NULL && put_error(out, MTLS_ERR_BUSY, -1, "too many connections") == 0)
			if (frame_write(fd, out, 100) != 0)
				debug("refused peer gone");
		wbuf_free(out);
		close(fd);
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		pthread_mutex_unlock(&s->mu);
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd;
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->nconn++;
	if (pthread_create(&th, attr, conn_main, c) != 0) {
		warn("cannot start a connection thread");
		if (c->next != NULL)
			c->next->prev = NULL;
		s->conns = c->next;
		s->nconn--;
		pthread_mutex_unlock(&s->mu);
		close(fd);
		free(c);
		return;
	}
	pthread_mutex_unlock(&s->mu);
}

static void
reload(struct server *s)
{
	struct config *cfg = NULL;
	char err[512] = "";
	int r;

	if (s->config_path == NULL) {
		info("SIGHUP: no configuration file; rescanning tokens");
		if (token_reload(s->ts, s->cfg, err, sizeof(err)) != 0)
			warn("reload failed: %s", err);
		return;
	}
	if ((r = config_load(s->config_path, &cfg, err, sizeof(err))) != 0) {
		warn("SIGHUP: %s; keeping the old configuration", err);
		return;
	}
	/* Settings given on the command line win again; the socket stays. */
	if (config_apply_overrides(cfg, s->ov) != 0) {
		warn("SIGHUP: out of memory; keeping the old configuration");
		config_free(cfg);
		return;
	}
	if ((r = token_reload(s->ts, cfg, err, sizeof(err))) != 0) {
		warn("SIGHUP: %s; keeping the old configuration", err);
		config_free(cfg);
		return;
	}
	/* Connection threads may still read the old one: keep it till exit. */
	{
		struct retired_cfg *rc = malloc(sizeof(*rc));

		if (rc != NULL) {
			rc->cfg = s->cfg;
			rc->next = s->retired;
			s->retired = rc;
		}
	}
	s->cfg = cfg;
	log_set_level((enum log_level)cfg->log_level);
	info("SIGHUP: configuration reloaded from %s", s->config_path);
}

static void
shutdown_all(struct server *s)
{
	struct retired_cfg *rc, *next;
	struct timespec deadline;
	struct conn *c;

	close(s->listen_fd);
	if (!s->keep_socket)
		(void)unlink(s->sock_path);
	pthread_mutex_lock(&s->mu);
	__atomic_store_n(&s->stopping, 1, __ATOMIC_RELAXED);
	for (c = s->conns; c != NULL; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 3;
	while (s->nconn > 0)
		if (pthread_cond_timedwait(&s->idle, &s->mu, &deadline) != 0)
			break;
	pthread_mutex_unlock(&s->mu);
	/* The watcher leaves within a tick unless a module call holds it. */
	{
		int i;

		for (i = 0; i < 30 && !__atomic_load_n(&s->watcher_done, __ATOMIC_ACQUIRE); i++)
			usleep(100 * 1000);
		if (!__atomic_load_n(&s->watcher_done, __ATOMIC_ACQUIRE)) {
			warn("the token watcher is stuck in the PKCS#11 module at exit");
			return;
		}
	}
	if (s->nconn > 0) {
		/* A thread stuck in the token: exit without freeing under it. */
		warn("%u connection(s) still busy at exit", s->nconn);
		return;
	}
	token_close(s->ts);
	config_free(s->cfg);
	for (rc = s->retired; rc != NULL; rc = next) {
		next = rc->next;
		config_free(rc->cfg);
		free(rc);
	}
	free(s->sock_path);
	free(s->config_path);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->lock_mu);
	pthread_cond_destroy(&s->idle);
	mtls_wipe(s->lock_hash, sizeof(s->lock_hash));
	free(s);
}

/*
 * About once a second: login timeouts, lifetimes, idle keys, token
 * removal and insertion.  A thread of its own, so that a module that is
 * slow to answer never stops the main loop from accepting and from
 * hearing SIGTERM.
 */
static void *
watch_main(void *arg)
{
	struct server *s = arg;
	struct timespec tick = { 1, 0 };

	for (;;) {
		nanosleep(&tick, NULL);
		if (__atomic_load_n(&s->stopping, __ATOMIC_RELAXED))
			break;
		/* First the check that needs no module call. */
		token_check_hang(s->ts);
		token_expire(s->ts, time(NULL));
		token_poll(s->ts);
	}
	__atomic_store_n(&s->watcher_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

int
server_run(struct server *s)
{
	struct signalfd_siginfo si;
	struct pollfd pfd[2];
	pthread_attr_t attr;
	pthread_t watcher;
	sigset_t set;
	int sfd;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if ((sfd = signalfd(-1, &set, SFD_CLOEXEC)) < 0) {
		error("signalfd: %s", strerror(errno));
		return MTLS_ERR_INTERNAL;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, CONN_STACK_SIZE);
	if (pthread_create(&watcher, &attr, watch_main, s) != 0) {
		error("cannot start the token watcher");
		pthread_attr_destroy(&attr);
		close(sfd);
		return MTLS_ERR_INTERNAL;
	}
	pfd[0].fd = s->listen_fd;
	pfd[0].events = POLLIN;
	pfd[1].fd = sfd;
	pfd[1].events = POLLIN;
	for (;;) {
		int n = poll(pfd, 2, 1000);

		if (n < 0 && errno != EINTR) {
			error("poll: %s", strerror(errno));
			break;
		}
		if (n <= 0)
			continue;
		if (pfd[1].revents & POLLIN) {
			if (read(sfd, &si, sizeof(si)) != sizeof(si))
				continue;
			if (si.ssi_signo == SIGHUP) {
				reload(s);
				continue;
			}
			info("signal %u: shutting down", si.ssi_signo);
			break;
		}
		if (pfd[0].revents & POLLIN)
			accept_one(s, &attr);
	}
	pthread_attr_destroy(&attr);
	close(sfd);
	shutdown_all(s);
	return 0;
}
