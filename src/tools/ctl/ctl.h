/*
 * mtls-agentctl: what the subcommands share.  Each subcommand lives in
 * its own file (list.c, login.c, pin.c, lock.c, status.c, sign.c,
 * connect*.c) behind the command table in main.c; common.c holds the
 * one-line error format and the exit codes, secret.c the PIN and
 * passphrase reading.  Built on the public libmtls-agent API only (plus
 * the secure allocator, so a PIN never sits in ordinary memory).
 *
 * Exit codes are documented in mtls-agentctl(1) and relied on by scripts.
 */
#ifndef MTLS_CTL_H
#define MTLS_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/x509.h>

#include "mtls-agent.h"

#define PROG "mtls-agentctl"

enum {
	EXIT_OK = 0,
	EXIT_FAILED = 1,      /* the agent refused or the operation failed */
	EXIT_USAGE = 2,	      /* bad command line */
	EXIT_NO_AGENT = 3,    /* cannot connect to the agent */
	EXIT_LOGIN = 4,	      /* the token must be logged in first */
	EXIT_LOCKED = 5,      /* the PIN is locked */
	EXIT_AGENT_LOCKED = 6 /* the agent is locked with a passphrase */
};

/* The library's limits, from the public header. */
#define CONTENT_MAX MTLS_AGENT_CONTENT_MAX
#define PIN_MAX	    MTLS_AGENT_PIN_MAX

/* -s/--socket and -q/--quiet, before or after the command (common.c). */
extern const char *socket_path;
extern int quiet;

/* The subcommands: each takes argv from its own name on and returns the
 * exit code. */
int cmd_list(int argc, char **argv);
int cmd_login(int argc, char **argv);
int cmd_logout(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_change_pin(int argc, char **argv);
int cmd_unblock_pin(int argc, char **argv);
int cmd_lock(int argc, char **argv);
int cmd_unlock(int argc, char **argv);
int cmd_sign(int argc, char **argv);
int cmd_connect(int argc, char **argv);
int cmd_ssh_pubkey(int argc, char **argv); /* sshkey.c */
int cmd_key_file(int argc, char **argv);
int cmd_enroll(int argc, char **argv);
int cmd_renew(int argc, char **argv);
int cmd_import_cert(int argc, char **argv);
int cmd_delete_key(int argc, char **argv);

#define ENROLL_USAGE                                                                               \
	"enroll --label LABEL --subject /CN=NAME[/O=ORG...] [--token URI]\n"                       \
	"       [--key ec:p256|ec:p384|rsa:2048|rsa:3072|rsa:4096]\n"                              \
	"       [--san email:ADDR|dns:NAME|uri:URI|ip:ADDR]... [--out FILE]"
#define RENEW_USAGE  "renew NAME [--new-key [--label LABEL] [--key KIND]] [--out FILE]"
#define IMPORT_USAGE "import-cert FILE [--force]"
#define DELETE_USAGE "delete-key NAME [--force]"

#define CONNECT_SYNOPSIS                                                                           \
	"connect [--identity NAME] [--ca-file FILE | --ca-dir DIR]\n"                              \
	"       [--tls1.2 | --tls1.3] [--header 'NAME: VALUE']... [--output FILE]\n"               \
	"       [-L|--location] [--proxy URL] [--timeout SECONDS] [--max-time SECONDS]\n"          \
	"       [-v] https://HOST[:PORT][/PATH] | HOST:PORT"

/* ---- common.c: messages, exit codes, options ---- */

/* Agent- or server-supplied text for a terminal: control bytes are shown
 * as \xNN.  Returns a static buffer (one use per printf). */
const char *safe(const char *s);
/* "mtls-agentctl: CMD: text" on stderr. */
void errmsg(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same, and returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The exit code for a library error. */
int exit_code(int err);
/* Reports a library error in the one-line format (with the agent's
 * message, `extra` after the error text, may be NULL); returns its exit
 * code. */
int agent_error(const char *cmd, int err, const char *extra);
/* " (N tries left)" for a wrong PIN when the token counts. */
void tries_left(int err, int retries, char *buf, size_t len);
/* Connects to the agent at socket_path; 0, or the exit code after a
 * message. */
int connect_agent(const char *cmd, mtls_agent **a);
/* The usage error for an option getopt refused. */
int bad_option(const char *cmd, char **argv, const char *synopsis);
/* Handles -s and -q after a command; 1 when c was one of them. */
int common_option(int c, const char *arg);
/* Hex of d with sep between bytes; malloc'd, NULL when out of memory. */
char *hex_string(const unsigned char *d, size_t len, const char *sep, int upper);
/* An X.509 name in RFC 2253 order; malloc'd, NULL on failure. */
char *name_string(const X509_NAME *name);
/* write(2) until done; 0 or -1 with errno. */
int write_all(int fd, const void *p, size_t len);
/* Appends ", name" (or "name") to the string in buf, truncating. */
void append_names(char *buf, size_t len, const char *name);

/* ---- secret.c: PINs and passphrases ---- */

/*
 * Where the secrets of one command come from: the terminal (fd -1:
 * prompted, echo off), standard input or a file, one line each, in
 * order.
 */
struct secret_src {
	const char *cmd;
	int fd;
	const char *from; /* for messages */
};

/* One line of at most PIN_MAX bytes from fd into pin (PIN_MAX + 2 bytes
 * of secure memory); 0, or -1 with errno (E2BIG: too long). */
int read_pin_line(int fd, char *pin);
/* MTLS_AGENT_ASKPASS, else SSH_ASKPASS in a graphical session, else
 * NULL. */
const char *askpass_program(void);
/* What to tell a user of cmd who has no terminal. */
const char *no_terminal_hint(const char *cmd);
/* Prompts on /dev/tty (or through askpass without one) and reads with
 * echo off; as read_pin_line. */
int read_pin_tty(const char *prompt, char *pin);
/* The first line of path; as read_pin_line. */
int read_pin_file(const char *path, char *pin);
int secret_src_open(struct secret_src *src, const char *cmd, int from_stdin, const char *file);
void secret_src_close(struct secret_src *src);
/* The next secret into buf; 0 or the exit code after a message. */
int read_secret(struct secret_src *src, const char *prompt, const char *what, char *buf);
/* A new secret, typed twice on a terminal; 0 or the exit code. */
int read_new_secret(struct secret_src *src, const char *prompt, const char *again, const char *what,
		    char *buf, char *check);
/* The prompts "<what> for <name>: " for identity's token; 0 or an error. */
int prompts_for(mtls_agent *a, const char *identity, const char *const *what, char **what_for,
		size_t n_what);

/* The command line of login, change-pin and unblock-pin: [IDENTITY]
 * [--pin-stdin | --pin-file FILE] (and -s, -q).  0 or a usage error. */
int pin_command_line(int argc, char **argv, const char *cmd, const char **identity, int *from_stdin,
		     const char **pin_file);

#endif
