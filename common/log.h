/*
 * Logging for every redoubt process: one line per event on stderr (journald picks it up
 * under systemd; workers may not open sockets, so no syslog(3) connection of our own).
 *
 * log_warn() appends strerror(errno); log_warnx() does not.  fatal() is for a failed system
 * call, fatalx() for a violated invariant; both exit the process, never the supervisor.
 */
#ifndef REDOUBT_LOG_H
#define REDOUBT_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* proc: "supervisor", "keyd", "worker 3", ...  Copied. */
void log_init(const char *proc, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int  log_level_parse(const char *s, enum log_level *out);
const char *log_proc(void);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_ssl_errors(const char *what);
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
