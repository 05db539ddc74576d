/*
 * Configuration keys: one table per section type says which keys exist, which are required
 * or repeatable, how each value is parsed and where it is stored.  Simple values are stored
 * through the table (type, offset, range); the rest have a setter of their own.
 */
#include "policy/config_parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/tls1.h>

#define KEY_REQUIRED   0x1   /* the section is incomplete without it */
#define KEY_REPEATABLE 0x2   /* each occurrence appends (allow, route, ...) */
#define KEY_ZERO_OK    0x4   /* durations: "0" means none */

enum config_key_type {
	KT_UINT, KT_BOOL, KT_MS, KT_SECONDS, KT_SIZE_POW2, KT_USER, KT_PATH, KT_UNIX_PATH,
	KT_TOKEN, KT_TLS_VERSION, KT_TLS_MODE, KT_CIPHERS, KT_SUITES, KT_GROUPS, KT_ADDR, KT_FN
};

struct config_key;
typedef int (*config_setter)(struct config_parser *p, const struct config_key *k, void *obj,
    const char *value, struct cfgval_err *e);

struct config_key {
	const char *name;
	enum config_key_id id;
	unsigned flags;             /* KEY_* */
	enum config_key_type type;
	size_t off;                 /* of the field in the section's object */
	size_t size;                /* of the field */
	uint64_t min, max;          /* range (durations in ms); KT_ADDR: min = CFGADDR_* */
	config_setter fn;           /* KT_FN */
};

#define KEY(name, id, flags, type, st, field, min, max) \
	{ name, id, flags, type, offsetof(st, field), sizeof(((st *)NULL)->field), min, max, NULL }
#define KEYFN(name, id, flags, fn) { name, id, flags, KT_FN, 0, 0, 0, 0, fn }
#define KEYS_TLS(st) \
	KEY("tls-protocol-min", CK_TLS_PROTOCOL_MIN, 0, KT_TLS_VERSION, st, tls.proto_min, 0, 0), \
	KEY("tls-protocol-max", CK_TLS_PROTOCOL_MAX, 0, KT_TLS_VERSION, st, tls.proto_max, 0, 0), \
	KEY("tls-ciphers", CK_TLS_CIPHERS, 0, KT_CIPHERS, st, tls.ciphers, 0, 0), \
	KEY("tls-ciphersuites", CK_TLS_CIPHERSUITES, 0, KT_SUITES, st, tls.ciphersuites, 0, 0), \
	KEY("tls-groups", CK_TLS_GROUPS, 0, KT_GROUPS, st, tls.groups, 0, 0)

static int cfgkey_set_workers(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_audit_log(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_log_level(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_key(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_identity(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_allow(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_expect(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_alpn_list(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_alpn_one(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_route(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);
static int cfgkey_set_route_allow(struct config_parser *, const struct config_key *, void *,
    const char *, struct cfgval_err *);

static const struct config_key cfgkey_global[] = {
	KEYFN("workers", CK_WORKERS, 0, cfgkey_set_workers),
	KEY("user", CK_USER, 0, KT_USER, struct config, user, 0, 0),
	KEY("keyd-user", CK_KEYD_USER, 0, KT_USER, struct config, keyd_user, 0, 0),
	KEY("admin-group", CK_ADMIN_GROUP, 0, KT_USER, struct config, admin_group, 0, 0),
	KEY("control-socket", CK_CONTROL_SOCKET, 0, KT_UNIX_PATH, struct config,
	    control_socket, 0, 0),
	KEY("link-socket", CK_LINK_SOCKET, 0, KT_UNIX_PATH, struct config, link_socket, 0, 0),
	KEYFN("audit-log", CK_AUDIT_LOG, 0, cfgkey_set_audit_log),
	KEY("audit-fail-closed", CK_AUDIT_FAIL_CLOSED, 0, KT_BOOL, struct config,
	    audit_fail_closed, 0, 0),
	KEY("audit-syslog", CK_AUDIT_SYSLOG, 0, KT_BOOL, struct config, audit_syslog, 0, 0),
	KEY("checkpoint-records", CK_CHECKPOINT_RECORDS, 0, KT_UINT, struct config,
	    checkpoint_records, 1, CONFIG_CHECKPOINT_RECORDS_MAX),
	KEY("checkpoint-seconds", CK_CHECKPOINT_SECONDS, 0, KT_SECONDS, struct config,
	    checkpoint_seconds, CONFIG_CHECKPOINT_MS_MIN, CONFIG_CHECKPOINT_MS_MAX),
	KEYFN("log-level", CK_LOG_LEVEL, 0, cfgkey_set_log_level),
	KEY("fips", CK_FIPS, 0, KT_BOOL, struct config, fips, 0, 0),
	KEY("fips-config", CK_FIPS_CONFIG, 0, KT_PATH, struct config, fips_config, 0, 0),
	KEY("auto-reload", CK_AUTO_RELOAD, 0, KT_BOOL, struct config, auto_reload, 0, 0),
	KEY("max-connections", CK_MAX_CONNECTIONS, 0, KT_UINT, struct config, max_connections,
	    1, CONFIG_MAX_CONNECTIONS_MAX),
	KEY("handshake-timeout", CK_HANDSHAKE_TIMEOUT, 0, KT_MS, struct config,
	    handshake_timeout_ms, CONFIG_HANDSHAKE_MS_MIN, CONFIG_HANDSHAKE_MS_MAX),
	KEY("idle-timeout", CK_IDLE_TIMEOUT, KEY_ZERO_OK, KT_MS, struct config, idle_timeout_ms,
	    CONFIG_IDLE_MS_MIN, CONFIG_IDLE_MS_MAX),
	KEY("keyd-timeout", CK_KEYD_TIMEOUT, 0, KT_MS, struct config, keyd_timeout_ms,
	    CONFIG_KEYD_TIMEOUT_MS_MIN, CONFIG_KEYD_TIMEOUT_MS_MAX),
	KEY("secure-heap", CK_SECURE_HEAP, 0, KT_SIZE_POW2, struct config, secure_heap,
	    CONFIG_SECURE_HEAP_MIN, CONFIG_SECURE_HEAP_MAX),
	KEY("sign-rate", CK_SIGN_RATE, 0, KT_UINT, struct config, sign_rate, 1,
	    CONFIG_SIGN_RATE_MAX),
	KEY("sign-burst", CK_SIGN_BURST, 0, KT_UINT, struct config, sign_burst, 1,
	    CONFIG_SIGN_RATE_MAX),
	KEY("ticket-key-lifetime", CK_TICKET_KEY_LIFETIME, 0, KT_SECONDS, struct config,
	    ticket_key_lifetime, CONFIG_TICKET_LIFETIME_MS_MIN, CONFIG_TICKET_LIFETIME_MS_MAX),
	KEY("expiry-warning-days", CK_EXPIRY_WARNING_DAYS, 0, KT_UINT, struct config,
	    expiry_warning_days, 0, CONFIG_EXPIRY_WARNING_DAYS_MAX),
	KEY("tpm-tcti", CK_TPM_TCTI, 0, KT_TOKEN, struct config, tpm_tcti, 0, 0),
	KEYS_TLS(struct config),
};

static const struct config_key cfgkey_identity[] = {
	KEY("cert", CK_CERT, KEY_REQUIRED, KT_PATH, struct config_identity, cert, 0, 0),
	KEYFN("key", CK_KEY, KEY_REQUIRED, cfgkey_set_key),
	KEY("key-passphrase-file", CK_KEY_PASSPHRASE_FILE, 0, KT_PATH, struct config_identity,
	    key_passphrase_file, 0, 0),
	KEY("ca", CK_CA, 0, KT_PATH, struct config_identity, ca, 0, 0),
	KEY("crl", CK_CRL, 0, KT_PATH, struct config_identity, crl, 0, 0),
};

static const struct config_key cfgkey_listener[] = {
	KEY("listen", CK_LISTEN, KEY_REQUIRED, KT_ADDR, struct config_listener, listen, 0, 0),
	KEY("backend", CK_BACKEND, KEY_REQUIRED, KT_ADDR, struct config_listener, backend,
	    CFGADDR_LOOPBACK | CFGADDR_UNIX, 0),
	KEYFN("identity", CK_IDENTITY, KEY_REQUIRED, cfgkey_set_identity),
	KEY("tls-mode", CK_TLS_MODE, 0, KT_TLS_MODE, struct config_listener, mode, 0, 0),
	KEYFN("allow", CK_ALLOW, KEY_REPEATABLE, cfgkey_set_allow),
	KEY("ca", CK_CA, 0, KT_PATH, struct config_listener, ca, 0, 0),
	KEY("crl", CK_CRL, 0, KT_PATH, struct config_listener, crl, 0, 0),
	KEYS_TLS(struct config_listener),
	KEYFN("alpn", CK_ALPN, 0, cfgkey_set_alpn_list),
	KEYFN("route", CK_ROUTE, KEY_REPEATABLE, cfgkey_set_route),
	KEYFN("route-allow", CK_ROUTE_ALLOW, KEY_REPEATABLE, cfgkey_set_route_allow),
};

static const struct config_key cfgkey_connector[] = {
	KEY("listen", CK_LISTEN, KEY_REQUIRED, KT_ADDR, struct config_connector, listen,
	    CFGADDR_LOOPBACK | CFGADDR_UNIX, 0),
	KEY("connect", CK_CONNECT, 0, KT_ADDR, struct config_connector, connect,
	    CFGADDR_NAME, 0),
	KEY("transparent", CK_TRANSPARENT, 0, KT_BOOL, struct config_connector, transparent,
	    0, 0),
	KEYFN("identity", CK_IDENTITY, KEY_REQUIRED, cfgkey_set_identity),
	KEY("tls-mode", CK_TLS_MODE, 0, KT_TLS_MODE, struct config_connector, mode, 0, 0),
	KEYFN("expect", CK_EXPECT, KEY_REPEATABLE, cfgkey_set_expect),
	KEYFN("alpn", CK_ALPN, 0, cfgkey_set_alpn_one),
	KEY("ca", CK_CA, 0, KT_PATH, struct config_connector, ca, 0, 0),
	KEY("crl", CK_CRL, 0, KT_PATH, struct config_connector, crl, 0, 0),
	KEYS_TLS(struct config_connector),
};

static const struct {
	const struct config_key *keys;
	size_t n;
} cfgkey_tables[] = {
	[CS_NONE] = { NULL, 0 },
	[CS_GLOBAL] = { cfgkey_global, sizeof(cfgkey_global) / sizeof(cfgkey_global[0]) },
	[CS_IDENTITY] = { cfgkey_identity, sizeof(cfgkey_identity) / sizeof(cfgkey_identity[0]) },
	[CS_LISTENER] = { cfgkey_listener, sizeof(cfgkey_listener) / sizeof(cfgkey_listener[0]) },
	[CS_CONNECTOR] = { cfgkey_connector,
	    sizeof(cfgkey_connector) / sizeof(cfgkey_connector[0]) },
};

static const struct config_key *
cfgkey_lookup(enum config_section_type t, const char *name)
{
	for (size_t i = 0; i < cfgkey_tables[t].n; i++)
		if (strcmp(cfgkey_tables[t].keys[i].name, name) == 0)
			return &cfgkey_tables[t].keys[i];
	return NULL;
}

static unsigned
cfgkey_workers_auto(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > WORKERS_MAX ? WORKERS_MAX : (unsigned)n;
}

void
cfgkey_defaults(struct config *cfg)
{
	cfg->workers = cfgkey_workers_auto();
	snprintf(cfg->user, sizeof(cfg->user), "%s", CONFIG_USER_DEFAULT);
	snprintf(cfg->keyd_user, sizeof(cfg->keyd_user), "%s", CONFIG_KEYD_USER_DEFAULT);
	snprintf(cfg->admin_group, sizeof(cfg->admin_group), "%s", CONFIG_ADMIN_GROUP_DEFAULT);
	snprintf(cfg->control_socket, sizeof(cfg->control_socket), "%s",
	    CONFIG_CONTROL_SOCKET_DEFAULT);
	snprintf(cfg->link_socket, sizeof(cfg->link_socket), "%s", CONFIG_LINK_SOCKET_DEFAULT);
	snprintf(cfg->audit_log, sizeof(cfg->audit_log), "%s", CONFIG_AUDIT_LOG_DEFAULT);
	cfg->audit_fail_closed = 1;
	cfg->checkpoint_records = CONFIG_CHECKPOINT_RECORDS_DEFAULT;
	cfg->checkpoint_seconds = CONFIG_CHECKPOINT_S_DEFAULT;
	snprintf(cfg->tpm_tcti, sizeof(cfg->tpm_tcti), "%s", CONFIG_TPM_TCTI_DEFAULT);
	snprintf(cfg->fips_config, sizeof(cfg->fips_config), "%s", CONFIG_FIPS_CONFIG_DEFAULT);
	cfg->log_level = LOG_LVL_INFO;
	cfg->max_connections = CONN_MAX_DEFAULT;
	cfg->handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS_DEFAULT;
	cfg->idle_timeout_ms = IDLE_TIMEOUT_MS_DEFAULT;
	cfg->keyd_timeout_ms = KEYD_TIMEOUT_MS_DEFAULT;
	cfg->secure_heap = KEYD_SECURE_HEAP_DEFAULT;
	cfg->sign_rate = KEYD_SIGN_RATE_DEFAULT;
	cfg->sign_burst = KEYD_SIGN_BURST_DEFAULT;
	cfg->ticket_key_lifetime = CONFIG_TICKET_LIFETIME_S_DEFAULT;
	cfg->expiry_warning_days = CONFIG_EXPIRY_WARNING_DAYS_DEFAULT;
	cfg->tls.proto_min = TLS1_2_VERSION;
	cfg->tls.proto_max = TLS1_3_VERSION;
	/* fips = yes swaps these for the FIPS sets once the whole file is read. */
	snprintf(cfg->tls.ciphers, sizeof(cfg->tls.ciphers), "%s", CONFIG_TLS_CIPHERS_DEFAULT);
	snprintf(cfg->tls.ciphersuites, sizeof(cfg->tls.ciphersuites), "%s",
	    CONFIG_TLS_SUITES_DEFAULT);
	snprintf(cfg->tls.groups, sizeof(cfg->tls.groups), "%s", CONFIG_TLS_GROUPS_DEFAULT);
}

struct config_section_state *
cfgkey_state(struct config_parser *p)
{
	switch (p->sec) {
	case CS_GLOBAL:
		return &p->global;
	case CS_IDENTITY:
		return &p->identities[p->sec_index];
	case CS_LISTENER:
		return &p->listeners[p->sec_index];
	case CS_CONNECTOR:
		return &p->connectors[p->sec_index];
	case CS_NONE:
		break;
	}
	return NULL;
}

void *
cfgkey_object(struct config_parser *p)
{
	switch (p->sec) {
	case CS_GLOBAL:
		return p->cfg;
	case CS_IDENTITY:
		return &p->cfg->identities[p->sec_index];
	case CS_LISTENER:
		return &p->cfg->listeners[p->sec_index];
	case CS_CONNECTOR:
		return &p->cfg->connectors[p->sec_index];
	case CS_NONE:
		break;
	}
	return NULL;
}

/* ---- typed values, stored through the table ---- */

static int
cfgkey_set_number(const struct config_key *k, void *field, const char *v,
    struct cfgval_err *e)
{
	uint64_t n;

	switch (k->type) {
	case KT_UINT:
		if (cfgval_uint(k->name, v, k->min, k->max, &n, e) == -1)
			return -1;
		*(unsigned *)field = (unsigned)n;
		return 0;
	case KT_MS:
		if (cfgval_duration(k->name, v, k->min, k->max, k->flags & KEY_ZERO_OK, &n, e) == -1)
			return -1;
		*(unsigned *)field = (unsigned)n;
		return 0;
	case KT_SECONDS:
		if (cfgval_duration(k->name, v, k->min, k->max, 0, &n, e) == -1)
			return -1;
		if (n % 1000 != 0)
			return cfgval_fail(e, "%s: '%s' is not a whole number of seconds", k->name, v);
		*(unsigned *)field = (unsigned)(n / 1000);
		return 0;
	case KT_SIZE_POW2:
		if (cfgval_size(k->name, v, k->min, k->max, &n, e) == -1)
			return -1;
		/* OpenSSL's secure heap (CRYPTO_secure_malloc_init) needs a power of two. */
		if ((n & (n - 1)) != 0)
			return cfgval_fail(e, "%s: '%s' is not a power of two (e.g. 256K, 1M, 4M)",
			    k->name, v);
		*(size_t *)field = (size_t)n;
		return 0;
	default:
		return cfgval_fail(e, "%s: internal error: not a number key", k->name);
	}
}

/* Copies a checked string value into a fixed field. */
static int
cfgkey_copy(const struct config_key *k, void *field, size_t size, const char *v,
    struct cfgval_err *e)
{
	if (strlen(v) >= size)
		return cfgval_fail(e, "%s: longer than %zu characters", k->name, size - 1);
	memcpy(field, v, strlen(v) + 1);
	return 0;
}

static int
cfgkey_set_typed(const struct config_key *k, void *obj, const char *v, struct cfgval_err *e)
{
	void *field = (char *)obj + k->off;

	switch (k->type) {
	case KT_BOOL:
		return cfgval_bool(k->name, v, (int *)field, e);
	case KT_USER:
		return cfgval_user(k->name, v, field, k->size, e);
	case KT_PATH:
		return cfgval_path(k->name, v, field, k->size, e);
	case KT_UNIX_PATH:
		return cfgval_unix_path(k->name, v, field, k->size, e);
	case KT_TOKEN:
		return cfgval_token(k->name, v, field, k->size, e);
	case KT_TLS_VERSION:
		return cfgval_tls_version(k->name, v, (int *)field, e);
	case KT_TLS_MODE:
		return cfgval_tls_mode(k->name, v, (enum tls_mode *)field, e);
	case KT_CIPHERS:
		return cfgval_cipher_list(k->name, v, e) || cfgkey_copy(k, field, k->size, v, e) ?
		    -1 : 0;
	case KT_SUITES:
		return cfgval_ciphersuites(k->name, v, e) || cfgkey_copy(k, field, k->size, v, e) ?
		    -1 : 0;
	case KT_GROUPS:
		return cfgval_groups(k->name, v, e) || cfgkey_copy(k, field, k->size, v, e) ?
		    -1 : 0;
	case KT_ADDR:
		return cfgaddr_parse(k->name, v, (unsigned)k->min, (struct config_addr *)field, e);
	default:
		return cfgkey_set_number(k, field, v, e);
	}
}

/* ---- values with a setter of their own ---- */

static int
cfgkey_set_workers(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	struct config *cfg = obj;
	uint64_t n;

	if (strcmp(v, "auto") == 0) {
		cfg->workers = cfgkey_workers_auto();
		return 0;
	}
	if (cfgval_uint(k->name, v, 1, WORKERS_MAX, &n, e) == -1)
		return cfgval_fail(e, "workers: '%s' is not auto or a number from 1 to %d", v,
		    WORKERS_MAX);
	cfg->workers = (unsigned)n;
	return 0;
}

static int
cfgkey_set_audit_log(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	struct config *cfg = obj;

	if (strcmp(v, "none") == 0) {
		cfg->audit_log[0] = '\0';
		return 0;
	}
	return cfgval_path(k->name, v, cfg->audit_log, sizeof(cfg->audit_log), e);
}

static int
cfgkey_set_log_level(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	struct config *cfg = obj;

	if (log_level_parse(v, &cfg->log_level) == -1)
		return cfgval_fail(e, "log-level: '%s' is not one of error, warning, info, debug",
		    v);
	return 0;
}

static int
cfgkey_set_key(struct config_parser *p, const struct config_key *k, void *obj,
    const char *value, struct cfgval_err *e)
{
	struct config_identity *id = obj;
	char path[CONFIG_PATH_MAX];
	const char *file = value;

	/* A TPM key blob is a file like any other; the private key never leaves the TPM. */
	if (strncmp(file, CONFIG_KEY_TPM_PREFIX, strlen(CONFIG_KEY_TPM_PREFIX)) == 0)
		file += strlen(CONFIG_KEY_TPM_PREFIX);
	if (cfgval_path("key", file, path, sizeof(path), e) == -1)
		return -1;
	return cfgkey_copy(k, id->key, sizeof(id->key), value, e);
}

static int
cfgkey_set_identity(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	if (!cfgval_is_name(v))
		return cfgval_fail(e, "identity: '%s' is not an identity name (1 to %d letters, "
		    "digits, '.', '_' or '-')", v, CONFIG_NAME_MAX);
	/* Resolved when the whole file is read: an identity may be defined further down. */
	snprintf(cfgkey_state(p)->identity, sizeof(cfgkey_state(p)->identity), "%s", v);
	return 0;
}

static int
cfgkey_set_allow(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	struct config_listener *l = obj;

	return cfgaddr_allow_list(k->name, v, &l->allow, &l->n_allow, e);
}

static int
cfgkey_set_expect(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	struct config_connector *c = obj;

	return cfgaddr_allow_list(k->name, v, &c->expect, &c->n_expect, e);
}

int
cfgkey_alpn_listed(const struct config_parser *p, const char *proto)
{
	for (size_t i = 0; i < p->n_alpn; i++)
		if (strcmp(p->alpn[i], proto) == 0)
			return 1;
	return 0;
}

/* Copies the first blank-separated word of v into word; *rest points after the blanks. */
static int
cfgkey_first_word(const char *v, char *word, size_t wordlen, const char **rest)
{
	size_t len = strcspn(v, " \t");

	if (len >= wordlen)
		len = wordlen - 1;
	memcpy(word, v, len);
	word[len] = '\0';
	*rest = v + strcspn(v, " \t");
	*rest += strspn(*rest, " \t");
	return **rest == '\0' ? -1 : 0;
}

static int
cfgkey_set_alpn_list(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	char word[CONFIG_LINE_MAX + 1];
	const char *rest = v;

	while (*rest != '\0') {
		cfgkey_first_word(rest, word, sizeof(word), &rest);
		if (p->n_alpn == CONFIG_ALPN_MAX)
			return cfgval_fail(e, "alpn: more than %d protocols", CONFIG_ALPN_MAX);
		if (cfgval_alpn(k->name, word, p->alpn[p->n_alpn], sizeof(p->alpn[0]), e) == -1)
			return -1;
		if (cfgkey_alpn_listed(p, word))
			return cfgval_fail(e, "alpn: '%s' is listed twice", word);
		p->n_alpn++;
	}
	return 0;
}

static int
cfgkey_set_alpn_one(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	struct config_connector *c = obj;

	if (v[strcspn(v, " \t")] != '\0')
		return cfgval_fail(e, "alpn: a connector offers one protocol, not '%s'", v);
	return cfgval_alpn(k->name, v, c->alpn, sizeof(c->alpn), e);
}

/* The pending route for proto, created on first use (by route or route-allow). */
static struct config_pending_route *
cfgkey_pending_route(struct config_parser *p, const char *key, const char *proto,
    struct cfgval_err *e)
{
	struct config_pending_route *r;

	for (size_t i = 0; i < p->n_routes; i++)
		if (strcmp(p->routes[i].alpn, proto) == 0)
			return &p->routes[i];
	if (p->n_routes == CONFIG_ALPN_MAX) {
		cfgval_fail(e, "%s: more than %d ALPN protocols with routes", key,
		    CONFIG_ALPN_MAX);
		return NULL;
	}
	r = &p->routes[p->n_routes++];
	memset(r, 0, sizeof(*r));
	snprintf(r->alpn, sizeof(r->alpn), "%s", proto);
	return r;
}

static int
cfgkey_set_route(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	char proto[sizeof(p->routes[0].alpn)], word[CONFIG_LINE_MAX + 1];
	struct config_pending_route *r;
	const char *backend;

	if (cfgkey_first_word(v, word, sizeof(word), &backend) == -1 ||
	    backend[strcspn(backend, " \t")] != '\0')
		return cfgval_fail(e, "route: expected 'PROTOCOL BACKEND' (e.g. route = "
		    "redis-bus 127.0.0.1:16379), not '%s'", v);
	if (cfgval_alpn("route", word, proto, sizeof(proto), e) == -1 ||
	    (r = cfgkey_pending_route(p, "route", proto, e)) == NULL)
		return -1;
	if (r->route_line != 0)
		return cfgval_fail(e, "route: ALPN '%s' already has a route (line %d)", proto,
		    r->route_line);
	if (cfgaddr_parse("route backend", backend, CFGADDR_LOOPBACK | CFGADDR_UNIX,
	    &r->backend, e) == -1)
		return -1;
	r->route_line = p->lineno;
	return 0;
}

static int
cfgkey_set_route_allow(struct config_parser *p, const struct config_key *k, void *obj,
    const char *v, struct cfgval_err *e)
{
	char proto[sizeof(p->routes[0].alpn)], word[CONFIG_LINE_MAX + 1];
	struct config_pending_route *r;
	const char *entries;

	if (cfgkey_first_word(v, word, sizeof(word), &entries) == -1)
		return cfgval_fail(e, "route-allow: expected 'PROTOCOL ENTRY...' (e.g. "
		    "route-allow = redis-bus dns:node2.example.com), not '%s'", v);
	if (cfgval_alpn("route-allow", word, proto, sizeof(proto), e) == -1 ||
	    (r = cfgkey_pending_route(p, "route-allow", proto, e)) == NULL ||
	    cfgaddr_allow_list("route-allow", entries, &r->allow, &r->n_allow, e) == -1)
		return -1;
	if (r->allow_line == 0)
		r->allow_line = p->lineno;
	return 0;
}

/* ---- keys ---- */

/*
 * A key that looks like it holds a secret.  The config file is read by every process and
 * its hash is audited; a passphrase in it would reach the workers, which must never hold
 * key material.
 */
static int
cfgkey_is_secret(const char *key)
{
	return (strcasestr(key, "passphrase") != NULL || strcasestr(key, "password") != NULL ||
	    strcasestr(key, "secret") != NULL) && strcmp(key, "key-passphrase-file") != 0;
}

int
cfgkey_set(struct config_parser *p, const char *key, const char *value)
{
	const struct config_key *k;
	struct config_section_state *st;
	struct cfgval_err e;
	int line = p->lineno, r;

	if (*key == '\0')
		return config_fail(p, line, "expected 'key = value' (nothing before '=')");
	if (p->sec == CS_NONE)
		return config_fail(p, line, "key '%s' is outside any section (global settings go "
		    "under [global])", key);
	/* Never echo the value: it may be the secret. */
	if (cfgkey_is_secret(key))
		return config_fail(p, line, "%s: a passphrase must never be written in the "
		    "configuration; use key-passphrase-file = /path (readable only by the keyd "
		    "user) or the REDOUBT_KEY_PASSPHRASE environment variable", key);
	if ((k = cfgkey_lookup(p->sec, key)) == NULL)
		return config_fail(p, line, "unknown key '%s' in %s", key, p->sec_label);
	st = cfgkey_state(p);
	if (st->key_line[k->id] != 0 && !(k->flags & KEY_REPEATABLE))
		return config_fail(p, line, "duplicate key '%s' in %s (first set at line %d)",
		    key, p->sec_label, st->key_line[k->id]);
	if (*value == '\0')
		return config_fail(p, line, "%s: needs a value", key);
	if (st->key_line[k->id] == 0)
		st->key_line[k->id] = line;
	if (k->type == KT_FN)
		r = k->fn(p, k, cfgkey_object(p), value, &e);
	else
		r = cfgkey_set_typed(k, cfgkey_object(p), value, &e);
	return r == 0 ? 0 : config_fail(p, line, "%s", e.msg);
}

/* The first required key of the current section that is not set, reported at its header. */
int
cfgkey_check_required(struct config_parser *p)
{
	const struct config_section_state *st = cfgkey_state(p);

	if (st == NULL)
		return 0;
	for (size_t i = 0; i < cfgkey_tables[p->sec].n; i++) {
		const struct config_key *k = &cfgkey_tables[p->sec].keys[i];
		if ((k->flags & KEY_REQUIRED) && st->key_line[k->id] == 0)
			return config_fail(p, st->line, "%s needs '%s'", p->sec_label, k->name);
	}
	return 0;
}
