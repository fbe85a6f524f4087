/*
 * mtls-agentctl - list, log in, log out, sign and query a running
 * mtls-agent.  Built on the public libmtls-agent API only (plus the secure
 * allocator, so a PIN never sits in ordinary memory).
 *
 * Exit codes are documented in mtls-agentctl(1) and relied on by scripts.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls-agent.h"
#include "secmem.h"

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

static const char *socket_path;
static int quiet;

/* Every public scheme, for listing the valid names in a usage error. */
static const uint16_t all_schemes[] = {
	MTLS_AGENT_RSA_PSS_RSAE_SHA256,	   MTLS_AGENT_RSA_PSS_RSAE_SHA384,
	MTLS_AGENT_RSA_PSS_RSAE_SHA512,	   MTLS_AGENT_RSA_PKCS1_SHA256,
	MTLS_AGENT_RSA_PKCS1_SHA384,	   MTLS_AGENT_RSA_PKCS1_SHA512,
	MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_ECDSA_SECP384R1_SHA384,
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: " PROG " [-s|--socket PATH] [-q|--quiet] COMMAND [ARGS]\n"
		   "       " PROG " -h|--help | -V|--version\n"
		   "commands:\n"
		   "  list [--pem] [--json]\n"
		   "  login [IDENTITY] [--pin-stdin | --pin-file FILE]\n"
		   "  logout [IDENTITY]\n"
		   "  status\n"
		   "  change-pin [IDENTITY] [--pin-stdin | --pin-file FILE]\n"
		   "  unblock-pin [IDENTITY] [--pin-stdin | --pin-file FILE]\n"
		   "  lock [--stdin]\n"
		   "  unlock [--stdin]\n"
		   "  sign --identity NAME --scheme SCHEME --purpose PURPOSE\n"
		   "       [--in FILE] [--out FILE] [--hex]\n"
		   "  connect [--identity NAME] [--ca-file FILE | --ca-dir DIR]\n"
		   "       [--tls1.2 | --tls1.3] [--header 'NAME: VALUE']... [--output FILE]\n"
		   "       [--timeout SECONDS] [-v] https://HOST[:PORT][/PATH] | HOST:PORT\n");
}

/*
 * Agent-supplied text for a terminal: control bytes (a label could hold an
 * escape sequence) are shown as \xNN.  Returns a static buffer.
 */
static const char *
safe(const char *s)
{
	static char buf[4 * 1024 + 1];
	const unsigned char *p;
	size_t o = 0;

	if (s == NULL)
		return "";
	for (p = (const unsigned char *)s; *p != '\0' && o + 5 < sizeof(buf); p++) {
		if (*p < 0x20 || *p == 0x7f)
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\\x%02x", *p);
		else
			buf[o++] = (char)*p;
	}
	buf[o] = '\0';
	return buf;
}

static void __attribute__((format(printf, 2, 3))) errmsg(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int __attribute__((format(printf, 2, 3))) usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

static int
exit_code(int err)
{
	switch (err) {
	case 0: return EXIT_OK;
	case MTLS_ERR_NO_SOCKET:
	case MTLS_ERR_CONNECT: return EXIT_NO_AGENT;
	case MTLS_ERR_LOGIN_REQUIRED: return EXIT_LOGIN;
	case MTLS_ERR_PIN_LOCKED: return EXIT_LOCKED;
	case MTLS_ERR_AGENT_LOCKED: return EXIT_AGENT_LOCKED;
	default: return EXIT_FAILED;
	}
}

/* Reports a library error in the one-line format and maps it to an exit
 * code.  `extra` is inserted after the error text (may be NULL). */
static int
agent_error(const char *cmd, int err, const char *extra)
{
	const char *detail = mtls_agent_last_message();

	fprintf(stderr, PROG ": %s: %s%s", cmd, mtls_agent_strerror(err),
		extra != NULL ? extra : "");
	if (detail != NULL && *detail != '\0')
		fprintf(stderr, ": %s", safe(detail));
	fputc('\n', stderr);
	return exit_code(err);
}

/*
 * " (N tries left)" after "PIN incorrect" when the token counts and the
 * agent's text does not say it already; nothing for an unknown count.
 */
static void
tries_left(int err, int retries, char *buf, size_t len)
{
	const char *detail = mtls_agent_last_message();

	buf[0] = '\0';
	if (err == MTLS_ERR_PIN_INCORRECT && retries >= 0 &&
	    (detail == NULL || strstr(detail, " left") == NULL))
		snprintf(buf, len, " (%d tr%s left)", retries, retries == 1 ? "y" : "ies");
}

static int
connect_agent(const char *cmd, mtls_agent **a)
{
	int r;

	if ((r = mtls_agent_connect(socket_path, a)) != 0)
		return agent_error(
		    cmd, r, r == MTLS_ERR_INVALID_ARGUMENT ? " (socket path too long)" : NULL);
	return 0;
}

/* getopt's own messages are off so every error stays one line. */
static int
bad_option(const char *cmd, char **argv, const char *synopsis)
{
	if (optopt != 0 && strncmp(argv[optind - 1], "--", 2) != 0)
		return usage_error(cmd,
				   "invalid option or missing argument "
				   "'-%c' (usage: %s)",
				   optopt, synopsis);
	return usage_error(cmd,
			   "invalid option or missing argument '%s' "
			   "(usage: %s)",
			   argv[optind - 1], synopsis);
}

/* Options every command also accepts after its name. */
static int
common_option(int c, const char *arg)
{
	switch (c) {
	case 's': socket_path = arg; return 1;
	case 'q': quiet = 1; return 1;
	}
	return 0;
}

/* ---- list ---- */

/* A JSON string literal; control and non-UTF-8-safe bytes are escaped. */
static void
json_string(const char *s)
{
	const unsigned char *p;

	if (s == NULL) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		switch (*p) {
		case '"': fputs("\\\"", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		case '\b': fputs("\\b", stdout); break;
		case '\f': fputs("\\f", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				printf("\\u%04x", *p);
			else
				putchar(*p);
		}
	}
	putchar('"');
}

static char *
hex_string(const unsigned char *d, size_t len, const char *sep, int upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	size_t i, seplen = strlen(sep), o = 0;
	char *s;

	if ((s = malloc(len * (2 + seplen) + 1)) == NULL)
		return NULL;
	for (i = 0; i < len; i++) {
		if (i > 0) {
			memcpy(s + o, sep, seplen);
			o += seplen;
		}
		s[o++] = digits[d[i] >> 4];
		s[o++] = digits[d[i] & 0x0f];
	}
	s[o] = '\0';
	return s;
}

/* What a listing shows of one certificate. */
struct cert_view {
	int present; /* the agent sent a certificate */
	int parsed;  /* and it parsed as one */
	char *subject, *issuer, *serial;
	char not_before[32], not_after[32];
	char *fingerprint; /* SHA-256 of the DER, AA:BB:... */
};

static char *
name_string(const X509_NAME *name)
{
	BIO *bio;
	BUF_MEM *mem;
	char *s = NULL;

	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return NULL;
	/* RFC 2253 order, but UTF-8 left as is rather than \-escaped. */
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
	    BIO_get_mem_ptr(bio, &mem) > 0 && (s = malloc(mem->length + 1)) != NULL) {
		memcpy(s, mem->data, mem->length);
		s[mem->length] = '\0';
	}
	BIO_free(bio);
	return s;
}

static void
time_string(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "(invalid time)");
}

static void
cert_view_clear(struct cert_view *v)
{
	free(v->subject);
	free(v->issuer);
	free(v->serial);
	free(v->fingerprint);
	memset(v, 0, sizeof(*v));
}

static void
cert_view_load(struct cert_view *v, const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	X509 *x = NULL;
	BIGNUM *bn = NULL;

	memset(v, 0, sizeof(*v));
	if (der == NULL || len == 0)
		return;
	v->present = 1;
	/* The agent is trusted to send certificates, not to send good ones:
	 * anything that does not parse completely is just reported. */
	if (len > LONG_MAX || (x = d2i_X509(NULL, &p, (long)len)) == NULL || p != der + len)
		goto out;
	v->subject = name_string(X509_get_subject_name(x));
	v->issuer = name_string(X509_get_issuer_name(x));
	if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) != NULL)
		v->serial = BN_bn2hex(bn) /* OpenSSL memory */;
	if (v->serial != NULL) {
		/* Move to malloc memory so cert_view_clear can free() it. */
		char *s = strdup(v->serial);

		OPENSSL_free(v->serial);
		v->serial = s;
	}
	time_string(X509_get0_notBefore(x), v->not_before, sizeof(v->not_before));
	time_string(X509_get0_notAfter(x), v->not_after, sizeof(v->not_after));
	if (EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL) == 1)
		v->fingerprint = hex_string(md, mdlen, ":", 1);
	v->parsed = v->subject != NULL && v->issuer != NULL;
out:
	BN_free(bn);
	X509_free(x);
}

static const char *
key_type_name(int type)
{
	switch (type) {
	case MTLS_AGENT_KEY_RSA: return "RSA";
	case MTLS_AGENT_KEY_EC: return "EC";
	}
	return "unknown";
}

/* Human-readable state words for an identity's flags, NULL-terminated. */
static size_t
state_words(uint32_t f, const char **w)
{
	size_t n = 0;

	if (!(f & MTLS_AGENT_ID_TOKEN_PRESENT)) {
		w[n++] = "token absent";
	} else {
		w[n++] = "token present";
		if (f & MTLS_AGENT_ID_LOGGED_IN)
			w[n++] = "logged in";
		else
			w[n++] = "login required";
		/* Tokens show private keys only after login: before it, a
		 * missing key is not missing yet. */
		if (f & MTLS_AGENT_ID_KEY_MISMATCH)
			w[n++] = "key does not match certificate";
		else if (!(f & MTLS_AGENT_ID_KEY_FOUND))
			w[n++] = (f & MTLS_AGENT_ID_LOGGED_IN) ? "key not found"
							       : "private key visible after login";
	}
	if (f & MTLS_AGENT_ID_PIN_LOCKED)
		w[n++] = "locked";
	else if (f & MTLS_AGENT_ID_PIN_FINAL_TRY)
		w[n++] = "final try";
	else if (f & MTLS_AGENT_ID_PIN_COUNT_LOW)
		w[n++] = "PIN count low";
	if (f & MTLS_AGENT_ID_PROTECTED_AUTH)
		w[n++] = "PIN pad";
	w[n] = NULL;
	return n;
}

static void
print_pem(const unsigned char *der, size_t len)
{
	BIO *out;

	if ((out = BIO_new_fp(stdout, BIO_NOCLOSE)) == NULL)
		return;
	(void)PEM_write_bio(out, "CERTIFICATE", "", der, (long)len);
	BIO_free(out);
}

static void
print_identity_text(const struct mtls_agent_identity *id, int pem)
{
	const char *words[8];
	struct cert_view v;
	char *keyid;
	size_t i;
	int bit;

	cert_view_load(&v, id->cert_der, id->cert_der_len);
	keyid = hex_string(id->key_id, id->key_id_len, "", 0);
	printf("identity: %s\n", safe(id->name));
	printf("  token:        %s\n", safe(id->token_label));
	printf("  key label:    %s\n", safe(id->key_label));
	printf("  key id:       %s\n", keyid != NULL ? keyid : "?");
	printf("  key:          %s %u\n", key_type_name(id->key_type), id->key_bits);
	state_words(id->flags, words);
	printf("  state:       ");
	for (i = 0; words[i] != NULL; i++)
		printf("%s %s", i > 0 ? "," : "", words[i]);
	printf("\n  purposes:    ");
	for (i = 0, bit = 1; bit < 32; bit++) {
		const char *n = mtls_agent_purpose_name(bit);

		if (!(id->purposes & (1U << bit)))
			continue;
		if (n != NULL)
			printf("%s %s", i++ > 0 ? "," : "", n);
		else
			printf("%s purpose-%d", i++ > 0 ? "," : "", bit);
	}
	printf("%s\n  schemes:     ", i == 0 ? " (none)" : "");
	for (i = 0; i < id->n_schemes; i++) {
		const char *n = mtls_agent_scheme_name(id->schemes[i]);

		if (n != NULL)
			printf("%s %s", i > 0 ? "," : "", n);
		else
			printf("%s 0x%04x", i > 0 ? "," : "", id->schemes[i]);
	}
	printf("%s\n", id->n_schemes == 0 ? " (none)" : "");
	if (!v.present) {
		printf("  certificate:  (none)\n");
	} else if (!v.parsed) {
		printf("  certificate:  (unparsable certificate)\n");
	} else {
		printf("  subject:      %s\n", safe(v.subject));
		printf("  issuer:       %s\n", safe(v.issuer));
		printf("  serial:       %s\n", v.serial != NULL ? v.serial : "?");
		printf("  not before:   %s\n", v.not_before);
		printf("  not after:    %s\n", v.not_after);
		printf("  sha256:       %s\n", v.fingerprint != NULL ? v.fingerprint : "?");
	}
	printf("  chain:        %zu certificate%s\n", id->n_chain, id->n_chain == 1 ? "" : "s");
	if (pem && v.parsed)
		print_pem(id->cert_der, id->cert_der_len);
	free(keyid);
	cert_view_clear(&v);
}

static void
print_identity_json(const struct mtls_agent_identity *id, int pem)
{
	const char *words[8];
	struct cert_view v;
	char *keyid;
	size_t i;
	int bit;

	cert_view_load(&v, id->cert_der, id->cert_der_len);
	keyid = hex_string(id->key_id, id->key_id_len, "", 0);
	printf("  {\n    \"name\": ");
	json_string(id->name);
	printf(",\n    \"token_label\": ");
	json_string(id->token_label);
	printf(",\n    \"key_label\": ");
	json_string(id->key_label);
	printf(",\n    \"key_id\": ");
	json_string(keyid);
	printf(",\n    \"key_type\": ");
	json_string(key_type_name(id->key_type));
	printf(",\n    \"key_bits\": %u", id->key_bits);
	printf(",\n    \"flags\": %u", id->flags);
	printf(",\n    \"token_present\": %s",
	       (id->flags & MTLS_AGENT_ID_TOKEN_PRESENT) ? "true" : "false");
	printf(",\n    \"logged_in\": %s",
	       (id->flags & MTLS_AGENT_ID_LOGGED_IN) ? "true" : "false");
	printf(",\n    \"state\": [");
	state_words(id->flags, words);
	for (i = 0; words[i] != NULL; i++) {
		printf("%s", i > 0 ? ", " : "");
		json_string(words[i]);
	}
	printf("],\n    \"purposes\": [");
	for (i = 0, bit = 1; bit < 32; bit++) {
		const char *n = mtls_agent_purpose_name(bit);
		char other[32];

		if (!(id->purposes & (1U << bit)))
			continue;
		if (n == NULL) {
			snprintf(other, sizeof(other), "purpose-%d", bit);
			n = other;
		}
		printf("%s", i++ > 0 ? ", " : "");
		json_string(n);
	}
	printf("],\n    \"schemes\": [");
	for (i = 0; i < id->n_schemes; i++) {
		const char *n = mtls_agent_scheme_name(id->schemes[i]);
		char other[16];

		if (n == NULL) {
			snprintf(other, sizeof(other), "0x%04x", id->schemes[i]);
			n = other;
		}
		printf("%s", i > 0 ? ", " : "");
		json_string(n);
	}
	printf("],\n    \"certificate\": ");
	if (!v.present) {
		printf("null");
	} else if (!v.parsed) {
		printf("{ \"parsable\": false }");
	} else {
		printf("{\n      \"parsable\": true,\n      \"subject\": ");
		json_string(v.subject);
		printf(",\n      \"issuer\": ");
		json_string(v.issuer);
		printf(",\n      \"serial\": ");
		json_string(v.serial);
		printf(",\n      \"not_before\": ");
		json_string(v.not_before);
		printf(",\n      \"not_after\": ");
		json_string(v.not_after);
		printf(",\n      \"sha256_fingerprint\": ");
		json_string(v.fingerprint);
		if (pem) {
			BIO *bio = BIO_new(BIO_s_mem());
			BUF_MEM *mem;
			char *s = NULL;

			if (bio != NULL &&
			    PEM_write_bio(bio, "CERTIFICATE", "", id->cert_der,
					  (long)id->cert_der_len) > 0 &&
			    BIO_get_mem_ptr(bio, &mem) > 0 &&
			    (s = malloc(mem->length + 1)) != NULL) {
				memcpy(s, mem->data, mem->length);
				s[mem->length] = '\0';
			}
			printf(",\n      \"pem\": ");
			json_string(s);
			free(s);
			BIO_free(bio);
		}
		printf("\n    }");
	}
	printf(",\n    \"chain_length\": %zu\n  }", id->n_chain);
	free(keyid);
	cert_view_clear(&v);
}

static int
cmd_list(int argc, char **argv)
{
	static const struct option opts[] = { { "pem", no_argument, NULL, 'p' },
					      { "json", no_argument, NULL, 'j' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	struct mtls_agent_identity *ids = NULL;
	mtls_agent *a = NULL;
	int c, r, pem = 0, json = 0, ret;
	size_t n = 0, i;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'p': pem = 1; break;
		case 'j': json = 1; break;
		default: return bad_option("list", argv, "list [--pem] [--json]");
		}
	}
	if (optind != argc)
		return usage_error("list", "unexpected argument '%s'", argv[optind]);
	if ((ret = connect_agent("list", &a)) != 0)
		return ret;
	if ((r = mtls_agent_list(a, &ids, &n)) != 0) {
		ret = agent_error("list", r, NULL);
		goto out;
	}
	if (json) {
		printf("[");
		for (i = 0; i < n; i++) {
			printf("%s\n", i > 0 ? "," : "");
			print_identity_json(&ids[i], pem);
		}
		printf("%s]\n", n > 0 ? "\n" : "");
	} else if (n == 0) {
		if (!quiet)
			printf("no identities\n");
	} else {
		for (i = 0; i < n; i++) {
			if (i > 0)
				putchar('\n');
			print_identity_text(&ids[i], pem);
		}
	}
	if (fflush(stdout) != 0) {
		errmsg("list", "cannot write output: %s", strerror(errno));
		ret = EXIT_FAILED;
	}
out:
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}

/* ---- login ---- */

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
static int
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
static const char *
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
static const char *
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
static int
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

static int
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

static int
cmd_login(int argc, char **argv)
{
	static const struct option opts[] = { { "pin-stdin", no_argument, NULL, 'i' },
					      { "pin-file", required_argument, NULL, 'f' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	struct mtls_agent_identity *ids = NULL;
	const char *identity = NULL, *pin_file = NULL, *who;
	int c, r, ret, from_stdin = 0, retries = -1;
	mtls_agent *a = NULL;
	char *pin = NULL, *prompt = NULL;
	char extra[64];
	size_t n = 0;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'i': from_stdin = 1; break;
		case 'f': pin_file = optarg; break;
		default:
			return bad_option("login", argv,
					  "login [IDENTITY] "
					  "[--pin-stdin | --pin-file FILE]");
		}
	}
	if (from_stdin && pin_file != NULL)
		return usage_error("login", "--pin-stdin and --pin-file exclude each other");
	if (optind < argc)
		identity = argv[optind++];
	if (optind != argc)
		return usage_error("login", "unexpected argument '%s'", argv[optind]);

	/* Find out the agent is there before asking anyone for a PIN. */
	if ((ret = connect_agent("login", &a)) != 0)
		return ret;
	if ((pin = mtls_secure_alloc(PIN_MAX + 2)) == NULL) {
		ret = agent_error("login", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if (from_stdin) {
		r = read_pin_line(STDIN_FILENO, pin);
	} else if (pin_file != NULL) {
		r = read_pin_file(pin_file, pin);
	} else {
		who = identity;
		if ((who == NULL || *who == '\0') && mtls_agent_list(a, &ids, &n) == 0 && n > 0)
			who = ids[0].token_label;
		if (who == NULL || *who == '\0')
			who = "token";
		if (asprintf(&prompt, "PIN for %s: ", safe(who)) == -1) {
			prompt = NULL;
			ret = agent_error("login", MTLS_ERR_ALLOC, NULL);
			goto out;
		}
		r = read_pin_tty(prompt, pin);
	}
	if (r != 0) {
		if (errno == E2BIG)
			ret = agent_error("login", MTLS_ERR_PIN_INVALID, NULL);
		else if (!from_stdin && pin_file == NULL && errno == ENOTTY) {
			errmsg("login", "cannot read the PIN: %s", no_terminal_hint("login"));
			ret = EXIT_FAILED;
		} else if (!from_stdin && pin_file == NULL && errno == ECANCELED) {
			errmsg("login", "the askpass program %s gave no PIN", askpass_program());
			ret = EXIT_FAILED;
		} else {
			errmsg("login", "cannot read the PIN from %s: %s",
			       from_stdin	  ? "standard input"
			       : pin_file != NULL ? pin_file
						  : "/dev/tty",
			       strerror(errno));
			ret = EXIT_FAILED;
		}
		goto out;
	}
	r = mtls_agent_login(a, identity, pin, &retries);
	mtls_secure_free(pin);
	pin = NULL;
	if (r != 0) {
		tries_left(r, retries, extra, sizeof(extra));
		ret = agent_error("login", r, extra);
		goto out;
	}
	if (!quiet)
		printf("logged in\n");
	ret = EXIT_OK;
out:
	mtls_secure_free(pin);
	free(prompt);
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}

/* ---- change-pin, unblock-pin, lock, unlock: secrets ---- */

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

static int
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

static void
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
static int
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
static int
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
static int
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

/* ---- change-pin, unblock-pin ---- */

static int
set_pin_command(int argc, char **argv, int unblock)
{
	static const struct option opts[] = { { "pin-stdin", no_argument, NULL, 'i' },
					      { "pin-file", required_argument, NULL, 'f' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *cmd = unblock ? "unblock-pin" : "change-pin";
	const char *identity = NULL, *pin_file = NULL;
	char *old = NULL, *new_pin = NULL, *check = NULL;
	static const char *const what_change[] = { "Current PIN", "New PIN", "Retype the new PIN" };
	static const char *const what_unblock[] = { "PUK (SO PIN)", "New PIN",
						    "Retype the new PIN" };
	char *prompts[3] = { NULL, NULL, NULL };
	struct secret_src src = { cmd, -1, "" };
	int c, r, ret, from_stdin = 0, retries = -1;
	mtls_agent *a = NULL;
	char extra[64];

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'i': from_stdin = 1; break;
		case 'f': pin_file = optarg; break;
		default:
			return bad_option(
			    cmd, argv,
			    unblock ? "unblock-pin [IDENTITY] [--pin-stdin | --pin-file FILE]"
				    : "change-pin [IDENTITY] [--pin-stdin | --pin-file FILE]");
		}
	}
	if (from_stdin && pin_file != NULL)
		return usage_error(cmd, "--pin-stdin and --pin-file exclude each other");
	if (optind < argc)
		identity = argv[optind++];
	if (optind != argc)
		return usage_error(cmd, "unexpected argument '%s'", argv[optind]);

	/* Find out the agent is there before asking anyone for a PIN. */
	if ((ret = connect_agent(cmd, &a)) != 0)
		return ret;
	if ((old = mtls_secure_alloc(PIN_MAX + 2)) == NULL ||
	    (new_pin = mtls_secure_alloc(PIN_MAX + 2)) == NULL ||
	    (check = mtls_secure_alloc(PIN_MAX + 2)) == NULL) {
		ret = agent_error(cmd, MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if ((ret = secret_src_open(&src, cmd, from_stdin, pin_file)) != 0)
		goto out;
	if (src.fd == -1 &&
	    (r = prompts_for(a, identity, unblock ? what_unblock : what_change, prompts, 3)) != 0) {
		ret = agent_error(cmd, r, NULL);
		goto out;
	}
	if ((ret = read_secret(&src, prompts[0], unblock ? "PUK" : "PIN", old)) != 0 ||
	    (ret = read_new_secret(&src, prompts[1], prompts[2], "new PIN", new_pin, check)) != 0)
		goto out;
	secret_src_close(&src);
	mtls_secure_free(check);
	check = NULL;
	if (unblock)
		r = mtls_agent_unblock_pin(a, identity, old, new_pin, &retries);
	else
		r = mtls_agent_change_pin(a, identity, old, new_pin, &retries);
	mtls_secure_free(old);
	mtls_secure_free(new_pin);
	old = new_pin = NULL;
	if (r != 0) {
		tries_left(r, retries, extra, sizeof(extra));
		ret = agent_error(cmd, r, extra);
		goto out;
	}
	if (!quiet)
		printf(unblock ? "PIN unblocked\n" : "PIN changed\n");
	ret = EXIT_OK;
out:
	secret_src_close(&src);
	mtls_secure_free(old);
	mtls_secure_free(new_pin);
	mtls_secure_free(check);
	free(prompts[0]);
	free(prompts[1]);
	free(prompts[2]);
	mtls_agent_free(a);
	return ret;
}

static int
cmd_change_pin(int argc, char **argv)
{
	return set_pin_command(argc, argv, 0);
}

static int
cmd_unblock_pin(int argc, char **argv)
{
	return set_pin_command(argc, argv, 1);
}

/* ---- lock, unlock ---- */

static int
lock_command(int argc, char **argv, int unlock)
{
	static const struct option opts[] = { { "stdin", no_argument, NULL, 'i' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *cmd = unlock ? "unlock" : "lock";
	char *pass = NULL, *check = NULL;
	struct secret_src src = { cmd, -1, "" };
	int c, r, ret, from_stdin = 0;
	mtls_agent *a = NULL;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'i': from_stdin = 1; break;
		default:
			return bad_option(cmd, argv,
					  unlock ? "unlock [--stdin]" : "lock [--stdin]");
		}
	}
	if (optind != argc)
		return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	if ((ret = connect_agent(cmd, &a)) != 0)
		return ret;
	if ((pass = mtls_secure_alloc(PIN_MAX + 2)) == NULL ||
	    (check = mtls_secure_alloc(PIN_MAX + 2)) == NULL) {
		ret = agent_error(cmd, MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if ((ret = secret_src_open(&src, cmd, from_stdin, NULL)) != 0)
		goto out;
	if (unlock)
		ret = read_secret(&src, "Passphrase to unlock the agent: ", "passphrase", pass);
	else
		ret = read_new_secret(&src, "Passphrase to lock the agent: ",
				      "Retype the passphrase: ", "passphrase", pass, check);
	if (ret != 0)
		goto out;
	mtls_secure_free(check);
	check = NULL;
	if (*pass == '\0') {
		/* The library would call it a malformed PIN. */
		errmsg(cmd, "empty passphrase");
		ret = EXIT_FAILED;
		goto out;
	}
	r = unlock ? mtls_agent_unlock(a, pass) : mtls_agent_lock(a, pass);
	mtls_secure_free(pass);
	pass = NULL;
	if (r != 0) {
		ret = agent_error(cmd, r, NULL);
		goto out;
	}
	if (!quiet)
		printf(unlock ? "agent unlocked\n" : "agent locked\n");
	ret = EXIT_OK;
out:
	mtls_secure_free(pass);
	mtls_secure_free(check);
	mtls_agent_free(a);
	return ret;
}

static int
cmd_lock(int argc, char **argv)
{
	return lock_command(argc, argv, 0);
}

static int
cmd_unlock(int argc, char **argv)
{
	return lock_command(argc, argv, 1);
}

/* ---- logout ---- */

static int
cmd_logout(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *identity = NULL;
	mtls_agent *a = NULL;
	int c, r, ret;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1)
		if (!common_option(c, optarg))
			return bad_option("logout", argv, "logout [IDENTITY]");
	if (optind < argc)
		identity = argv[optind++];
	if (optind != argc)
		return usage_error("logout", "unexpected argument '%s'", argv[optind]);
	if ((ret = connect_agent("logout", &a)) != 0)
		return ret;
	if ((r = mtls_agent_logout(a, identity)) != 0)
		ret = agent_error("logout", r, NULL);
	else if (!quiet)
		printf("logged out\n");
	mtls_agent_free(a);
	return ret;
}

/* ---- status ---- */

static int
cmd_status(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	struct mtls_agent_status st = { 0 };
	mtls_agent *a = NULL;
	int c, r, ret;
	uint32_t up;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1)
		if (!common_option(c, optarg))
			return bad_option("status", argv, "status");
	if (optind != argc)
		return usage_error("status", "unexpected argument '%s'", argv[optind]);
	if ((ret = connect_agent("status", &a)) != 0)
		return ret;
	if ((r = mtls_agent_get_status(a, &st)) != 0) {
		ret = agent_error("status", r, NULL);
		goto out;
	}
	up = st.uptime;
	printf("version:      %s\n", safe(st.version));
	printf("pid:          %u\n", st.pid);
	printf("uptime:       %u s (%ud %02uh %02um %02us)\n", up, up / 86400, up / 3600 % 24,
	       up / 60 % 60, up % 60);
	printf("connections:  %u\n", st.connections);
	printf("identities:   %u\n", st.identities);
	printf("tokens:       %u present, %u logged in\n", st.tokens_present, st.tokens_logged_in);
out:
	mtls_agent_status_clear(&st);
	mtls_agent_free(a);
	return ret;
}

/* ---- sign ---- */

/*
 * Reads all of fd into a malloc'd buffer, refusing more than CONTENT_MAX.
 * Returns 0, -1 with errno set, or 1 when the input is too large.
 */
static int
read_content(int fd, unsigned char **out, size_t *outlen)
{
	unsigned char *buf;
	size_t len = 0;
	struct stat sb;
	ssize_t n;

	*out = NULL;
	*outlen = 0;
	/* A regular file's size is known before a single byte is read. */
	if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > CONTENT_MAX)
		return 1;
	/* One spare byte shows that a stream was longer than allowed. */
	if ((buf = malloc(CONTENT_MAX + 1)) == NULL)
		return -1;
	while (len < CONTENT_MAX + 1) {
		n = read(fd, buf + len, CONTENT_MAX + 1 - len);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return -1;
		}
		len += (size_t)n;
	}
	if (len > CONTENT_MAX) {
		free(buf);
		return 1;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

static int
write_all(int fd, const void *p, size_t len)
{
	const unsigned char *d = p;
	ssize_t n;

	while (len > 0) {
		n = write(fd, d, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		d += n;
		len -= (size_t)n;
	}
	return 0;
}

static void
append_names(char *buf, size_t len, const char *name)
{
	size_t used = strlen(buf);

	snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "", name);
}

static int
cmd_sign(int argc, char **argv)
{
	static const struct option opts[] = { { "identity", required_argument, NULL, 'I' },
					      { "scheme", required_argument, NULL, 'S' },
					      { "purpose", required_argument, NULL, 'P' },
					      { "in", required_argument, NULL, 'i' },
					      { "out", required_argument, NULL, 'o' },
					      { "hex", no_argument, NULL, 'x' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *identity = NULL, *scheme_s = NULL, *purpose_s = NULL;
	const char *in = NULL, *outpath = NULL, *name;
	unsigned char *content = NULL, *sig = NULL;
	size_t content_len = 0, sig_len = 0, i;
	int c, r, ret, hex = 0, purpose, fd = -1;
	char names[512], *hexsig = NULL;
	mtls_agent *a = NULL;
	uint16_t scheme;

	while ((c = getopt_long(argc, argv, "s:q", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'I': identity = optarg; break;
		case 'S': scheme_s = optarg; break;
		case 'P': purpose_s = optarg; break;
		case 'i': in = optarg; break;
		case 'o': outpath = optarg; break;
		case 'x': hex = 1; break;
		default:
			return bad_option("sign", argv,
					  "sign --identity NAME "
					  "--scheme SCHEME --purpose PURPOSE "
					  "[--in FILE] [--out FILE] [--hex]");
		}
	}
	if (optind != argc)
		return usage_error("sign", "unexpected argument '%s'", argv[optind]);
	if (identity == NULL || scheme_s == NULL || purpose_s == NULL)
		return usage_error("sign", "--identity, --scheme and --purpose are required");
	if ((scheme = mtls_agent_scheme_from_name(scheme_s)) == 0) {
		names[0] = '\0';
		for (i = 0; i < sizeof(all_schemes) / sizeof(all_schemes[0]); i++)
			if ((name = mtls_agent_scheme_name(all_schemes[i])) != NULL)
				append_names(names, sizeof(names), name);
		return usage_error("sign", "unknown scheme '%s' (valid: %s)", scheme_s, names);
	}
	if ((purpose = mtls_agent_purpose_from_name(purpose_s)) == 0) {
		names[0] = '\0';
		for (c = 1; c < 32; c++)
			if ((name = mtls_agent_purpose_name(c)) != NULL)
				append_names(names, sizeof(names), name);
		return usage_error("sign", "unknown purpose '%s' (valid: %s)", purpose_s, names);
	}

	/* Content is read and checked before the agent is bothered. */
	if (in != NULL && strcmp(in, "-") != 0) {
		if ((fd = open(in, O_RDONLY | O_CLOEXEC)) == -1) {
			errmsg("sign", "cannot open %s: %s", in, strerror(errno));
			return EXIT_FAILED;
		}
	}
	r = read_content(fd == -1 ? STDIN_FILENO : fd, &content, &content_len);
	if (fd != -1)
		close(fd);
	fd = -1;
	if (r == 1) {
		errmsg("sign", "%s: content larger than %d bytes, the agent's limit",
		       in != NULL ? in : "standard input", CONTENT_MAX);
		return EXIT_FAILED;
	} else if (r != 0) {
		errmsg("sign", "cannot read %s: %s", in != NULL ? in : "standard input",
		       strerror(errno));
		return EXIT_FAILED;
	}

	if ((ret = connect_agent("sign", &a)) != 0)
		goto out;
	if ((r = mtls_agent_sign(a, identity, scheme, purpose, content, content_len, &sig,
				 &sig_len)) != 0) {
		ret = agent_error("sign", r, NULL);
		goto out;
	}
	if (outpath != NULL && strcmp(outpath, "-") != 0) {
		if ((fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) == -1) {
			errmsg("sign", "cannot create %s: %s", outpath, strerror(errno));
			ret = EXIT_FAILED;
			goto out;
		}
	}
	if (hex) {
		if ((hexsig = hex_string(sig, sig_len, "", 0)) == NULL) {
			ret = agent_error("sign", MTLS_ERR_ALLOC, NULL);
			goto out;
		}
		r = write_all(fd == -1 ? STDOUT_FILENO : fd, hexsig, strlen(hexsig));
		if (r == 0)
			r = write_all(fd == -1 ? STDOUT_FILENO : fd, "\n", 1);
	} else {
		r = write_all(fd == -1 ? STDOUT_FILENO : fd, sig, sig_len);
	}
	if (r != 0 || (fd != -1 && close(fd) != 0)) {
		errmsg("sign", "cannot write %s: %s", outpath != NULL ? outpath : "standard output",
		       strerror(errno));
		fd = -1;
		ret = EXIT_FAILED;
		goto out;
	}
	fd = -1;
	ret = EXIT_OK;
out:
	if (fd != -1)
		close(fd);
	free(hexsig);
	free(sig);
	free(content);
	mtls_agent_free(a);
	return ret;
}

/* ---- connect ---- */

/*
 * An HTTPS request (or a bare TLS handshake) made with an agent identity.
 * Every failure ends in one line that says which side refused what: the
 * agent (login, PIN, policy), the server (our certificate), or us (the
 * server's certificate or name), so a user knows where to look.
 */

#define CONNECT_SYNOPSIS                                                                           \
	"connect [--identity NAME] [--ca-file FILE | --ca-dir DIR] "                               \
	"[--tls1.2 | --tls1.3] [--header 'NAME: VALUE']... [--output FILE] "                       \
	"[--timeout SECONDS] [-v] https://HOST[:PORT][/PATH] | HOST:PORT"
#define CONNECT_MAX_HEADERS 64
#define HTTP_HEAD_MAX	    (64 * 1024)
#define HTTP_ERRBODY_MAX    (16 * 1024)
/* How long a bare handshake waits for the server's verdict on our
 * certificate, which TLS 1.3 delivers only after the client finished. */
#define RAW_VERDICT_MS 2000

struct target {
	int http;   /* https:// URL, else HOST:PORT */
	char *host; /* without brackets */
	char *port;
	char *path;	/* request target, starts with '/' */
	char *hostport; /* for messages and the Host header */
};

/* What the TLS callbacks saw; one connection per process run. */
static struct {
	int alert_received; /* the server sent a fatal alert */
	int alert;	    /* its description */
	int ticket;	    /* the server sent a TLS 1.3 session ticket */
} tls_seen;

static void
target_clear(struct target *t)
{
	free(t->host);
	free(t->port);
	free(t->path);
	free(t->hostport);
	memset(t, 0, sizeof(*t));
}

/* Bytes that would let an argument smuggle a header or a second request. */
static int
has_bad_bytes(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
			return 1;
	return 0;
}

/* Parses "https://HOST[:PORT][/PATH]" or "HOST:PORT"; IPv6 in brackets.
 * Returns 0, or -1 after a usage error message in err. */
static int
parse_target(const char *arg, struct target *t, char *err, size_t errlen)
{
	const char *auth, *end, *hs, *he, *ps = NULL;
	char *p;
	long port;

	memset(t, 0, sizeof(*t));
	if (strncasecmp(arg, "https://", 8) == 0) {
		t->http = 1;
		auth = arg + 8;
	} else if (strstr(arg, "://") != NULL) {
		snprintf(err, errlen, "unsupported URL '%s': only https:// is supported", arg);
		return -1;
	} else {
		auth = arg;
	}
	end = auth + strcspn(auth, "/?#");
	if (!t->http && *end != '\0') {
		snprintf(err, errlen, "'%s' is neither https://HOST[:PORT]/PATH nor HOST:PORT",
			 arg);
		return -1;
	}
	if (memchr(auth, '@', (size_t)(end - auth)) != NULL) {
		snprintf(err, errlen, "user names in URLs are not supported: '%s'", arg);
		return -1;
	}
	if (*auth == '[') {
		hs = auth + 1;
		if ((he = memchr(hs, ']', (size_t)(end - hs))) == NULL) {
			snprintf(err, errlen, "missing ']' in '%s'", arg);
			return -1;
		}
		if (he + 1 < end) {
			if (he[1] != ':') {
				snprintf(err, errlen, "junk after ']' in '%s'", arg);
				return -1;
			}
			ps = he + 2;
		}
	} else {
		hs = auth;
		he = memchr(auth, ':', (size_t)(end - auth));
		if (he != NULL) {
			ps = he + 1;
			if (memchr(ps, ':', (size_t)(end - ps)) != NULL) {
				snprintf(err, errlen, "IPv6 addresses go in brackets: '%s'", arg);
				return -1;
			}
		} else {
			he = end;
		}
	}
	if (he == hs) {
		snprintf(err, errlen, "no host in '%s'", arg);
		return -1;
	}
	if (ps == NULL && !t->http) {
		snprintf(err, errlen, "no port in '%s' (HOST:PORT)", arg);
		return -1;
	}
	if (ps != NULL) {
		if (ps == end || (size_t)(end - ps) > 5 ||
		    strspn(ps, "0123456789") < (size_t)(end - ps)) {
			snprintf(err, errlen, "bad port in '%s'", arg);
			return -1;
		}
		port = strtol(ps, NULL, 10);
		if (port < 1 || port > 65535) {
			snprintf(err, errlen, "port out of range in '%s'", arg);
			return -1;
		}
	} else {
		port = 443;
	}
	if ((t->host = strndup(hs, (size_t)(he - hs))) == NULL ||
	    asprintf(&t->port, "%ld", port) == -1 ||
	    asprintf(&t->hostport, "%s%s%s%s%s", *auth == '[' ? "[" : "", t->host,
		     *auth == '[' ? "]" : "", port != 443 || !t->http ? ":" : "",
		     port != 443 || !t->http ? t->port : "") == -1 ||
	    (t->path = strdup(*end == '/' ? end : "/")) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (*end == '?') { /* "https://h?q" asks for "/?q" */
		free(t->path);
		if (asprintf(&t->path, "/%s", end) == -1) {
			t->path = NULL;
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	/* A fragment is never sent. */
	if ((p = strchr(t->path, '#')) != NULL)
		*p = '\0';
	if (has_bad_bytes(t->host) || has_bad_bytes(t->path)) {
		snprintf(err, errlen,
			 "spaces or control characters in '%s' "
			 "(percent-encode them)",
			 arg);
		return -1;
	}
	return 0;
}

static int
header_ok(const char *h)
{
	const char *colon = strchr(h, ':'), *p;

	if (colon == NULL || colon == h)
		return 0;
	for (p = h; p < colon; p++)
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
		    !(*p >= '0' && *p <= '9') && strchr("!#$%&'*+-.^_`|~", *p) == NULL)
			return 0;
	for (p = colon + 1; *p != '\0'; p++)
		if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
			return 0;
	return 1;
}

/*
 * Picks the identity: the one named, or the agent's only one.  Refuses
 * before any network traffic when the token cannot sign (absent, logged
 * out, PIN locked), so that a request is never half made.  An
 * "mtls-agent:" URI is passed through unchecked: the agent resolves it.
 */
static int
choose_identity(const char *wanted, char **chosen)
{
	struct mtls_agent_identity *ids = NULL, *id = NULL;
	char names[1024] = "";
	mtls_agent *a = NULL;
	size_t n = 0, i;
	int r, ret;

	*chosen = NULL;
	if ((ret = connect_agent("connect", &a)) != 0)
		return ret;
	if ((r = mtls_agent_list(a, &ids, &n)) != 0) {
		ret = agent_error("connect", r, NULL);
		goto out;
	}
	for (i = 0; i < n; i++)
		append_names(names, sizeof(names), safe(ids[i].name));
	if (wanted != NULL && strncmp(wanted, "mtls-agent:", 11) == 0) {
		if ((*chosen = strdup(wanted)) == NULL)
			ret = agent_error("connect", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	if (wanted == NULL) {
		if (n == 0) {
			errmsg("connect", "the agent offers no identities");
			ret = EXIT_FAILED;
			goto out;
		}
		if (n > 1) {
			ret = usage_error("connect",
					  "the agent offers several identities, "
					  "choose one with --identity: %s",
					  names);
			goto out;
		}
		id = &ids[0];
	} else {
		for (i = 0; i < n && id == NULL; i++)
			if (strcmp(ids[i].name, wanted) == 0)
				id = &ids[i];
		if (id == NULL) {
			errmsg("connect", "%s '%s' (the agent offers: %s)",
			       mtls_agent_strerror(MTLS_ERR_NO_IDENTITY), safe(wanted),
			       n > 0 ? names : "none");
			ret = EXIT_FAILED;
			goto out;
		}
	}
	if (id->cert_der == NULL) {
		errmsg("connect", "identity '%s' has no certificate", safe(id->name));
		ret = EXIT_FAILED;
		goto out;
	}
	if (id->flags & MTLS_AGENT_ID_PIN_LOCKED) {
		errmsg("connect", "%s for identity '%s': unblock it first",
		       mtls_agent_strerror(MTLS_ERR_PIN_LOCKED), safe(id->name));
		ret = EXIT_LOCKED;
		goto out;
	}
	if (!(id->flags & MTLS_AGENT_ID_TOKEN_PRESENT)) {
		errmsg("connect", "%s for identity '%s'",
		       mtls_agent_strerror(MTLS_ERR_TOKEN_ABSENT), safe(id->name));
		ret = EXIT_FAILED;
		goto out;
	}
	if (!(id->flags & MTLS_AGENT_ID_LOGGED_IN)) {
		errmsg("connect", "%s for identity '%s' (run '" PROG " login %s')",
		       mtls_agent_strerror(MTLS_ERR_LOGIN_REQUIRED), safe(id->name),
		       safe(id->name));
		ret = EXIT_LOGIN;
		goto out;
	}
	if ((*chosen = strdup(id->name)) == NULL) {
		ret = agent_error("connect", MTLS_ERR_ALLOC, NULL);
		goto out;
	}
	ret = EXIT_OK;
out:
	mtls_agent_identities_free(ids, n);
	mtls_agent_free(a);
	return ret;
}

/* Connects a TCP socket to host:port within timeout_ms (0: no limit). */
static int
tcp_connect(const struct target *t, int timeout_ms, int verbose)
{
	struct addrinfo hints, *res = NULL, *ai;
	char addr[INET6_ADDRSTRLEN + 8];
	int fd = -1, r, e = 0, flags;
	socklen_t elen;
	struct pollfd pfd;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV;
	if ((r = getaddrinfo(t->host, t->port, &hints, &res)) != 0) {
		errmsg("connect", "cannot resolve %s: %s", safe(t->host),
		       r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0,
				NI_NUMERICHOST) != 0)
			snprintf(addr, sizeof(addr), "?");
		if (verbose)
			fprintf(stderr, "* connecting to %s port %s\n", addr, t->port);
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd == -1) {
			e = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			do
				r = poll(&pfd, 1, timeout_ms > 0 ? timeout_ms : -1);
			while (r == -1 && errno == EINTR);
			elen = sizeof(e);
			if (r == 0)
				e = ETIMEDOUT;
			else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) != 0)
				e = errno;
			if (r > 0 && e == 0)
				break;
		} else {
			e = errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		errmsg("connect", "cannot connect to %s: %s", safe(t->hostport),
		       strerror(e != 0 ? e : ECONNREFUSED));
		return -1;
	}
	/* Blocking from here on; the timeout bounds each read and write. */
	if ((flags = fcntl(fd, F_GETFL)) != -1)
		(void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
	if (timeout_ms > 0) {
		struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

		(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	return fd;
}

static void
tls_info_cb(const SSL *ssl, int where, int ret)
{
	(void)ssl;
	/* Only fatal alerts: close_notify is a warning and means "done". */
	if ((where & SSL_CB_READ_ALERT) && (ret >> 8) == SSL3_AL_FATAL) {
		tls_seen.alert_received = 1;
		tls_seen.alert = ret & 0xff;
	}
}

static int
tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl;
	(void)sess;
	tls_seen.ticket = 1;
	return 0; /* not kept: every run is a new process */
}

/* The alerts a server sends when it does not accept our certificate (or
 * the signature made with its key). */
static const char *
client_cert_alert(int alert)
{
	switch (alert) {
	case SSL_AD_BAD_CERTIFICATE: return "bad certificate";
	case SSL_AD_UNSUPPORTED_CERTIFICATE: return "unsupported certificate";
	case SSL_AD_CERTIFICATE_REVOKED: return "certificate revoked";
	case SSL_AD_CERTIFICATE_EXPIRED: return "certificate expired";
	case SSL_AD_CERTIFICATE_UNKNOWN: return "certificate unknown";
	case SSL_AD_UNKNOWN_CA: return "unknown CA";
	case SSL_AD_ACCESS_DENIED: return "access denied";
	case SSL_AD_DECRYPT_ERROR: return "decrypt error (the signature did not verify)";
	case TLS13_AD_CERTIFICATE_REQUIRED: return "certificate required";
	}
	return NULL;
}

/* Agent errors whose text can be recognised in the OpenSSL error queue;
 * the generic ones ("internal error", "timed out") could be anybody's. */
static const int agent_errs[] = {
	MTLS_ERR_LOGIN_REQUIRED,
	MTLS_ERR_PIN_LOCKED,
	MTLS_ERR_PIN_INCORRECT,
	MTLS_ERR_POLICY_DENIED,
	MTLS_ERR_CONTENT_REJECTED,
	MTLS_ERR_TOKEN_ABSENT,
	MTLS_ERR_NO_IDENTITY,
	MTLS_ERR_PEER_DENIED,
	MTLS_ERR_UNSUPPORTED_SCHEME,
	MTLS_ERR_TOKEN,
	MTLS_ERR_BUSY,
	MTLS_ERR_CONNECT,
	MTLS_ERR_NO_SOCKET,
	MTLS_ERR_UNSUPPORTED_VERSION,
	MTLS_ERR_AGENT_LOCKED,
	MTLS_ERR_CONFIRM_DENIED,
	MTLS_ERR_RATE_LIMITED,
};

/*
 * Empties the OpenSSL error queue.  Returns the agent error named in it
 * (0: none) and copies the text of the first error, which is the cause,
 * to first.
 */
static int
drain_errors(char *first, size_t first_len, int *verify_failed)
{
	const char *data = NULL, *reason;
	char buf[256], text[512];
	unsigned long e;
	int flags = 0, agent_err = 0;
	size_t i;

	first[0] = '\0';
	*verify_failed = 0;
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		reason = ERR_reason_error_string(e);
		if (reason == NULL) {
			ERR_error_string_n(e, buf, sizeof(buf));
			reason = buf;
		}
		snprintf(text, sizeof(text), "%s%s%s", reason,
			 (flags & ERR_TXT_STRING) && data != NULL && *data != '\0' ? ": " : "",
			 (flags & ERR_TXT_STRING) && data != NULL ? data : "");
		if (first[0] == '\0')
			snprintf(first, first_len, "%s", text);
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
			*verify_failed = 1;
		for (i = 0; agent_err == 0 && i < sizeof(agent_errs) / sizeof(agent_errs[0]); i++)
			if (strstr(text, mtls_agent_strerror(agent_errs[i])) != NULL)
				agent_err = agent_errs[i];
	}
	return agent_err;
}

/*
 * Explains why a TLS operation failed, in one line, and returns the exit
 * code.  `what` says what was going on ("TLS handshake", "reading the
 * response").
 */
static int
tls_failure(SSL *ssl, int r, const struct target *t, const char *identity, const char *what,
	    int sys_errno)
{
	char first[512];
	const char *alert, *detail;
	int err = SSL_get_error(ssl, r), agent_err, verify_failed;
	long vr = SSL_get_verify_result(ssl);

	agent_err = drain_errors(first, sizeof(first), &verify_failed);
	detail = mtls_agent_last_message();
	if (agent_err != 0) {
		fprintf(stderr, PROG ": connect: the agent did not sign for identity '%s': %s",
			safe(identity), mtls_agent_strerror(agent_err));
		if (detail != NULL && *detail != '\0')
			fprintf(stderr, ": %s", safe(detail));
		fputc('\n', stderr);
		return exit_code(agent_err);
	}
	if (verify_failed || (vr != X509_V_OK && SSL_get0_peer_certificate(ssl) != NULL &&
			      !SSL_is_init_finished(ssl))) {
		if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
			errmsg("connect", "server certificate does not match host %s",
			       safe(t->host));
		else
			errmsg("connect", "server certificate not trusted: %s",
			       X509_verify_cert_error_string(vr));
		return EXIT_FAILED;
	}
	if (tls_seen.alert_received) {
		if ((alert = client_cert_alert(tls_seen.alert)) != NULL)
			errmsg("connect", "server rejected the client certificate: %s", alert);
		else
			errmsg("connect", "%s with %s failed: the server sent alert '%s'", what,
			       safe(t->hostport), SSL_alert_desc_string_long(tls_seen.alert));
		return EXIT_FAILED;
	}
	if (detail != NULL && *detail != '\0') {
		/* The agent said no in words the provider did not pass on. */
		fprintf(stderr, PROG ": connect: the agent did not sign for identity '%s'",
			safe(identity));
		fprintf(stderr, ": %s\n", safe(detail));
		return EXIT_FAILED;
	}
	if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_SSL) {
		if (sys_errno == EAGAIN || sys_errno == EWOULDBLOCK) {
			errmsg("connect", "%s with %s: timed out", what, safe(t->hostport));
			return EXIT_FAILED;
		}
		if (err == SSL_ERROR_SYSCALL && sys_errno != 0) {
			errmsg("connect", "%s with %s failed: %s", what, safe(t->hostport),
			       strerror(sys_errno));
			return EXIT_FAILED;
		}
		if (first[0] == '\0' || strstr(first, "unexpected eof") != NULL) {
			errmsg("connect", "%s with %s failed: the server closed the connection",
			       what, safe(t->hostport));
			return EXIT_FAILED;
		}
	}
	errmsg("connect", "%s with %s failed: %s", what, safe(t->hostport),
	       first[0] != '\0' ? first : "unknown TLS error");
	return EXIT_FAILED;
}

/* Buffered reader over the TLS connection, for the HTTP response. */
struct rd {
	SSL *ssl;
	unsigned char buf[16384];
	size_t pos, len;
	int eof;  /* clean end: close_notify, or EOF after the message */
	int fail; /* SSL_read failed: ret and errno below */
	int ret, sys_errno;
};

static int
rd_fill(struct rd *r)
{
	int n;

	if (r->pos < r->len)
		return 1;
	if (r->eof || r->fail)
		return 0;
	ERR_clear_error();
	errno = 0;
	n = SSL_read(r->ssl, r->buf, sizeof(r->buf));
	if (n > 0) {
		r->pos = 0;
		r->len = (size_t)n;
		return 1;
	}
	r->ret = n;
	r->sys_errno = errno;
	if (SSL_get_error(r->ssl, n) == SSL_ERROR_ZERO_RETURN) {
		r->eof = 1;
	} else if (!tls_seen.alert_received && SSL_get_error(r->ssl, n) == SSL_ERROR_SSL &&
		   ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		/* TCP end without close_notify: whether that truncated the
		 * response is decided by the HTTP framing. */
		ERR_clear_error();
		r->eof = 2;
	} else {
		r->fail = 1;
	}
	return 0;
}

/* Reads one line (without CR LF) into line; 0 ok, -1 end or too long. */
static int
rd_line(struct rd *r, char *line, size_t max, size_t *total)
{
	size_t o = 0;
	unsigned char c;

	for (;;) {
		if (!rd_fill(r))
			return -1;
		c = r->buf[r->pos++];
		if (++*total > HTTP_HEAD_MAX)
			return -1;
		if (c == '\n')
			break;
		if (o + 1 < max)
			line[o++] = (char)c;
	}
	if (o > 0 && line[o - 1] == '\r')
		o--;
	line[o] = '\0';
	return 0;
}

/* Where a body goes: a file descriptor, or memory (error pages). */
struct sink {
	int fd; /* -1: memory */
	char *mem;
	size_t mem_len, mem_max;
	int write_errno;
};

static void
sink_put(struct sink *s, const unsigned char *p, size_t n)
{
	if (s->fd != -1) {
		if (s->write_errno == 0 && write_all(s->fd, p, n) != 0)
			s->write_errno = errno;
		return;
	}
	if (n > s->mem_max - s->mem_len)
		n = s->mem_max - s->mem_len;
	memcpy(s->mem + s->mem_len, p, n);
	s->mem_len += n;
	s->mem[s->mem_len] = '\0';
}

/* Copies up to n bytes (n == SIZE_MAX: until the end) to the sink.
 * Returns the bytes copied. */
static size_t
rd_copy(struct rd *r, struct sink *s, size_t n)
{
	size_t done = 0, k;

	while (done < n && rd_fill(r)) {
		k = r->len - r->pos;
		if (k > n - done)
			k = n - done;
		sink_put(s, r->buf + r->pos, k);
		r->pos += k;
		done += k;
	}
	return done;
}

/* Server text for a one-line message: control bytes become blanks (safe()
 * cannot be used twice in one printf: its buffer is shared). */
static void
blank_controls(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/* The <title> of an HTML error page, which is where servers such as nginx
 * say why they refused ("400 The SSL certificate error"). */
static void
html_title(const char *body, char *out, size_t len)
{
	const char *s, *e;
	size_t n;

	out[0] = '\0';
	if (body == NULL || (s = strcasestr(body, "<title>")) == NULL)
		return;
	s += 7;
	if ((e = strcasestr(s, "</title>")) == NULL)
		return;
	n = (size_t)(e - s) < len - 1 ? (size_t)(e - s) : len - 1;
	memcpy(out, s, n);
	out[n] = '\0';
	blank_controls(out);
}

static void
print_name(FILE *f, const char *label, X509 *x)
{
	char *s = x != NULL ? name_string(X509_get_subject_name(x)) : NULL;

	fprintf(f, "%s%s\n", label, s != NULL ? safe(s) : "(none)");
	free(s);
}

/* The signature algorithm we signed the handshake with. */
static const char *
client_sig_name(SSL *ssl, char *buf, size_t len)
{
	int type = NID_undef, md = NID_undef;

	if (SSL_get_signature_type_nid(ssl, &type) != 1 || SSL_get_signature_nid(ssl, &md) != 1)
		return "(none)";
	snprintf(buf, len, "%s+%s",
		 type == EVP_PKEY_RSA_PSS ? "RSA-PSS"
		 : type == EVP_PKEY_RSA	  ? "RSA-PKCS1"
		 : type == EVP_PKEY_EC	  ? "ECDSA"
					  : OBJ_nid2sn(type),
		 OBJ_nid2sn(md));
	return buf;
}

static void
print_session(FILE *f, SSL *ssl, const char *identity, const char *prefix)
{
	char buf[64];

	fprintf(f, "%sprotocol: %s\n", prefix, SSL_get_version(ssl));
	fprintf(f, "%scipher: %s\n", prefix, SSL_get_cipher_name(ssl));
	fprintf(f, "%s", prefix);
	print_name(f, "server certificate: ", SSL_get0_peer_certificate(ssl));
	fprintf(f, "%sidentity: %s\n", prefix, safe(identity));
	fprintf(f, "%s", prefix);
	print_name(f, "client certificate: ", SSL_get_certificate(ssl));
	fprintf(f, "%sclient signature: %s\n", prefix, client_sig_name(ssl, buf, sizeof(buf)));
}

/*
 * A bare handshake: report it, and wait briefly for the server's verdict,
 * which TLS 1.3 sends after our Finished: a session ticket (accepted) or
 * an alert (rejected).
 */
static int
raw_verdict(SSL *ssl, int fd, const struct target *t, const char *identity)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	unsigned char c;
	int r, waited = 0, n;
	const char *verdict;

	SSL_clear_mode(ssl, SSL_MODE_AUTO_RETRY);
	while (SSL_version(ssl) == TLS1_3_VERSION && !tls_seen.ticket && !tls_seen.alert_received &&
	       waited < RAW_VERDICT_MS) {
		/* Records OpenSSL already read are not seen by poll(). */
		if (!SSL_has_pending(ssl)) {
			r = poll(&pfd, 1, 100);
			waited += 100;
			if (r <= 0)
				continue;
		}
		ERR_clear_error();
		errno = 0;
		n = SSL_read(ssl, &c, 1);
		if (n > 0)
			break; /* the server talks first: it took us */
		if (SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ)
			return tls_failure(ssl, n, t, identity, "TLS handshake", errno);
	}
	if (tls_seen.alert_received)
		return tls_failure(ssl, -1, t, identity, "TLS handshake", 0);
	if (SSL_version(ssl) != TLS1_3_VERSION)
		verdict = "accepted (TLS 1.2 handshake finished)";
	else if (tls_seen.ticket)
		verdict = "accepted (session ticket received)";
	else
		verdict = "unknown (handshake finished; the server sent nothing more)";
	printf("connected to %s\n", safe(t->hostport));
	print_session(stdout, ssl, identity, "");
	printf("client certificate verdict: %s\n", verdict);
	return EXIT_OK;
}

/* Sends the request and handles the response; returns the exit code. */
static int
http_exchange(SSL *ssl, const struct target *t, const char *identity, char **headers,
	      size_t n_headers, const char *outpath, int verbose)
{
	char *req = NULL, line[8192], status[512], title[256], *p, *end;
	struct sink out = { .fd = -1 }, errbody = { .fd = -1 };
	struct sink *s;
	struct rd *r = NULL;
	size_t total = 0, i, len, got;
	unsigned long long clen = 0, chunk;
	int have_clen = 0, chunked = 0, code, ret = EXIT_FAILED, host_given = 0, n;
	FILE *mf = NULL;

	for (i = 0; i < n_headers; i++)
		if (strncasecmp(headers[i], "host:", 5) == 0)
			host_given = 1;
	if ((mf = open_memstream(&req, &len)) == NULL) {
		errmsg("connect", "out of memory");
		goto out;
	}
	fprintf(mf, "GET %s HTTP/1.1\r\n", t->path);
	if (!host_given)
		fprintf(mf, "Host: %s\r\n", t->hostport);
	fprintf(mf, "User-Agent: " PROG "/" PACKAGE_VERSION "\r\nAccept: */*\r\n");
	for (i = 0; i < n_headers; i++)
		fprintf(mf, "%s\r\n", headers[i]);
	fprintf(mf, "Connection: close\r\n\r\n");
	if (fclose(mf) != 0) {
		mf = NULL;
		errmsg("connect", "out of memory");
		goto out;
	}
	mf = NULL;
	if (verbose) {
		for (p = req; (end = strstr(p, "\r\n")) != NULL && end != p; p = end + 2)
			fprintf(stderr, "> %.*s\n", (int)(end - p), p);
	}
	ERR_clear_error();
	errno = 0;
	if ((n = SSL_write(ssl, req, (int)len)) <= 0) {
		int e = errno;
		unsigned char c;

		/* A server that refused our certificate may have said so in an
		 * alert already waiting to be read. */
		if (!tls_seen.alert_received)
			(void)SSL_read(ssl, &c, 1);
		ret = tls_failure(ssl, n, t, identity, "sending the request", e);
		goto out;
	}

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		errmsg("connect", "out of memory");
		goto out;
	}
	r->ssl = ssl;
	/* Status line, skipping 1xx interim responses. */
	for (;;) {
		if (rd_line(r, status, sizeof(status), &total) != 0)
			goto read_error;
		if (strncmp(status, "HTTP/", 5) != 0 || (p = strchr(status, ' ')) == NULL ||
		    strspn(p + 1, "0123456789") != 3) {
			errmsg("connect", "%s did not answer with HTTP: '%s'", safe(t->hostport),
			       safe(status));
			goto out;
		}
		code = atoi(p + 1);
		if (verbose)
			fprintf(stderr, "< %s\n", safe(status));
		have_clen = chunked = 0;
		for (;;) {
			if (rd_line(r, line, sizeof(line), &total) != 0)
				goto read_error;
			if (line[0] == '\0')
				break;
			if (verbose)
				fprintf(stderr, "< %s\n", safe(line));
			if (strncasecmp(line, "content-length:", 15) == 0) {
				have_clen = 1;
				clen = strtoull(line + 15, NULL, 10);
			} else if (strncasecmp(line, "transfer-encoding:", 18) == 0 &&
				   strcasestr(line + 18, "chunked") != NULL) {
				chunked = 1;
			}
		}
		if (code >= 200)
			break;
	}

	if (code >= 200 && code < 300) {
		if (outpath != NULL && strcmp(outpath, "-") != 0) {
			if ((out.fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
					   0666)) == -1) {
				errmsg("connect", "cannot create %s: %s", outpath, strerror(errno));
				goto out;
			}
		} else {
			out.fd = STDOUT_FILENO;
		}
		s = &out;
	} else {
		if ((errbody.mem = malloc(HTTP_ERRBODY_MAX + 1)) == NULL) {
			errmsg("connect", "out of memory");
			goto out;
		}
		errbody.mem[0] = '\0';
		errbody.mem_max = HTTP_ERRBODY_MAX;
		s = &errbody;
	}

	if (chunked) {
		for (;;) {
			if (rd_line(r, line, sizeof(line), &total) != 0)
				goto read_error;
			total = 0;
			errno = 0;
			chunk = strtoull(line, &end, 16);
			if (end == line || errno != 0) {
				errmsg("connect", "bad chunk in the response from %s",
				       safe(t->hostport));
				goto out;
			}
			if (chunk == 0)
				break; /* trailers are not needed: the message is complete */
			if ((got = rd_copy(r, s, (size_t)chunk)) != chunk ||
			    rd_line(r, line, sizeof(line), &total) != 0)
				goto read_error;
		}
	} else if (have_clen) {
		if ((got = rd_copy(r, s, (size_t)clen)) != clen)
			goto read_error;
	} else {
		(void)rd_copy(r, s, SIZE_MAX);
		if (r->fail)
			goto read_error;
		if (r->eof == 2 && verbose)
			fprintf(stderr, "* the server closed the connection without "
					"close_notify\n");
	}
	if (out.write_errno != 0 ||
	    (out.fd != -1 && out.fd != STDOUT_FILENO && close(out.fd) != 0)) {
		errmsg("connect", "cannot write %s: %s",
		       outpath != NULL ? outpath : "standard output",
		       strerror(out.write_errno != 0 ? out.write_errno : errno));
		out.fd = -1;
		goto out;
	}
	if (out.fd != STDOUT_FILENO)
		out.fd = -1;
	if (code < 200 || code >= 300) {
		html_title(errbody.mem, title, sizeof(title));
		blank_controls(status);
		if (code == 400 && strstr(title, "SSL certificate") != NULL)
			/* nginx's way to refuse a client certificate */
			errmsg("connect", "server rejected the client certificate: %s (%s)", status,
			       title);
		else
			errmsg("connect", "server answered %s%s%s%s", status,
			       title[0] != '\0' ? " (" : "", title, title[0] != '\0' ? ")" : "");
		goto out;
	}
	ret = EXIT_OK;
	goto out;

read_error:
	if (r->fail) {
		ret = tls_failure(ssl, r->ret, t, identity, "reading the response", r->sys_errno);
	} else if (total > HTTP_HEAD_MAX) {
		errmsg("connect", "response headers from %s larger than %d bytes",
		       safe(t->hostport), HTTP_HEAD_MAX);
	} else {
		errmsg("connect", "the response from %s ended early", safe(t->hostport));
	}
out:
	if (mf != NULL)
		fclose(mf);
	if (out.fd != -1 && out.fd != STDOUT_FILENO)
		close(out.fd);
	free(errbody.mem);
	free(r);
	free(req);
	return ret;
}

static int
cmd_connect(int argc, char **argv)
{
	static const struct option opts[] = { { "identity", required_argument, NULL, 'I' },
					      { "ca-file", required_argument, NULL, 'C' },
					      { "ca-dir", required_argument, NULL, 'D' },
					      { "tls1.2", no_argument, NULL, '2' },
					      { "tls1.3", no_argument, NULL, '3' },
					      { "header", required_argument, NULL, 'H' },
					      { "output", required_argument, NULL, 'o' },
					      { "timeout", required_argument, NULL, 't' },
					      { "verbose", no_argument, NULL, 'v' },
					      { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { NULL, 0, NULL, 0 } };
	const char *want_identity = NULL, *ca_file = NULL, *ca_dir = NULL, *outpath = NULL;
	char *headers[CONNECT_MAX_HEADERS], *identity = NULL, err[512], *end;
	size_t n_headers = 0;
	int c, r, ret = EXIT_FAILED, version = 0, verbose = 0, fd = -1, timeout_ms = 30000;
	struct target t = { 0 };
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	struct in6_addr a6;
	struct in_addr a4;
	long secs;

	while ((c = getopt_long(argc, argv, "s:qH:o:v", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'I': want_identity = optarg; break;
		case 'C': ca_file = optarg; break;
		case 'D': ca_dir = optarg; break;
		case '2':
		case '3':
			if (version != 0 && version != c)
				return usage_error("connect", "--tls1.2 and --tls1.3 exclude "
							      "each other");
			version = c;
			break;
		case 'H':
			if (!header_ok(optarg))
				return usage_error("connect", "bad header '%s' (NAME: VALUE)",
						   safe(optarg));
			if (n_headers == CONNECT_MAX_HEADERS)
				return usage_error("connect", "more than %d headers",
						   CONNECT_MAX_HEADERS);
			headers[n_headers++] = optarg;
			break;
		case 'o': outpath = optarg; break;
		case 't':
			errno = 0;
			secs = strtol(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end != '\0' || errno != 0 ||
			    secs > 86400)
				return usage_error("connect",
						   "bad timeout '%s' (seconds, 0 to "
						   "86400; 0: no limit)",
						   safe(optarg));
			timeout_ms = (int)secs * 1000;
			break;
		case 'v': verbose = 1; break;
		default: return bad_option("connect", argv, CONNECT_SYNOPSIS);
		}
	}
	if (optind >= argc)
		return usage_error("connect", "no URL given (usage: %s)", CONNECT_SYNOPSIS);
	if (optind + 1 != argc)
		return usage_error("connect", "unexpected argument '%s'", argv[optind + 1]);
	if (ca_file != NULL && ca_dir != NULL)
		return usage_error("connect", "--ca-file and --ca-dir exclude each other");
	if (parse_target(argv[optind], &t, err, sizeof(err)) != 0) {
		target_clear(&t);
		return usage_error("connect", "%s", err);
	}
	if (!t.http && (n_headers > 0 || outpath != NULL)) {
		target_clear(&t);
		return usage_error("connect", "--header and --output need an https:// URL");
	}
	/* A server that closes on us must not kill us before we explain. */
	(void)signal(SIGPIPE, SIG_IGN);

	if ((ret = choose_identity(want_identity, &identity)) != 0)
		goto out;
	ret = EXIT_FAILED;
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    !SSL_CTX_set_min_proto_version(ctx, version == '3' ? TLS1_3_VERSION : TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, version == '2' ? TLS1_2_VERSION : 0)) {
		errmsg("connect", "cannot set up TLS: %s",
		       ERR_reason_error_string(ERR_get_error()));
		goto out;
	}
	if (ca_file != NULL || ca_dir != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, ca_dir) != 1) {
			errmsg("connect", "cannot load CA certificates from %s: %s",
			       ca_file != NULL ? ca_file : ca_dir,
			       ERR_reason_error_string(ERR_peek_last_error()) != NULL
				   ? ERR_reason_error_string(ERR_peek_last_error())
				   : "no certificate");
			goto out;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		errmsg("connect", "cannot load the system CA store");
		goto out;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(ctx, tls_new_session_cb);
	SSL_CTX_set_info_callback(ctx, tls_info_cb);

	ERR_clear_error();
	if ((r = mtls_agent_ssl_ctx_use_identity(ctx, socket_path, identity)) != 0) {
		char extra[128];

		snprintf(extra, sizeof(extra), " (identity '%s')", safe(identity));
		ret = agent_error("connect", r, extra);
		goto out;
	}

	if ((fd = tcp_connect(&t, timeout_ms, verbose)) == -1)
		goto out;
	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1) {
		errmsg("connect", "cannot set up TLS: out of memory");
		goto out;
	}
	/* An address is checked against the certificate's IP addresses and
	 * never sent as SNI (RFC 6066 section 3). */
	if (inet_pton(AF_INET, t.host, &a4) == 1 || inet_pton(AF_INET6, t.host, &a6) == 1) {
		r = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t.host);
	} else {
		r = SSL_set1_host(ssl, t.host) == 1 && SSL_set_tlsext_host_name(ssl, t.host) == 1;
	}
	if (r != 1) {
		errmsg("connect", "cannot use host name '%s' for TLS", safe(t.host));
		goto out;
	}

	ERR_clear_error();
	errno = 0;
	if ((r = SSL_connect(ssl)) != 1) {
		ret = tls_failure(ssl, r, &t, identity, "TLS handshake", errno);
		goto out;
	}
	if (verbose)
		print_session(stderr, ssl, identity, "* ");
	if (!t.http)
		ret = raw_verdict(ssl, fd, &t, identity);
	else
		ret = http_exchange(ssl, &t, identity, headers, n_headers, outpath, verbose);
	if (ret == EXIT_OK) {
		(void)SSL_shutdown(ssl);
		if (fflush(stdout) != 0) {
			errmsg("connect", "cannot write output: %s", strerror(errno));
			ret = EXIT_FAILED;
		}
	}
out:
	SSL_free(ssl);
	if (fd != -1)
		close(fd);
	SSL_CTX_free(ctx);
	free(identity);
	target_clear(&t);
	ERR_clear_error();
	return ret;
}

/* ---- main ---- */

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *synopsis; /* after "usage: mtls-agentctl [-s PATH] [-q] " */
} commands[] = {
	{ "list", cmd_list, "list [--pem] [--json]" },
	{ "login", cmd_login, "login [IDENTITY] [--pin-stdin | --pin-file FILE]" },
	{ "logout", cmd_logout, "logout [IDENTITY]" },
	{ "status", cmd_status, "status" },
	{ "change-pin", cmd_change_pin, "change-pin [IDENTITY] [--pin-stdin | --pin-file FILE]" },
	{ "unblock-pin", cmd_unblock_pin,
	  "unblock-pin [IDENTITY] [--pin-stdin | --pin-file FILE]" },
	{ "lock", cmd_lock, "lock [--stdin]" },
	{ "unlock", cmd_unlock, "unlock [--stdin]" },
	{ "sign", cmd_sign,
	  "sign --identity NAME --scheme SCHEME --purpose PURPOSE\n"
	  "       [--in FILE] [--out FILE] [--hex]" },
	{ "connect", cmd_connect, CONNECT_SYNOPSIS },
};

/*
 * `COMMAND -h` or `COMMAND --help` (before any "--"): that command's
 * usage on stdout.  Looked for before the command parses its options, so
 * every command answers it the same way and none runs.
 */
static int
wants_help(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
					      { "quiet", no_argument, NULL, 'q' },
					      { "help", no_argument, NULL, 'h' },
					      { "version", no_argument, NULL, 'V' },
					      { NULL, 0, NULL, 0 } };
	size_t i;
	int c;

	opterr = 0;
	/* "+": options after the command belong to the command. */
	while ((c = getopt_long(argc, argv, "+s:qhV", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'h': usage(stdout); return EXIT_OK;
		case 'V': printf(PROG " " PACKAGE_VERSION "\n"); return EXIT_OK;
		default:
			if (optopt != 0 && strncmp(argv[optind - 1], "--", 2) != 0)
				fprintf(stderr,
					PROG ": invalid option or missing "
					     "argument '-%c' (try '" PROG " --help')\n",
					optopt);
			else
				fprintf(stderr,
					PROG ": invalid option or missing "
					     "argument '%s' (try '" PROG " --help')\n",
					argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, PROG ": no command given (try '" PROG " --help')\n");
		return EXIT_USAGE;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name) == 0) {
			argc -= optind;
			argv += optind;
			if (wants_help(argc, argv)) {
				printf("usage: " PROG " [-s|--socket PATH] [-q|--quiet] %s\n",
				       commands[i].synopsis);
				return EXIT_OK;
			}
			optind = 0; /* restart getopt for the command's options */
			return commands[i].fn(argc, argv);
		}
	}
	fprintf(stderr, PROG ": unknown command '%s' (try '" PROG " --help')\n", argv[optind]);
	return EXIT_USAGE;
}
