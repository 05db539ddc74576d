/*
 * Configuration checks that need the whole file: identity references (an identity may be
 * defined after the listener that uses it), [global] TLS defaults inherited by listeners and
 * connectors, FIPS contradictions, CA and allow-list requirements of each tls-mode, listen
 * addresses used twice, backends that point back at a TLS port.  Also config_check_files().
 */
#include "policy/config_parser.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFGCHK_LABEL_MAX (CONFIG_NAME_MAX + 16)   /* "[connector NAME]" */
#define CFGCHK_ADDR_MAX  (sizeof(((struct config_addr *)NULL)->host) + 16)

/* ---- [global] ---- */

/* Privilege separation only holds if the network-facing user is neither root nor keyd's. */
static int
cfgchk_users(struct config_parser *p)
{
	const struct config *cfg = p->cfg;
	int uline = p->global.key_line[CK_USER], kline = p->global.key_line[CK_KEYD_USER];

	if (strcmp(cfg->user, "root") == 0)
		return config_fail(p, uline, "user: workers face the network and must not run as "
		    "root; use an unprivileged user such as %s", CONFIG_USER_DEFAULT);
	if (strcmp(cfg->keyd_user, "root") == 0)
		return config_fail(p, kline, "keyd-user: keyd must not run as root; use a user of "
		    "its own such as %s", CONFIG_KEYD_USER_DEFAULT);
	if (strcmp(cfg->user, cfg->keyd_user) == 0)
		return config_fail(p, uline > kline ? uline : kline, "user and keyd-user are both "
		    "'%s': workers must not run as the user that can read the private keys",
		    cfg->user);
	return 0;
}

/* fips = yes: defaults not set in the file become the FIPS-approved sets. */
static void
cfgchk_fips_defaults(struct config_parser *p)
{
	struct tls_params *t = &p->cfg->tls;

	if (!p->cfg->fips)
		return;
	if (p->global.key_line[CK_TLS_CIPHERS] == 0)
		snprintf(t->ciphers, sizeof(t->ciphers), "%s", CONFIG_TLS_CIPHERS_FIPS);
	if (p->global.key_line[CK_TLS_CIPHERSUITES] == 0)
		snprintf(t->ciphersuites, sizeof(t->ciphersuites), "%s", CONFIG_TLS_SUITES_FIPS);
	if (p->global.key_line[CK_TLS_GROUPS] == 0)
		snprintf(t->groups, sizeof(t->groups), "%s", CONFIG_TLS_GROUPS_FIPS);
}

/* ---- TLS parameters of any section ---- */

/* The first group of list that FIPS 140 does not approve (X25519, X448, their hybrids). */
static const char *
cfgchk_nonfips_group(const char *list)
{
	static const char *const banned[] = { "X25519", "X448" };
	const char *p = list;

	for (;;) {
		for (size_t i = 0; i < sizeof(banned) / sizeof(banned[0]); i++)
			if (strncasecmp(p, banned[i], strlen(banned[i])) == 0)
				return banned[i];
		if ((p = strchr(p, ':')) == NULL)
			return NULL;
		p++;
	}
}

/* Only values written in this section are checked: inherited ones were checked where set. */
static int
cfgchk_fips(struct config_parser *p, const struct config_section_state *st,
    const struct tls_params *t)
{
	const char *group;

	if (!p->cfg->fips)
		return 0;
	if (st->key_line[CK_TLS_GROUPS] != 0 && (group = cfgchk_nonfips_group(t->groups)) != NULL)
		return config_fail(p, st->key_line[CK_TLS_GROUPS], "tls-groups: %s is not "
		    "allowed with fips = yes (not FIPS-approved; use P-256, P-384 or P-521)", group);
	if (st->key_line[CK_TLS_CIPHERS] != 0 && strcasestr(t->ciphers, "CHACHA20") != NULL)
		return config_fail(p, st->key_line[CK_TLS_CIPHERS], "tls-ciphers: CHACHA20 is not "
		    "allowed with fips = yes (use AES-GCM, e.g. ECDHE-ECDSA-AES128-GCM-SHA256)");
	if (st->key_line[CK_TLS_CIPHERSUITES] != 0 &&
	    strcasestr(t->ciphersuites, "CHACHA20") != NULL)
		return config_fail(p, st->key_line[CK_TLS_CIPHERSUITES], "tls-ciphersuites: "
		    "TLS_CHACHA20_POLY1305_SHA256 is not allowed with fips = yes (use "
		    "TLS_AES_128_GCM_SHA256 or TLS_AES_256_GCM_SHA384)");
	return 0;
}

static int
cfgchk_versions(struct config_parser *p, const char *label,
    const struct config_section_state *st, const struct tls_params *t)
{
	int line = st->key_line[CK_TLS_PROTOCOL_MIN];

	if (t->proto_min <= t->proto_max)
		return 0;
	if (line == 0)
		line = st->key_line[CK_TLS_PROTOCOL_MAX];
	return config_fail(p, line != 0 ? line : st->line, "tls-protocol-min %s is above "
	    "tls-protocol-max %s in %s", cfgval_tls_version_name(t->proto_min),
	    cfgval_tls_version_name(t->proto_max), label);
}

/* A listener's or connector's TLS parameters: its own where set, else [global]'s. */
static int
cfgchk_tls(struct config_parser *p, const char *label, const struct config_section_state *st,
    struct tls_params *t)
{
	const struct tls_params *g = &p->cfg->tls;

	if (st->key_line[CK_TLS_PROTOCOL_MIN] == 0)
		t->proto_min = g->proto_min;
	if (st->key_line[CK_TLS_PROTOCOL_MAX] == 0)
		t->proto_max = g->proto_max;
	if (st->key_line[CK_TLS_CIPHERS] == 0)
		memcpy(t->ciphers, g->ciphers, sizeof(t->ciphers));
	if (st->key_line[CK_TLS_CIPHERSUITES] == 0)
		memcpy(t->ciphersuites, g->ciphersuites, sizeof(t->ciphersuites));
	if (st->key_line[CK_TLS_GROUPS] == 0)
		memcpy(t->groups, g->groups, sizeof(t->groups));
	return cfgchk_fips(p, st, t) || cfgchk_versions(p, label, st, t) ? -1 : 0;
}

static int
cfgchk_global(struct config_parser *p)
{
	cfgchk_fips_defaults(p);
	return cfgchk_users(p) || cfgchk_fips(p, &p->global, &p->cfg->tls) ||
	    cfgchk_versions(p, "[global]", &p->global, &p->cfg->tls) ? -1 : 0;
}

/* ---- listeners and connectors ---- */

static int
cfgchk_identity(struct config_parser *p, const struct config_section_state *st, int *index)
{
	for (size_t i = 0; i < p->cfg->n_identities; i++)
		if (strcmp(p->cfg->identities[i].name, st->identity) == 0) {
			*index = (int)i;
			return 0;
		}
	return config_fail(p, st->key_line[CK_IDENTITY], "identity '%s' is not defined",
	    st->identity);
}

static int
cfgchk_ca(struct config_parser *p, const char *label, const struct config_section_state *st,
    enum tls_mode mode, const char *ca, int identity)
{
	const struct config_identity *id = &p->cfg->identities[identity];
	int line = st->key_line[CK_TLS_MODE];

	if (mode == TLS_MODE_REQUIRE || ca[0] != '\0' || id->ca[0] != '\0')
		return 0;
	return config_fail(p, line != 0 ? line : st->line, "%s tls-mode %s needs a CA to verify "
	    "peers: set 'ca' in %s or in [identity %s]", label, tls_mode_name(mode), label,
	    id->name);
}

/* An allow list that tls-mode ignores would look like protection and be none. */
static int
cfgchk_unused_list(struct config_parser *p, const char *label,
    const struct config_section_state *st, enum config_key_id id, const char *key,
    enum tls_mode mode)
{
	if (mode == TLS_MODE_VERIFY_FULL || st->key_line[id] == 0)
		return 0;
	return config_fail(p, st->key_line[id], "%s: only checked with tls-mode verify-full, "
	    "but %s uses tls-mode %s", key, label, tls_mode_name(mode));
}

static int
cfgchk_listener_allow(struct config_parser *p, const char *label,
    const struct config_section_state *st, const struct config_listener *l)
{
	if (l->mode == TLS_MODE_VERIFY_FULL && l->n_allow == 0)
		return config_fail(p, st->line, "%s needs 'allow' for tls-mode verify-full (the "
		    "client identities to accept, e.g. allow = dns:app.example.com), or set "
		    "tls-mode = verify-ca", label);
	return cfgchk_unused_list(p, label, st, CK_ALLOW, "allow", l->mode) ||
	    cfgchk_unused_list(p, label, st, CK_ROUTE_ALLOW, "route-allow", l->mode) ? -1 : 0;
}

static int
cfgchk_is_wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return 0;
}

static int
cfgchk_same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
	    &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/*
 * Whether binding a and b would collide (or connecting to b reaches a): same unix path, or
 * same port and family with the same address or a wildcard on either side.  Across families
 * it depends on IPV6_V6ONLY, so it is left to bind() to say.
 */
static int
cfgchk_addr_overlap(const struct config_addr *a, const struct config_addr *b)
{
	if (a->kind != b->kind)
		return 0;
	if (a->kind == ADDR_UNIX)
		return strcmp(a->path, b->path) == 0;
	if (a->kind != ADDR_TCP || a->port != b->port || a->sslen == 0 || b->sslen == 0 ||
	    a->ss.ss_family != b->ss.ss_family)
		return 0;
	return cfgchk_is_wildcard(&a->ss) || cfgchk_is_wildcard(&b->ss) ||
	    cfgchk_same_ip(&a->ss, &b->ss);
}

static int
cfgchk_listen_taken(struct config_parser *p, const struct config_addr *a, int line,
    const char *kind, const char *name, int other_line)
{
	char addr[CFGCHK_ADDR_MAX];

	config_addr_format(a, addr, sizeof(addr));
	return config_fail(p, line, "listen %s is already used by [%s %s] (line %d)", addr,
	    kind, name, other_line);
}

/* Listeners are compared with the listeners before them; connectors with all listeners and
 * the connectors before them. */
static int
cfgchk_listen_unique(struct config_parser *p, enum config_section_type t, size_t i,
    const struct config_addr *a, int line)
{
	const struct config *cfg = p->cfg;
	size_t nl = t == CS_LISTENER ? i : cfg->n_listeners;

	for (size_t j = 0; j < nl; j++)
		if (cfgchk_addr_overlap(a, &cfg->listeners[j].listen))
			return cfgchk_listen_taken(p, a, line, "listener", cfg->listeners[j].name,
			    p->listeners[j].key_line[CK_LISTEN]);
	for (size_t j = 0; t == CS_CONNECTOR && j < i; j++)
		if (cfgchk_addr_overlap(a, &cfg->connectors[j].listen))
			return cfgchk_listen_taken(p, a, line, "connector", cfg->connectors[j].name,
			    p->connectors[j].key_line[CK_LISTEN]);
	return 0;
}

/* A backend on a listener's own TLS port would loop, or send plaintext to a TLS port. */
static int
cfgchk_backend_loop(struct config_parser *p, const char *key, const struct config_addr *b,
    int line)
{
	char addr[CFGCHK_ADDR_MAX];

	for (size_t j = 0; j < p->cfg->n_listeners; j++) {
		if (!cfgchk_addr_overlap(b, &p->cfg->listeners[j].listen))
			continue;
		config_addr_format(b, addr, sizeof(addr));
		return config_fail(p, line, "%s %s is the TLS port of [listener %s]; point it at "
		    "the Redis server's plaintext port or socket", key, addr,
		    p->cfg->listeners[j].name);
	}
	return 0;
}

static int
cfgchk_listener_backends(struct config_parser *p, const struct config_section_state *st,
    const struct config_listener *l)
{
	if (cfgchk_backend_loop(p, "backend", &l->backend, st->key_line[CK_BACKEND]) == -1)
		return -1;
	for (size_t r = 0; r < l->n_routes; r++)
		if (cfgchk_backend_loop(p, "route backend", &l->routes[r].backend,
		    st->key_line[CK_ROUTE] != 0 ? st->key_line[CK_ROUTE] : st->line) == -1)
			return -1;
	return 0;
}

static int
cfgchk_listener(struct config_parser *p, size_t i)
{
	struct config_listener *l = &p->cfg->listeners[i];
	const struct config_section_state *st = &p->listeners[i];
	char label[CFGCHK_LABEL_MAX];

	snprintf(label, sizeof(label), "[listener %s]", l->name);
	if (cfgchk_identity(p, st, &l->identity) == -1 ||
	    cfgchk_tls(p, label, st, &l->tls) == -1 ||
	    cfgchk_ca(p, label, st, l->mode, l->ca, l->identity) == -1 ||
	    cfgchk_listener_allow(p, label, st, l) == -1 ||
	    cfgchk_listen_unique(p, CS_LISTENER, i, &l->listen, st->key_line[CK_LISTEN]) == -1 ||
	    cfgchk_listener_backends(p, st, l) == -1)
		return -1;
	return 0;
}

static int
cfgchk_connector(struct config_parser *p, size_t i)
{
	struct config_connector *c = &p->cfg->connectors[i];
	const struct config_section_state *st = &p->connectors[i];
	char label[CFGCHK_LABEL_MAX];

	snprintf(label, sizeof(label), "[connector %s]", c->name);
	if (cfgchk_identity(p, st, &c->identity) == -1 ||
	    cfgchk_tls(p, label, st, &c->tls) == -1 ||
	    cfgchk_ca(p, label, st, c->mode, c->ca, c->identity) == -1 ||
	    cfgchk_unused_list(p, label, st, CK_EXPECT, "expect", c->mode) == -1 ||
	    cfgchk_listen_unique(p, CS_CONNECTOR, i, &c->listen, st->key_line[CK_LISTEN]) == -1)
		return -1;
	return 0;
}

int
cfgchk_semantics(struct config_parser *p)
{
	if (cfgchk_global(p) == -1)
		return -1;
	for (size_t i = 0; i < p->cfg->n_listeners; i++)
		if (cfgchk_listener(p, i) == -1)
			return -1;
	for (size_t i = 0; i < p->cfg->n_connectors; i++)
		if (cfgchk_connector(p, i) == -1)
			return -1;
	return 0;
}

/* ---- files ---- */

/*
 * path must open for reading by the caller and be a regular file.  open(2), not access(2):
 * access() answers for the real uid, and a directory "opens" but is no certificate.
 */
static int
cfgchk_file(const char *label, const char *key, const char *path, char *err, size_t errlen)
{
	struct stat st;
	const char *why = NULL;
	int fd;

	if (path[0] == '\0')
		return 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) == -1)
		why = strerror(errno);
	else if (fstat(fd, &st) == -1)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	if (fd != -1)
		close(fd);
	if (why == NULL)
		return 0;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s %s %s: %s", label, key, path, why);
	return -1;
}

static int
cfgchk_identity_files(const struct config_identity *id, char *err, size_t errlen)
{
	char label[CFGCHK_LABEL_MAX];
	const char *key = id->key;

	if (strncmp(key, CONFIG_KEY_TPM_PREFIX, strlen(CONFIG_KEY_TPM_PREFIX)) == 0)
		key += strlen(CONFIG_KEY_TPM_PREFIX);     /* the TPM key blob */
	snprintf(label, sizeof(label), "[identity %s]", id->name);
	return cfgchk_file(label, "cert", id->cert, err, errlen) ||
	    cfgchk_file(label, "key", key, err, errlen) ||
	    cfgchk_file(label, "key-passphrase-file", id->key_passphrase_file, err, errlen) ||
	    cfgchk_file(label, "ca", id->ca, err, errlen) ||
	    cfgchk_file(label, "crl", id->crl, err, errlen) ? -1 : 0;
}

static int
cfgchk_peer_files(const char *kind, const char *name, const char *ca, const char *crl,
    char *err, size_t errlen)
{
	char label[CFGCHK_LABEL_MAX];

	snprintf(label, sizeof(label), "[%s %s]", kind, name);
	return cfgchk_file(label, "ca", ca, err, errlen) ||
	    cfgchk_file(label, "crl", crl, err, errlen) ? -1 : 0;
}

int
config_check_files(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->n_identities; i++)
		if (cfgchk_identity_files(&cfg->identities[i], err, errlen) == -1)
			return -1;
	for (size_t i = 0; i < cfg->n_listeners; i++)
		if (cfgchk_peer_files("listener", cfg->listeners[i].name, cfg->listeners[i].ca,
		    cfg->listeners[i].crl, err, errlen) == -1)
			return -1;
	for (size_t i = 0; i < cfg->n_connectors; i++)
		if (cfgchk_peer_files("connector", cfg->connectors[i].name, cfg->connectors[i].ca,
		    cfg->connectors[i].crl, err, errlen) == -1)
			return -1;
	return 0;
}
