/*
 * Address and identity values: "HOST:PORT", "[V6]:PORT", "unix:/path", and the allow/expect
 * entries (dns:, ip:, uri:, cn:).  IP literals are parsed strictly (inet_pton, never
 * "127.1" or a zone id) and resolved with AI_NUMERICHOST only: parsing the configuration
 * never sends a DNS query.
 */
#include "policy/config_values.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFGADDR_PORT_MAX 65535u

/* Strict literal: dotted quad or RFC 4291 text, no zone id, no shorthand. */
static int
cfgaddr_ip_family(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	if (inet_pton(AF_INET, host, buf) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, host, buf) == 1)
		return AF_INET6;
	return AF_UNSPEC;
}

static int
cfgaddr_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == IN_LOOPBACKNET;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	}
	return 0;
}

/* Fills ss from a literal IP (AI_NUMERICHOST: never a DNS query) and the port. */
static int
cfgaddr_resolve(const char *key, const char *s, const char *ip, struct config_addr *a,
    struct cfgval_err *e)
{
	struct addrinfo hints, *res = NULL;
	char port[8];
	int r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", (unsigned)a->port);
	if ((r = getaddrinfo(ip, port, &hints, &res)) != 0 || res == NULL ||
	    res->ai_addrlen > sizeof(a->ss)) {
		if (res != NULL)
			freeaddrinfo(res);
		return cfgval_fail(e, "%s: cannot use '%s': %s", key, s,
		    r != 0 ? gai_strerror(r) : "unexpected address size");
	}
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->sslen = (socklen_t)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int
cfgaddr_unix(const char *key, const char *s, unsigned flags, struct config_addr *a,
    struct cfgval_err *e)
{
	if (!(flags & CFGADDR_UNIX))
		return cfgval_fail(e, "%s: '%s': a unix socket is not allowed here (expected "
		    "HOST:PORT)", key, s);
	if (cfgval_unix_path(key, s + strlen("unix:"), a->path, sizeof(a->path), e) == -1)
		return -1;
	a->kind = ADDR_UNIX;
	return 0;
}

static const char *
cfgaddr_example(unsigned flags)
{
	if (flags & CFGADDR_UNIX)
		return "e.g. 127.0.0.1:6379, [::1]:6379 or unix:/run/redis/redis-server.sock";
	return "e.g. 0.0.0.0:6380, [::]:6380, 192.0.2.10:6380";
}

/* Splits "HOST:PORT" or "[V6]:PORT" into host (without brackets) and port. */
static int
cfgaddr_split_hostport(const char *key, const char *s, unsigned flags, struct config_addr *a,
    struct cfgval_err *e)
{
	const char *colon, *hend, *host = s;
	uint64_t port;

	if (*s == '[') {
		host = s + 1;
		if ((hend = strchr(host, ']')) == NULL || hend[1] != ':')
			return cfgval_fail(e, "%s: '%s' is not [IPV6]:PORT (e.g. [::1]:6379)",
			    key, s);
		colon = hend + 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return cfgval_fail(e, "%s: '%s' is not HOST:PORT (%s)", key, s,
			    cfgaddr_example(flags));
		hend = colon;
		if (memchr(s, ':', (size_t)(colon - s)) != NULL)
			return cfgval_fail(e, "%s: '%s': write IPv6 addresses in brackets, "
			    "e.g. [::1]:6379", key, s);
	}
	if (hend == host)
		return cfgval_fail(e, "%s: '%s' has no host (write 0.0.0.0 or [::] to listen "
		    "on every address)", key, s);
	if ((size_t)(hend - host) >= sizeof(a->host))
		return cfgval_fail(e, "%s: the host in '%s' is too long", key, s);
	if (cfgval_uint(key, colon + 1, 1, CFGADDR_PORT_MAX, &port, e) == -1)
		return cfgval_fail(e, "%s: port '%s' in '%s' is not a number from 1 to 65535",
		    key, colon + 1, s);
	memcpy(a->host, host, (size_t)(hend - host));
	a->host[hend - host] = '\0';
	a->port = (uint16_t)port;
	return 0;
}

static int
cfgaddr_not_loopback(const char *key, const char *s, unsigned flags, struct cfgval_err *e)
{
	return cfgval_fail(e, "%s %s is not on loopback (use %s127.0.0.1, ::1 or localhost)",
	    key, s, (flags & CFGADDR_UNIX) ? "unix:/path, " : "");
}

int
cfgaddr_parse(const char *key, const char *s, unsigned flags, struct config_addr *out,
    struct cfgval_err *e)
{
	struct config_addr a;
	int family;

	memset(&a, 0, sizeof(a));
	if (strncmp(s, "unix:", strlen("unix:")) == 0) {
		if (cfgaddr_unix(key, s, flags, &a, e) == -1)
			return -1;
		*out = a;
		return 0;
	}
	if (cfgaddr_split_hostport(key, s, flags, &a, e) == -1)
		return -1;
	a.kind = ADDR_TCP;
	family = cfgaddr_ip_family(a.host);
	if (*s == '[' && family != AF_INET6)
		return cfgval_fail(e, "%s: '%s' is not an IPv6 address in brackets", key, s);
	if (family == AF_UNSPEC && strcmp(a.host, "localhost") == 0 &&
	    !(flags & CFGADDR_NAME)) {
		/* Fixed, not looked up: /etc/hosts must not be able to move a backend. */
		if (cfgaddr_resolve(key, s, "127.0.0.1", &a, e) == -1)
			return -1;
	} else if (family != AF_UNSPEC) {
		if (cfgaddr_resolve(key, s, a.host, &a, e) == -1)
			return -1;
	} else if (flags & CFGADDR_LOOPBACK) {
		return cfgaddr_not_loopback(key, s, flags, e);
	} else if (!cfgval_is_hostname(a.host)) {
		return cfgval_fail(e, "%s: '%s' is not an IP address or a host name", key, a.host);
	} else if (!(flags & CFGADDR_NAME)) {
		return cfgval_fail(e, "%s: '%s' must be an IP address or localhost, not a name "
		    "(%s)", key, a.host, cfgaddr_example(flags));
	}
	if ((flags & CFGADDR_LOOPBACK) && !cfgaddr_is_loopback(&a.ss))
		return cfgaddr_not_loopback(key, s, flags, e);
	*out = a;
	return 0;
}

/* dns:NAME or dns:*.DOMAIN where DOMAIN has at least two labels (no "*.com"). */
static int
cfgaddr_allow_dns(const char *v, struct allow_entry *ent)
{
	const char *name = v;
	size_t i;

	if (strncmp(v, "*.", 2) == 0) {
		name = v + 2;
		if (strchr(name, '.') == NULL)
			return -1;
	}
	if (!cfgval_is_hostname(name) || strlen(v) >= sizeof(ent->value))
		return -1;
	/* DNS names compare case-insensitively (RFC 4343); store one case. */
	for (i = 0; v[i] != '\0'; i++)
		ent->value[i] = (char)tolower((unsigned char)v[i]);
	ent->value[i] = '\0';
	ent->kind = ALLOW_DNS;
	return 0;
}

static int
cfgaddr_allow_ip(const char *v, struct allow_entry *ent)
{
	unsigned char buf[sizeof(struct in6_addr)];
	int family = cfgaddr_ip_family(v);

	if (family == AF_UNSPEC || inet_pton(family, v, buf) != 1 ||
	    inet_ntop(family, buf, ent->value, sizeof(ent->value)) == NULL)
		return -1;
	ent->kind = ALLOW_IP;
	return 0;
}

/* RFC 3986 scheme ":" then at least one more printable character. */
static int
cfgaddr_allow_uri(const char *v, struct allow_entry *ent)
{
	const char *p = v;

	if (!isalpha((unsigned char)*p))
		return -1;
	while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
		p++;
	if (*p != ':' || p[1] == '\0' || strlen(v) >= sizeof(ent->value))
		return -1;
	snprintf(ent->value, sizeof(ent->value), "%s", v);
	ent->kind = ALLOW_URI;
	return 0;
}

static int
cfgaddr_allow_cn(const char *v, struct allow_entry *ent)
{
	if (*v == '\0' || strlen(v) >= sizeof(ent->value))
		return -1;
	snprintf(ent->value, sizeof(ent->value), "%s", v);
	ent->kind = ALLOW_CN;
	return 0;
}

static int
cfgaddr_allow_entry(const char *key, const char *tok, struct allow_entry *ent,
    struct cfgval_err *e)
{
	static const struct {
		const char *prefix;
		int (*parse)(const char *, struct allow_entry *);
		const char *what;
	} kinds[] = {
		{ "dns:", cfgaddr_allow_dns, "a DNS name (a wildcard may only be a leftmost '*.' "
		    "label above at least two labels)" },
		{ "ip:", cfgaddr_allow_ip, "an IPv4 or IPv6 address" },
		{ "uri:", cfgaddr_allow_uri, "a URI (scheme:..., e.g. spiffe://example.com/app)" },
		{ "cn:", cfgaddr_allow_cn, "a common name" },
	};

	memset(ent, 0, sizeof(*ent));
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		size_t plen = strlen(kinds[i].prefix);
		if (strncmp(tok, kinds[i].prefix, plen) != 0)
			continue;
		if (kinds[i].parse(tok + plen, ent) == -1)
			return cfgval_fail(e, "%s: '%s' is not %s", key, tok, kinds[i].what);
		return 0;
	}
	return cfgval_fail(e, "%s: '%s' is not an identity (expected dns:NAME, ip:ADDRESS, "
	    "uri:URI or cn:NAME)", key, tok);
}

/* Number of whitespace-separated tokens in s. */
static size_t
cfgaddr_count_tokens(const char *s)
{
	size_t n = 0;

	for (;;) {
		s += strspn(s, " \t");
		if (*s == '\0')
			return n;
		n++;
		s += strcspn(s, " \t");
	}
}

int
cfgaddr_allow_list(const char *key, const char *s, struct allow_entry **list, size_t *n,
    struct cfgval_err *e)
{
	size_t add = cfgaddr_count_tokens(s), i = *n;
	struct allow_entry *grown;
	char tok[CONFIG_ERR_MAX / 2];

	if (add == 0)
		return cfgval_fail(e, "%s: needs at least one entry", key);
	if (*n + add > CONFIG_ALLOW_MAX)
		return cfgval_fail(e, "%s: more than %d entries in one list", key,
		    CONFIG_ALLOW_MAX);
	if ((grown = realloc(*list, (*n + add) * sizeof(**list))) == NULL)
		return cfgval_fail(e, "%s: out of memory", key);
	*list = grown;
	/* Entries are committed (*n grows) only when all of them parsed. */
	for (;;) {
		s += strspn(s, " \t");
		if (*s == '\0')
			break;
		size_t len = strcspn(s, " \t");
		if (len >= sizeof(tok))
			return cfgval_fail(e, "%s: entry '%.40s...' is too long", key, s);
		memcpy(tok, s, len);
		tok[len] = '\0';
		if (cfgaddr_allow_entry(key, tok, &grown[i], e) == -1)
			return -1;
		i++;
		s += len;
	}
	*n = i;
	return 0;
}
