/*
 * Value parsers for the configuration (private to policy/config*.c).
 *
 * Each parser turns one value string into a typed value or fails with a complete message that
 * starts with the key ("tls-mode: 'verify' is not one of ...") and says what is expected; the
 * caller only adds "file:line: ".  They return 0 or -1 and are meant to be chained with ||.
 * None of them touches the file system or the network.
 *
 * config_values.c: numbers, durations, sizes, booleans, TLS names, paths, names.
 * config_addr.c:   addresses and allow/expect entries.
 */
#ifndef REDOUBT_CONFIG_VALUES_H
#define REDOUBT_CONFIG_VALUES_H

#include <stddef.h>
#include <stdint.h>

#include "policy/config.h"

struct cfgval_err {
	char msg[CONFIG_ERR_MAX];
};

int cfgval_fail(struct cfgval_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- config_values.c ---- */

/* Decimal whole number in [min, max]. */
int cfgval_uint(const char *key, const char *s, uint64_t min, uint64_t max, uint64_t *out,
    struct cfgval_err *e);
/* yes/no, true/false, on/off, 1/0. */
int cfgval_bool(const char *key, const char *s, int *out, struct cfgval_err *e);

/* Duration: a whole number with ms, s, m, h or d (bare = seconds), in [min_ms, max_ms];
 * with zero_ok, "0" (any unit) is also accepted and means "none". */
int cfgval_duration(const char *key, const char *s, uint64_t min_ms, uint64_t max_ms,
    int zero_ok, uint64_t *out_ms, struct cfgval_err *e);
/* Size: a whole number with K, M or G (powers of 1024; bare = bytes), in [min, max]. */
int cfgval_size(const char *key, const char *s, uint64_t min, uint64_t max, uint64_t *out,
    struct cfgval_err *e);
/* "1s", "10m", "7d", "250ms": the largest unit that divides ms exactly. */
void cfgval_format_duration(uint64_t ms, char *out, size_t outlen);

int cfgval_tls_mode(const char *key, const char *s, enum tls_mode *out, struct cfgval_err *e);
/* TLSv1.2 / 1.2 / TLSv1.3 / 1.3 -> TLS1_2_VERSION / TLS1_3_VERSION. */
int cfgval_tls_version(const char *key, const char *s, int *out, struct cfgval_err *e);
const char *cfgval_tls_version_name(int v);
/* OpenSSL cipher list (TLS 1.2): characters OpenSSL's syntax uses, no empty element. */
int cfgval_cipher_list(const char *key, const char *s, struct cfgval_err *e);
/* TLS 1.3 suites: every element must be one of the five RFC 8446 suites. */
int cfgval_ciphersuites(const char *key, const char *s, struct cfgval_err *e);
/* Key-exchange group list: names separated by ':'. */
int cfgval_groups(const char *key, const char *s, struct cfgval_err *e);

/* Absolute path that fits outlen (including the NUL). */
int cfgval_path(const char *key, const char *s, char *out, size_t outlen, struct cfgval_err *e);
/* Absolute path that fits sun_path (at most 107 bytes). */
int cfgval_unix_path(const char *key, const char *s, char *out, size_t outlen,
    struct cfgval_err *e);
/* User or group name as useradd(8) accepts it. */
int cfgval_user(const char *key, const char *s, char *out, size_t outlen, struct cfgval_err *e);
/* One token of printable ASCII without spaces (TCTI strings). */
int cfgval_token(const char *key, const char *s, char *out, size_t outlen, struct cfgval_err *e);
/* ALPN protocol id: 1..31 printable ASCII characters, no spaces. */
int cfgval_alpn(const char *key, const char *s, char *out, size_t outlen, struct cfgval_err *e);

/* Section names: [A-Za-z0-9._-]{1,CONFIG_NAME_MAX}. */
int cfgval_is_name(const char *s);
/* Host name syntax (labels of letters, digits, '-', '_'; last label not all digits). */
int cfgval_is_hostname(const char *s);

/* ---- config_addr.c ---- */

/* Address flags: what a key accepts besides a literal IP with a port. */
#define CFGADDR_UNIX     0x1  /* unix:/absolute/path */
#define CFGADDR_NAME     0x2  /* a DNS name, kept unresolved (sslen = 0) */
#define CFGADDR_LOOPBACK 0x4  /* must be 127.0.0.0/8, ::1, localhost (or unix) */
int cfgaddr_parse(const char *key, const char *s, unsigned flags, struct config_addr *out,
    struct cfgval_err *e);

/* Appends the whitespace-separated entries of s to *list (at most CONFIG_ALLOW_MAX in all).
 * dns: values are stored lower-case and ip: values in inet_ntop() form, so that matching
 * is a plain string comparison. */
int cfgaddr_allow_list(const char *key, const char *s, struct allow_entry **list, size_t *n,
    struct cfgval_err *e);

#endif
