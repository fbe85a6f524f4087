/*
 * conf - the agent's configuration file (docs/CONFIGURATION.md,
 * mtls-agent.conf(5)) and its parsed form.
 *
 * (Named conf.h, not config.h, so that `#include "config.h"` in src/agent
 * always means the autoconf header.)
 */
#ifndef MTLS_CONF_H
#define MTLS_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "mtls-agent.h"

/* Purposes allowed when an identity does not say: TLS 1.3, PAM and SSH
 * logins (not ssh-sig: mtls-agent.conf(5) says why). */
#define CONFIG_DEFAULT_PURPOSES                                                                    \
	((1U << MTLS_AGENT_PURPOSE_TLS13_CLIENT_CV) | (1U << MTLS_AGENT_PURPOSE_PAM_CHALLENGE) |   \
	 (1U << MTLS_AGENT_PURPOSE_SSH))
/* SSHSIG namespaces an identity may sign when it gives none. */
#define CONFIG_DEFAULT_SSH_SIG_NAMESPACES "git,file"
#define CONFIG_MAX_SSH_LIST		  32U /* entries in the ssh-* lists */

/* Defaults and limits of the numeric keys (documented in mtls-agent.conf(5)). */
#define CONFIG_DEFAULT_TOKEN_URI       "pkcs11:"
#define CONFIG_DEFAULT_LOGIN_TIMEOUT   0U		 /* seconds; 0 = never */
#define CONFIG_MAX_LOGIN_TIMEOUT       (31U * 24 * 3600) /* 31 days */
#define CONFIG_DEFAULT_MAX_CONNECTIONS 256U
#define CONFIG_MIN_MAX_CONNECTIONS     1U
#define CONFIG_MAX_MAX_CONNECTIONS     65536U
#define CONFIG_DEFAULT_REQUEST_TIMEOUT 10000U /* milliseconds */
#define CONFIG_MIN_REQUEST_TIMEOUT     100U
#define CONFIG_MAX_REQUEST_TIMEOUT     600000U

/* Limits on the files themselves. */
#define CONFIG_MAX_FILE_SIZE (1024U * 1024) /* whole config file */
#define CONFIG_MAX_LINE	     4096U	    /* one line, without its newline */
#define CONFIG_MAX_NAME	     64U	    /* [identity NAME] */
/* Directories a PKCS#11 module may be loaded from (after realpath). */
/* ./configure puts the build's multiarch directories first (a bare
 * "libsofthsm2.so" is looked for in each directory itself, not below it). */
#ifdef MTLS_DEFAULT_MODULE_DIRS
#define CONFIG_DEFAULT_MODULE_DIRS MTLS_DEFAULT_MODULE_DIRS
#else
#define CONFIG_DEFAULT_MODULE_DIRS "/usr/lib:/usr/lib64:/lib:/lib64:/usr/local/lib"
#endif
#define CONFIG_MAX_PEERS		   32U /* entries in "peers" */
#define CONFIG_DEFAULT_CONFIRM_TIMEOUT	   30U /* seconds */
#define CONFIG_DEFAULT_TOKEN_TIMEOUT	   30U /* seconds */
#define CONFIG_DEFAULT_BUSY_POLL	   50U /* microseconds */
#define CONFIG_MAX_BUSY_POLL		   1000U
#define CONFIG_MAX_PIN_FILE		   256U /* pin-file, newline included */
#define CONFIG_DEFAULT_EXPIRY_WARNING_DAYS 30U	/* days; 0 = no warnings */

struct config_identity {
	char *name;	   /* [identity NAME]: [A-Za-z0-9._-]{1,64} */
	char *key_uri;	   /* "key": RFC 7512 pkcs11: URI of the private key */
	char *cert_file;   /* "certificate": PEM or DER file; NULL = on token */
	char *chain_file;  /* "chain": PEM file of chain certificates; or NULL */
	char *pin_file;	   /* "pin-file": PIN for unattended login; or NULL */
	uint32_t purposes; /* "purposes": bit (1 << MTLS_AGENT_PURPOSE_*) */
	/* "peers": who may use this identity; none = every allowed peer */
	struct config_peer *peers;
	size_t n_peers;
	int confirm;		  /* "confirm": ask the askpass program */
	unsigned int lifetime;	  /* "lifetime" s after login; 0 = none */
	unsigned int idle_logout; /* "idle-logout" s without use; 0 = none */
	unsigned int rate_limit;  /* "rate-limit": signatures a minute; 0 = none */
	/* The SSH front end (ssh.c, ssh_policy.c); lists are kept as
	 * "a,b,c" with the blanks removed, NULL when not given. */
	char *ssh_sig_namespaces; /* "ssh-sig-namespaces"; NULL = the default */
	char *ssh_destinations;	  /* "ssh-destinations": SHA256:... and
				     known-hosts=FILE[:PATTERN]; NULL = any host */
	int ssh_forwarding;	  /* "ssh-forwarding": sign on forwarded bindings */
	char *ssh_certificate;	  /* "ssh-certificate": OpenSSH certificate file */
	int read_only;		  /* "read-only": no key generated or certificate
				     written on its token (enrollment) */
};

enum config_peer_kind { PEER_UID = 1, PEER_GID, PEER_EXE };

struct config_peer {
	enum config_peer_kind kind;
	unsigned long id; /* uid or gid */
	char *exe;	  /* absolute executable path */
};

struct config {
	char *socket_path;		    /* "socket"; NULL = default */
	char *ssh_socket;		    /* "ssh-socket"; NULL = ssh.sock beside the
					       socket */
	int ssh_socket_off;		    /* "ssh-socket = off" */
	char *module;			    /* "module"; default MTLS_DEFAULT_MODULE */
	char *token_uri;		    /* "token": tokens to offer when no [identity]
					       sections exist; default "pkcs11:" (all) */
	uint32_t default_purposes;	    /* "purposes" at top level: for
					       discovered identities */
	unsigned int login_timeout;	    /* "login-timeout" seconds; 0 = never */
	int allow_root;			    /* "allow-root" yes/no: root peers allowed */
	unsigned int max_connections;	    /* "max-connections", default 256 */
	unsigned int request_timeout;	    /* "request-timeout" ms for a started
					       frame to complete, default 10000 */
	int log_level;			    /* "log-level": error|warning|info|debug */
	char *module_dirs;		    /* "module-dirs": colon-separated directories
					       modules may be loaded from */
	char *askpass;			    /* "askpass": program asked to confirm */
	unsigned int confirm_timeout;	    /* "confirm-timeout" s, default 30 */
	unsigned int token_timeout;	    /* "token-timeout" s a signature may take
					       before its token counts as hung, 30 */
	unsigned int busy_poll;		    /* "busy-poll" us to wait awake for a
					       client's next request after a reply */
	int read_only;			    /* "read-only": the tokens get no new keys
					       or certificates (enrollment) */
	unsigned int expiry_warning_days;   /* "expiry-warning-days": warn this many
					       days before a certificate expires */
	struct config_identity *identities; /* in file order */
	size_t n_identities;
};

/*
 * Parses `text` (named `source` in messages).  On success *out is a new
 * config the caller frees with config_free().  On failure returns
 * MTLS_ERR_CONFIG (or MTLS_ERR_ALLOC) and writes "source:line: reason"
 * into err.
 */
__attribute__((warn_unused_result)) int
config_parse(const char *text, const char *source, struct config **out, char *err, size_t err_len);

/*
 * Reads and parses the file at `path`.  The file must be a regular file,
 * not writable by group or others.  `path` NULL gives the defaults.
 */
__attribute__((warn_unused_result)) int config_load(const char *path, struct config **out,
						    char *err, size_t err_len);

/* A config with every default set (no identities). */
__attribute__((warn_unused_result)) int config_defaults(struct config **out);

/*
 * Reads a PIN file for unattended login into secure memory (secmem.h):
 * the file must be a regular file owned by the agent's user and not
 * readable by group or others; one trailing newline is stripped.
 * On success *pin is a NUL-terminated string from mtls_secure_alloc()
 * that the caller frees with mtls_secure_free().  Returns 0,
 * MTLS_ERR_CONFIG (err says why; never contains the PIN) or MTLS_ERR_ALLOC.
 */
__attribute__((warn_unused_result)) int config_read_pin_file(const char *path, char **pin,
							     char *err, size_t err_len);

/*
 * Settings given on the command line; they win over the file, at start-up
 * and at every reload.  NULL / 0 members leave the file's value.
 */
struct config_overrides {
	const char *socket_path;
	const char *ssh_socket; /* a path or "off" */
	const char *module;
	const char *token_uri;
	const char *module_dirs;
	int allow_root;
	int debug;
};

/* Applies ov to cfg.  Returns 0 or MTLS_ERR_ALLOC. */
__attribute__((warn_unused_result)) int config_apply_overrides(struct config *cfg,
							       const struct config_overrides *ov);

/* Frees; accepts NULL. */
void config_free(struct config *cfg);
void config_peers_free(struct config_peer *peers, size_t n);

#endif
