/*
 * Value parsers for the configuration: numbers, durations, sizes, booleans, TLS names,
 * paths and names (addresses and allow entries are in config_addr.c).  Every parser is strict (no sign, no spaces, no
 * hex, no "127.1"-style IPv4 shorthands) because a value that a person reads one way and the
 * daemon another is how access rules go wrong.
 */
#include "policy/config_values.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/tls1.h>

/* Characters in a useradd(8)-portable user or group name (Debian's default NAME_REGEX
 * allows more, but these are the ones every tool handles), and its length limit. */
#define CFGVAL_USER_MAX      32
#define CFGVAL_ALPN_MAX      31     /* bytes; RFC 7301 allows 255, our names are short */
#define CFGVAL_HOSTNAME_MAX  253    /* RFC 1035 presentation form without the final dot */
#define CFGVAL_LABEL_MAX     63     /* RFC 1035 label */
#define CFGVAL_UNIX_PATH_MAX 107    /* sizeof(sun_path) - 1 on Linux */

#define MS_PER_S   1000ull
#define MS_PER_MIN (60ull * MS_PER_S)
#define MS_PER_H   (60ull * MS_PER_MIN)
#define MS_PER_D   (24ull * MS_PER_H)

int
cfgval_fail(struct cfgval_err *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * Reads the decimal digits at s into *out.  Returns a pointer past them, or NULL when s does
 * not start with a digit or the number does not fit 64 bits.
 */
static const char *
cfgval_scan_digits(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return NULL;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return NULL;
		v = v * 10 + d;
	}
	*out = v;
	return s;
}

int
cfgval_uint(const char *key, const char *s, uint64_t min, uint64_t max, uint64_t *out,
    struct cfgval_err *e)
{
	const char *end;

	*out = 0;
	end = cfgval_scan_digits(s, out);
	if (end == NULL && isdigit((unsigned char)*s))
		return cfgval_fail(e, "%s: '%s' is out of range (%llu to %llu)", key, s,
		    (unsigned long long)min, (unsigned long long)max);
	if (end == NULL || *end != '\0')
		return cfgval_fail(e, "%s: '%s' is not a whole number", key, s);
	if (*out < min || *out > max)
		return cfgval_fail(e, "%s: '%s' is out of range (%llu to %llu)", key, s,
		    (unsigned long long)min, (unsigned long long)max);
	return 0;
}

int
cfgval_bool(const char *key, const char *s, int *out, struct cfgval_err *e)
{
	static const struct { const char *name; int value; } words[] = {
		{ "yes", 1 }, { "no", 0 }, { "true", 1 }, { "false", 0 },
		{ "on", 1 }, { "off", 0 }, { "1", 1 }, { "0", 0 },
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(s, words[i].name) == 0) {
			*out = words[i].value;
			return 0;
		}
	return cfgval_fail(e, "%s: '%s' is not yes or no", key, s);
}

/* Multiplies with an overflow check; unit suffixes must never wrap a value into range. */
static int
cfgval_scale(uint64_t v, uint64_t unit, uint64_t *out)
{
	if (unit != 0 && v > UINT64_MAX / unit)
		return -1;
	*out = v * unit;
	return 0;
}

void
cfgval_format_duration(uint64_t ms, char *out, size_t outlen)
{
	static const struct { const char *suffix; uint64_t ms; } units[] = {
		{ "d", MS_PER_D }, { "h", MS_PER_H }, { "m", MS_PER_MIN }, { "s", MS_PER_S },
	};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (ms != 0 && ms % units[i].ms == 0) {
			snprintf(out, outlen, "%llu%s", (unsigned long long)(ms / units[i].ms),
			    units[i].suffix);
			return;
		}
	snprintf(out, outlen, "%llums", (unsigned long long)ms);
}

static int
cfgval_duration_unit(const char *suffix, uint64_t *unit)
{
	static const struct { const char *suffix; uint64_t ms; } units[] = {
		{ "", MS_PER_S }, { "ms", 1 }, { "s", MS_PER_S }, { "m", MS_PER_MIN },
		{ "h", MS_PER_H }, { "d", MS_PER_D },
	};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(suffix, units[i].suffix) == 0) {
			*unit = units[i].ms;
			return 0;
		}
	return -1;
}

int
cfgval_duration(const char *key, const char *s, uint64_t min_ms, uint64_t max_ms, int zero_ok,
    uint64_t *out_ms, struct cfgval_err *e)
{
	char lo[32], hi[32];
	const char *end;
	uint64_t v, unit;

	cfgval_format_duration(min_ms, lo, sizeof(lo));
	cfgval_format_duration(max_ms, hi, sizeof(hi));
	end = cfgval_scan_digits(s, &v);
	if (end == NULL || cfgval_duration_unit(end, &unit) == -1)
		return cfgval_fail(e, "%s: '%s' is not a duration (a whole number with ms, s, m, "
		    "h or d, e.g. 500ms, 10s, 5m)", key, s);
	if (cfgval_scale(v, unit, out_ms) == 0 &&
	    ((zero_ok && *out_ms == 0) || (*out_ms >= min_ms && *out_ms <= max_ms)))
		return 0;
	return cfgval_fail(e, "%s: '%s' is out of range (%s%s to %s)", key, s,
	    zero_ok ? "0 for none, or " : "", lo, hi);
}

static const struct cfgval_size_unit {
	const char *suffix;
	uint64_t bytes;
} cfgval_size_units[] = {
	{ "G", 1ull << 30 }, { "M", 1ull << 20 }, { "K", 1ull << 10 }, { "", 1 },
};

/* "64K", "1G", "1000": the largest unit that divides n exactly. */
static void
cfgval_format_size(uint64_t n, char *out, size_t outlen)
{
	for (size_t i = 0; i < sizeof(cfgval_size_units) / sizeof(cfgval_size_units[0]); i++)
		if (n % cfgval_size_units[i].bytes == 0) {
			snprintf(out, outlen, "%llu%s",
			    (unsigned long long)(n / cfgval_size_units[i].bytes),
			    cfgval_size_units[i].suffix);
			return;
		}
}

int
cfgval_size(const char *key, const char *s, uint64_t min, uint64_t max, uint64_t *out,
    struct cfgval_err *e)
{
	char lo[32], hi[32];
	const char *end;
	uint64_t v;

	if ((end = cfgval_scan_digits(s, &v)) == NULL)
		goto bad;
	for (size_t i = 0; i < sizeof(cfgval_size_units) / sizeof(cfgval_size_units[0]); i++) {
		if (strcmp(end, cfgval_size_units[i].suffix) != 0)
			continue;
		if (cfgval_scale(v, cfgval_size_units[i].bytes, out) == 0 &&
		    *out >= min && *out <= max)
			return 0;
		cfgval_format_size(min, lo, sizeof(lo));
		cfgval_format_size(max, hi, sizeof(hi));
		return cfgval_fail(e, "%s: '%s' is out of range (%s to %s)", key, s, lo, hi);
	}
bad:
	return cfgval_fail(e, "%s: '%s' is not a size (a whole number with K, M or G, "
	    "e.g. 256K, 1M)", key, s);
}

int
cfgval_tls_mode(const char *key, const char *s, enum tls_mode *out, struct cfgval_err *e)
{
	static const enum tls_mode modes[] = {
		TLS_MODE_REQUIRE, TLS_MODE_VERIFY_CA, TLS_MODE_VERIFY_FULL,
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (strcmp(s, tls_mode_name(modes[i])) == 0) {
			*out = modes[i];
			return 0;
		}
	return cfgval_fail(e, "%s: '%s' is not one of require, verify-ca, verify-full", key, s);
}

const char *
cfgval_tls_version_name(int v)
{
	return v == TLS1_3_VERSION ? "TLSv1.3" : v == TLS1_2_VERSION ? "TLSv1.2" : "unknown";
}

int
cfgval_tls_version(const char *key, const char *s, int *out, struct cfgval_err *e)
{
	static const char *const obsolete[] = {
		"SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1", "1.0", "1.1",
	};

	if (strcmp(s, "TLSv1.2") == 0 || strcmp(s, "1.2") == 0) {
		*out = TLS1_2_VERSION;
		return 0;
	}
	if (strcmp(s, "TLSv1.3") == 0 || strcmp(s, "1.3") == 0) {
		*out = TLS1_3_VERSION;
		return 0;
	}
	/* Named separately so that the operator learns why, not just that it failed. */
	for (size_t i = 0; i < sizeof(obsolete) / sizeof(obsolete[0]); i++)
		if (strcmp(s, obsolete[i]) == 0)
			return cfgval_fail(e, "%s: '%s' is not supported (SSL 3.0, TLS 1.0 and 1.1 "
			    "are obsolete and not allowed by PCI DSS); use TLSv1.2 or TLSv1.3", key, s);
	return cfgval_fail(e, "%s: '%s' is not one of TLSv1.2, TLSv1.3", key, s);
}

/* OpenSSL cipher-string syntax: names, ':' or ',' separators, +/-/! operators, @STRENGTH. */
int
cfgval_cipher_list(const char *key, const char *s, struct cfgval_err *e)
{
	const char *p;

	for (p = s; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && strchr(":,+-!@=._", *p) == NULL)
			return cfgval_fail(e, "%s: '%s' contains '%c'; expected an OpenSSL cipher "
			    "list such as ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
			    key, s, *p);
	if (*s == ':' || strstr(s, "::") != NULL || s[strlen(s) - 1] == ':')
		return cfgval_fail(e, "%s: '%s' has an empty element", key, s);
	return 0;
}

/* Calls check(element) for each ':'-separated element of s; fails on an empty one. */
static int
cfgval_each_element(const char *s, int (*check)(const char *elem, size_t len),
    const char **bad, size_t *badlen)
{
	const char *p = s;

	for (;;) {
		size_t len = strcspn(p, ":");
		if (len == 0 || !check(p, len)) {
			*bad = p;
			*badlen = len;
			return -1;
		}
		if (p[len] == '\0')
			return 0;
		p += len + 1;
	}
}

static int
cfgval_is_suite(const char *elem, size_t len)
{
	/* RFC 8446 B.4: the only TLS 1.3 suites OpenSSL 3 implements. */
	static const char *const suites[] = {
		"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
		"TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256",
		"TLS_AES_128_CCM_8_SHA256",
	};

	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (strlen(suites[i]) == len && strncmp(elem, suites[i], len) == 0)
			return 1;
	return 0;
}

int
cfgval_ciphersuites(const char *key, const char *s, struct cfgval_err *e)
{
	const char *bad;
	size_t badlen;

	if (cfgval_each_element(s, cfgval_is_suite, &bad, &badlen) == -1)
		return cfgval_fail(e, "%s: '%.*s' is not a TLS 1.3 cipher suite (one of "
		    "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, "
		    "TLS_AES_128_CCM_SHA256, TLS_AES_128_CCM_8_SHA256, separated by ':')",
		    key, (int)badlen, bad);
	return 0;
}

/* Group names are left to OpenSSL (providers may add groups); only their shape is checked. */
static int
cfgval_is_group(const char *elem, size_t len)
{
	if (len > CFGVAL_LABEL_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)elem[i]) && elem[i] != '-' && elem[i] != '_')
			return 0;
	return 1;
}

int
cfgval_groups(const char *key, const char *s, struct cfgval_err *e)
{
	const char *bad;
	size_t badlen;

	if (cfgval_each_element(s, cfgval_is_group, &bad, &badlen) == -1)
		return cfgval_fail(e, "%s: '%s' is not a list of group names separated by ':' "
		    "(e.g. X25519:P-256:P-384)", key, s);
	return 0;
}

int
cfgval_is_name(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > CONFIG_NAME_MAX)
		return 0;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && strchr("._-", *s) == NULL)
			return 0;
	return 1;
}

static int
cfgval_is_label(const char *s, size_t len)
{
	if (len == 0 || len > CFGVAL_LABEL_MAX || s[0] == '-' || s[len - 1] == '-')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
			return 0;
	return 1;
}

int
cfgval_is_hostname(const char *s)
{
	const char *label = s, *last = s;

	if (strlen(s) > CFGVAL_HOSTNAME_MAX)
		return 0;
	for (;;) {
		size_t len = strcspn(label, ".");
		if (!cfgval_is_label(label, len))
			return 0;
		last = label;
		if (label[len] == '\0')
			break;
		label += len + 1;
	}
	/* An all-digit last label ("10.0.0", "127.1") is a mistyped address, not a name:
	 * getaddrinfo() would read it as an IPv4 shorthand. */
	return strspn(last, "0123456789") != strlen(last);
}

int
cfgval_path(const char *key, const char *s, char *out, size_t outlen, struct cfgval_err *e)
{
	/* Relative paths would depend on each process's working directory. */
	if (s[0] != '/')
		return cfgval_fail(e, "%s: '%s' is not an absolute path", key, s);
	if (strlen(s) >= outlen)
		return cfgval_fail(e, "%s: path is longer than %zu bytes", key, outlen - 1);
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

int
cfgval_unix_path(const char *key, const char *s, char *out, size_t outlen,
    struct cfgval_err *e)
{
	size_t max = outlen - 1 < CFGVAL_UNIX_PATH_MAX ? outlen - 1 : CFGVAL_UNIX_PATH_MAX;

	if (s[0] != '/')
		return cfgval_fail(e, "%s: unix socket path '%s' is not absolute", key, s);
	if (strlen(s) > max)
		return cfgval_fail(e, "%s: unix socket path '%s' is %zu bytes, at most %zu fit "
		    "in sun_path", key, s, strlen(s), max);
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

int
cfgval_user(const char *key, const char *s, char *out, size_t outlen, struct cfgval_err *e)
{
	size_t len = strlen(s);

	if (len == 0 || len > CFGVAL_USER_MAX || len >= outlen || s[0] == '-' ||
	    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len)
		return cfgval_fail(e, "%s: '%s' is not a user or group name (at most %d letters, "
		    "digits, '.', '_' or '-', not starting with '-')", key, s, CFGVAL_USER_MAX);
	memcpy(out, s, len + 1);
	return 0;
}

static int
cfgval_is_graph_token(const char *s, size_t maxlen)
{
	size_t len = strlen(s);

	if (len == 0 || len > maxlen)
		return 0;
	for (; *s != '\0'; s++)
		if (!isgraph((unsigned char)*s))
			return 0;
	return 1;
}

int
cfgval_token(const char *key, const char *s, char *out, size_t outlen, struct cfgval_err *e)
{
	if (!cfgval_is_graph_token(s, outlen - 1))
		return cfgval_fail(e, "%s: '%s' must be one word of printable ASCII, at most %zu "
		    "characters", key, s, outlen - 1);
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

int
cfgval_alpn(const char *key, const char *s, char *out, size_t outlen, struct cfgval_err *e)
{
	size_t max = outlen - 1 < CFGVAL_ALPN_MAX ? outlen - 1 : CFGVAL_ALPN_MAX;

	if (!cfgval_is_graph_token(s, max))
		return cfgval_fail(e, "%s: '%s' is not an ALPN protocol name (1 to %zu printable "
		    "characters, e.g. redis)", key, s, max);
	memcpy(out, s, strlen(s) + 1);
	return 0;
}
