/*
 * agent_fixture.c - the SoftHSM2 fixture and agent processes for the
 * integration tests (see agent_fixture.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_fixture.h"

#define READY_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS	 5000

static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int
copy_str(char *dst, size_t len, const char *src)
{
	if (src == NULL || strlen(src) >= len)
		return -1;
	memcpy(dst, src, strlen(src) + 1);
	return 0;
}

/* An absolute path for a file named by env `name` or `fallback` (relative
 * to the current directory: the build tree when run by hand). */
static int
tool_path(const char *name, const char *fallback, char *buf, size_t len)
{
	const char *v = getenv(name);
	char *abs;

	if (v == NULL || *v == '\0')
		v = fallback;
	if ((abs = realpath(v, NULL)) == NULL) {
		/* Not there (yet); keep the name so the error shows it. */
		return copy_str(buf, len, v);
	}
	if (copy_str(buf, len, abs) != 0) {
		free(abs);
		return -1;
	}
	free(abs);
	return 0;
}

static void
remember(struct agent_fixture *f, pid_t pid)
{
	size_t i;

	for (i = 0; i < FIXTURE_MAX_PROCS; i++) {
		if (f->pids[i] == 0) {
			f->pids[i] = pid;
			return;
		}
	}
	fprintf(stderr, "agent_fixture: more than %d processes; %ld not tracked\n",
		FIXTURE_MAX_PROCS, (long)pid);
}

static void
forget(struct agent_fixture *f, pid_t pid)
{
	size_t i;

	if (f == NULL)
		return;
	for (i = 0; i < FIXTURE_MAX_PROCS; i++)
		if (f->pids[i] == pid)
			f->pids[i] = 0;
}

/* Reaps the agent if it exited; 1 if it did (or was already reaped). */
static int
reap(struct agent_proc *p, int block)
{
	pid_t r;
	int st;

	if (p->pid <= 0)
		return 1;
	do {
		r = waitpid(p->pid, &st, block ? 0 : WNOHANG);
	} while (r == -1 && errno == EINTR);
	if (r == 0)
		return 0;
	if (r == p->pid) {
		p->status = st;
		p->reaped = 1;
	} else {
		/* ECHILD: somebody else reaped it; nothing more to learn. */
		p->status = 0;
		p->reaped = 0;
	}
	forget(p->f, p->pid);
	p->pid = 0;
	if (p->out_fd != -1) {
		close(p->out_fd);
		p->out_fd = -1;
	}
	return 1;
}

/*
 * env.sh holds lines `export NAME='value'` (single quotes, with ' written
 * as '\'').  A tiny shell-word parser, enough for what the script writes.
 */
static int
load_env(const char *path)
{
	char *text, *line, *save = NULL, *eq, *s, *d;

	if ((text = fixture_read_file(path, NULL)) == NULL) {
		fprintf(stderr, "agent_fixture: cannot read %s\n", path);
		return -1;
	}
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "export ", 7) != 0 || (eq = strchr(line + 7, '=')) == NULL)
			continue;
		*eq = '\0';
		/* Unquote in place: d never overtakes s. */
		for (s = d = eq + 1; *s != '\0' && *s != ' ' && *s != ';';) {
			if (*s == '\'') {
				for (s++; *s != '\0' && *s != '\'';)
					*d++ = *s++;
				if (*s == '\'')
					s++;
			} else if (*s == '\\' && s[1] != '\0') {
				*d++ = s[1];
				s += 2;
			} else {
				*d++ = *s++;
			}
		}
		*d = '\0';
		if (setenv(line + 7, eq + 1, 1) != 0) {
			free(text);
			return -1;
		}
	}
	free(text);
	return 0;
}

int
fixture_path(const struct agent_fixture *f, const char *name, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", f->dir, name);

	return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

int
fixture_unique_path(struct agent_fixture *f, const char *prefix, const char *suffix, char *buf,
		    size_t len)
{
	int n = snprintf(buf, len, "%s/%s-%u%s", f->dir, prefix, ++f->seq,
			 suffix != NULL ? suffix : "");

	return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

int
fixture_write_file(const char *path, const char *text, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t len = strlen(text), off = 0;
	ssize_t n;
	int fd, r = -1;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	(void)unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) == -1) {
		fprintf(stderr, "agent_fixture: %s: %s\n", tmp, strerror(errno));
		return -1;
	}
	while (off < len) {
		if ((n = write(fd, text + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "agent_fixture: %s: %s\n", tmp, strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	/* open() applied the umask; the tests need the exact mode. */
	if (fchmod(fd, mode) != 0 || close(fd) != 0) {
		fd = -1;
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		fprintf(stderr, "agent_fixture: %s: %s\n", path, strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (fd != -1)
		close(fd);
	if (r != 0)
		(void)unlink(tmp);
	return r;
}

char *
fixture_read_file(const char *path, size_t *lenp)
{
	char *buf = NULL, *nbuf;
	size_t len = 0, cap = 0;
	ssize_t n;
	int fd;

	if (lenp != NULL)
		*lenp = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	for (;;) {
		if (cap - len < 4096) {
			if ((nbuf = realloc(buf, cap + 8192)) == NULL)
				goto fail;
			buf = nbuf;
			cap += 8192;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto fail;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	if (lenp != NULL)
		*lenp = len;
	return buf;
fail:
	close(fd);
	free(buf);
	return NULL;
}

int
fixture_run(const char *const *argv)
{
	pid_t pid, r;
	int st;

	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0) {
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "agent_fixture: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	do {
		r = waitpid(pid, &st, 0);
	} while (r == -1 && errno == EINTR);
	if (r != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "agent_fixture: %s failed\n", argv[0]);
		return -1;
	}
	return 0;
}

int
fixture_setup(struct agent_fixture *f)
{
	const char *tmpdir = getenv("TMPDIR");
	char script[PATH_MAX], env_path[PATH_MAX];
	const char *v;

	memset(f, 0, sizeof(*f));
	if (tmpdir == NULL || *tmpdir == '\0')
		tmpdir = "/tmp";
	if (snprintf(f->dir, sizeof(f->dir), "%s/mtls-agent-test.XXXXXX", tmpdir) >=
		(int)sizeof(f->dir) ||
	    mkdtemp(f->dir) == NULL) {
		fprintf(stderr, "agent_fixture: mkdtemp in %s: %s\n", tmpdir, strerror(errno));
		f->dir[0] = '\0';
		return -1;
	}
	if (tool_path("MTLS_FIXTURE_SETUP", "tests/fixtures/softhsm-setup.sh", script,
		      sizeof(script)) != 0 ||
	    tool_path("MTLS_AGENT_BIN", "src/agent/mtls-agent", f->agent_bin,
		      sizeof(f->agent_bin)) != 0 ||
	    tool_path("MTLS_LOCKOUT_MODULE", "tests/fixtures/.libs/p11-lockout.so",
		      f->lockout_module, sizeof(f->lockout_module)) != 0)
		goto fail;
	{
		const char *argv[] = { script, f->dir, NULL };

		if (fixture_run(argv) != 0) {
			fprintf(stderr, "agent_fixture: %s %s failed\n", script, f->dir);
			goto fail;
		}
	}
	if (fixture_path(f, "env.sh", env_path, sizeof(env_path)) != 0 || load_env(env_path) != 0)
		goto fail;
	if ((v = getenv("MTLS_TEST_MODULE")) == NULL ||
	    copy_str(f->module, sizeof(f->module), v) != 0 ||
	    (v = getenv("MTLS_TEST_TOKEN")) == NULL ||
	    copy_str(f->token, sizeof(f->token), v) != 0 || (v = getenv("MTLS_TEST_PIN")) == NULL ||
	    copy_str(f->pin, sizeof(f->pin), v) != 0) {
		fprintf(stderr, "agent_fixture: %s lacks MTLS_TEST_MODULE/TOKEN/PIN\n", env_path);
		goto fail;
	}
	/* Any agent reading $MTLS_AGENT_SOCK must get the one a test names. */
	unsetenv("MTLS_AGENT_SOCK");
	return 0;
fail:
	fixture_teardown(f);
	return -1;
}

void
fixture_kill_all(struct agent_fixture *f)
{
	size_t i;
	pid_t r;

	for (i = 0; i < FIXTURE_MAX_PROCS; i++) {
		if (f->pids[i] <= 0)
			continue;
		(void)kill(f->pids[i], SIGKILL);
		do {
			r = waitpid(f->pids[i], NULL, 0);
		} while (r == -1 && errno == EINTR);
		f->pids[i] = 0;
	}
}

void
fixture_teardown(struct agent_fixture *f)
{
	fixture_kill_all(f);
	if (f->dir[0] != '\0' && getenv("MTLS_TEST_KEEP") == NULL) {
		const char *argv[] = { "rm", "-rf", f->dir, NULL };

		(void)fixture_run(argv);
	} else if (f->dir[0] != '\0') {
		fprintf(stderr, "agent_fixture: kept %s (MTLS_TEST_KEEP)\n", f->dir);
	}
	f->dir[0] = '\0';
}

static int
write_config(struct agent_proc *p, const char *text)
{
	struct agent_fixture *f = p->f;
	char *all;
	int r;

	if (asprintf(&all, "# written by agent_fixture.c\nmodule = %s\ntoken = pkcs11:token=%s\n%s",
		     f->module, f->token, text) == -1)
		return -1;
	r = fixture_write_file(p->config, all, 0600);
	free(all);
	return r;
}

int
agent_write_config(struct agent_proc *p, const char *text)
{
	if (p->config[0] == '\0') {
		fprintf(stderr, "agent_fixture: agent was started without a config file\n");
		return -1;
	}
	return write_config(p, text);
}

static int
has_arg(const char *const *args, const char *name)
{
	size_t i;

	for (i = 0; args != NULL && args[i] != NULL; i++)
		if (strcmp(args[i], name) == 0)
			return 1;
	return 0;
}

/* In the child: wire up stdout/stderr, drop privileges, exec.  Never
 * returns. */
static void
exec_agent(const struct agent_opts *o, char *const *argv, int out_fd, int log_fd)
{
	long fd, max;
	size_t i;

	if (dup2(out_fd, STDOUT_FILENO) == -1 || dup2(log_fd, STDERR_FILENO) == -1)
		_exit(126);
	(void)close(STDIN_FILENO);
	if (open("/dev/null", O_RDONLY) != STDIN_FILENO)
		_exit(126);
	/* The agent must not inherit the test's client sockets. */
	max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (fd = 3; fd < max; fd++)
		(void)close((int)fd);
	for (i = 0; o->env != NULL && o->env[i] != NULL; i++)
		if (putenv((char *)o->env[i]) != 0)
			_exit(126);
	if (o->set_user &&
	    (setgroups(0, NULL) != 0 || setgid(o->gid) != 0 || setuid(o->uid) != 0)) {
		fprintf(stderr, "agent_fixture: cannot become %ld:%ld: %s\n", (long)o->uid,
			(long)o->gid, strerror(errno));
		_exit(126);
	}
	signal(SIGPIPE, SIG_DFL);
	execv(argv[0], argv);
	fprintf(stderr, "agent_fixture: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Parses "NAME=value; export NAME;" into buf; 1 if the line matched. */
static int
announced(const char *line, const char *name, char *buf, size_t len)
{
	size_t nlen = strlen(name), vlen;
	const char *v, *end;

	if (strncmp(line, name, nlen) != 0 || line[nlen] != '=')
		return 0;
	v = line + nlen + 1;
	if ((end = strchr(v, ';')) == NULL)
		end = v + strlen(v);
	vlen = (size_t)(end - v);
	if (vlen == 0 || vlen >= len)
		return 0;
	memcpy(buf, v, vlen);
	buf[vlen] = '\0';
	return 1;
}

/*
 * Reads the agent's stdout until it announced socket and pid, it exits,
 * or the deadline passes.
 */
static int
wait_ready(struct agent_proc *p)
{
	char buf[4096], *nl, *line, pidbuf[32];
	size_t have = 0;
	long deadline = now_ms() + READY_TIMEOUT_MS, left;
	int got_sock = 0, got_pid = 0;
	struct pollfd pfd;
	ssize_t n;

	p->sock[0] = '\0';
	while (!got_sock || !got_pid) {
		if ((left = deadline - now_ms()) <= 0) {
			fprintf(stderr,
				"agent_fixture: agent did not announce its socket within %d ms\n",
				READY_TIMEOUT_MS);
			return -1;
		}
		pfd.fd = p->out_fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)left) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (pfd.revents == 0)
			continue;
		if (have >= sizeof(buf) - 1)
			have = 0; /* an absurd line; drop it */
		n = read(p->out_fd, buf + have, sizeof(buf) - 1 - have);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "agent_fixture: agent closed stdout before it was ready\n");
			return -1;
		}
		have += (size_t)n;
		buf[have] = '\0';
		while ((nl = strchr(buf, '\n')) != NULL) {
			*nl = '\0';
			line = buf;
			if (announced(line, "MTLS_AGENT_SOCK", p->sock, sizeof(p->sock)))
				got_sock = 1;
			else if (announced(line, "MTLS_AGENT_PID", pidbuf, sizeof(pidbuf)))
				got_pid = 1;
			have -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, have + 1);
		}
	}
	if (strtol(pidbuf, NULL, 10) != (long)p->pid)
		fprintf(stderr, "agent_fixture: agent announced pid %s, forked %ld\n", pidbuf,
			(long)p->pid);
	return 0;
}

int
agent_start_opts(struct agent_fixture *f, const struct agent_opts *o, struct agent_proc *p)
{
	const char *argv[64];
	char sock[PATH_MAX];
	size_t argc = 0, i;
	int pipefd[2] = { -1, -1 }, log_fd = -1;
	pid_t pid;

	memset(p, 0, sizeof(*p));
	p->f = f;
	p->out_fd = -1;
	if (fixture_unique_path(f, "agent", ".log", p->log, sizeof(p->log)) != 0)
		return -1;

	argv[argc++] = o->agent_bin != NULL ? o->agent_bin : f->agent_bin;
	argv[argc++] = "--foreground";
	argv[argc++] = "--debug";
	if (o->config_text != NULL) {
		if (fixture_unique_path(f, "agent", ".conf", p->config, sizeof(p->config)) != 0 ||
		    write_config(p, o->config_text) != 0)
			return -1;
		argv[argc++] = "--config";
		argv[argc++] = p->config;
	} else {
		if (!o->default_module && !has_arg(o->args, "--module")) {
			argv[argc++] = "--module";
			argv[argc++] = f->module;
		}
		if (!has_arg(o->args, "--token")) {
			argv[argc++] = "--token";
			argv[argc++] = "pkcs11:token=mtls-test";
		}
	}
	if (!has_arg(o->args, "--socket")) {
		/* A fresh directory per agent; the agent creates it 0700. */
		if (fixture_unique_path(f, "run", "/agent.sock", sock, sizeof(sock)) != 0)
			return -1;
		argv[argc++] = "--socket";
		argv[argc++] = sock;
	}
	for (i = 0; o->args != NULL && o->args[i] != NULL; i++) {
		if (argc >= sizeof(argv) / sizeof(argv[0]) - 3)
			return -1;
		argv[argc++] = o->args[i];
	}
	/* The test shim lives in the build tree, outside the agent's default
	 * module directories: allow its directory too. */
	if (!has_arg(o->args, "--module-dirs") && !has_arg(o->args, "--config")) {
		static char dirs[2 * PATH_MAX];
		const char *slash = strrchr(f->lockout_module, '/');

		for (i = 0; o->args != NULL && o->args[i] != NULL; i++) {
			if (slash != NULL && strcmp(o->args[i], f->lockout_module) == 0) {
				snprintf(dirs, sizeof(dirs), "/usr/lib:/usr/lib64:/lib:/lib64:%.*s",
					 (int)(slash - f->lockout_module), f->lockout_module);
				argv[argc++] = "--module-dirs";
				argv[argc++] = dirs;
				break;
			}
		}
	}
	argv[argc] = NULL;

	if ((log_fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) == -1 ||
	    pipe2(pipefd, O_CLOEXEC) == -1) {
		fprintf(stderr, "agent_fixture: %s: %s\n", p->log, strerror(errno));
		goto fail;
	}
	fflush(NULL);
	if ((pid = fork()) == -1)
		goto fail;
	if (pid == 0)
		exec_agent(o, (char *const *)argv, pipefd[1], log_fd);
	p->pid = pid;
	remember(f, pid);
	close(pipefd[1]);
	close(log_fd);
	p->out_fd = pipefd[0];

	if (wait_ready(p) != 0) {
		/* Give an agent that is on its way out a moment to finish, so
		 * the caller can look at its exit status. */
		long deadline = now_ms() + 2000;

		while (!reap(p, 0) && now_ms() < deadline)
			sleep_ms(10);
		if (p->pid != 0) {
			(void)kill(p->pid, SIGKILL);
			(void)reap(p, 1);
		}
		return -1;
	}
	return 0;
fail:
	if (log_fd != -1)
		close(log_fd);
	if (pipefd[0] != -1)
		close(pipefd[0]);
	if (pipefd[1] != -1)
		close(pipefd[1]);
	return -1;
}

int
agent_start(struct agent_fixture *f, const char *extra_config_text, const char *const *extra_args,
	    struct agent_proc *p)
{
	struct agent_opts o = { .config_text = extra_config_text, .args = extra_args };

	return agent_start_opts(f, &o, p);
}

int
agent_signal(struct agent_proc *p, int sig)
{
	if (p->pid <= 0)
		return -1;
	return kill(p->pid, sig);
}

int
agent_alive(struct agent_proc *p)
{
	return p->pid > 0 && !reap(p, 0);
}

int
agent_wait(struct agent_proc *p, int timeout_ms)
{
	long deadline = now_ms() + timeout_ms;

	for (;;) {
		if (reap(p, 0))
			return 0;
		if (now_ms() >= deadline)
			return -1;
		sleep_ms(10);
	}
}

int
agent_stop(struct agent_proc *p)
{
	if (p->pid <= 0)
		return -1;
	(void)kill(p->pid, SIGTERM);
	if (agent_wait(p, STOP_TIMEOUT_MS) != 0) {
		fprintf(stderr, "agent_fixture: agent %ld ignored SIGTERM for %d ms; killing it\n",
			(long)p->pid, STOP_TIMEOUT_MS);
		(void)kill(p->pid, SIGKILL);
		(void)reap(p, 1);
	}
	if (!p->reaped)
		return -1;
	if (WIFEXITED(p->status))
		return WEXITSTATUS(p->status);
	if (WIFSIGNALED(p->status))
		return 128 + WTERMSIG(p->status);
	return -1;
}

char *
agent_log(const struct agent_proc *p)
{
	char *s = fixture_read_file(p->log, NULL);

	return s != NULL ? s : strdup("");
}

int
agent_logged(const struct agent_proc *p, const char *needle)
{
	char *log = agent_log(p);
	int found = log != NULL && strstr(log, needle) != NULL;

	free(log);
	return found;
}

long
fixture_count_in_memory(pid_t pid, const char *needle)
{
	char path[64], line[512];
	size_t nlen = strlen(needle);
	long hits = 0;
	FILE *maps;
	int mem;

	snprintf(path, sizeof(path), "/proc/%ld/maps", (long)pid);
	if ((maps = fopen(path, "r")) == NULL)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/mem", (long)pid);
	if ((mem = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		fclose(maps);
		return -1;
	}
	while (fgets(line, sizeof(line), maps) != NULL) {
		unsigned long lo, hi;
		char perms[8];
		unsigned char *buf;
		ssize_t got, i;

		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r' ||
		    strstr(line, "[vvar") != NULL || hi - lo > 1024UL * 1024 * 1024)
			continue;
		if ((buf = malloc(hi - lo)) == NULL)
			continue;
		got = pread(mem, buf, hi - lo, (off_t)lo);
		for (i = 0; got > 0 && (size_t)got >= nlen && i <= got - (ssize_t)nlen; i++)
			if (buf[i] == (unsigned char)needle[0] &&
			    memcmp(buf + i, needle, nlen) == 0)
				hits++;
		free(buf);
	}
	close(mem);
	fclose(maps);
	return hits;
}
