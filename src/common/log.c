/*
 * log.c - stderr or syslog logging.  See log.h.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
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

void
log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const name[] = { "error", "warning", "info", "debug" };
	char line[1200];
	va_list ap;
	int off, n;
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
	va_start(ap, fmt);
	n = vsnprintf(line + off, sizeof(line) - (size_t)off - 1, fmt, ap);
	va_end(ap);
	/* A message longer than the line is cut, as before. */
	len = n < 0 ? (size_t)off : (size_t)off + (size_t)n;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	if (log_syslog) {
		line[len] = '\0';
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
