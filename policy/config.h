/*
 * The parsed configuration: one INI file (libinih).  Every process parses the same bytes (the
 * supervisor hands its children a sealed memfd copy), so they all agree on section order,
 * which is how identities and listeners are numbered on the wire.
 *
 * config_parse() checks syntax and meaning (unknown keys, bad values, dangling references,
 * FIPS contradictions) and reports the first error as "file:line: message".  It opens no
 * file other than the config itself; config_check_files() checks the files it names.
 */
#ifndef REDOUBT_CONFIG_H
#define REDOUBT_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/limits.h"
#include "common/log.h"

#define CONFIG_ERR_MAX 512

enum tls_mode {
	TLS_MODE_REQUIRE = 0,     /* TLS only, peer certificate not asked / not checked */
	TLS_MODE_VERIFY_CA,       /* peer chain must verify against the CA */
	TLS_MODE_VERIFY_FULL      /* chain + identity (host name / allow list) */
};

enum addr_kind { ADDR_NONE = 0, ADDR_TCP, ADDR_UNIX };

struct config_addr {
	enum addr_kind kind;
	char     host[256];       /* as written, without brackets: "127.0.0.1", "::1", "db.example" */
	uint16_t port;
	char     path[108];       /* ADDR_UNIX: sun_path */
	struct sockaddr_storage ss; /* resolved numeric address (ADDR_TCP with a literal IP) */
	socklen_t sslen;          /* 0 when host is a name, resolved at connect time */
};

enum allow_kind { ALLOW_DNS = 0, ALLOW_IP, ALLOW_URI, ALLOW_CN };

struct allow_entry {
	enum allow_kind kind;
	char value[256];          /* dns: may start with "*." (one leftmost label); ip: literal */
};

struct tls_params {
	int  proto_min;           /* TLS1_2_VERSION / TLS1_3_VERSION */
	int  proto_max;
	char ciphers[512];        /* TLS 1.2 cipher list */
	char ciphersuites[256];   /* TLS 1.3 suites */
	char groups[256];         /* key exchange groups */
};

struct config_identity {
	char name[CONFIG_NAME_MAX + 1];
	int  line;
	char cert[CONFIG_PATH_MAX];
	char key[CONFIG_PATH_MAX];            /* "tpm:/path" for a TPM blob */
	char key_passphrase_file[CONFIG_PATH_MAX]; /* optional; else REDOUBT_KEY_PASSPHRASE */
	char ca[CONFIG_PATH_MAX];             /* optional */
	char crl[CONFIG_PATH_MAX];            /* optional */
};

struct config_route {                     /* one ALPN protocol -> backend */
	char alpn[32];
	struct config_addr backend;
	struct allow_entry *allow;            /* NULL/0: the listener's allow list applies */
	size_t n_allow;
};

struct config_listener {
	char name[CONFIG_NAME_MAX + 1];
	int  line;
	struct config_addr listen;
	struct config_addr backend;           /* the default route */
	int  identity;                        /* index into config.identities */
	enum tls_mode mode;
	struct allow_entry *allow;
	size_t n_allow;
	char ca[CONFIG_PATH_MAX];             /* optional override of the identity's ca */
	char crl[CONFIG_PATH_MAX];            /* optional override of the identity's crl */
	struct tls_params tls;                /* global values unless overridden here */
	struct config_route *routes;          /* ALPN routes, in config order */
	size_t n_routes;
};

struct config_connector {
	char name[CONFIG_NAME_MAX + 1];
	int  line;
	struct config_addr listen;            /* local plaintext side: loopback or unix */
	struct config_addr connect;           /* TLS peer; ADDR_NONE when transparent */
	int  transparent;                     /* dial SO_ORIGINAL_DST (cluster bus) */
	int  identity;
	enum tls_mode mode;
	struct allow_entry *expect;           /* optional extra identity the peer must show */
	size_t n_expect;
	char alpn[32];                        /* offered ALPN, "" for none */
	char ca[CONFIG_PATH_MAX];
	char crl[CONFIG_PATH_MAX];
	struct tls_params tls;
};

struct config {
	char path[CONFIG_PATH_MAX];
	unsigned char sha256[32];             /* of the exact bytes parsed (audited) */

	/* [global] */
	unsigned workers;                     /* resolved: "auto" = online CPUs, capped */
	char user[64];                        /* workers run as this user */
	char keyd_user[64];
	char admin_group[64];                 /* may use the control socket besides root */
	char control_socket[108];
	char link_socket[108];                /* serve --role keyd|workers: see supervisor_link.c */
	char audit_log[CONFIG_PATH_MAX];      /* "" = no audit log */
	int  audit_fail_closed;
	int  audit_syslog;                    /* copy every record to syslog (RFC 5424) */
	unsigned checkpoint_records;          /* signed checkpoint every N records */
	unsigned checkpoint_seconds;          /* ... or every N seconds */
	char tpm_tcti[256];                   /* TCTI for tpm: keys */
	enum log_level log_level;
	int  fips;
	char fips_config[CONFIG_PATH_MAX];    /* OpenSSL config naming the FIPS module (fips = yes) */
	int  auto_reload;
	unsigned max_connections;             /* per worker */
	unsigned handshake_timeout_ms;
	unsigned idle_timeout_ms;             /* 0 = none */
	unsigned keyd_timeout_ms;
	size_t   secure_heap;                 /* bytes, power of two */
	unsigned sign_rate;                   /* signatures/s per worker */
	unsigned sign_burst;
	unsigned ticket_key_lifetime;         /* seconds */
	unsigned expiry_warning_days;
	struct tls_params tls;                /* defaults for listeners and connectors */

	struct config_identity  *identities;
	size_t n_identities;
	struct config_listener  *listeners;
	size_t n_listeners;
	struct config_connector *connectors;
	size_t n_connectors;
};

/*
 * Parses len bytes of INI text; name is used in error messages ("name:line: ...").
 * Returns 0 and *out, or -1 with err filled.
 */
int  config_parse(const char *name, const char *buf, size_t len, struct config **out,
    char *err, size_t errlen);
/* Reads path (at most CONFIG_SIZE_MAX bytes) and parses it. */
int  config_load(const char *path, struct config **out, char *err, size_t errlen);
/* Reads a file whole into a malloc'd buffer (NUL-terminated); *len excludes the NUL. */
int  config_read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen);
/* Checks that every file the config names exists and is readable by the caller. */
int  config_check_files(const struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);

const char *tls_mode_name(enum tls_mode m);
/* "1.2.3.4:6379", "[::1]:6379", "unix:/path" */
void config_addr_format(const struct config_addr *a, char *out, size_t outlen);

#endif
