/*
 * mtls-agentctl: reading PINs and passphrases: from the terminal with echo
 * off, an askpass program, standard input or a file, into locked memory.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "ctl.h"
#include "secmem.h"

static volatile sig_atomic_t tty_signal;

static void
tty_sig_handler(int sig)
{
	tty_signal = sig;
}

/*
 * Reads one line of at most PIN_MAX bytes from fd into pin (PIN_MAX + 2
 * bytes of secure memory), byte by byte so no stdio buffer ever holds it.
 * Returns 0, or -1 with errno set (E2BIG: line too long; EINTR: signal).
 */
int
read_pin_line(int fd, char *pin)
{
	size_t len = 0;
	int too_long = 0;
	ssize_t n;
	char ch;

	for (;;) {
		n = read(fd, &ch, 1);
		if (n == -1) {
			if (errno == EINTR && !tty_signal)
				continue;
			goto fail;
		}
		if (n == 0 || ch == '\n')
			break;
		if (len < PIN_MAX + 1)
			pin[len++] = ch;
		else
			too_long = 1;
	}
	ch = 0;
	if (len > 0 && pin[len - 1] == '\r')
		len--;
	pin[len] = '\0';
	if (too_long || len > PIN_MAX) {
		errno = E2BIG;
		goto fail;
	}
	return 0;
fail:
	mtls_wipe(pin, PIN_MAX + 2);
	return -1;
}

/*
 * The askpass program for a PIN when there is no terminal:
 * $MTLS_AGENT_ASKPASS, else $SSH_ASKPASS in a graphical session; NULL if
 * none.
 */
const char *
askpass_program(void)
{
	const char *p = getenv("MTLS_AGENT_ASKPASS");

	if (p != NULL && *p != '\0')
		return p;
	p = getenv("SSH_ASKPASS");
	if (p != NULL && *p != '\0' &&
	    (getenv("DISPLAY") != NULL || getenv("WAYLAND_DISPLAY") != NULL))
		return p;
	return NULL;
}

/*
 * Runs the askpass program with the prompt as its argument and reads the
 * PIN from the first line it prints.  Returns 0, or -1 with errno set:
 * ENOTTY when no program is configured, ECANCELED when it failed or was
 * cancelled (exit status not 0).
 */
static int
read_pin_askpass(const char *prompt, char *pin)
{
	const char *prog = askpass_program();
	int p[2], status, r, e = 0, devnull;
	pid_t pid;

	if (prog == NULL) {
		errno = ENOTTY;
		return -1;
	}
	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	if ((pid = fork()) == -1) {
		e = errno;
		close(p[0]);
		close(p[1]);
		errno = e;
		return -1;
	}
	if (pid == 0) {
		if ((devnull = open("/dev/null", O_RDONLY)) >= 0)
			(void)dup2(devnull, STDIN_FILENO);
		if (dup2(p[1], STDOUT_FILENO) == -1)
			_exit(127);
		execlp(prog, prog, prompt, (char *)NULL);
		fprintf(stderr, PROG ": cannot run the askpass program %s: %s\n", prog,
			strerror(errno));
		_exit(127);
	}
	close(p[1]);
	r = read_pin_line(p[0], pin);
	if (r != 0)
		e = errno;
	close(p[0]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (r == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
		mtls_wipe(pin, PIN_MAX + 2);
		r = -1;
		e = ECANCELED;
	}
	errno = e;
	return r;
}

/* What to tell a user who has no terminal, per command. */
const char *
no_terminal_hint(const char *cmd)
{
	if (strcmp(cmd, "lock") == 0 || strcmp(cmd, "unlock") == 0)
		return "no terminal to ask on: give it on standard input with --stdin, or set "
		       "MTLS_AGENT_ASKPASS to an askpass program";
	return "no terminal to ask on: give it with --pin-stdin or --pin-file FILE, or set "
	       "MTLS_AGENT_ASKPASS to an askpass program";
}

/* Prompts on /dev/tty and reads the PIN there with echo off; without a
 * terminal, asks the askpass program (read_pin_askpass). */
int
read_pin_tty(const char *prompt, char *pin)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU };
	struct sigaction sa, old[sizeof(sigs) / sizeof(sigs[0])];
	struct termios saved, noecho;
	int fd, r = -1, e = 0, restore = 0;
	size_t i;

	if ((fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)) == -1)
		return read_pin_askpass(prompt, pin);
	/* A signal while echo is off must not leave the terminal that way:
	 * catch it, restore the terminal, then deliver it again. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = tty_sig_handler;
	sigemptyset(&sa.sa_mask);
	tty_signal = 0;
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		(void)sigaction(sigs[i], &sa, &old[i]);
	if (tcgetattr(fd, &saved) == 0) {
		noecho = saved;
		noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
		noecho.c_lflag |= ECHONL;
		if (tcsetattr(fd, TCSAFLUSH, &noecho) == 0)
			restore = 1;
	}
	if (write(fd, prompt, strlen(prompt)) < 0) {
		e = errno;
		goto out;
	}
	if ((r = read_pin_line(fd, pin)) != 0)
		e = errno;
out:
	if (restore) {
		while (tcsetattr(fd, TCSAFLUSH, &saved) == -1 && errno == EINTR)
			;
	}
	close(fd);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		(void)sigaction(sigs[i], &old[i], NULL);
	if (tty_signal)
		raise(tty_signal);
	errno = e;
	return r;
}

int
read_pin_file(const char *path, char *pin)
{
	int fd, r, e;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	r = read_pin_line(fd, pin);
	e = errno;
	close(fd);
	errno = e;
	return r;
}

int
secret_src_open(struct secret_src *src, const char *cmd, int from_stdin, const char *file)
{
	src->cmd = cmd;
	src->fd = -1;
	src->from = "/dev/tty";
	if (from_stdin) {
		src->fd = STDIN_FILENO;
		src->from = "standard input";
	} else if (file != NULL) {
		if ((src->fd = open(file, O_RDONLY | O_CLOEXEC)) == -1) {
			errmsg(cmd, "cannot open %s: %s", file, strerror(errno));
			return EXIT_FAILED;
		}
		src->from = file;
	}
	return 0;
}

void
secret_src_close(struct secret_src *src)
{
	if (src->fd > STDIN_FILENO)
		close(src->fd);
	src->fd = -1;
}

/*
 * Reads one secret (what: "PIN", "passphrase"...) into buf, PIN_MAX + 2
 * bytes of secure memory.  Returns 0 or an exit code, the error
 * reported.
 */
int
read_secret(struct secret_src *src, const char *prompt, const char *what, char *buf)
{
	int r;

	if (src->fd == -1)
		r = read_pin_tty(prompt, buf);
	else
		r = read_pin_line(src->fd, buf);
	if (r == 0)
		return 0;
	if (errno == E2BIG)
		errmsg(src->cmd, "%s longer than %d bytes", what, PIN_MAX);
	else if (src->fd == -1 && errno == ENOTTY)
		errmsg(src->cmd, "cannot read the %s: %s", what, no_terminal_hint(src->cmd));
	else if (src->fd == -1 && errno == ECANCELED)
		errmsg(src->cmd, "the askpass program %s gave no %s", askpass_program(), what);
	else
		errmsg(src->cmd, "cannot read the %s from %s: %s", what, src->from,
		       strerror(errno));
	return EXIT_FAILED;
}

/*
 * On the terminal a new secret is typed twice; the copies must agree.
 * From standard input or a file it is read once.
 */
int
read_new_secret(struct secret_src *src, const char *prompt, const char *again, const char *what,
		char *buf, char *check)
{
	size_t len;
	int ret;

	if ((ret = read_secret(src, prompt, what, buf)) != 0 || src->fd != -1)
		return ret;
	if ((ret = read_secret(src, again, what, check)) != 0)
		return ret;
	len = strlen(buf);
	if (len != strlen(check) || mtls_memcmp_ct(buf, check, len) != 0) {
		errmsg(src->cmd, "the two %ss differ", what);
		return EXIT_FAILED;
	}
	return 0;
}

/*
 * What the prompts call the token, as in login: the identity named, else
 * the first identity's token.  *what_for is "<what> for <name>: ".
 */
int
prompts_for(mtls_agent *a, const char *identity, const char *const *what, char **what_for,
	    size_t n_what)
{
	struct mtls_agent_identity *ids = NULL;
	const char *who = identity;
	size_t n = 0, i;
	int r = 0;

	if ((who == NULL || *who == '\0') && mtls_agent_list(a, &ids, &n) == 0 && n > 0)
		who = ids[0].token_label;
	if (who == NULL || *who == '\0')
		who = "token";
	for (i = 0; i < n_what && r == 0; i++) {
		if (asprintf(&what_for[i], "%s for %s: ", what[i], safe(who)) == -1) {
			what_for[i] = NULL;
			r = MTLS_ERR_ALLOC;
		}
	}
	mtls_agent_identities_free(ids, n);
	return r;
}

int
pin_command_line(int argc, char **argv, const char *cmd, const char **identity, int *from_stdin,
		 const char **pin_file)
{
	static const struct option opts[] = { { "pin-stdin", no_argument, NULL, 'i' },
					      { "pin-file", required_argument, NULL, 'f' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	char synopsis[128];
	int c;

	*identity = *pin_file = NULL;
	*from_stdin = 0;
	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'i': *from_stdin = 1; break;
		case 'f': *pin_file = optarg; break;
		default:
			snprintf(synopsis, sizeof(synopsis),
				 "%s [IDENTITY] [--pin-stdin | --pin-file FILE]", cmd);
			return bad_option(cmd, argv, synopsis);
		}
	}
	if (*from_stdin && *pin_file != NULL)
		return usage_error(cmd, "--pin-stdin and --pin-file exclude each other");
	if (optind < argc)
		*identity = argv[optind++];
	if (optind != argc)
		return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	return 0;
}
