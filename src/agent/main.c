/*
 * main.c - mtls-agent: options, configuration, hardening, start-up.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "activation.h"
#include "conf.h"
#include "log.h"
#include "mtls-agent.h"
#include "server.h"
#include "ssh.h"
#include "token.h"

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: mtls-agent [-f] [-d] [-c FILE] [-a SOCKET] [-M MODULE] [-t TOKEN-URI]\n"
		"                  [--allow-root] [--module-dirs DIRS] [--ssh-socket PATH|off]\n"
		"                  [--no-ssh-auth-sock]\n"
		"  -f, --foreground     stay in the foreground, log to stderr\n"
		"  -d, --debug          debug logging (implies --foreground)\n"
		"  -c, --config FILE    configuration file (see mtls-agent.conf(5))\n"
		"  -a, --socket PATH    listening socket (default "
		"$XDG_RUNTIME_DIR/mtls-agent/agent.sock)\n"
		"  -M, --module PATH    PKCS#11 module (default %s)\n"
		"  -t, --token URI      tokens to offer when no identities are configured\n"
		"      --allow-root     let root use the agent\n"
		"      --module-dirs D  colon-separated directories modules may come from\n"
		"      --ssh-socket P   SSH agent socket (default: ssh.sock beside it), or off\n"
		"      --no-ssh-auth-sock  do not print SSH_AUTH_SOCK\n"
		"  -h, --help           this text\n"
		"  -V, --version        print the version\n",
		MTLS_DEFAULT_MODULE);
}

/* -c FILE, else the user's file, else the system file, else none. */
static char *
find_config(const char *opt)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char *p = NULL;

	if (opt != NULL) {
		/* Absolute, so SIGHUP finds it after the daemon's chdir("/"). */
		if ((p = realpath(opt, NULL)) != NULL)
			return p;
		return strdup(opt);
	}
	if (xdg != NULL && xdg[0] == '/') {
		if (asprintf(&p, "%s/mtls-agent/agent.conf", xdg) < 0)
			return NULL;
	} else if (home != NULL && home[0] == '/') {
		if (asprintf(&p, "%s/.config/mtls-agent/agent.conf", home) < 0)
			return NULL;
	}
	if (p != NULL && access(p, F_OK) == 0)
		return p;
	free(p);
	if (access(SYSCONFDIR "/mtls-agent/agent.conf", F_OK) == 0)
		return strdup(SYSCONFDIR "/mtls-agent/agent.conf");
	return NULL;
}

/* No core files, not ptrace-able or readable through /proc by the user's
 * other processes: the agent holds the token session and PIN copies. */
static void
harden(void)
{
	struct rlimit rl = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &rl) != 0)
		warn("cannot disable core dumps: %s", strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		warn("cannot make the process non-dumpable: %s", strerror(errno));
	/* One descriptor per client: allow as many as max-connections can
	 * need (the hard limit bounds it). */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = { { "foreground", no_argument, NULL, 'f' },
					      { "debug", no_argument, NULL, 'd' },
					      { "config", required_argument, NULL, 'c' },
					      { "socket", required_argument, NULL, 'a' },
					      { "module", required_argument, NULL, 'M' },
					      { "token", required_argument, NULL, 't' },
					      { "allow-root", no_argument, NULL, 'R' },
					      { "module-dirs", required_argument, NULL, 'D' },
					      { "ssh-socket", required_argument, NULL, 'S' },
					      { "no-ssh-auth-sock", no_argument, NULL, 'N' },
					      { "help", no_argument, NULL, 'h' },
					      { "version", no_argument, NULL, 'V' },
					      { NULL, 0, NULL, 0 } };
	const char *opt_config = NULL, *opt_socket = NULL, *opt_module = NULL, *opt_token = NULL;
	const char *opt_module_dirs = NULL, *opt_ssh_socket = NULL;
	int print_ssh = 1, ssh_fd = -1, ssh_activated = 0;
	char *ssh_sock = NULL;
	int foreground = 0, debug_on = 0, allow_root = 0, ch, r, ready[2] = { -1, -1 };
	char err[512] = "", *config_path = NULL, *sock = NULL;
	static struct config_overrides ov;
	struct config *cfg = NULL;
	struct tokenset *ts = NULL;
	struct server *srv = NULL;
	int listen_fd = -1, exit_code = 1, activated = 0;
	pid_t pid = -1;

	while ((ch = getopt_long(argc, argv, "fdc:a:M:t:hV", opts, NULL)) != -1) {
		switch (ch) {
		case 'f': foreground = 1; break;
		case 'd': debug_on = foreground = 1; break;
		case 'c': opt_config = optarg; break;
		case 'a': opt_socket = optarg; break;
		case 'M': opt_module = optarg; break;
		case 't': opt_token = optarg; break;
		case 'R': allow_root = 1; break;
		case 'D': opt_module_dirs = optarg; break;
		case 'S': opt_ssh_socket = optarg; break;
		case 'N': print_ssh = 0; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("mtls-agent %s\n", PACKAGE_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "mtls-agent: unexpected argument %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	log_init("mtls-agent", activation_stderr_is_journal(),
		 debug_on ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO);
	harden();

	config_path = find_config(opt_config);
	if ((r = config_path ? config_load(config_path, &cfg, err, sizeof(err))
			     : config_defaults(&cfg)) != 0) {
		error("%s", err[0] ? err : mtls_agent_strerror(r));
		goto fail;
	}
	if (!debug_on)
		log_set_level((enum log_level)cfg->log_level);
	ov.socket_path = opt_socket;
	ov.module = opt_module;
	ov.token_uri = opt_token;
	ov.module_dirs = opt_module_dirs;
	ov.ssh_socket = opt_ssh_socket;
	ov.allow_root = allow_root;
	ov.debug = debug_on;
	if (config_apply_overrides(cfg, &ov) != 0) {
		error("out of memory");
		goto fail;
	}
	/* Started by a socket unit: its socket, whatever the configuration
	 * says; the service manager owns it (never unlinked), and the agent
	 * stays in the foreground under it. */
	if ((activated =
		 activation_sockets(&listen_fd, &sock, &ssh_fd, &ssh_sock, err, sizeof(err))) < 0) {
		error("%s", err);
		goto fail;
	} else if (activated) {
		foreground = 1;
		if (cfg->socket_path != NULL) /* -a or "socket", after the overrides */
			info("socket activation: listening on %s, not on the configured socket",
			     sock);
	} else if (cfg->socket_path != NULL)
		sock = strdup(cfg->socket_path);
	else if ((sock = server_default_socket()) == NULL) {
		error("no socket path: give --socket or set XDG_RUNTIME_DIR");
		goto fail;
	}
	if (sock == NULL)
		goto fail;

	if (!activated && (r = server_listen(sock, &listen_fd, err, sizeof(err))) != 0) {
		error("%s", err);
		goto fail;
	}
	/* The SSH agent socket: the service manager's (mtls-agent-ssh.socket),
	 * else "ssh-socket", else ssh.sock beside the socket, under the same
	 * directory rules (server_listen). */
	if (ssh_fd >= 0) {
		ssh_activated = 1;
		if (cfg->ssh_socket_off) {
			info("socket activation: an SSH socket %s was passed; ssh-socket = off, "
			     "so it is not served",
			     ssh_sock);
			close(ssh_fd);
			ssh_fd = -1;
			free(ssh_sock);
			ssh_sock = NULL;
		} else if (cfg->ssh_socket != NULL) {
			info("socket activation: SSH socket %s, not the configured one", ssh_sock);
		}
	} else if (!cfg->ssh_socket_off) {
		ssh_sock =
		    cfg->ssh_socket != NULL ? strdup(cfg->ssh_socket) : ssh_default_socket(sock);
		if (ssh_sock == NULL) {
			error("no SSH socket path for %s", sock);
			goto fail;
		}
		if ((r = server_listen(ssh_sock, &ssh_fd, err, sizeof(err))) != 0) {
			error("ssh-socket: %s", err);
			free(ssh_sock);
			ssh_sock = NULL;
			if (!activated)
				(void)unlink(sock);
			goto fail;
		}
	}
	/*
	 * Daemon mode: the child opens the token (PKCS#11 must be initialised
	 * after fork) and tells the parent over a pipe when it serves; the
	 * parent then prints the environment lines and exits with its status.
	 */
	if (!foreground) {
		if (pipe(ready) != 0) {
			error("pipe: %s", strerror(errno));
			goto fail;
		}
		if ((pid = fork()) < 0) {
			error("fork: %s", strerror(errno));
			goto fail;
		}
		if (pid > 0) {
			char status = 1;

			close(ready[1]);
			close(listen_fd);
			listen_fd = -1;
			if (ssh_fd >= 0)
				close(ssh_fd);
			ssh_fd = -1;
			if (read(ready[0], &status, 1) != 1 || status != 0) {
				fprintf(stderr,
					"mtls-agent: start-up failed (see the system log)\n");
				goto fail;
			}
			printf("MTLS_AGENT_SOCK=%s; export MTLS_AGENT_SOCK;\n", sock);
			printf("MTLS_AGENT_PID=%ld; export MTLS_AGENT_PID;\n", (long)pid);
			if (ssh_sock != NULL && print_ssh)
				printf("SSH_AUTH_SOCK=%s; export SSH_AUTH_SOCK;\n", ssh_sock);
			printf("echo Agent pid %ld;\n", (long)pid);
			exit_code = 0;
			goto fail;
		}
		close(ready[0]);
		if (setsid() < 0)
			warn("setsid: %s", strerror(errno));
		/* Hold no directory busy (the config path is absolute). */
		if (chdir("/") != 0)
			warn("chdir /: %s", strerror(errno));
		log_init("mtls-agent", 1, (enum log_level)cfg->log_level);
		harden();
	}
	server_block_signals();
	if ((r = token_open(cfg, &ts, err, sizeof(err))) != 0) {
		error("%s", err[0] ? err : mtls_agent_strerror(r));
		if (!activated)
			(void)unlink(sock);
		if (ssh_sock != NULL && !ssh_activated)
			(void)unlink(ssh_sock);
		goto fail;
	}
	if ((r = server_new(cfg, config_path, &ov, ts, listen_fd, sock, &srv)) != 0) {
		error("%s", mtls_agent_strerror(r));
		if (!activated)
			(void)unlink(sock);
		if (ssh_sock != NULL && !ssh_activated)
			(void)unlink(ssh_sock);
		goto fail;
	}
	if (activated)
		server_keep_socket(srv);
	if (ssh_fd >= 0) {
		/* The server owns it now, failure or not. */
		r = server_set_ssh_socket(srv, ssh_fd, ssh_sock, ssh_activated);
		ssh_fd = -1;
		if (r != 0) {
			error("out of memory");
			goto fail;
		}
		info("SSH agent socket %s", ssh_sock);
	}
	if (foreground) {
		printf("MTLS_AGENT_SOCK=%s; export MTLS_AGENT_SOCK;\n", sock);
		printf("MTLS_AGENT_PID=%ld; export MTLS_AGENT_PID;\n", (long)getpid());
		if (ssh_sock != NULL && print_ssh)
			printf("SSH_AUTH_SOCK=%s; export SSH_AUTH_SOCK;\n", ssh_sock);
		fflush(stdout);
	} else {
		char ok = 0;
		int devnull;

		if (write(ready[1], &ok, 1) != 1)
			warn("cannot signal readiness to the parent");
		close(ready[1]);
		if ((devnull = open("/dev/null", O_RDWR)) >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			dup2(devnull, 2);
			if (devnull > 2)
				close(devnull);
		}
	}
	info("listening on %s", sock);
	free(config_path);
	r = server_run(srv);
	free(sock);
	free(ssh_sock);
	return r == 0 ? 0 : 1;
fail:
	/* Start-up failed (or the daemon's parent is done): free it all. */
	token_close(ts);
	config_free(cfg);
	free(config_path);
	free(sock);
	free(ssh_sock);
	if (listen_fd >= 0)
		close(listen_fd);
	if (ssh_fd >= 0)
		close(ssh_fd);
	return exit_code;
}
