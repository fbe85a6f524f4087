/*
 * server.c - connections, peer checks, dispatch and audit.  See server.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "confirm.h"
#include "enroll.h"
#include "log.h"
#include "mtls-agent.h"
#include "policy.h"
#include "proto.h"
#include "safefile.h"
#include "secmem.h"
#include "msg_ssh.h"
#include "server.h"
#include "spin.h"
#include "ssh.h"

#define CONN_STACK_SIZE (256 * 1024)

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; older headers lack it */
#endif

static char agent_version[] = PACKAGE_NAME " " PACKAGE_VERSION;

struct live_cfg;

struct conn {
	struct server *srv;
	struct live_cfg *cfg; /* held while a request is served; NULL between */
	int fd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int pidfd;		     /* of the process that connected, or -1 */
	char exe[PATH_MAX];	     /* its executable when the agent first looked */
	char exe_now[PATH_MAX + 16]; /* what policy, prompt and audit see (peer_refresh) */
	int hello_done;
	struct ssh_conn *ssh; /* on the SSH socket: its state; NULL otherwise */
	struct conn *prev, *next;
	struct frame_rx rx;
};

struct server {
	/*
	 * The current configuration; read it here only from the main thread
	 * (which alone replaces it).  Connection threads and the watcher read
	 * theirs through cfg_hold(), since a replaced one is freed.
	 */
	struct config *cfg;
	/* Every configuration still in memory, oldest first, the current one
	 * last; under mu. */
	struct live_cfg *cfgs, *cfg_cur;
	unsigned int n_cfgs;
	char *config_path;
	const struct config_overrides *ov;
	struct tokenset *ts;
	int listen_fd;
	char *sock_path;
	int keep_socket; /* socket activation: the service manager's */
	int ssh_fd;	 /* the SSH agent socket (ssh.c), or -1 */
	char *ssh_path;
	int ssh_keep;
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
	 * CPU is free for the client: at most half the CPUs the agent may run
	 * on have a connection inside a request or busy-polling (0 on one),
	 * or all of them for a client on a CPU of its own (each connection's
	 * struct spin_place, kept current).
	 */
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

/*
 * A configuration and the number of requests (and watcher ticks) that
 * began while it was the current one.  Code in a request reads the token
 * set's configuration without a lock in places (askpass, timeouts), and
 * that may be any configuration made current since the request began: so
 * a replaced configuration is freed only once it and every older one have
 * no user left.  Idle connections hold none, so this stays short.
 */
struct live_cfg {
	struct config *cfg;
	unsigned int users;
	int shared;	       /* cfg belongs to a newer entry too: not freed with this one */
	struct live_cfg *next; /* the next newer one */
};

void
server_keep_socket(struct server *s)
{
	s->keep_socket = 1;
}

int
server_set_ssh_socket(struct server *s, int fd, const char *path, int keep)
{
	if ((s->ssh_path = strdup(path)) == NULL)
		return MTLS_ERR_ALLOC;
	s->ssh_fd = fd;
	s->ssh_keep = keep;
	return 0;
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
	const struct safefile_rules dir_rules = { .owner = geteuid(),
						  .forbidden = 077,
						  .flags = SAFEFILE_OWNER_ONLY };
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
	switch (safefile_check_owner(&st, &dir_rules)) {
	case SAFEFILE_OWNER:
		snprintf(err, err_len, "socket directory %s is owned by uid %u, not by us (uid %u)",
			 dir, (unsigned)st.st_uid, (unsigned)geteuid());
		return MTLS_ERR_CONFIG;
	case SAFEFILE_MODE:
		snprintf(err, err_len,
			 "socket directory %s has mode %04o: group and others must have no access "
			 "(chmod 700)",
			 dir, (unsigned)(st.st_mode & 07777));
		return MTLS_ERR_CONFIG;
	default: break;
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
	    (config_path != NULL && (s->config_path = strdup(config_path)) == NULL) ||
	    (s->cfgs = calloc(1, sizeof(*s->cfgs))) == NULL) {
		free(s->sock_path);
		free(s->config_path);
		free(s);
		return MTLS_ERR_ALLOC;
	}
	s->cfgs->cfg = cfg;
	s->cfg_cur = s->cfgs;
	s->n_cfgs = 1;
	s->cfg = cfg;
	s->ov = ov;
	s->ts = ts;
	s->listen_fd = listen_fd;
	s->ssh_fd = -1;
	s->uid = geteuid();
	s->started = time(NULL);
	/* A malloc arena per CPU we may use, not one per connection thread
	 * (glibc allows eight per core): see mtls-agent-p11's main(). */
	(void)mallopt(M_ARENA_MAX, spin_cpus_allowed(0));
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

/* The current configuration, kept in memory until cfg_release(). */
static struct live_cfg *
cfg_hold(struct server *s)
{
	struct live_cfg *lc;

	pthread_mutex_lock(&s->mu);
	lc = s->cfg_cur;
	lc->users++;
	pthread_mutex_unlock(&s->mu);
	return lc;
}

/* Frees the replaced configurations no request can read any more: the
 * oldest ones, up to the first still in use.  s->mu held; returns them
 * unlinked, for config_free() outside the mutex. */
static struct live_cfg *
cfg_unlink_unused(struct server *s)
{
	struct live_cfg *head = s->cfgs, *lc, *last = NULL;

	for (lc = s->cfgs; lc != s->cfg_cur && lc->users == 0; lc = lc->next) {
		last = lc;
		s->n_cfgs--;
	}
	if (last == NULL)
		return NULL;
	s->cfgs = last->next;
	last->next = NULL;
	return head;
}

static void
cfg_free_list(struct live_cfg *lc)
{
	struct live_cfg *next;

	for (; lc != NULL; lc = next) {
		next = lc->next;
		if (!lc->shared)
			config_free(lc->cfg);
		free(lc);
	}
}

static void
cfg_release(struct server *s, struct live_cfg *lc)
{
	struct live_cfg *unused;

	if (lc == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	lc->users--;
	unused = cfg_unlink_unused(s);
	pthread_mutex_unlock(&s->mu);
	cfg_free_list(unused);
}

/*
 * A pidfd of the process that connected: SO_PEERPIDFD names exactly it;
 * where the kernel lacks that (before 6.5), pidfd_open() of the
 * SO_PEERCRED pid, which is another process if the one that connected
 * has already exited and its pid was reused.  -1 if neither works.
 */
static int
peer_pidfd(int fd, pid_t pid)
{
	socklen_t len = sizeof(int);
	int pfd = -1;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pfd, &len) == 0 && pfd >= 0)
		return pfd;
#ifdef SYS_pidfd_open
	pfd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec by default */
#endif
	return pfd >= 0 ? pfd : -1;
}

/*
 * The executable of pid as the kernel reports it now ("?" if unreadable
 * or too long).  Returns 0 if the process of pidfd was still alive after
 * the read, so that what was read was its executable (a pid is reused
 * only once its process is gone); -1 if it had exited or cannot be told.
 */
static int
peer_exe_read(pid_t pid, int pidfd, char *buf, size_t len)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%ld/exe", (long)pid);
	n = readlink(path, buf, len - 1);
	if (n <= 0 || (size_t)n >= len - 1)
		snprintf(buf, len, "?");
	else
		buf[n] = '\0';
	/* A pidfd polls readable once its process has exited. */
	if (pidfd < 0 || poll(&p, 1, 0) != 0)
		return -1;
	return 0;
}

/*
 * Reads the peer's executable again (before each request that is decided
 * or audited) into exe_now: the path if it is still the one the process
 * connected with; otherwise a value no `exe:` policy entry (always an
 * absolute path) can match: "!changed:NOW" once the process has executed
 * another program, "!exited:THEN" once it is gone (a child or a receiver
 * of the descriptor asks), "!unverified:THEN" without a pidfd.
 */
static void
peer_refresh(struct conn *c)
{
	char now[PATH_MAX];

	if (c->pidfd < 0)
		snprintf(c->exe_now, sizeof(c->exe_now), "!unverified:%s", c->exe);
	else if (peer_exe_read(c->pid, c->pidfd, now, sizeof(now)) != 0)
		snprintf(c->exe_now, sizeof(c->exe_now), "!exited:%s", c->exe);
	else if (strcmp(now, "?") == 0)
		snprintf(c->exe_now, sizeof(c->exe_now), "?");
	else if (strcmp(now, c->exe) != 0)
		snprintf(c->exe_now, sizeof(c->exe_now), "!changed:%s", now);
	else
		snprintf(c->exe_now, sizeof(c->exe_now), "%s", now);
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
		(unsigned)c->uid, c->exe_now, rest);
}

/* The PKCS#11 mechanism a pkcs11-digest request came from. */
static const char *
pkcs11_mechanism(uint16_t scheme)
{
	const struct scheme_info *s = scheme_lookup(scheme);

	if (s == NULL)
		return "?";
	if (s->key_type == MTLS_AGENT_KEY_EC)
		return "CKM_ECDSA";
	return s->pss ? "CKM_RSA_PKCS_PSS" : "CKM_RSA_PKCS";
}

/* One line per signature and per refusal; never a PIN. */
static void
audit(const struct conn *c, const char *op, const char *identity, uint16_t scheme, int purpose,
      int r, const char *why, long usec)
{
	const char *sn = mtls_agent_scheme_name(scheme);
	const char *pn = mtls_agent_purpose_name(purpose);
	char pnm[64];

	if (purpose == MTLS_AGENT_PURPOSE_PKCS11_DIGEST) {
		snprintf(pnm, sizeof(pnm), "%s mechanism=%s", pn, pkcs11_mechanism(scheme));
		pn = pnm;
	}

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
	if ((r = token_list(c->srv->ts, &resp.ids, &resp.n, why, sizeof(why))) != 0)
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
		struct sign_peer peer = {
			c->pid, c->uid, c->gid, c->exe_now, NULL, req.transcript, req.transcript_len
		};

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

/*
 * LOGIN_PROMPT: the agent asks the person for the PIN through its
 * askpass program, naming the program that asked, and logs the token in
 * with it; the client never sees the PIN.
 */
static int
handle_login_prompt(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_login_prompt_req req;
	char why[256] = "", prompt[PATH_MAX + 512];
	char *pin = NULL;
	int r, retries = -1;

	if ((r = msg_login_prompt_req_get(in, &req)) != 0) {
		audit_peer(c, LOG_LEVEL_WARN, "login refused", ": %s", mtls_agent_strerror(r));
		return put_error(out, r, -1, "malformed LOGIN_PROMPT");
	}
	snprintf(prompt, sizeof(prompt),
		 "PIN for the token of %s%s%s (asked by %s, pid %ld, uid %u):",
		 req.identity[0] ? "identity \"" : "the agent", req.identity,
		 req.identity[0] ? "\"" : "", c->exe_now, (long)c->pid, (unsigned)c->uid);
	r = confirm_read_pin(c->cfg->cfg->askpass, c->cfg->cfg->confirm_timeout, prompt, &pin, why,
			     sizeof(why));
	if (r == 0)
		r = token_login(c->srv->ts, req.identity, pin, 0, &retries, why, sizeof(why));
	mtls_secure_free(pin);
	if (r == 0)
		audit_peer(c, LOG_LEVEL_INFO, "login ok", " identity=%s prompt",
			   req.identity[0] ? req.identity : "(token)");
	else
		audit_peer(c, LOG_LEVEL_WARN, "login refused", " identity=%s prompt result=%s: %s",
			   req.identity[0] ? req.identity : "(token)", mtls_agent_strerror(r), why);
	msg_login_prompt_req_clear(&req);
	return r == 0 ? msg_empty_resp_put(out, MSG_LOGIN_PROMPT) : put_error(out, r, retries, why);
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
	r = token_login(c->srv->ts, req.identity, req.pin, (req.flags & LOGIN_VERIFY) != 0,
			&retries, why, sizeof(why));
	if (r == 0)
		audit_peer(c, LOG_LEVEL_INFO, "login ok", " identity=%s%s",
			   req.identity[0] ? req.identity : "(token)",
			   (req.flags & LOGIN_VERIFY) ? " verify" : "");
	else
		audit_peer(c, LOG_LEVEL_WARN, "login refused", " identity=%s%s result=%s: %s",
			   req.identity[0] ? req.identity : "(token)",
			   (req.flags & LOGIN_VERIFY) ? " verify" : "", mtls_agent_strerror(r),
			   why);
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

/* Enrollment (enroll.c): any peer the agent serves may, as for LOGIN and
 * SET_PIN (same uid, root with allow-root); the token's PIN is the gate. */
static int
handle_keygen(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_keygen_req req;
	struct msg_keygen_resp resp;
	char why[256] = "";
	int r;

	if ((r = msg_keygen_req_get(in, &req)) != 0) {
		audit_peer(c, LOG_LEVEL_WARN, "keygen refused", ": %s", mtls_agent_strerror(r));
		return put_error(out, r, -1, "malformed KEYGEN");
	}
	r = token_keygen(c->srv->ts, &req, &resp, why, sizeof(why));
	if (r == 0)
		audit_peer(c, LOG_LEVEL_INFO, "keygen ok", " token=%s label=%s kind=%u",
			   req.token[0] ? req.token : "(only)", req.label, req.kind);
	else
		audit_peer(c, LOG_LEVEL_WARN, "keygen refused", " token=%s label=%s result=%s: %s",
			   req.token[0] ? req.token : "(only)", req.label, mtls_agent_strerror(r),
			   why);
	msg_keygen_req_clear(&req);
	if (r != 0)
		return put_error(out, r, -1, why);
	r = msg_keygen_resp_put(out, &resp);
	msg_keygen_resp_clear(&resp);
	return r;
}

static int
handle_import(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_import_req req;
	struct msg_import_resp resp = { 0 };
	char why[256] = "";
	int r;

	if ((r = msg_import_req_get(in, &req)) != 0) {
		audit_peer(c, LOG_LEVEL_WARN, "import-cert refused", ": %s",
			   mtls_agent_strerror(r));
		return put_error(out, r, -1, "malformed IMPORT_CERT");
	}
	r = token_import_cert(c->srv->ts, &req, &resp.name, why, sizeof(why));
	if (r == 0)
		audit_peer(c, LOG_LEVEL_INFO, "import-cert ok", " identity=%s%s", resp.name,
			   (req.flags & MTLS_AGENT_IMPORT_FORCE) ? " forced" : "");
	else
		audit_peer(c, LOG_LEVEL_WARN, "import-cert refused", " result=%s: %s",
			   mtls_agent_strerror(r), why);
	msg_import_req_clear(&req);
	r = r == 0 ? msg_import_resp_put(out, &resp) : put_error(out, r, -1, why);
	msg_import_resp_clear(&resp);
	return r;
}

static int
handle_delete_key(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct msg_delete_key_req req;
	char why[256] = "";
	int r;

	if ((r = msg_delete_key_req_get(in, &req)) != 0) {
		audit_peer(c, LOG_LEVEL_WARN, "delete-key refused", ": %s", mtls_agent_strerror(r));
		return put_error(out, r, -1, "malformed DELETE_KEY");
	}
	r = token_delete_key(c->srv->ts, &req, why, sizeof(why));
	if (r == 0)
		audit_peer(c, LOG_LEVEL_INFO, "delete-key ok", " identity=%s%s", req.identity,
			   (req.flags & MTLS_AGENT_DELETE_FORCE) ? " forced" : "");
	else
		audit_peer(c, LOG_LEVEL_WARN, "delete-key refused", " identity=%s result=%s: %s",
			   req.identity, mtls_agent_strerror(r), why);
	msg_delete_key_req_clear(&req);
	return r == 0 ? msg_empty_resp_put(out, MSG_DELETE_KEY) : put_error(out, r, -1, why);
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

/* Locks with `pass` (LOCK, and the SSH socket's LOCK); msg says why not. */
static int
lock_apply(struct conn *c, const char *pass, char *msg, size_t msg_len)
{
	struct server *s = c->srv;
	unsigned char salt[16], hash[32];

	if (RAND_bytes(salt, sizeof(salt)) != 1 || kdf(pass, salt, hash) != 0) {
		snprintf(msg, msg_len, "cannot hash the passphrase");
		return MTLS_ERR_INTERNAL;
	}
	pthread_mutex_lock(&s->lock_mu);
	if (s->locked) {
		pthread_mutex_unlock(&s->lock_mu);
		mtls_wipe(hash, sizeof(hash));
		snprintf(msg, msg_len, "already locked");
		return MTLS_ERR_AGENT_LOCKED;
	}
	memcpy(s->lock_salt, salt, sizeof(salt));
	memcpy(s->lock_hash, hash, sizeof(hash));
	s->locked = 1;
	s->lock_failures = 0;
	memset(&s->lock_next_try, 0, sizeof(s->lock_next_try));
	pthread_mutex_unlock(&s->lock_mu);
	mtls_wipe(hash, sizeof(hash));
	audit_peer(c, LOG_LEVEL_INFO, "lock", ": agent locked");
	return 0;
}

/* LOCK and UNLOCK: the passphrase goes to apply (lock_apply, unlock_apply). */
static int
handle_passphrase(struct conn *c, struct wbuf *in, struct wbuf *out, uint8_t type,
		  int (*apply)(struct conn *, const char *, char *, size_t))
{
	struct msg_lock_req req;
	char msg[128];
	int r;

	if ((r = msg_lock_req_get(in, &req)) != 0)
		return put_error(out, r, -1,
				 type == MSG_LOCK ? "malformed LOCK" : "malformed UNLOCK");
	r = apply(c, req.passphrase, msg, sizeof(msg));
	msg_lock_req_clear(&req);
	if (r != 0)
		return put_error(out, r, -1, msg);
	return msg_empty_resp_put(out, type);
}

static int
handle_lock(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	return handle_passphrase(c, in, out, MSG_LOCK, lock_apply);
}

/* Unlocks with `pass` (UNLOCK, and the SSH socket's UNLOCK). */
static int
unlock_apply(struct conn *c, const char *pass, char *msg, size_t msg_len)
{
	struct server *s = c->srv;
	unsigned char salt[16], hash[32];
	struct timespec now;
	long wait_ms;
	int r, ok;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&s->lock_mu);
	if (!s->locked) {
		pthread_mutex_unlock(&s->lock_mu);
		snprintf(msg, msg_len, "the agent is not locked");
		return MTLS_ERR_INVALID_ARGUMENT;
	}
	wait_ms = (s->lock_next_try.tv_sec - now.tv_sec) * 1000 +
		  (s->lock_next_try.tv_nsec - now.tv_nsec) / 1000000;
	if (wait_ms > 0) {
		/* Back-off: a guesser gets no answer before its time. */
		pthread_mutex_unlock(&s->lock_mu);
		snprintf(msg, msg_len, "too many failed unlocks: try again in %ld ms", wait_ms);
		audit_peer(c, LOG_LEVEL_WARN, "unlock refused", ": %s", msg);
		return MTLS_ERR_AGENT_LOCKED;
	}
	/* One guess at a time: parallel connections cannot each slip one
	 * into the same back-off window while the slow hash runs. */
	if (s->unlock_busy) {
		pthread_mutex_unlock(&s->lock_mu);
		snprintf(msg, msg_len, "another unlock is in progress");
		return MTLS_ERR_AGENT_LOCKED;
	}
	s->unlock_busy = 1;
	memcpy(salt, s->lock_salt, sizeof(salt));
	pthread_mutex_unlock(&s->lock_mu);
	/* The slow hash runs without the mutex held. */
	r = kdf(pass, salt, hash);
	if (r != 0) {
		pthread_mutex_lock(&s->lock_mu);
		s->unlock_busy = 0;
		pthread_mutex_unlock(&s->lock_mu);
		snprintf(msg, msg_len, "cannot hash the passphrase");
		return r;
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
		snprintf(msg, msg_len, "wrong passphrase");
		return MTLS_ERR_AGENT_LOCKED;
	}
	audit_peer(c, LOG_LEVEL_INFO, "unlock", ": agent unlocked");
	return 0;
}

static int
handle_unlock(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	return handle_passphrase(c, in, out, MSG_UNLOCK, unlock_apply);
}

/* --- the SSH socket's side of the server (ssh.c decodes) --- */

static int
ssh_locked_cb(void *arg)
{
	return is_locked(((struct conn *)arg)->srv);
}

static int
ssh_lock_cb(void *arg, const char *pass)
{
	char msg[128];

	return lock_apply(arg, pass, msg, sizeof(msg));
}

static int
ssh_unlock_cb(void *arg, const char *pass)
{
	char msg[128];

	return unlock_apply(arg, pass, msg, sizeof(msg));
}

static void
ssh_audit_cb(void *arg, enum log_level level, const char *what, const char *rest)
{
	audit_peer(arg, level, what, "%s", rest);
}

static int
ssh_request(struct conn *c, struct wbuf *in, struct wbuf *out)
{
	struct ssh_env env = {
		.ts = c->srv->ts,
		.cfg = c->cfg->cfg,
		.arg = c,
		.locked = ssh_locked_cb,
		.lock = ssh_lock_cb,
		.unlock = ssh_unlock_cb,
		.audit = ssh_audit_cb,
	};

	/* Who asks now, for what is decided or audited. */
	peer_refresh(c);
	env.peer = (struct sign_peer){ c->pid, c->uid, c->gid, c->exe_now, NULL, NULL, 0 };
	return ssh_dispatch(c->ssh, &env, in, out);
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
	/* Who asks now, for what is decided or audited. */
	if (type != MSG_HELLO && type != MSG_LIST && type != MSG_STATUS)
		peer_refresh(c);
	/*
	 * Locked: nothing is listed, signed or logged in until UNLOCK, and
	 * LIST and STATUS say so rather than look like an agent with no
	 * identities.
	 */
	if (is_locked(c->srv)) {
		switch (type) {
		case MSG_LIST:
		case MSG_STATUS:
			return put_error(out, MTLS_ERR_AGENT_LOCKED, -1, "the agent is locked");
		case MSG_KEYGEN:
		case MSG_IMPORT_CERT:
		case MSG_DELETE_KEY:
			audit_peer(c, LOG_LEVEL_WARN, "enroll refused", ": agent locked");
			return put_error(out, MTLS_ERR_AGENT_LOCKED, -1, "the agent is locked");
		case MSG_SIGN:
		case MSG_LOGIN:
		case MSG_LOGIN_PROMPT:
		case MSG_SET_PIN:
			audit_peer(c, LOG_LEVEL_WARN,
				   type == MSG_SIGN ? "sign refused"
				   : type == MSG_LOGIN || type == MSG_LOGIN_PROMPT
				       ? "login refused"
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
	case MSG_LOGIN_PROMPT: return handle_login_prompt(c, in, out);
	case MSG_LOGOUT: return handle_logout(c, in, out);
	case MSG_STATUS: return handle_status(c, in, out);
	case MSG_SET_PIN: return handle_set_pin(c, in, out);
	case MSG_LOCK: return handle_lock(c, in, out);
	case MSG_UNLOCK: return handle_unlock(c, in, out);
	case MSG_KEYGEN: return handle_keygen(c, in, out);
	case MSG_IMPORT_CERT: return handle_import(c, in, out);
	case MSG_DELETE_KEY: return handle_delete_key(c, in, out);
	}
	return put_error(out, MTLS_ERR_UNSUPPORTED_MESSAGE, -1, "unknown message type");
}

int
server_dispatch_frame(struct server *s, const struct sign_peer *peer, int *hello_done,
		      struct wbuf *in, struct wbuf *out)
{
	struct conn *c;
	int r;

	/* A connection without a socket: what conn_main() sets up before its
	 * first request, as far as dispatch() reads it. */
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return MTLS_ERR_ALLOC;
	c->srv = s;
	c->fd = c->pidfd = -1;
	c->pid = peer->pid;
	c->uid = peer->uid;
	c->gid = peer->gid;
	snprintf(c->exe, sizeof(c->exe), "%s", peer->exe);
	peer_refresh(c);
	c->hello_done = *hello_done;
	c->cfg = cfg_hold(s);
	wbuf_reset(out);
	r = dispatch(c, in, out);
	cfg_release(s, c->cfg);
	*hello_done = c->hello_done;
	free(c);
	return r;
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
	unsigned int timeout_ms, busy_poll;
	int r;
	/* Holds busy-polling for this client off after spins that did not pay. */
	struct spin_ctl spin = { 0 };
	/* How many connections may spin, for the CPUs the client and this
	 * thread may use now (not at start: taskset may move either). */
	struct spin_place place = { 0 };

	/* Settings of the configuration current at each request; a waiting
	 * connection holds none (see struct live_cfg). */
	c->cfg = cfg_hold(c->srv);
	timeout_ms = c->cfg->cfg->request_timeout;
	busy_poll = c->cfg->cfg->busy_poll;
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
	c->pidfd = peer_pidfd(c->fd, cred.pid);
	if (peer_exe_read(cred.pid, c->pidfd, c->exe, sizeof(c->exe)) != 0 && c->pidfd >= 0)
		snprintf(c->exe, sizeof(c->exe), "?"); /* gone before the agent looked */
	peer_refresh(c);
	if (!policy_peer_allowed(cred.uid, c->srv->uid, c->cfg->cfg->allow_root)) {
		audit_peer(c, LOG_LEVEL_WARN, "connection refused", ": uid not allowed");
		if (c->ssh != NULL) {
			if (msg_ssh_status_put(out, SSH_AGENT_FAILURE) == 0 &&
			    frame_write(c->fd, out, 1000) != 0)
				debug("peer pid=%ld gone before the refusal", (long)c->pid);
		} else if (put_error(out, MTLS_ERR_PEER_DENIED, -1,
				     "this agent serves only its own user") == 0)
			if (frame_write(c->fd, out, 1000) != 0)
				debug("peer pid=%ld gone before the refusal", (long)c->pid);
		goto done;
	}
	cfg_release(c->srv, c->cfg);
	c->cfg = NULL;
	for (;;) {
		r = frame_read(c->fd, &c->rx, in, c->ssh ? SSH_AGENT_FRAME_MAX : MTLS_FRAME_MAX, -1,
			       (int)timeout_ms);
		if (have_replied)
			gap_us = usec_since(&replied);
		if (c->ssh != NULL &&
		    (r == MTLS_ERR_FRAME_TOO_LARGE || r == MTLS_ERR_BAD_REQUEST)) {
			/* The SSH protocol has no error frame: say it in the log. */
			audit_peer(c, LOG_LEVEL_WARN, "ssh connection closed", ": %s",
				   r == MTLS_ERR_BAD_REQUEST ? "empty frame"
							     : "frame over 262144 bytes");
			break;
		}
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
		c->cfg = cfg_hold(c->srv);
		timeout_ms = c->cfg->cfg->request_timeout;
		busy_poll = c->cfg->cfg->busy_poll;
		wbuf_reset(out);
		(void)__atomic_add_fetch(&c->srv->active, 1, __ATOMIC_RELAXED);
		r = c->ssh != NULL ? ssh_request(c, in, out) : dispatch(c, in, out);
		if (r != 0) {
			(void)__atomic_sub_fetch(&c->srv->active, 1, __ATOMIC_RELAXED);
			warn("cannot build reply: %s", mtls_agent_strerror(r));
			break;
		}
		wbuf_reset(in);
		r = frame_write(c->fd, out, (int)timeout_ms);
		cfg_release(c->srv, c->cfg);
		c->cfg = NULL;
		/*
		 * A client signing in a loop asks again within microseconds:
		 * wait awake for it, unless this client's last pause was
		 * longer than that (one handshake now and then), or no CPU is
		 * left for the clients.
		 */
		if (r == 0 && gap_us <= (long)busy_poll &&
		    __atomic_load_n(&c->srv->active, __ATOMIC_RELAXED) <=
			spin_place_cap(&place, c->pid, spin_now_us()))
			(void)spin_wait(&spin, c->fd, &c->rx, busy_poll);
		clock_gettime(CLOCK_MONOTONIC, &replied);
		have_replied = 1;
		(void)__atomic_sub_fetch(&c->srv->active, 1, __ATOMIC_RELAXED);
		if (r != 0)
			break;
	}
done:
	cfg_release(c->srv, c->cfg);
	wbuf_free(in);
	wbuf_free(out);
	frame_rx_reset(&c->rx);
	if (c->pidfd >= 0)
		close(c->pidfd);
	close(c->fd);
	conn_unlink(c);
	ssh_conn_free(c->ssh);
	free(c);
	return NULL;
}

static void
accept_one(struct server *s, pthread_attr_t *attr, int listen_fd)
{
	struct conn *c;
	pthread_t th;
	int fd;

	fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
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
		if (out != NULL && listen_fd == s->ssh_fd) {
			if (msg_ssh_status_put(out, SSH_AGENT_FAILURE) == 0 &&
			    frame_write(fd, out, 100) != 0)
				debug("refused peer gone");
		} else if (out != NULL &&
			   put_error(out, MTLS_ERR_BUSY, -1, "max-connections reached") == 0)
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
	c->pidfd = -1;
	if (listen_fd == s->ssh_fd && (c->ssh = ssh_conn_new()) == NULL) {
		pthread_mutex_unlock(&s->mu);
		close(fd);
		free(c);
		return;
	}
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
		ssh_conn_free(c->ssh);
		free(c);
		return;
	}
	pthread_mutex_unlock(&s->mu);
}

/*
 * A configuration token_reload() refused: it showed it to the token set
 * for a moment, and a request that read it then may still use it.  So it
 * is retired like a replaced one, behind a new entry for the
 * configuration that stays current: requests in progress hold the entry
 * before it, new ones the one after.
 */
static void
cfg_retire_refused(struct server *s, struct live_cfg *lc)
{
	struct live_cfg *keep, *unused;
	unsigned int n_cfgs;

	if ((keep = calloc(1, sizeof(*keep))) == NULL) {
		cfg_free_list(lc); /* as before: freed at once */
		return;
	}
	pthread_mutex_lock(&s->mu);
	keep->cfg = s->cfg_cur->cfg;
	s->cfg_cur->shared = 1;
	s->cfg_cur->next = lc;
	lc->next = keep;
	s->cfg_cur = keep;
	s->n_cfgs += 2;
	unused = cfg_unlink_unused(s);
	n_cfgs = s->n_cfgs;
	pthread_mutex_unlock(&s->mu);
	cfg_free_list(unused);
	debug("%u configuration(s) in memory", n_cfgs);
}

static void
reload(struct server *s)
{
	struct live_cfg *lc = NULL, *unused;
	struct config *cfg = NULL;
	char err[512] = "";
	unsigned int n_cfgs;
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
	if ((lc = calloc(1, sizeof(*lc))) == NULL) {
		warn("SIGHUP: out of memory; keeping the old configuration");
		config_free(cfg);
		return;
	}
	lc->cfg = cfg;
	/* Settings given on the command line win again; the socket stays. */
	if (config_apply_overrides(cfg, s->ov) != 0) {
		warn("SIGHUP: out of memory; keeping the old configuration");
		cfg_free_list(lc);
		return;
	}
	if ((r = token_reload(s->ts, cfg, err, sizeof(err))) != 0) {
		warn("SIGHUP: %s; keeping the old configuration", err);
		cfg_retire_refused(s, lc);
		return;
	}
	/* Requests in progress may still read the old one: it goes once the
	 * last of them is done (cfg_release). */
	pthread_mutex_lock(&s->mu);
	s->cfg_cur->next = lc;
	s->cfg_cur = lc;
	s->n_cfgs++;
	unused = cfg_unlink_unused(s);
	n_cfgs = s->n_cfgs;
	pthread_mutex_unlock(&s->mu);
	cfg_free_list(unused);
	s->cfg = cfg;
	log_set_level((enum log_level)cfg->log_level);
	info("SIGHUP: configuration reloaded from %s", s->config_path);
	debug("%u configuration(s) in memory", n_cfgs);
}

static void
shutdown_all(struct server *s)
{
	struct timespec deadline;
	struct conn *c;

	close(s->listen_fd);
	if (!s->keep_socket)
		(void)unlink(s->sock_path);
	if (s->ssh_fd >= 0) {
		close(s->ssh_fd);
		if (!s->ssh_keep)
			(void)unlink(s->ssh_path);
	}
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
	cfg_free_list(s->cfgs);
	free(s->sock_path);
	free(s->ssh_path);
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
		struct live_cfg *lc;

		nanosleep(&tick, NULL);
		if (__atomic_load_n(&s->stopping, __ATOMIC_RELAXED))
			break;
		/* These read the token set's configuration too. */
		lc = cfg_hold(s);
		/* First the check that needs no module call. */
		token_expire(s->ts, time(NULL));
		token_poll(s->ts);
		cfg_release(s, lc);
	}
	__atomic_store_n(&s->watcher_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

int
server_run(struct server *s)
{
	struct signalfd_siginfo si;
	struct pollfd pfd[3];
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
	pfd[2].fd = s->ssh_fd; /* -1: ignored by poll */
	pfd[2].events = POLLIN;
	pfd[2].revents = 0;
	for (;;) {
		int n = poll(pfd, 3, 1000);

		if (n < 0 && errno != EINTR) {
			error("poll: %s", strerror(errno));
			break;
		}
		if (n <= 0)
			continue;
		if (pfd[1].revents & POLLIN) {
			if (read(sfd, &si, sizeof(si)) != sizeof(si))
				continue;
			if (si.ssi_signo != SIGHUP) {
				info("signal %u: shutting down", si.ssi_signo);
				break;
			}
			/* Then the connection that waited, if any: a reload
			 * asks the PKCS#11 helper, and a stream of SIGHUPs
			 * must not keep clients from being accepted. */
			reload(s);
		}
		if (pfd[0].revents & POLLIN)
			accept_one(s, &attr, s->listen_fd);
		if (pfd[2].revents & POLLIN)
			accept_one(s, &attr, s->ssh_fd);
	}
	pthread_attr_destroy(&attr);
	close(sfd);
	shutdown_all(s);
	return 0;
}
