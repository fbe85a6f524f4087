/*
 * confirm.c - running the askpass program.  See confirm.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
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
