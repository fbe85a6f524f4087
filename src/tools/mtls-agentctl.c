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
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "mtls-agent.h"
#include "secmem.h"

#define PROG "mtls-agentctl"

enum {
	EXIT_OK = 0,
	EXIT_FAILED = 1,    /* the agent refused or the operation failed */
	EXIT_USAGE = 2,	    /* bad command line */
	EXIT_NO_AGENT = 3,  /* cannot connect to the agent */
	EXIT_LOGIN = 4,	    /* the token must be logged in first */
	EXIT_LOCKED = 5	    /* the PIN is locked */
};

/* The library's limits, from the public header. */
#define CONTENT_MAX MTLS_AGENT_CONTENT_MAX
#define PIN_MAX MTLS_AGENT_PIN_MAX

static const char *socket_path;
static int quiet;

/* Every public scheme, for listing the valid names in a usage error. */
static const uint16_t all_schemes[] = {
	MTLS_AGENT_RSA_PSS_RSAE_SHA256, MTLS_AGENT_RSA_PSS_RSAE_SHA384,
	MTLS_AGENT_RSA_PSS_RSAE_SHA512, MTLS_AGENT_RSA_PKCS1_SHA256,
	MTLS_AGENT_RSA_PKCS1_SHA384,	MTLS_AGENT_RSA_PKCS1_SHA512,
	MTLS_AGENT_ECDSA_SECP256R1_SHA256, MTLS_AGENT_ECDSA_SECP384R1_SHA384,
};

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [-s|--socket PATH] [-q|--quiet] COMMAND [ARGS]\n"
		"       " PROG " -h|--help | -V|--version\n"
		"commands:\n"
		"  list [--pem] [--json]\n"
		"  login [IDENTITY] [--pin-stdin | --pin-file FILE]\n"
		"  logout [IDENTITY]\n"
		"  status\n"
		"  sign --identity NAME --scheme SCHEME --purpose PURPOSE\n"
		"       [--in FILE] [--out FILE] [--hex]\n");
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

static void __attribute__((format(printf, 2, 3)))
errmsg(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int __attribute__((format(printf, 2, 3)))
usage_error(const char *cmd, const char *fmt, ...)
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
	case 0:
		return EXIT_OK;
	case MTLS_ERR_NO_SOCKET:
	case MTLS_ERR_CONNECT:
		return EXIT_NO_AGENT;
	case MTLS_ERR_LOGIN_REQUIRED:
		return EXIT_LOGIN;
	case MTLS_ERR_PIN_LOCKED:
		return EXIT_LOCKED;
	default:
		return EXIT_FAILED;
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

static int
connect_agent(const char *cmd, mtls_agent **a)
{
	int r;

	if ((r = mtls_agent_connect(socket_path, a)) != 0)
		return agent_error(cmd, r, r == MTLS_ERR_INVALID_ARGUMENT ?
					   " (socket path too long)" : NULL);
	return 0;
}

/* getopt's own messages are off so every error stays one line. */
static int
bad_option(const char *cmd, char **argv, const char *synopsis)
{
	if (optopt != 0 && strncmp(argv[optind - 1], "--", 2) != 0)
		return usage_error(cmd, "invalid option or missing argument "
				   "'-%c' (usage: %s)", optopt, synopsis);
	return usage_error(cmd, "invalid option or missing argument '%s' "
			   "(usage: %s)", argv[optind - 1], synopsis);
}

/* Options every command also accepts after its name. */
static int
common_option(int c, const char *arg)
{
	switch (c) {
	case 's':
		socket_path = arg;
		return 1;
	case 'q':
		quiet = 1;
		return 1;
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
	int present;	/* the agent sent a certificate */
	int parsed;	/* and it parsed as one */
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
	if (X509_NAME_print_ex(bio, name, 0,
			       XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
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
	if (len > LONG_MAX || (x = d2i_X509(NULL, &p, (long)len)) == NULL ||
	    p != der + len)
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
	case MTLS_AGENT_KEY_RSA:
		return "RSA";
	case MTLS_AGENT_KEY_EC:
		return "EC";
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
		if (!(f & MTLS_AGENT_ID_KEY_FOUND))
			w[n++] = "key not found";
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
	printf("  chain:        %zu certificate%s\n", id->n_chain,
	       id->n_chain == 1 ? "" : "s");
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
	static const struct option opts[] = {
		{ "pem", no_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 }
	};
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

/* Prompts on /dev/tty and reads the PIN there with echo off. */
static int
read_pin_tty(const char *prompt, char *pin)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP,
				    SIGTTIN, SIGTTOU };
	struct sigaction sa, old[sizeof(sigs) / sizeof(sigs[0])];
	struct termios saved, noecho;
	int fd, r = -1, e = 0, restore = 0;
	size_t i;

	if ((fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)) == -1)
		return -1;
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
	static const struct option opts[] = {
		{ "pin-stdin", no_argument, NULL, 'i' },
		{ "pin-file", required_argument, NULL, 'f' },
		{ "socket", required_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 }
	};
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
			return bad_option("login", argv, "login [IDENTITY] "
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
		if ((who == NULL || *who == '\0') &&
		    mtls_agent_list(a, &ids, &n) == 0 && n > 0)
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
		else {
			errmsg("login", "cannot read the PIN from %s: %s",
			       from_stdin ? "standard input" :
			       pin_file != NULL ? pin_file : "/dev/tty",
			       strerror(errno));
			ret = EXIT_FAILED;
		}
		goto out;
	}
	r = mtls_agent_login(a, identity, pin, &retries);
	mtls_secure_free(pin);
	pin = NULL;
	if (r != 0) {
		extra[0] = '\0';
		if (r == MTLS_ERR_PIN_INCORRECT && retries >= 0)
			snprintf(extra, sizeof(extra), " (%d tries left)", retries);
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

/* ---- logout ---- */

static int
cmd_logout(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 }
	};
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
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 }
	};
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
	printf("uptime:       %u s (%ud %02uh %02um %02us)\n", up, up / 86400,
	       up / 3600 % 24, up / 60 % 60, up % 60);
	printf("connections:  %u\n", st.connections);
	printf("identities:   %u\n", st.identities);
	printf("tokens:       %u present, %u logged in\n", st.tokens_present,
	       st.tokens_logged_in);
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
	static const struct option opts[] = {
		{ "identity", required_argument, NULL, 'I' },
		{ "scheme", required_argument, NULL, 'S' },
		{ "purpose", required_argument, NULL, 'P' },
		{ "in", required_argument, NULL, 'i' },
		{ "out", required_argument, NULL, 'o' },
		{ "hex", no_argument, NULL, 'x' },
		{ "socket", required_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 }
	};
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
			return bad_option("sign", argv, "sign --identity NAME "
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
		return usage_error("sign", "unknown scheme '%s' (valid: %s)",
				   scheme_s, names);
	}
	if ((purpose = mtls_agent_purpose_from_name(purpose_s)) == 0) {
		names[0] = '\0';
		for (c = 1; c < 32; c++)
			if ((name = mtls_agent_purpose_name(c)) != NULL)
				append_names(names, sizeof(names), name);
		return usage_error("sign", "unknown purpose '%s' (valid: %s)",
				   purpose_s, names);
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
		errmsg("sign", "cannot read %s: %s",
		       in != NULL ? in : "standard input", strerror(errno));
		return EXIT_FAILED;
	}

	if ((ret = connect_agent("sign", &a)) != 0)
		goto out;
	if ((r = mtls_agent_sign(a, identity, scheme, purpose, content,
				 content_len, &sig, &sig_len)) != 0) {
		ret = agent_error("sign", r, NULL);
		goto out;
	}
	if (outpath != NULL && strcmp(outpath, "-") != 0) {
		if ((fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			       0666)) == -1) {
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
		errmsg("sign", "cannot write %s: %s",
		       outpath != NULL ? outpath : "standard output", strerror(errno));
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

/* ---- main ---- */

static const struct {
	const char *name;
	int (*fn)(int, char **);
} commands[] = {
	{ "list", cmd_list },
	{ "login", cmd_login },
	{ "logout", cmd_logout },
	{ "status", cmd_status },
	{ "sign", cmd_sign },
};

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	size_t i;
	int c;

	opterr = 0;
	/* "+": options after the command belong to the command. */
	while ((c = getopt_long(argc, argv, "+s:qhV", opts, NULL)) != -1) {
		if (common_option(c, optarg))
			continue;
		switch (c) {
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf(PROG " " PACKAGE_VERSION "\n");
			return EXIT_OK;
		default:
			if (optopt != 0 && strncmp(argv[optind - 1], "--", 2) != 0)
				fprintf(stderr, PROG ": invalid option or missing "
					"argument '-%c' (try '" PROG " --help')\n", optopt);
			else
				fprintf(stderr, PROG ": invalid option or missing "
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
			optind = 0; /* restart getopt for the command's options */
			return commands[i].fn(argc, argv);
		}
	}
	fprintf(stderr, PROG ": unknown command '%s' (try '" PROG " --help')\n",
		argv[optind]);
	return EXIT_USAGE;
}
