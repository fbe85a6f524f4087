/*
 * agent_fixture - a SoftHSM2 token in a private temp directory and
 * mtls-agent processes started on it, for the integration tests.
 *
 * fixture_setup() runs $MTLS_FIXTURE_SETUP once (several seconds) and loads
 * the env.sh it writes into this process's environment, so every agent
 * started later sees the fixture's SOFTHSM2_CONF.  agent_start() forks the
 * daemon in the foreground and returns once it printed its socket; every
 * started process is remembered in the fixture, so fixture_kill_all() (call
 * it from each test's teardown) kills and reaps whatever a failed test left
 * running.
 *
 * Helpers return 0 on success and -1 on failure after saying why on
 * stderr: they are test scaffolding, not part of the error idiom.
 */
#ifndef MTLS_AGENT_FIXTURE_H
#define MTLS_AGENT_FIXTURE_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#define FIXTURE_MAX_PROCS 32

struct agent_fixture {
	char dir[PATH_MAX];	       /* mkdtemp directory holding the token */
	char module[PATH_MAX];	       /* $MTLS_TEST_MODULE (SoftHSM2) */
	char token[128];	       /* $MTLS_TEST_TOKEN */
	char pin[64];		       /* $MTLS_TEST_PIN */
	char agent_bin[PATH_MAX];      /* $MTLS_AGENT_BIN */
	char lockout_module[PATH_MAX]; /* $MTLS_LOCKOUT_MODULE */
	unsigned int seq;	       /* makes file names unique */
	pid_t pids[FIXTURE_MAX_PROCS]; /* started, not yet reaped */
};

struct agent_proc {
	struct agent_fixture *f;
	pid_t pid;	       /* 0 when not running */
	int out_fd;	       /* read end of the agent's stdout, or -1 */
	int reaped;	       /* status below is valid */
	int status;	       /* waitpid() status */
	char sock[PATH_MAX];   /* socket path the agent announced */
	char config[PATH_MAX]; /* config file, "" if none */
	char log[PATH_MAX];    /* the agent's stderr */
};

/* Everything agent_start() can be told; zero-initialise and fill in. */
struct agent_opts {
	/*
	 * Config text; NULL = no config file: --module and --token are then
	 * given on the command line (unless `args` names them).  Otherwise
	 * the file holds "module = ...", "token = ..." of the fixture and
	 * then this text.
	 */
	const char *config_text;
	const char *const *args; /* more arguments, NULL-terminated */
	const char *const *env;	 /* "NAME=VALUE" set in the child */
	const char *agent_bin;	 /* another copy of the agent; NULL = usual */
	int default_module;	 /* no --module: the agent's own default */
	int set_user;		 /* run as uid/gid below */
	uid_t uid;
	gid_t gid;
};

/* Creates the temp directory and the token in it; loads env.sh. */
int fixture_setup(struct agent_fixture *f);
/* Kills leftovers and removes the directory; safe to call twice. */
void fixture_teardown(struct agent_fixture *f);
/* SIGKILLs and reaps every agent still running. */
void fixture_kill_all(struct agent_fixture *f);

/* "<dir>/<name>" into buf; -1 if it does not fit. */
int fixture_path(const struct agent_fixture *f, const char *name, char *buf, size_t len);
/* A name unique within this fixture: "<dir>/<prefix>-<n><suffix>". */
int fixture_unique_path(struct agent_fixture *f, const char *prefix, const char *suffix, char *buf,
			size_t len);
/* Writes text to path (replacing it atomically) with mode. */
int fixture_write_file(const char *path, const char *text, mode_t mode);
/* Reads a whole file; malloc'd and NUL-terminated, NULL on failure. */
char *fixture_read_file(const char *path, size_t *lenp);

/* How many times `needle` occurs in the readable memory of pid (through
 * /proc/PID/maps and /proc/PID/mem; needs root or the same uid), or -1 if
 * those cannot be opened. */
long fixture_count_in_memory(pid_t pid, const char *needle);
/* Runs argv[0] (PATH searched) and waits; 0 if it exited with 0. */
int fixture_run(const char *const *argv);

/*
 * Starts the agent in the foreground with a fresh socket under the
 * fixture directory (unless the args carry --socket) and waits up to 10 s
 * for it to announce the socket.  Returns 0 when it is ready; -1 if it
 * could not be started or exited first (then p->reaped and p->status tell
 * how it ended, and p->log holds what it said).
 */
int agent_start(struct agent_fixture *f, const char *extra_config_text,
		const char *const *extra_args, struct agent_proc *p);
int agent_start_opts(struct agent_fixture *f, const struct agent_opts *o, struct agent_proc *p);

/* Rewrites p's config file with the fixture base and then `text`. */
int agent_write_config(struct agent_proc *p, const char *text);
/* Sends a signal; -1 if the agent is not running. */
int agent_signal(struct agent_proc *p, int sig);
/* 1 if the agent has not exited (reaping it if it has). */
int agent_alive(struct agent_proc *p);
/* Waits up to timeout_ms for the agent to exit; 0 if it did. */
int agent_wait(struct agent_proc *p, int timeout_ms);
/*
 * SIGTERM, wait up to 5 s, then SIGKILL.  Returns the exit status, or
 * 128 + signal number if it died by a signal, or -1 if it was not running.
 */
int agent_stop(struct agent_proc *p);
/* The agent's stderr so far; malloc'd, never NULL. */
char *agent_log(const struct agent_proc *p);

/* 1 if the agent's log so far holds `needle`. */
int agent_logged(const struct agent_proc *p, const char *needle);

#endif
