/*
 * confirm.c - running the askpass program.  See confirm.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "confirm.h"
#include "log.h"
#include "mtls-agent.h"
#include "secmem.h"

extern char **environ;

int
confirm_ask(const char *askpass, unsigned int timeout_s, const char *prompt, char *why,
	    size_t why_len)
{
	static const char prompt_env[] = "SSH_ASKPASS_PROMPT=confirm";
	char *const argv[] = { (char *)askpass, (char *)prompt, NULL };
	char **envp;
	size_t n = 0, k = 0, i;
	struct timespec tick = { 0, 20 * 1000 * 1000 };
	unsigned long waited_ms = 0;
	int status, devnull;
	pid_t pid, w;

	if (askpass == NULL) {
		snprintf(why, why_len,
			 "confirmation required but no askpass program is configured");
		return MTLS_ERR_CONFIRM_DENIED;
	}
	/* The environment is built before fork: the child of a threaded
	 * process may only make async-signal-safe calls. */
	while (environ != NULL && environ[n] != NULL)
		n++;
	if ((envp = calloc(n + 2, sizeof(*envp))) == NULL) {
		snprintf(why, why_len, "out of memory");
		return MTLS_ERR_CONFIRM_DENIED;
	}
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], "SSH_ASKPASS_PROMPT=", 19) != 0)
			envp[k++] = environ[i];
	envp[k] = (char *)prompt_env;
	if ((pid = fork()) < 0) {
		free(envp);
		snprintf(why, why_len, "cannot run %s: %s", askpass, strerror(errno));
		return MTLS_ERR_CONFIRM_DENIED;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls between fork and exec. */
		sigset_t none;

		sigemptyset(&none);
		pthread_sigmask(SIG_SETMASK, &none, NULL);
		if ((devnull = open("/dev/null", O_RDWR)) >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			if (devnull > 2)
				close(devnull);
		}
		execve(askpass, argv, envp);
		_exit(127);
	}
	free(envp);
	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			snprintf(why, why_len, "waiting for %s: %s", askpass, strerror(errno));
			return MTLS_ERR_CONFIRM_DENIED;
		}
		if (waited_ms >= (unsigned long)timeout_s * 1000) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			snprintf(why, why_len, "no confirmation within %u s", timeout_s);
			return MTLS_ERR_CONFIRM_DENIED;
		}
		nanosleep(&tick, NULL);
		waited_ms += 20;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		snprintf(why, why_len, "cannot run %s", askpass);
	else
		snprintf(why, why_len, "the user did not confirm");
	return MTLS_ERR_CONFIRM_DENIED;
}

/* Reaps pid, killing it once the deadline has passed; its status or -1. */
static int
reap(pid_t pid, const struct timespec *deadline)
{
	struct timespec tick = { 0, 20 * 1000 * 1000 }, now;
	int status;
	pid_t w;

	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			return status;
		if (w < 0 && errno != EINTR)
			return -1;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > deadline->tv_sec ||
		    (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec)) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			return -1;
		}
		nanosleep(&tick, NULL);
	}
}

int
confirm_read_pin(const char *askpass, unsigned int timeout_s, const char *prompt, char **pinp,
		 char *why, size_t why_len)
{
	char *const argv[] = { (char *)askpass, (char *)prompt, NULL };
	struct timespec deadline, now;
	struct pollfd pfd;
	char **envp = NULL, *buf = NULL;
	size_t n = 0, k = 0, i, len = 0;
	int fds[2] = { -1, -1 }, status, devnull, ms, r = MTLS_ERR_CONFIRM_DENIED;
	ssize_t got;
	pid_t pid;

	*pinp = NULL;
	if (askpass == NULL) {
		snprintf(why, why_len, "no askpass program is configured to ask for the PIN");
		return MTLS_ERR_CONFIRM_DENIED;
	}
	/* The PIN, a newline, and one byte more to see that it is too long. */
	if ((buf = mtls_secure_alloc(MTLS_AGENT_PIN_MAX + 3)) == NULL)
		return MTLS_ERR_ALLOC;
	while (environ != NULL && environ[n] != NULL)
		n++;
	if ((envp = calloc(n + 1, sizeof(*envp))) == NULL) {
		r = MTLS_ERR_ALLOC;
		goto out;
	}
	/* No SSH_ASKPASS_PROMPT: ssh-askpass programs then ask for a secret. */
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], "SSH_ASKPASS_PROMPT=", 19) != 0)
			envp[k++] = environ[i];
	if (pipe2(fds, O_CLOEXEC) != 0 || (pid = fork()) < 0) {
		snprintf(why, why_len, "cannot run %s: %s", askpass, strerror(errno));
		goto out;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls between fork and exec. */
		sigset_t none;

		sigemptyset(&none);
		pthread_sigmask(SIG_SETMASK, &none, NULL);
		if ((devnull = open("/dev/null", O_RDWR)) >= 0)
			dup2(devnull, 0);
		dup2(fds[1], 1);
		execve(askpass, argv, envp);
		_exit(127);
	}
	close(fds[1]);
	fds[1] = -1;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_s;
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (int)((deadline.tv_sec - now.tv_sec) * 1000 +
			   (deadline.tv_nsec - now.tv_nsec) / 1000000);
		if (ms <= 0 || poll(&pfd, 1, ms) == 0)
			break; /* reap() kills it */
		if ((got = read(fds[0], buf + len, MTLS_AGENT_PIN_MAX + 2 - len)) < 0 &&
		    errno == EINTR)
			continue;
		if (got <= 0 || (len += (size_t)got) >= MTLS_AGENT_PIN_MAX + 2)
			break;
	}
	status = reap(pid, &deadline);
	if (status == -1) {
		snprintf(why, why_len, "no PIN within %u s", timeout_s);
		goto out;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(why, why_len,
			 WIFEXITED(status) && WEXITSTATUS(status) == 127
			     ? "cannot run the askpass program"
			     : "the user gave no PIN");
		goto out;
	}
	/* One line: the PIN and its newline, nothing else. */
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (len == 0 || len > MTLS_AGENT_PIN_MAX || memchr(buf, '\0', len) != NULL ||
	    memchr(buf, '\n', len) != NULL) {
		snprintf(why, why_len, "the askpass program's answer is not a PIN");
		r = MTLS_ERR_PIN_INVALID;
		goto out;
	}
	buf[len] = '\0';
	*pinp = buf;
	buf = NULL;
	r = 0;
out:
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	free(envp);
	mtls_secure_free(buf);
	return r;
}
