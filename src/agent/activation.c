/*
 * activation.c - the socket of systemd's socket activation, and the
 * journal on stderr.  See activation.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "activation.h"
#include "log.h"
#include "mtls-agent.h"

/* A decimal number that fits in a long, nothing else around it. */
static int
parse_long(const char *s, long *out)
{
	char *end;
	long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int
sockopt_int(int fd, int opt, int *v)
{
	socklen_t len = sizeof(*v);

	return getsockopt(fd, SOL_SOCKET, opt, v, &len) == 0 && len == sizeof(*v) ? 0 : -1;
}

/* Checks that fd is what a socket unit with ListenStream=/path passes. */
static int
check_listening_unix(int fd, char **path, char *err, size_t err_len)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	struct stat st;
	int domain, type, listening;
	size_t n;

	if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
		snprintf(err, err_len, "socket activation: descriptor %d is not a socket", fd);
		return MTLS_ERR_CONFIG;
	}
	if (sockopt_int(fd, SO_DOMAIN, &domain) != 0 || domain != AF_UNIX ||
	    sockopt_int(fd, SO_TYPE, &type) != 0 || type != SOCK_STREAM) {
		snprintf(err, err_len,
			 "socket activation: descriptor %d is not an AF_UNIX stream socket "
			 "(the socket unit needs ListenStream=/path)",
			 fd);
		return MTLS_ERR_CONFIG;
	}
	if (sockopt_int(fd, SO_ACCEPTCONN, &listening) != 0 || !listening) {
		snprintf(err, err_len,
			 "socket activation: descriptor %d is not listening "
			 "(the socket unit must not set Accept=yes)",
			 fd);
		return MTLS_ERR_CONFIG;
	}
	memset(&sun, 0, sizeof(sun));
	if (getsockname(fd, (struct sockaddr *)&sun, &len) != 0 ||
	    len <= offsetof(struct sockaddr_un, sun_path) || sun.sun_path[0] != '/') {
		snprintf(err, err_len, "socket activation: descriptor %d is not bound to a path",
			 fd);
		return MTLS_ERR_CONFIG;
	}
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (n >= sizeof(sun.sun_path))
		n = sizeof(sun.sun_path) - 1;
	sun.sun_path[n] = '\0';
	if ((*path = strdup(sun.sun_path)) == NULL)
		return MTLS_ERR_ALLOC;
	return 0;
}

/* Checks one passed descriptor and makes it close-on-exec. */
static int
take_fd(int fd, char **path, char *err, size_t err_len)
{
	int r, flags;

	if ((r = check_listening_unix(fd, path, err, err_len)) != 0)
		return r;
	if ((flags = fcntl(fd, F_GETFD)) < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) {
		snprintf(err, err_len, "socket activation: fcntl: %s", strerror(errno));
		free(*path);
		*path = NULL;
		return MTLS_ERR_IO;
	}
	return 0;
}

/* The index (0 or 1) of the descriptor LISTEN_FDNAMES names "ssh", or -1. */
static int
ssh_index(const char *names)
{
	const char *colon;

	if (names == NULL || (colon = strchr(names, ':')) == NULL || strchr(colon + 1, ':'))
		return -1;
	if (strcmp(colon + 1, "ssh") == 0 && strncmp(names, "ssh:", 4) != 0)
		return 1;
	if (strncmp(names, "ssh:", 4) == 0 && strcmp(colon + 1, "ssh") != 0)
		return 0;
	return -1;
}

int
activation_sockets(int *fd, char **path, int *ssh_fd, char **ssh_path, char *err, size_t err_len)
{
	const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
	long pid, nfds;
	int r = 0, si;

	*fd = -1;
	*path = NULL;
	if (ssh_fd != NULL) {
		*ssh_fd = -1;
		*ssh_path = NULL;
	}
	if (pid_s == NULL && fds_s == NULL)
		return 0;
	if (parse_long(pid_s, &pid) != 0 || pid != (long)getpid()) {
		/* Meant for another process (a parent that did not clear them). */
		debug("LISTEN_PID=%s is not our pid %ld: no socket activation", pid_s ? pid_s : "",
		      (long)getpid());
		goto out;
	}
	if (parse_long(fds_s, &nfds) != 0) {
		snprintf(err, err_len, "socket activation: LISTEN_FDS is not a number");
		r = MTLS_ERR_CONFIG;
		goto out;
	}
	if (nfds == 0)
		goto out;
	if (nfds == 2 && ssh_fd != NULL) {
		if ((si = ssh_index(getenv("LISTEN_FDNAMES"))) < 0) {
			snprintf(err, err_len,
				 "socket activation: 2 sockets passed, and LISTEN_FDNAMES does not "
				 "name exactly one of them \"ssh\" (FileDescriptorName=ssh of "
				 "mtls-agent-ssh.socket)");
			r = MTLS_ERR_CONFIG;
			goto out;
		}
		if ((r = take_fd(ACTIVATION_FD + 1 - si, path, err, err_len)) != 0)
			goto out;
		if ((r = take_fd(ACTIVATION_FD + si, ssh_path, err, err_len)) != 0) {
			free(*path);
			*path = NULL;
			goto out;
		}
		*fd = ACTIVATION_FD + 1 - si;
		*ssh_fd = ACTIVATION_FD + si;
		r = 1;
		goto out;
	}
	if (nfds != 1) {
		snprintf(err, err_len,
			 "socket activation: %ld sockets passed, the agent listens on one "
			 "(one ListenStream= in the socket unit)%s",
			 nfds, ssh_fd != NULL ? ", or two with mtls-agent-ssh.socket" : "");
		r = MTLS_ERR_CONFIG;
		goto out;
	}
	if ((r = take_fd(ACTIVATION_FD, path, err, err_len)) != 0)
		goto out;
	*fd = ACTIVATION_FD;
	r = 1;
out:
	(void)unsetenv("LISTEN_PID");
	(void)unsetenv("LISTEN_FDS");
	(void)unsetenv("LISTEN_FDNAMES");
	return r;
}

int
activation_socket(int *fd, char **path, char *err, size_t err_len)
{
	return activation_sockets(fd, path, NULL, NULL, err, err_len);
}

int
activation_stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char tail;

	if (js == NULL || sscanf(js, "%llu:%llu%c", &dev, &ino, &tail) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}
