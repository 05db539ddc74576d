/*
 * Configuration: the public API and the glue to libinih.
 *
 * inih splits "key = value" lines and strips comments; this file feeds it one line at a time
 * from memory through ini_parse_stream() and does the rest itself, because Debian's build of
 * inih (release 55) cannot be trusted with it:
 *   - it reports no line numbers to the handler (built without INI_HANDLER_LINENO): the
 *     reader counts lines, and inih calls the handler before asking for the next line, so
 *     the reader's count is the line of the key being handled;
 *   - its line buffer is 200 bytes and a longer line is silently split: the reader refuses it;
 *   - it cuts section names at 49 bytes and has no callback for a new section (so an empty
 *     section or a repeated one is invisible): the reader parses [headers] itself and hands
 *     inih an empty line in their place;
 *   - it treats an indented line as the continuation of the previous value, which turns an
 *     indented "backend = ..." into part of "listen": the reader strips leading blanks, so
 *     there are no continuation lines;
 *   - it keeps going after an error: the reader stops at the first one.
 */
#include "common/errbuf.h"
#include "policy/config_parser.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/evp.h>

static const char *const config_kind_names[] = {
	[CS_NONE] = "", [CS_GLOBAL] = "global", [CS_IDENTITY] = "identity",
	[CS_LISTENER] = "listener", [CS_CONNECTOR] = "connector",
};

const char *
config_section_kind(enum config_section_type t)
{
	return config_kind_names[t];
}

int
config_fail(struct config_parser *p, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	/* The first error is the one the operator needs; later ones are often its echo. */
	if (p->failed)
		return -1;
	p->failed = 1;
	if (p->err == NULL || p->errlen == 0)
		return -1;
	n = snprintf(p->err, p->errlen, "%s:%d: ", p->name, line);
	if (n < 0 || (size_t)n >= p->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), 0 if ill-formed. */
static size_t
config_utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned lo = 0x80, hi = 0xbf;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	/* RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. */
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (len > n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/* A config is text: UTF-8 without control characters other than tab. */
static int
config_check_text(struct config_parser *p, const char *line, size_t len)
{
	const unsigned char *s = (const unsigned char *)line;
	size_t i = 0;

	while (i < len) {
		size_t n;
		if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
			return config_fail(p, p->lineno, "control character 0x%02x in the line "
			    "(the file must be text)", s[i]);
		if ((n = config_utf8_len(s + i, len - i)) == 0)
			return config_fail(p, p->lineno, "the line is not valid UTF-8");
		i += n;
	}
	return 0;
}

/*
 * What inih accepts as a key line: a '=' (or ':') before any inline comment (';' after a
 * blank).  Checked here so that such an error is reported in order, with a message.
 */
static int
config_has_separator(const char *s)
{
	int was_blank = 0;

	for (; *s != '\0'; s++) {
		if (*s == '=' || *s == ':')
			return 1;
		if (*s == ';' && was_blank)
			return 0;
		was_blank = isspace((unsigned char)*s);
	}
	return 0;
}

static char *
config_trim(char *s)
{
	size_t len;

	s += strspn(s, " \t");
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		s[--len] = '\0';
	return s;
}

static int
config_section_type(const char *word, enum config_section_type *t)
{
	for (size_t i = CS_GLOBAL; i < sizeof(config_kind_names) / sizeof(config_kind_names[0]);
	    i++)
		if (strcmp(word, config_kind_names[i]) == 0) {
			*t = (enum config_section_type)i;
			return 0;
		}
	return -1;
}

/* "[TYPE NAME]" or "[global]", optionally followed by a comment. */
static int
config_section_header(struct config_parser *p, char *line)
{
	enum config_section_type t;
	char *close, *rest, *inner, *name;

	if ((close = strchr(line, ']')) == NULL)
		return config_fail(p, p->lineno, "section header has no closing ']'");
	rest = close + 1 + strspn(close + 1, " \t");
	if (*rest != '\0' && *rest != ';' && *rest != '#')
		return config_fail(p, p->lineno, "unexpected text after ']': '%s'", rest);
	*close = '\0';
	inner = config_trim(line + 1);
	name = inner + strcspn(inner, " \t");
	if (*name != '\0')
		*name++ = '\0';
	name = config_trim(name);
	/* The previous section's missing keys come first: they are on earlier lines. */
	if (cfgsec_end(p) == -1)
		return -1;
	if (*inner == '\0')
		return config_fail(p, p->lineno, "empty section header (expected [global], "
		    "[identity NAME], [listener NAME] or [connector NAME])");
	if (config_section_type(inner, &t) == -1)
		return config_fail(p, p->lineno, "unknown section type '%s' in [%s%s%s] (expected "
		    "[global], [identity NAME], [listener NAME] or [connector NAME])", inner,
		    inner, *name ? " " : "", name);
	if (t == CS_GLOBAL && *name != '\0')
		return config_fail(p, p->lineno, "[global] takes no name (found [global %s])",
		    name);
	if (t != CS_GLOBAL && *name == '\0')
		return config_fail(p, p->lineno, "[%s] needs a name: [%s NAME]", inner, inner);
	if (t != CS_GLOBAL && !cfgval_is_name(name))
		return config_fail(p, p->lineno, "%s name '%s' is invalid (1 to %d letters, "
		    "digits, '.', '_' or '-')", inner, name, CONFIG_NAME_MAX);
	return cfgsec_begin(p, t, name);
}

/* Hands inih the next line (fgets contract), or NULL at the end or after an error. */
static char *
config_reader(char *str, int num, void *stream)
{
	struct config_parser *p = stream;
	const char *line, *nl;
	size_t len, max;
	char *s;

	if (p->failed || p->pos >= p->len || num < 2)
		return NULL;
	line = p->buf + p->pos;
	nl = memchr(line, '\n', p->len - p->pos);
	len = nl != NULL ? (size_t)(nl - line) : p->len - p->pos;   /* last line: no '\n' */
	p->pos += len + (nl != NULL);
	p->lineno++;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (p->lineno == 1 && len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
		line += 3;          /* UTF-8 byte order mark, as some editors write it */
		len -= 3;
	}
	max = (size_t)num - 1 < CONFIG_LINE_MAX ? (size_t)num - 1 : CONFIG_LINE_MAX;
	if (len > max) {
		config_fail(p, p->lineno, "line too long (at most %zu characters)", max);
		return NULL;
	}
	if (config_check_text(p, line, len) == -1)
		return NULL;
	memcpy(str, line, len);
	str[len] = '\0';
	s = str + strspn(str, " \t");
	memmove(str, s, strlen(s) + 1);
	if (str[0] == '[') {
		if (config_section_header(p, str) == -1)
			return NULL;
		str[0] = '\0';
	} else if (str[0] != '\0' && str[0] != ';' && str[0] != '#' &&
	    !config_has_separator(str)) {
		config_fail(p, p->lineno, "expected 'key = value', a [section] header or a "
		    "comment");
		return NULL;
	}
	return str;
}

static int
config_handler(void *user, const char *section, const char *name, const char *value)
{
	struct config_parser *p = user;

	(void)section;  /* cut at 49 bytes by inih; the reader tracks sections itself */
	if (p->failed)
		return 0;
	return cfgkey_set(p, name, value) == 0;
}

/*
 * In a library context of its own: a fetch in the default one would activate OpenSSL's default
 * provider there before fips = yes (common/fips.c) could keep it out.
 */
static int
config_digest(const char *buf, size_t len, unsigned char out[32])
{
	OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();
	EVP_MD *md = lc != NULL ? EVP_MD_fetch(lc, "SHA2-256", NULL) : NULL;
	unsigned int mdlen = 0;
	int ok;

	ok = md != NULL && EVP_Digest(buf, len, out, &mdlen, md, NULL) == 1 && mdlen == 32;
	EVP_MD_free(md);
	OSSL_LIB_CTX_free(lc);
	return ok ? 0 : -1;
}

static int
config_run(struct config_parser *p)
{
	int r = ini_parse_stream(config_reader, p, config_handler, p);

	if (p->failed)
		return -1;
	/* Only reached if inih refuses a line the reader let through. */
	if (r == -2)
		return config_fail(p, p->lineno, "out of memory");
	if (r != 0)
		return config_fail(p, r, "expected 'key = value', a [section] header or a comment");
	if (cfgsec_end(p) == -1 || cfgchk_semantics(p) == -1)
		return -1;
	return 0;
}

int
config_parse(const char *name, const char *buf, size_t len, struct config **out,
    char *err, size_t errlen)
{
	struct config_parser *p = NULL;
	struct config *cfg;
	int r = -1;

	*out = NULL;
	errbuf_set(err, errlen, "%s", "");
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL ||
	    (p = calloc(1, sizeof(*p))) == NULL) {
		errbuf_set(err, errlen, "%s: out of memory", name);
		goto done;
	}
	cfgkey_defaults(cfg);
	snprintf(cfg->path, sizeof(cfg->path), "%s", name);
	if (config_digest(buf, len, cfg->sha256) == -1) {
		errbuf_set(err, errlen, "%s: cannot compute SHA-256", name);
		goto done;
	}
	p->name = name;
	p->buf = buf;
	p->len = len;
	p->err = err;
	p->errlen = errlen;
	p->cfg = cfg;
	r = config_run(p);
done:
	if (p != NULL)
		cfgsec_release_pending(p);
	free(p);
	if (r == 0) {
		*out = cfg;
		return 0;
	}
	if (err != NULL && errlen > 0 && err[0] == '\0')
		errbuf_set(err, errlen, "%s: internal error", name);
	config_free(cfg);
	return -1;
}

static int
config_read_fd(int fd, const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
	/* One byte more than the limit, to see a file that grew past it since fstat(). */
	size_t cap = CONFIG_SIZE_MAX + 1, n = 0;
	char *b, *shrunk;

	if ((b = malloc(cap + 1)) == NULL) {
		errbuf_set(err, errlen, "%s: out of memory", path);
		return -1;
	}
	while (n < cap) {
		ssize_t r = read(fd, b + n, cap - n);
		if (r == 0)
			break;
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
			free(b);
			return -1;
		}
		n += (size_t)r;
	}
	if (n > CONFIG_SIZE_MAX) {
		errbuf_set(err, errlen, "%s: larger than %u bytes", path, CONFIG_SIZE_MAX);
		free(b);
		return -1;
	}
	b[n] = '\0';
	*buf = (shrunk = realloc(b, n + 1)) != NULL ? shrunk : b;
	*len = n;
	return 0;
}

int
config_read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	int fd, r = -1;

	*buf = NULL;
	*len = 0;
	/* O_NONBLOCK: a FIFO put in place of the file must not hang the daemon at start. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) == -1) {
		errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1)
		errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		errbuf_set(err, errlen, "%s: not a regular file", path);
	else if (st.st_size > (off_t)CONFIG_SIZE_MAX)
		errbuf_set(err, errlen, "%s: %lld bytes, larger than %u bytes", path,
		    (long long)st.st_size, CONFIG_SIZE_MAX);
	else
		r = config_read_fd(fd, path, buf, len, err, errlen);
	close(fd);
	return r;
}

int
config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int r;

	*out = NULL;
	if (config_read_file(path, &buf, &len, err, errlen) == -1)
		return -1;
	r = config_parse(path, buf, len, out, err, errlen);
	free(buf);
	return r;
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		struct config_listener *l = &cfg->listeners[i];
		for (size_t j = 0; j < l->n_routes; j++)
			free(l->routes[j].allow);
		free(l->routes);
		free(l->allow);
	}
	for (size_t i = 0; i < cfg->n_connectors; i++)
		free(cfg->connectors[i].expect);
	free(cfg->identities);
	free(cfg->listeners);
	free(cfg->connectors);
	free(cfg);
}

const char *
tls_mode_name(enum tls_mode m)
{
	switch (m) {
	case TLS_MODE_REQUIRE:
		return "require";
	case TLS_MODE_VERIFY_CA:
		return "verify-ca";
	case TLS_MODE_VERIFY_FULL:
		return "verify-full";
	}
	return "unknown";
}

void
config_addr_format(const struct config_addr *a, char *out, size_t outlen)
{
	if (outlen == 0)
		return;
	switch (a->kind) {
	case ADDR_UNIX:
		snprintf(out, outlen, "unix:%s", a->path);
		break;
	case ADDR_TCP:
		snprintf(out, outlen, strchr(a->host, ':') != NULL ? "[%s]:%u" : "%s:%u",
		    a->host, (unsigned)a->port);
		break;
	case ADDR_NONE:
	default:
		snprintf(out, outlen, "none");
		break;
	}
}
