/*
 * log.c - stderr or syslog logging.  See log.h.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

static const char *log_ident = "mtls-agent";
static int log_syslog;
static enum log_level log_level = LOG_LEVEL_INFO;

void
log_init(const char *ident, int to_syslog, enum log_level level)
{
	log_ident = ident;
	log_syslog = to_syslog;
	log_level = level;
	if (to_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_AUTHPRIV);
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

enum log_level
log_get_level(void)
{
	return log_level;
}

/* Writes all of p to stderr: one line, one write(2) (no stdio buffer). */
static void
write_line(const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(STDERR_FILENO, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

/*
 * Bytes of the valid, printable UTF-8 character at p (n bytes left), or 0
 * if p[0] must be escaped: C0 controls, DEL, C1 controls (U+0080-U+009F:
 * some terminals read U+009B as CSI), stray continuation bytes, overlong
 * forms, surrogates, code points above U+10FFFF and cut sequences.
 */
static size_t
utf8_printable(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	unsigned long cp;
	size_t len, i;

	if (c >= 0x20 && c < 0x7f)
		return 1;
	if (c < 0xc2 || c > 0xf4)
		return 0;
	len = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	if (n < len)
		return 0;
	cp = c & (0x7fU >> len);
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3fU);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
		return 0;
	return len;
}

size_t
log_escape(char *dst, size_t dst_len, const char *src, size_t src_len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)src;
	size_t i = 0, o = 0, k;

	if (dst_len == 0)
		return 0;
	while (i < src_len) {
		if ((k = utf8_printable(p + i, src_len - i)) > 0) {
			if (dst_len - o <= k)
				break;
			memcpy(dst + o, p + i, k);
			o += k;
			i += k;
			continue;
		}
		/* Whole escapes only: a cut one could join the next line. */
		if (dst_len - o <= 4)
			break;
		dst[o++] = '\\';
		dst[o++] = 'x';
		dst[o++] = hex[p[i] >> 4];
		dst[o++] = hex[p[i] & 0xf];
		i++;
	}
	dst[o] = '\0';
	return o;
}

size_t
log_vformat(char *dst, size_t dst_len, const char *fmt, va_list ap)
{
	char raw[LOG_LINE_MAX];
	size_t len;
	int n;

	n = vsnprintf(raw, sizeof(raw), fmt, ap);
	/* A message longer than the line is cut, as before. */
	len = n < 0 ? 0 : (size_t)n < sizeof(raw) ? (size_t)n : sizeof(raw) - 1;
	len = log_escape(dst, dst_len, raw, len);
	return len;
}

void
log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const name[] = { "error", "warning", "info", "debug" };
	char line[LOG_LINE_MAX * 2];
	va_list ap;
	int off;
	size_t len;

	if (level > log_level)
		return;
	if (log_syslog)
		off = 0;
	else if (level == LOG_LEVEL_DEBUG)
		off = snprintf(line, sizeof(line), "%s: debug: %s: ", log_ident, func);
	else
		off = snprintf(line, sizeof(line), "%s: %s: ", log_ident, name[level]);
	if (off < 0 || (size_t)off >= sizeof(line) - 2)
		off = 0;
	/*
	 * The message carries what peers sent (identity names, exe paths,
	 * token labels): escaped here, the one place lines are written, so
	 * no argument can start a line of its own.
	 */
	va_start(ap, fmt);
	len = (size_t)off + log_vformat(line + off, sizeof(line) - (size_t)off - 1, fmt, ap);
	va_end(ap);
	if (log_syslog) {
		if (level == LOG_LEVEL_DEBUG)
			syslog(prio[level], "%s: %s", func, line);
		else
			syslog(prio[level], "%s", line);
		return;
	}
	line[len++] = '\n';
	write_line(line, len);
}

void
why_printf(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || why_len == 0)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
}
