/*
 * mtls-agent-p11 - holds one PKCS#11 module for mtls-agent.
 *
 *   mtls-agent-p11 [--channels K] MODULE
 *
 * Started by the agent only (fork + exec, docs/PROTOCOL.md "Internal
 * protocol"): the K channels are stream sockets on fds 3 .. 3+K-1, fd 2
 * is the agent's log.  Every other fd is closed before the module is
 * loaded, so the module sees neither the agent's socket nor its clients.
 * The agent chooses the environment (SOFTHSM2_CONF, P11_KIT_*, HOME,
 * XDG_*; see the documentation).  Exits when every channel is closed.
 */
#include "config.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "p11.h"
#include "spin.h"

#define CHANNELS_MAX 64
#define FIRST_FD     3

static int
harden(void)
{
	struct rlimit no = { 0, 0 };

	/* No core file, no ptrace by the same uid: the module holds the
	 * logged-in token and, for a moment, the PIN. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &no) != 0)
		return -1;
	return 0;
}

static void
close_others(int first_free)
{
	int fd;

	/* close_range(2) is not everywhere yet; the loop is cheap enough
	 * once, at start. */
	for (fd = first_free; fd < 1024; fd++)
		(void)close(fd);
}

/* Is fd a socket (what the agent promised)? */
static int
is_socket(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/*
 * Starts each channel's thread when its first request (or EOF) arrives:
 * the agent takes the lowest free channel, so with few clients most of the
 * K channels are never used, and a thread costs its stack pages and, once
 * it allocates, malloc state.  Returns once every thread is started, -1 if
 * one could not be.
 */
static int
start_channels(struct p11_channel *ch, pthread_t *th, pthread_attr_t *attr, int k)
{
	struct pollfd *pfd;
	int i, n, left = k, r = -1;

	if ((pfd = calloc((size_t)k, sizeof(*pfd))) == NULL)
		return -1;
	for (i = 0; i < k; i++) {
		pfd[i].fd = ch[i].fd;
		pfd[i].events = POLLIN;
	}
	while (left > 0) {
		if ((n = poll(pfd, (nfds_t)k, -1)) < 0) {
			if (errno == EINTR)
				continue;
			error("poll: %s", strerror(errno));
			goto out;
		}
		for (i = 0; i < k && n > 0; i++) {
			if (pfd[i].fd < 0 || pfd[i].revents == 0)
				continue;
			n--;
			/* Negative: poll() skips it from now on. */
			pfd[i].fd = -1;
			left--;
			if (pthread_create(&th[i], attr, p11_serve, &ch[i]) != 0) {
				error("cannot start channel thread");
				goto out;
			}
		}
	}
	r = 0;
out:
	free(pfd);
	return r;
}

static int
usage(void)
{
	fprintf(stderr, "usage: mtls-agent-p11 [--channels K] MODULE\n"
			"(started by mtls-agent; not meant to be run by hand)\n");
	return 2;
}

int
main(int argc, char **argv)
{
	static struct p11_state st;
	struct p11_channel *ch = NULL;
	pthread_t *th = NULL;
	pthread_attr_t attr;
	unsigned long k = 1;
	char err[512], *end;
	int i, argi = 1, rc = 1;

	log_init("mtls-agent-p11", 0, LOG_LEVEL_INFO);
	/* A vanished agent is an error on the channel, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	if (argc - argi >= 2 && strcmp(argv[argi], "--channels") == 0) {
		errno = 0;
		k = strtoul(argv[argi + 1], &end, 10);
		if (errno != 0 || *end != '\0' || k == 0 || k > CHANNELS_MAX)
			return usage();
		argi += 2;
	}
	if (argc - argi != 1)
		return usage();
	if (harden() != 0) {
		error("cannot disable core dumps: %s", strerror(errno));
		return 1;
	}
	close_others(FIRST_FD + (int)k);
	for (i = 0; i < (int)k; i++)
		if (!is_socket(FIRST_FD + i)) {
			error("fd %d is not a channel socket", FIRST_FD + i);
			return 1;
		}
	if (pthread_mutex_init(&st.lock, NULL) != 0 ||
	    p11_module_load(&st.mod, argv[argi], err, sizeof(err)) != 0) {
		error("%s", err);
		return 1;
	}
	/*
	 * One malloc arena per CPU we may use, not glibc's eight per core:
	 * each of the K channel threads would otherwise get an arena of its
	 * own (4 KiB idle, 50-100 KiB once it has signed), and at most one
	 * thread per CPU allocates at a time anyway.
	 */
	(void)mallopt(M_ARENA_MAX, spin_cpus_allowed(0));
	if ((ch = calloc(k, sizeof(*ch))) == NULL || (th = calloc(k, sizeof(*th))) == NULL ||
	    pthread_attr_init(&attr) != 0 || pthread_attr_setstacksize(&attr, 256 * 1024) != 0)
		goto out;
	for (i = 0; i < (int)k; i++) {
		ch[i].st = &st;
		ch[i].fd = FIRST_FD + i;
	}
	if (start_channels(ch, th, &attr, (int)k) != 0)
		goto out;
	for (i = 0; i < (int)k; i++)
		(void)pthread_join(th[i], NULL);
	rc = 0;
out:
	p11_module_unload(&st.mod);
	free(th);
	free(ch);
	return rc;
}
