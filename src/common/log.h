/*
 * log - logging for the agent, tools and PAM module.
 *
 * Messages go to stderr (foreground, tools) or syslog (daemon).  The macros
 * carry __func__ at debug level.  Never log a PIN or a passphrase.
 */
#ifndef MTLS_LOG_H
#define MTLS_LOG_H

#include <stdarg.h>
#include <stddef.h>

/* Longest message before escaping; longer ones are cut. */
#define LOG_LINE_MAX 1200

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* ident: program name; to_syslog: 1 for syslog, 0 for stderr. */
void log_init(const char *ident, int to_syslog, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Copies src_len bytes of src into dst as text that cannot break a log
 * line: valid printable UTF-8 is kept; every other byte (control
 * characters including \n, \r, ESC and DEL, C1 controls, invalid,
 * overlong or surrogate UTF-8) becomes \xNN.  Stops before a character
 * or escape that does not fit; always NUL-terminates (dst_len > 0).
 * Returns the length written.  log_msg() applies it to every message.
 */
size_t log_escape(char *dst, size_t dst_len, const char *src, size_t src_len);
/* Formats like vsnprintf (at most LOG_LINE_MAX - 1 bytes), then escapes
 * the result into dst as log_escape() does.  Returns the length. */
size_t log_vformat(char *dst, size_t dst_len, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Writes one line of reason into a caller's buffer (NULL/0: nothing). */
void why_printf(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define error(...) log_msg(LOG_LEVEL_ERROR, __func__, __VA_ARGS__)
#define warn(...)  log_msg(LOG_LEVEL_WARN, __func__, __VA_ARGS__)
#define info(...)  log_msg(LOG_LEVEL_INFO, __func__, __VA_ARGS__)
#define debug(...) log_msg(LOG_LEVEL_DEBUG, __func__, __VA_ARGS__)

#endif
