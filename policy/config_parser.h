/*
 * The configuration parser's state while one file is read (private to policy/config*.c).
 *
 *   config.c          the public API, the line reader that feeds libinih, [headers]
 *   config_keys.c     the key tables per section type, the setters
 *   config_sections.c section start and end, a listener's routes
 *   config_check.c    checks across sections once the file is read; config_check_files()
 *   config_values.c   value parsers (with config_addr.c; declared in config_values.h)
 */
#ifndef REDOUBT_CONFIG_PARSER_H
#define REDOUBT_CONFIG_PARSER_H

#include <stddef.h>

#include "policy/config.h"
#include "policy/config_values.h"

/*
 * Longest line, without its line terminator.  Debian's libinih is built with a fixed
 * 200-byte line buffer (INI_MAX_LINE) that must also hold the NUL; a longer line would be
 * split silently by inih, so the reader refuses it instead.
 */
#define CONFIG_LINE_MAX            199
#define CONFIG_ALPN_MAX            8      /* protocols in one alpn list (redis, redis-bus, ...) */
#define CONFIG_KEY_TPM_PREFIX      "tpm:" /* key = tpm:/path: a TPM 2.0 key blob */

/* Ranges and defaults of [global] keys not already in common/limits.h (units in the name). */
#define CONFIG_USER_DEFAULT        "redoubt"
#define CONFIG_KEYD_USER_DEFAULT   "redoubt-keyd"
#define CONFIG_ADMIN_GROUP_DEFAULT "redoubt-admin"
#define CONFIG_CONTROL_SOCKET_DEFAULT "/run/redoubt/control.sock"
/* Where the workers' supervisor waits for keyd's when they run as two services. */
#define CONFIG_LINK_SOCKET_DEFAULT "/run/redoubt/workers/link.sock"
#define CONFIG_AUDIT_LOG_DEFAULT   "/var/log/redoubt/audit.jsonl"
#define CONFIG_TPM_TCTI_DEFAULT    "device:/dev/tpmrm0"
#define CONFIG_FIPS_CONFIG_DEFAULT "/etc/redoubt/openssl-fips.cnf" /* docs/fips.md */
#define CONFIG_CHECKPOINT_RECORDS_DEFAULT 1000
#define CONFIG_CHECKPOINT_RECORDS_MAX     1000000
#define CONFIG_CHECKPOINT_S_DEFAULT       60
#define CONFIG_CHECKPOINT_MS_MIN          1000ull
#define CONFIG_CHECKPOINT_MS_MAX          86400000ull     /* 1 d: at least one a day */
#define CONFIG_MAX_CONNECTIONS_MAX        1000000
#define CONFIG_HANDSHAKE_MS_MIN           100ull
#define CONFIG_HANDSHAKE_MS_MAX           600000ull       /* 10 min */
/* Idle timeout: 0 = none, else 1 s .. 7 d (well inside epoll_wait's int milliseconds). */
#define CONFIG_IDLE_MS_MIN                1000ull
#define CONFIG_IDLE_MS_MAX                604800000ull
#define CONFIG_KEYD_TIMEOUT_MS_MIN        10ull
#define CONFIG_KEYD_TIMEOUT_MS_MAX        60000ull
#define CONFIG_SECURE_HEAP_MIN            (64ull << 10)
#define CONFIG_SECURE_HEAP_MAX            (1ull << 30)
#define CONFIG_SIGN_RATE_MAX              10000000
#define CONFIG_TICKET_LIFETIME_S_DEFAULT  3600
#define CONFIG_TICKET_LIFETIME_MS_MIN     60000ull        /* 1 min */
#define CONFIG_TICKET_LIFETIME_MS_MAX     604800000ull    /* 7 d (RFC 8446 ticket limit) */
#define CONFIG_EXPIRY_WARNING_DAYS_DEFAULT 30
#define CONFIG_EXPIRY_WARNING_DAYS_MAX    3650

/* TLS defaults: TLS 1.2+, AEAD suites with forward secrecy only. */
#define CONFIG_TLS_CIPHERS_DEFAULT \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define CONFIG_TLS_SUITES_DEFAULT \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define CONFIG_TLS_GROUPS_DEFAULT  "X25519:P-256:P-384"
/* fips = yes: the same without ChaCha20-Poly1305 and X25519 (not FIPS 140-approved). */
#define CONFIG_TLS_CIPHERS_FIPS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define CONFIG_TLS_SUITES_FIPS     "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
#define CONFIG_TLS_GROUPS_FIPS     "P-256:P-384"

/* Every key of every section; the line each was set on is kept per section. */
enum config_key_id {
	CK_WORKERS, CK_USER, CK_KEYD_USER, CK_ADMIN_GROUP, CK_CONTROL_SOCKET, CK_LINK_SOCKET,
	CK_AUDIT_LOG,
	CK_AUDIT_FAIL_CLOSED, CK_AUDIT_SYSLOG, CK_CHECKPOINT_RECORDS, CK_CHECKPOINT_SECONDS,
	CK_LOG_LEVEL, CK_FIPS, CK_AUTO_RELOAD, CK_MAX_CONNECTIONS, CK_HANDSHAKE_TIMEOUT,
	CK_IDLE_TIMEOUT, CK_KEYD_TIMEOUT, CK_SECURE_HEAP, CK_SIGN_RATE, CK_SIGN_BURST,
	CK_TICKET_KEY_LIFETIME, CK_EXPIRY_WARNING_DAYS, CK_TPM_TCTI,
	CK_FIPS_CONFIG,
	CK_TLS_PROTOCOL_MIN, CK_TLS_PROTOCOL_MAX, CK_TLS_CIPHERS, CK_TLS_CIPHERSUITES,
	CK_TLS_GROUPS,
	CK_CERT, CK_KEY, CK_KEY_PASSPHRASE_FILE, CK_CA, CK_CRL,
	CK_LISTEN, CK_BACKEND, CK_IDENTITY, CK_TLS_MODE, CK_ALLOW, CK_ALPN, CK_ROUTE,
	CK_ROUTE_ALLOW, CK_CONNECT, CK_TRANSPARENT, CK_EXPECT,
	CK__COUNT
};

enum config_section_type { CS_NONE = 0, CS_GLOBAL, CS_IDENTITY, CS_LISTENER, CS_CONNECTOR };

/* What the parser remembers about one section after it ends, for the checks across sections. */
struct config_section_state {
	int  line;                             /* of the [header] */
	int  key_line[CK__COUNT];              /* 0 = key not set in this section */
	char identity[CONFIG_NAME_MAX + 1];    /* referenced by name, resolved at the end */
};

/* A route or route-allow of the listener being parsed, keyed by ALPN protocol. */
struct config_pending_route {
	char alpn[32];
	struct config_addr backend;            /* ADDR_NONE: no route line, default backend */
	int  route_line;
	struct allow_entry *allow;
	size_t n_allow;
	int  allow_line;
};

struct config_parser {
	const char *name;                      /* for messages: "name:line: ..." */
	const char *buf;
	size_t len;
	size_t pos;                            /* next byte the reader hands to inih */
	int    lineno;                         /* line inih is working on */
	int    failed;                         /* first error wins: set once, never cleared */
	char  *err;
	size_t errlen;
	struct config *cfg;

	enum config_section_type sec;          /* section being parsed */
	size_t sec_index;                      /* its index in cfg->identities/listeners/... */
	char   sec_label[CONFIG_NAME_MAX + 16];  /* "[listener clients]", for messages */
	struct config_section_state global;
	struct config_section_state identities[CONFIG_IDENTITIES_MAX];
	struct config_section_state listeners[CONFIG_LISTENERS_MAX];
	struct config_section_state connectors[CONFIG_CONNECTORS_MAX];

	/* Listener being parsed: its alpn list and routes become cfg routes at its end. */
	char   alpn[CONFIG_ALPN_MAX][32];
	size_t n_alpn;
	struct config_pending_route routes[CONFIG_ALPN_MAX];
	size_t n_routes;
};

/* config.c */
int  config_fail(struct config_parser *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *config_section_kind(enum config_section_type t);

/* config_keys.c */
void cfgkey_defaults(struct config *cfg);
int  cfgkey_set(struct config_parser *p, const char *key, const char *value);
struct config_section_state *cfgkey_state(struct config_parser *p);
void *cfgkey_object(struct config_parser *p);
int  cfgkey_check_required(struct config_parser *p);
int  cfgkey_alpn_listed(const struct config_parser *p, const char *proto);

/* config_sections.c */
int  cfgsec_begin(struct config_parser *p, enum config_section_type t, const char *name);
int  cfgsec_end(struct config_parser *p);
void cfgsec_release_pending(struct config_parser *p);

/* config_check.c */
int  cfgchk_semantics(struct config_parser *p);

#endif
