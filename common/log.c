/*
 * Line-oriented logging to stderr.  Each line is written with a single write(2) so lines from
 * the supervisor, keyd and the workers (which share stderr) never interleave mid-line.
 */
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#define LOG_LINE_MAX 2048   /* bytes; longer messages are cut, never split */

static char log_procname[32] = "redoubt";
static enum log_level log_level_cur = LOG_LVL_INFO;

void
log_init(const char *proc, enum log_level level)
{
	snprintf(log_procname, sizeof(log_procname), "%s", proc);
	log_level_cur = level;
}

void
log_set_level(enum log_level level)
{
	log_level_cur = level;
}

enum log_level
log_get_level(void)
{
	return log_level_cur;
}

const char *
log_proc(void)
{
	return log_procname;
}

int
log_level_parse(const char *s, enum log_level *out)
{
	static const char *const names[] = {
		[LOG_LVL_ERROR] = "error", [LOG_LVL_WARN] = "warning",
		[LOG_LVL_INFO] = "info", [LOG_LVL_DEBUG] = "debug",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return -1;
}

static void log_emit(const char *tag, const char *fmt, va_list ap, int with_errno)
    __attribute__((format(printf, 2, 0)));

static void
log_emit(const char *tag, const char *fmt, va_list ap, int with_errno)
{
	char line[LOG_LINE_MAX];
	int saved = errno;
	size_t n = 0;
	int r;

	r = snprintf(line, sizeof(line), "redoubt[%d] %s: %s", (int)getpid(), log_procname, tag);
	if (r > 0)
		n = (size_t)r < sizeof(line) ? (size_t)r : sizeof(line) - 1;
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r > 0)
		n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
	if (with_errno && n < sizeof(line) - 1) {
		r = snprintf(line + n, sizeof(line) - n, ": %s", strerror(saved));
		if (r > 0)
			n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
	}
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line; a short write to stderr is not worth retrying. */
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nothing useful to do */
	}
	errno = saved;
}

#define LOG_BODY(level, tag, with_errno)                      \
	do {                                                  \
		va_list ap;                                   \
		if (log_level_cur < (level))                  \
			return;                               \
		va_start(ap, fmt);                            \
		log_emit(tag, fmt, ap, with_errno);           \
		va_end(ap);                                   \
	} while (0)

void log_warn(const char *fmt, ...)  { LOG_BODY(LOG_LVL_WARN, "", 1); }
void log_warnx(const char *fmt, ...) { LOG_BODY(LOG_LVL_WARN, "", 0); }
void log_info(const char *fmt, ...)  { LOG_BODY(LOG_LVL_INFO, "", 0); }
void log_debug(const char *fmt, ...) { LOG_BODY(LOG_LVL_DEBUG, "debug: ", 0); }

/* Drains OpenSSL's thread error queue into the log, one line per entry. */
void
log_ssl_errors(const char *what)
{
	unsigned long e;
	char buf[256];

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		log_warnx("%s: %s", what, buf);
	}
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit("fatal: ", fmt, ap, 1);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit("fatal: ", fmt, ap, 0);
	va_end(ap);
	exit(1);
}
