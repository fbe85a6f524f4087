/*
 * mtls-agentctl: what every command shares: the one-line error format, the
 * exit codes, option helpers, and small output helpers.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/x509.h>

#include "ctl.h"

const char *socket_path;
int quiet;

/*
 * Agent-supplied text for a terminal: control bytes (a label could hold an
 * escape sequence) are shown as \xNN.  Returns a static buffer.
 */
const char *
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

static void __attribute__((format(printf, 2, 0)))
verrmsg(const char *cmd, const char *fmt, va_list ap)
{
	fprintf(stderr, PROG ": %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
errmsg(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verrmsg(cmd, fmt, ap);
	va_end(ap);
}

int
usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verrmsg(cmd, fmt, ap);
	va_end(ap);
	return EXIT_USAGE;
}

int
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
int
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
void
tries_left(int err, int retries, char *buf, size_t len)
{
	const char *detail = mtls_agent_last_message();

	buf[0] = '\0';
	if (err == MTLS_ERR_PIN_INCORRECT && retries >= 0 &&
	    (detail == NULL || strstr(detail, " left") == NULL))
		snprintf(buf, len, " (%d tr%s left)", retries, retries == 1 ? "y" : "ies");
}

int
connect_agent(const char *cmd, mtls_agent **a)
{
	int r;

	if ((r = mtls_agent_connect(socket_path, a)) != 0)
		return agent_error(
		    cmd, r, r == MTLS_ERR_INVALID_ARGUMENT ? " (socket path too long)" : NULL);
	return 0;
}

/* getopt's own messages are off so every error stays one line. */
int
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
int
common_option(int c, const char *arg)
{
	switch (c) {
	case 's': socket_path = arg; return 1;
	case 'q': quiet = 1; return 1;
	}
	return 0;
}

char *
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

char *
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

int
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

void
append_names(char *buf, size_t len, const char *name)
{
	size_t used = strlen(buf);

	snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "", name);
}
