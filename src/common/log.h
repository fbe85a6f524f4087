/*
 * log - logging for the agent, tools and PAM module.
 *
 * Messages go to stderr (foreground, tools) or syslog (daemon).  The macros
 * carry __func__ at debug level.  Never log a PIN or a passphrase.
 */
#ifndef MTLS_LOG_H
#define MTLS_LOG_H

#include <stddef.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* ident: program name; to_syslog: 1 for syslog, 0 for stderr. */
void log_init(const char *ident, int to_syslog, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes one line of reason into a caller's buffer (NULL/0: nothing). */
void why_printf(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define error(...) log_msg(LOG_LEVEL_ERROR, __func__, __VA_ARGS__)
#define warn(...)  log_msg(LOG_LEVEL_WARN, __func__, __VA_ARGS__)
#define info(...)  log_msg(LOG_LEVEL_INFO, __func__, __VA_ARGS__)
#define debug(...) log_msg(LOG_LEVEL_DEBUG, __func__, __VA_ARGS__)

#endif
