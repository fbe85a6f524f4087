/*
 * helper.c - starts mtls-agent-p11, talks to it over K channels, and
 * replaces it when it crashes, exits or hangs (helper.h).
 *
 * One helper process is an "instance": its pid and its K channel sockets.
 * A request takes a free channel of the current instance and holds a
 * reference to the instance, not a lock.  When a request times out or its
 * channel breaks, the instance is marked dead, killed and reaped; the next
 * request starts a new one.  Requests still in flight on a dead instance
 * see EOF at once (the kill closed the helper's ends) and fail; its fds
 * are closed when the last of them lets go, so no fd is closed under a
 * thread that still reads it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"
#include "log.h"
#include "spin.h"

#ifndef LIBEXECDIR
#define LIBEXECDIR "/usr/local/libexec"
#endif
#define HELPER_NAME  "mtls-agent-p11"
#define CHANNELS_MAX 64
/* Child ends are moved above this before they are dup2'd to 3..3+K-1, so
 * no source fd is one of the targets. */
#define SPARE_FD_MIN (3 + CHANNELS_MAX)

extern char **environ;

struct inst {
	pid_t pid; /* -1 once killed and reaped */
	unsigned int gen, refs, k;
	int dead;
	int fd[CHANNELS_MAX];
	int busy[CHANNELS_MAX];
	struct frame_rx rx[CHANNELS_MAX];
	struct spin_ctl spin[CHANNELS_MAX];
	unsigned int last_us[CHANNELS_MAX]; /* the channel's last round trip */
};

struct helper {
	pthread_mutex_t lock;
	pthread_cond_t freed; /* a channel was given back */
	struct inst *cur;     /* NULL until the next request starts one */
	char *bin, *module;
	char **envp;
	unsigned int k, gen;
	int timeout_ms;
	/* Channels that may busy-poll at once, for where the helper and this
	 * thread may run now (spin.h); under lock. */
	struct spin_place place;
	int spinning; /* busy-polling now, under lock */
};

/* A reply expected sooner than this is busy-polled for (a P-256
 * signature on SoftHSM2 is 50-70 us; RSA-2048 600 us is slept for). */
#define SPIN_BUDGET_MAX_US 300U
/* A reply may take this much longer than token-timeout from the start of
 * the call (SO_RCVTIMEO counts from the recv). */
#define RCVTIMEO_SLACK_MS 20

/* Names and prefixes passed on: what modules read (SoftHSM2, p11-kit's
 * proxy and its user configuration), and the test shim's knobs. */
static const char *const env_names[] = { "SOFTHSM2_CONF=",   "HOME=",	       "XDG_CONFIG_HOME=",
					 "XDG_CONFIG_DIRS=", "XDG_DATA_HOME=", "XDG_DATA_DIRS=",
					 "XDG_RUNTIME_DIR=", "TMPDIR=",	       "LANG=",
					 "LC_ALL=" };
static const char *const env_prefixes[] = { "P11_KIT_", "MTLS_SHIM_",
					    "MTLS_LOCKOUT_REAL=", "MTLS_TEST_MODULE=" };

int
helper_env_kept(const char *entry)
{
	size_t i;

	for (i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
		if (strncmp(entry, env_names[i], strlen(env_names[i])) == 0)
			return 1;
	for (i = 0; i < sizeof(env_prefixes) / sizeof(env_prefixes[0]); i++)
		if (strncmp(entry, env_prefixes[i], strlen(env_prefixes[i])) == 0)
			return 1;
	return 0;
}

static char **
build_env(void)
{
	size_t n = 0, i, j = 0;
	char **e;

	while (environ != NULL && environ[n] != NULL)
		n++;
	if ((e = calloc(n + 1, sizeof(*e))) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		if (helper_env_kept(environ[i]))
			e[j++] = environ[i];
	return e;
}

static void
inst_close(struct inst *in)
{
	unsigned int i;

	for (i = 0; i < in->k; i++)
		if (in->fd[i] >= 0)
			(void)close(in->fd[i]);
	free(in);
}

/* Under h->lock. */
static void
inst_put(struct inst *in)
{
	if (--in->refs == 0)
		inst_close(in);
}

static int
spawn_actions(posix_spawn_file_actions_t *fa, const int *child, unsigned int k)
{
	unsigned int i;

	if (posix_spawn_file_actions_init(fa) != 0)
		return -1;
	if (posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
	    posix_spawn_file_actions_addopen(fa, 1, "/dev/null", O_WRONLY, 0) != 0)
		goto fail;
	for (i = 0; i < k; i++)
		if (posix_spawn_file_actions_adddup2(fa, child[i], 3 + (int)i) != 0)
			goto fail;
	return 0;
fail:
	posix_spawn_file_actions_destroy(fa);
	return -1;
}

/* Starts one helper process: socketpairs, posix_spawn, nothing waited for. */
static int
spawn(struct helper *h, struct inst **out, char *err, size_t err_len)
{
	int child[CHANNELS_MAX], pair[2], r = MTLS_ERR_INTERNAL;
	char kbuf[16], *argv[5];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none;
	struct inst *in;
	unsigned int i;

	*out = NULL;
	if ((in = calloc(1, sizeof(*in))) == NULL)
		return MTLS_ERR_ALLOC;
	in->k = h->k;
	in->pid = -1;
	for (i = 0; i < h->k; i++) {
		in->fd[i] = child[i] = -1;
		frame_rx_reset(&in->rx[i]);
	}
	for (i = 0; i < h->k; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
			goto sys_fail;
		in->fd[i] = pair[0];
		/* Replies are slept for in one blocking recv (frame_read_timed). */
		if (frame_set_rcvtimeo(pair[0], h->timeout_ms) != 0) {
			(void)close(pair[1]);
			goto sys_fail;
		}
		child[i] = fcntl(pair[1], F_DUPFD_CLOEXEC, SPARE_FD_MIN);
		(void)close(pair[1]);
		if (child[i] < 0)
			goto sys_fail;
	}
	snprintf(kbuf, sizeof(kbuf), "%u", h->k);
	argv[0] = (char *)HELPER_NAME;
	argv[1] = (char *)"--channels";
	argv[2] = kbuf;
	argv[3] = h->module;
	argv[4] = NULL;
	if (spawn_actions(&fa, child, h->k) != 0)
		goto sys_fail;
	/* The agent blocks its signals for signalfd; the helper must not
	 * inherit that (SIGTERM has to end it). */
	sigemptyset(&none);
	if (posix_spawnattr_init(&attr) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		goto sys_fail;
	}
	(void)posix_spawnattr_setsigmask(&attr, &none);
	(void)posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	errno = posix_spawn(&in->pid, h->bin, &fa, &attr, argv, h->envp);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	if (errno != 0) {
		in->pid = -1;
		snprintf(err, err_len, "cannot start %s: %s", h->bin, strerror(errno));
		r = MTLS_ERR_TOKEN;
		goto out;
	}
	in->gen = h->gen;
	in->refs = 1; /* held by h->cur */
	*out = in;
	in = NULL;
	r = 0;
	goto out;
sys_fail:
	snprintf(err, err_len, "cannot start %s: %s", h->bin, strerror(errno));
out:
	for (i = 0; i < h->k; i++)
		if (child[i] >= 0)
			(void)close(child[i]);
	if (in != NULL)
		inst_close(in);
	return r;
}

/* Marks the instance dead, kills and reaps it (once), and says why. */
static void
inst_kill(struct helper *h, struct inst *in, const char *why)
{
	pid_t pid;
	int status = 0;

	pthread_mutex_lock(&h->lock);
	pid = in->dead ? -1 : in->pid;
	in->dead = 1;
	in->pid = -1;
	if (h->cur == in) {
		/* Logins die with it: the generation changes now, so the
		 * token layer does not use its handles on the next helper. */
		h->cur = NULL;
		h->gen++;
		inst_put(in);
	}
	pthread_cond_broadcast(&h->freed);
	pthread_mutex_unlock(&h->lock);
	if (pid < 0)
		return;
	(void)kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
		warn("PKCS#11 helper pid %ld died of signal %d (%s); it is started again, "
		     "tokens need login again",
		     (long)pid, WTERMSIG(status), why);
	else if (WIFEXITED(status))
		warn("PKCS#11 helper pid %ld exited with status %d (%s); it is started again, "
		     "tokens need login again",
		     (long)pid, WEXITSTATUS(status), why);
	else
		warn("PKCS#11 helper pid %ld killed: %s; it is started again, tokens need login "
		     "again",
		     (long)pid, why);
}

static void
deadline_after(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static int
ms_left(const struct timespec *deadline)
{
	struct timespec now;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
	return ms < 1 ? 1 : ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

/* Takes a free channel of the current instance (starting one if needed). */
static int
take_channel(struct helper *h, const struct timespec *deadline, struct inst **inp,
	     unsigned int *chp, struct msg_p11_error *fail)
{
	char err[256];
	unsigned int i;
	int r = 0;

	pthread_mutex_lock(&h->lock);
	for (;;) {
		if (h->cur == NULL) {
			if ((r = spawn(h, &h->cur, err, sizeof(err))) != 0) {
				error("%s", err);
				fail->message = strdup(err);
				break;
			}
			info("PKCS#11 helper started: pid %ld, generation %u", (long)h->cur->pid,
			     h->cur->gen);
		}
		for (i = 0; i < h->cur->k && h->cur->busy[i]; i++)
			;
		if (i < h->cur->k) {
			h->cur->busy[i] = 1;
			h->cur->refs++;
			*inp = h->cur;
			*chp = i;
			break;
		}
		if (pthread_cond_timedwait(&h->freed, &h->lock, deadline) == ETIMEDOUT) {
			r = MTLS_ERR_TIMEOUT;
			break;
		}
	}
	pthread_mutex_unlock(&h->lock);
	return r;
}

static void
give_channel(struct helper *h, struct inst *in, unsigned int ch)
{
	pthread_mutex_lock(&h->lock);
	in->busy[ch] = 0;
	inst_put(in);
	pthread_cond_broadcast(&h->freed);
	pthread_mutex_unlock(&h->lock);
}

static unsigned long long
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
}

/*
 * Busy-polls for a reply that should come within a few tens of
 * microseconds, instead of sleeping: waking a halted virtual CPU costs
 * about as much as a P-256 signature.  Only as many channels spin at once
 * as spin.h allows for the CPUs we and the helper may use now, and never
 * for slow replies.  When the helper can only run on this thread's CPU
 * (both pinned to one), the cap is 0: a spin there keeps the helper from
 * signing, and sleeping is what lets it run.
 */
static void
spin_for_reply(struct helper *h, struct inst *in, unsigned int ch)
{
	unsigned int budget = in->last_us[ch] * 2;
	int go;

	if (budget == 0 || in->last_us[ch] > SPIN_BUDGET_MAX_US)
		return;
	if (budget > SPIN_BUDGET_MAX_US)
		budget = SPIN_BUDGET_MAX_US;
	pthread_mutex_lock(&h->lock);
	if ((go = h->spinning < spin_place_cap(&h->place, in->pid, spin_now_us())))
		h->spinning++;
	pthread_mutex_unlock(&h->lock);
	if (!go)
		return;
	(void)spin_wait(&in->spin[ch], in->fd[ch], &in->rx[ch], budget);
	pthread_mutex_lock(&h->lock);
	h->spinning--;
	pthread_mutex_unlock(&h->lock);
}

/* Reads the reply: the expected type, or P11_ERROR decoded into fail. */
static int
reply_type(struct wbuf *reply, uint8_t want, struct msg_p11_error *fail, int *garbage)
{
	struct msg_p11_error e;
	uint8_t type;
	int r;

	*garbage = 1;
	if ((r = wbuf_get_u8(reply, &type)) != 0)
		return MTLS_ERR_TOKEN;
	if (type == want) {
		*garbage = 0;
		return 0;
	}
	if (type != P11_ERROR || msg_p11_error_get(reply, &e) != 0)
		return MTLS_ERR_TOKEN;
	*garbage = 0;
	fail->code = e.code;
	fail->retries = e.retries;
	fail->rv = e.rv;
	fail->message = e.message; /* the caller clears fail */
	return e.code;
}

int
helper_call(struct helper *h, const struct wbuf *req, struct wbuf *reply,
	    struct msg_p11_error *fail, unsigned int *gen)
{
	struct timespec deadline;
	struct inst *in = NULL;
	unsigned int ch = 0;
	unsigned long long t0;
	char why[128];
	int r, garbage = 0;
	uint8_t want;

	memset(fail, 0, sizeof(*fail));
	fail->retries = -1;
	if (wbuf_len(req) == 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	want = wbuf_ptr(req)[0] | MSG_REPLY;
	deadline_after(&deadline, h->timeout_ms);
	if ((r = take_channel(h, &deadline, &in, &ch, fail)) != 0)
		return r;
	if (gen != NULL)
		*gen = in->gen;
	t0 = mono_us();
	if ((r = frame_write(in->fd[ch], req, ms_left(&deadline))) == 0) {
		spin_for_reply(h, in, ch);
		/*
		 * One blocking recv, bounded by the channel's SO_RCVTIMEO of
		 * token-timeout; after a long wait for the channel the time
		 * left is shorter than that, and recv + poll keep to it.
		 */
		if (ms_left(&deadline) >= h->timeout_ms - RCVTIMEO_SLACK_MS)
			r = frame_read_timed(in->fd[ch], &in->rx[ch], reply, MTLS_FRAME_MAX,
					     ms_left(&deadline));
		else
			r = frame_read(in->fd[ch], &in->rx[ch], reply, MTLS_FRAME_MAX,
				       ms_left(&deadline), ms_left(&deadline));
	}
	in->last_us[ch] = (unsigned int)(mono_us() - t0);
	if (r == 0)
		r = reply_type(reply, want, fail, &garbage);
	else if (r == MTLS_ERR_TIMEOUT) {
		snprintf(why, sizeof(why), "no answer within %d ms", h->timeout_ms);
		inst_kill(h, in, why);
	} else {
		inst_kill(h, in, "its channel closed");
		r = MTLS_ERR_TOKEN;
	}
	if (garbage) {
		inst_kill(h, in, "it answered a malformed reply");
		r = MTLS_ERR_TOKEN;
	}
	give_channel(h, in, ch);
	return r;
}

int
helper_start(const char *bin, const char *module, unsigned int channels, int timeout_ms,
	     struct helper **out, char *err, size_t err_len)
{
	struct helper *h;
	const char *env_bin;
	int r;

	*out = NULL;
	if (channels == 0 || channels > CHANNELS_MAX || timeout_ms <= 0)
		return MTLS_ERR_INVALID_ARGUMENT;
	if (bin == NULL && (env_bin = getenv("MTLS_P11_HELPER_BIN")) != NULL && *env_bin != '\0')
		bin = env_bin;
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return MTLS_ERR_ALLOC;
	h->k = channels;
	h->gen = 1;
	h->timeout_ms = timeout_ms;
	if (pthread_mutex_init(&h->lock, NULL) != 0) {
		free(h);
		return MTLS_ERR_ALLOC;
	}
	pthread_condattr_t ca;

	if (pthread_condattr_init(&ca) != 0 ||
	    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&h->freed, &ca) != 0) {
		pthread_mutex_destroy(&h->lock);
		free(h);
		return MTLS_ERR_ALLOC;
	}
	pthread_condattr_destroy(&ca);
	if (bin != NULL)
		h->bin = strdup(bin);
	else if (asprintf(&h->bin, "%s/%s", LIBEXECDIR, HELPER_NAME) < 0)
		h->bin = NULL;
	h->module = strdup(module);
	h->envp = build_env();
	if (h->bin == NULL || h->module == NULL || h->envp == NULL) {
		helper_free(h);
		return MTLS_ERR_ALLOC;
	}
	pthread_mutex_lock(&h->lock);
	r = spawn(h, &h->cur, err, err_len);
	pthread_mutex_unlock(&h->lock);
	if (r != 0) {
		helper_free(h);
		return r;
	}
	*out = h;
	return 0;
}

void
helper_free(struct helper *h)
{
	struct inst *in;

	if (h == NULL)
		return;
	/* Not inst_kill(): this is no failure to report.  Closing the
	 * channels ends a healthy helper; SIGKILL one that hangs. */
	pthread_mutex_lock(&h->lock);
	in = h->cur;
	h->cur = NULL;
	pthread_mutex_unlock(&h->lock);
	if (in != NULL) {
		pid_t pid = in->pid;

		in->dead = 1;
		(void)kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		inst_close(in);
	}
	pthread_cond_destroy(&h->freed);
	pthread_mutex_destroy(&h->lock);
	free(h->bin);
	free(h->module);
	free(h->envp);
	free(h);
}

unsigned int
helper_generation(struct helper *h)
{
	unsigned int g;

	pthread_mutex_lock(&h->lock);
	g = h->gen;
	pthread_mutex_unlock(&h->lock);
	return g;
}

int
helper_pid(struct helper *h)
{
	int pid;

	pthread_mutex_lock(&h->lock);
	pid = h->cur != NULL ? (int)h->cur->pid : -1;
	pthread_mutex_unlock(&h->lock);
	return pid;
}
