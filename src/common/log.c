/*
 * log.c - stderr or syslog logging.  See log.h.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

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

void
log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const name[] = { "error", "warning", "info", "debug" };
	char msg[1024];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_syslog) {
		if (level == LOG_LEVEL_DEBUG)
			syslog(prio[level], "%s: %s", func, msg);
		else
			syslog(prio[level], "%s", msg);
	} else if (level == LOG_LEVEL_DEBUG) {
		fprintf(stderr, "%s: debug: %s: %s\n", log_ident, func, msg);
	} else {
		fprintf(stderr, "%s: %s: %s\n", log_ident, name[level], msg);
	}
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
