/*
 * Unit tests for policy/config*.c: every key, the defaults, every class of error with its
 * exact "file:line: message", line handling (long lines, CRLF, no final newline, BOM,
 * garbage), the checks across sections, file reading and config_check_files().
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/tls1.h>

#include "policy/config.h"

#define NAME "t.conf"

/* A valid identity with a CA and a listener that uses it: the base most tests extend. */
#define IDENTITY \
	"[identity node]\n" \
	"cert = /etc/redoubt/node.crt\n" \
	"key = /etc/redoubt/node.key\n" \
	"ca = /etc/redoubt/ca.crt\n"
#define LISTENER \
	"[listener clients]\n" \
	"listen = 0.0.0.0:6380\n" \
	"backend = unix:/run/redis/redis.sock\n" \
	"identity = node\n" \
	"allow = dns:app.example.com\n"

static char errbuf[CONFIG_ERR_MAX];

static struct config *
parse_ok(const char *text)
{
	struct config *cfg = NULL;

	errbuf[0] = '\0';
	if (config_parse(NAME, text, strlen(text), &cfg, errbuf, sizeof(errbuf)) != 0)
		fail_msg("unexpected error: %s", errbuf);
	assert_non_null(cfg);
	return cfg;
}

static void
parse_err(const char *text, const char *expected)
{
	struct config *cfg = (struct config *)1;

	errbuf[0] = '\0';
	assert_int_equal(config_parse(NAME, text, strlen(text), &cfg, errbuf, sizeof(errbuf)),
	    -1);
	assert_null(cfg);
	assert_string_equal(errbuf, expected);
}

static void
parse_err_prefix(const char *text, const char *prefix)
{
	struct config *cfg = (struct config *)1;

	errbuf[0] = '\0';
	assert_int_equal(config_parse(NAME, text, strlen(text), &cfg, errbuf, sizeof(errbuf)),
	    -1);
	assert_null(cfg);
	if (strncmp(errbuf, prefix, strlen(prefix)) != 0)
		fail_msg("error '%s' does not start with '%s'", errbuf, prefix);
}

static void
assert_addr(const struct config_addr *a, const char *formatted)
{
	char buf[300];

	config_addr_format(a, buf, sizeof(buf));
	assert_string_equal(buf, formatted);
}

/* ---- a complete configuration, every key once ---- */

static const char full_config[] =
	"; every key once\n"
	"[global]\n"
	"workers = 3\n"
	"user = rd-worker\n"
	"keyd-user = rd-keyd\n"
	"admin-group = rd-admin\n"
	"control-socket = /run/rd/control.sock\n"
	"audit-log = /var/log/rd/audit.jsonl\n"
	"audit-fail-closed = no\n"
	"audit-syslog = yes\n"
	"checkpoint-records = 500\n"
	"checkpoint-seconds = 2m\n"
	"log-level = debug\n"
	"fips = no\n"
	"auto-reload = on\n"
	"max-connections = 2000\n"
	"handshake-timeout = 1500ms\n"
	"idle-timeout = 1h\n"
	"keyd-timeout = 250ms\n"
	"secure-heap = 4M\n"
	"sign-rate = 500\n"
	"sign-burst = 50\n"
	"ticket-key-lifetime = 2h\n"
	"expiry-warning-days = 14\n"
	"tpm-tcti = swtpm:host=localhost,port=2321\n"
	"tls-protocol-min = 1.3\n"
	"tls-protocol-max = TLSv1.3\n"
	"tls-ciphers = ECDHE-ECDSA-AES256-GCM-SHA384\n"
	"tls-ciphersuites = TLS_AES_256_GCM_SHA384\n"
	"tls-groups = P-384\n"
	"\n"
	"[identity node]\n"
	"cert = /etc/rd/node.crt\n"
	"key = tpm:/etc/rd/node.tpmkey\n"
	"key-passphrase-file = /etc/rd/node.pass\n"
	"ca = /etc/rd/ca.crt\n"
	"crl = /etc/rd/ca.crl\n"
	"\n"
	"[listener clients]\n"
	"listen = [::]:6380\n"
	"backend = 127.0.0.1:6379\n"
	"identity = node\n"
	"tls-mode = verify-full\n"
	"allow = dns:*.app.example.com ip:2001:DB8::0001\n"
	"allow = uri:spiffe://example.com/app cn:legacy-client\n"
	"ca = /etc/rd/clients-ca.crt\n"
	"crl = /etc/rd/clients.crl\n"
	"tls-protocol-min = TLSv1.2\n"
	"tls-protocol-max = TLSv1.2\n"
	"tls-ciphers = ECDHE-RSA-AES128-GCM-SHA256\n"
	"tls-ciphersuites = TLS_AES_128_GCM_SHA256\n"
	"tls-groups = P-256\n"
	"alpn = redis redis-bus redis-repl\n"
	"route = redis-bus 127.0.0.1:16379\n"
	"route = redis-repl unix:/run/redis/repl.sock\n"
	"route-allow = redis-bus dns:node2.example.com\n"
	"\n"
	"[connector replication]\n"
	"listen = 127.0.0.1:16380\n"
	"connect = primary.example.com:6380\n"
	"transparent = no\n"
	"identity = node\n"
	"tls-mode = verify-ca\n"
	"alpn = redis-repl\n"
	"ca = /etc/rd/peers-ca.crt\n"
	"crl = /etc/rd/peers.crl\n"
	"tls-protocol-min = TLSv1.3\n"
	"tls-protocol-max = TLSv1.3\n"
	"tls-ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n"
	"tls-ciphersuites = TLS_AES_128_GCM_SHA256\n"
	"tls-groups = X25519\n"
	"\n"
	"[connector bus]\n"
	"listen = unix:/run/redoubt/bus.sock\n"
	"transparent = yes\n"
	"identity = node\n"
	"expect = dns:bus.example.com\n";

static void
test_full_config_global(void **state)
{
	struct config *cfg = parse_ok(full_config);

	assert_string_equal(cfg->path, NAME);
	assert_int_equal(cfg->workers, 3);
	assert_string_equal(cfg->user, "rd-worker");
	assert_string_equal(cfg->keyd_user, "rd-keyd");
	assert_string_equal(cfg->admin_group, "rd-admin");
	assert_string_equal(cfg->control_socket, "/run/rd/control.sock");
	assert_string_equal(cfg->audit_log, "/var/log/rd/audit.jsonl");
	assert_int_equal(cfg->audit_fail_closed, 0);
	assert_int_equal(cfg->audit_syslog, 1);
	assert_int_equal(cfg->checkpoint_records, 500);
	assert_int_equal(cfg->checkpoint_seconds, 120);
	assert_int_equal(cfg->log_level, LOG_LVL_DEBUG);
	assert_int_equal(cfg->fips, 0);
	assert_int_equal(cfg->auto_reload, 1);
	assert_int_equal(cfg->max_connections, 2000);
	assert_int_equal(cfg->handshake_timeout_ms, 1500);
	assert_int_equal(cfg->idle_timeout_ms, 3600000);
	assert_int_equal(cfg->keyd_timeout_ms, 250);
	assert_int_equal(cfg->secure_heap, 4u << 20);
	assert_int_equal(cfg->sign_rate, 500);
	assert_int_equal(cfg->sign_burst, 50);
	assert_int_equal(cfg->ticket_key_lifetime, 7200);
	assert_int_equal(cfg->expiry_warning_days, 14);
	assert_string_equal(cfg->tpm_tcti, "swtpm:host=localhost,port=2321");
	assert_int_equal(cfg->tls.proto_min, TLS1_3_VERSION);
	assert_int_equal(cfg->tls.proto_max, TLS1_3_VERSION);
	assert_string_equal(cfg->tls.ciphers, "ECDHE-ECDSA-AES256-GCM-SHA384");
	assert_string_equal(cfg->tls.ciphersuites, "TLS_AES_256_GCM_SHA384");
	assert_string_equal(cfg->tls.groups, "P-384");
	config_free(cfg);
}

static void
test_full_config_identity(void **state)
{
	struct config *cfg = parse_ok(full_config);
	const struct config_identity *id;

	assert_int_equal(cfg->n_identities, 1);
	id = &cfg->identities[0];
	assert_string_equal(id->name, "node");
	assert_int_equal(id->line, 32);
	assert_string_equal(id->cert, "/etc/rd/node.crt");
	assert_string_equal(id->key, "tpm:/etc/rd/node.tpmkey");
	assert_string_equal(id->key_passphrase_file, "/etc/rd/node.pass");
	assert_string_equal(id->ca, "/etc/rd/ca.crt");
	assert_string_equal(id->crl, "/etc/rd/ca.crl");
	config_free(cfg);
}

static void
test_full_config_listener(void **state)
{
	struct config *cfg = parse_ok(full_config);
	const struct config_listener *l;

	assert_int_equal(cfg->n_listeners, 1);
	l = &cfg->listeners[0];
	assert_string_equal(l->name, "clients");
	assert_int_equal(l->line, 39);
	assert_addr(&l->listen, "[::]:6380");
	assert_int_equal(l->listen.ss.ss_family, AF_INET6);
	assert_int_equal(l->listen.sslen, sizeof(struct sockaddr_in6));
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&l->listen.ss)->sin6_port), 6380);
	assert_addr(&l->backend, "127.0.0.1:6379");
	assert_int_equal(l->identity, 0);
	assert_int_equal(l->mode, TLS_MODE_VERIFY_FULL);
	assert_int_equal(l->n_allow, 4);
	assert_int_equal(l->allow[0].kind, ALLOW_DNS);
	assert_string_equal(l->allow[0].value, "*.app.example.com");
	assert_int_equal(l->allow[1].kind, ALLOW_IP);
	assert_string_equal(l->allow[1].value, "2001:db8::1");      /* canonical form */
	assert_int_equal(l->allow[2].kind, ALLOW_URI);
	assert_string_equal(l->allow[2].value, "spiffe://example.com/app");
	assert_int_equal(l->allow[3].kind, ALLOW_CN);
	assert_string_equal(l->allow[3].value, "legacy-client");
	assert_string_equal(l->ca, "/etc/rd/clients-ca.crt");
	assert_string_equal(l->crl, "/etc/rd/clients.crl");
	assert_int_equal(l->tls.proto_min, TLS1_2_VERSION);
	assert_int_equal(l->tls.proto_max, TLS1_2_VERSION);
	assert_string_equal(l->tls.ciphers, "ECDHE-RSA-AES128-GCM-SHA256");
	assert_string_equal(l->tls.ciphersuites, "TLS_AES_128_GCM_SHA256");
	assert_string_equal(l->tls.groups, "P-256");
	/* One route per offered protocol, in alpn order. */
	assert_int_equal(l->n_routes, 3);
	assert_string_equal(l->routes[0].alpn, "redis");
	assert_addr(&l->routes[0].backend, "127.0.0.1:6379");
	assert_null(l->routes[0].allow);
	assert_string_equal(l->routes[1].alpn, "redis-bus");
	assert_addr(&l->routes[1].backend, "127.0.0.1:16379");
	assert_int_equal(l->routes[1].n_allow, 1);
	assert_string_equal(l->routes[1].allow[0].value, "node2.example.com");
	assert_string_equal(l->routes[2].alpn, "redis-repl");
	assert_addr(&l->routes[2].backend, "unix:/run/redis/repl.sock");
	assert_int_equal(l->routes[2].n_allow, 0);
	config_free(cfg);
}

static void
test_full_config_connectors(void **state)
{
	struct config *cfg = parse_ok(full_config);
	const struct config_connector *c;

	assert_int_equal(cfg->n_connectors, 2);
	c = &cfg->connectors[0];
	assert_string_equal(c->name, "replication");
	assert_addr(&c->listen, "127.0.0.1:16380");
	assert_int_equal(c->connect.kind, ADDR_TCP);
	assert_string_equal(c->connect.host, "primary.example.com");
	assert_int_equal(c->connect.port, 6380);
	assert_int_equal(c->connect.sslen, 0);         /* a name: resolved at connect time */
	assert_int_equal(c->transparent, 0);
	assert_int_equal(c->identity, 0);
	assert_int_equal(c->mode, TLS_MODE_VERIFY_CA);
	assert_string_equal(c->alpn, "redis-repl");
	assert_string_equal(c->ca, "/etc/rd/peers-ca.crt");
	assert_string_equal(c->crl, "/etc/rd/peers.crl");
	assert_int_equal(c->tls.proto_min, TLS1_3_VERSION);
	assert_string_equal(c->tls.groups, "X25519");
	assert_int_equal(c->n_expect, 0);

	c = &cfg->connectors[1];
	assert_string_equal(c->name, "bus");
	assert_addr(&c->listen, "unix:/run/redoubt/bus.sock");
	assert_int_equal(c->connect.kind, ADDR_NONE);
	assert_int_equal(c->transparent, 1);
	assert_int_equal(c->mode, TLS_MODE_VERIFY_FULL);
	assert_int_equal(c->n_expect, 1);
	assert_int_equal(c->expect[0].kind, ALLOW_DNS);
	assert_string_equal(c->expect[0].value, "bus.example.com");
	/* Inherited from [global]. */
	assert_int_equal(c->tls.proto_min, TLS1_3_VERSION);
	assert_string_equal(c->tls.groups, "P-384");
	assert_string_equal(c->alpn, "");
	config_free(cfg);
}

static void
test_sha256_of_exact_bytes(void **state)
{
	struct config *cfg = parse_ok(full_config);
	unsigned char md[32];
	unsigned int mdlen;

	assert_int_equal(EVP_Digest(full_config, strlen(full_config), md, &mdlen, EVP_sha256(),
	    NULL), 1);
	assert_memory_equal(cfg->sha256, md, sizeof(md));
	config_free(cfg);
}

/* ---- defaults ---- */

static void
test_defaults(void **state)
{
	struct config *cfg = parse_ok(IDENTITY LISTENER);
	const struct config_listener *l = &cfg->listeners[0];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	assert_int_equal(cfg->workers, cpus < 1 ? 1 : cpus > WORKERS_MAX ? WORKERS_MAX : cpus);
	assert_string_equal(cfg->user, "redoubt");
	assert_string_equal(cfg->keyd_user, "redoubt-keyd");
	assert_string_equal(cfg->admin_group, "redoubt-admin");
	assert_string_equal(cfg->control_socket, "/run/redoubt/control.sock");
	assert_string_equal(cfg->audit_log, "/var/log/redoubt/audit.jsonl");
	assert_int_equal(cfg->audit_fail_closed, 1);
	assert_int_equal(cfg->audit_syslog, 0);
	assert_int_equal(cfg->checkpoint_records, 1000);
	assert_int_equal(cfg->checkpoint_seconds, 60);
	assert_int_equal(cfg->log_level, LOG_LVL_INFO);
	assert_int_equal(cfg->fips, 0);
	assert_int_equal(cfg->auto_reload, 0);
	assert_int_equal(cfg->max_connections, CONN_MAX_DEFAULT);
	assert_int_equal(cfg->handshake_timeout_ms, HANDSHAKE_TIMEOUT_MS_DEFAULT);
	assert_int_equal(cfg->idle_timeout_ms, 0);
	assert_int_equal(cfg->keyd_timeout_ms, KEYD_TIMEOUT_MS_DEFAULT);
	assert_int_equal(cfg->secure_heap, KEYD_SECURE_HEAP_DEFAULT);
	assert_int_equal(cfg->sign_rate, KEYD_SIGN_RATE_DEFAULT);
	assert_int_equal(cfg->sign_burst, KEYD_SIGN_BURST_DEFAULT);
	assert_int_equal(cfg->ticket_key_lifetime, 3600);
	assert_int_equal(cfg->expiry_warning_days, 30);
	assert_string_equal(cfg->tpm_tcti, "device:/dev/tpmrm0");
	assert_int_equal(cfg->tls.proto_min, TLS1_2_VERSION);
	assert_int_equal(cfg->tls.proto_max, TLS1_3_VERSION);
	assert_string_equal(cfg->tls.ciphers,
	    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
	    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
	    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
	assert_string_equal(cfg->tls.ciphersuites,
	    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
	assert_string_equal(cfg->tls.groups, "X25519:P-256:P-384");
	/* The listener takes [global]'s TLS parameters and verify-full. */
	assert_int_equal(l->mode, TLS_MODE_VERIFY_FULL);
	assert_memory_equal(&l->tls, &cfg->tls, sizeof(l->tls));
	assert_int_equal(l->n_routes, 0);
	assert_null(l->routes);
	assert_string_equal(l->ca, "");
	config_free(cfg);
}

static void
test_empty_file(void **state)
{
	/* Valid for parsing (check-config can say so); serve refuses a config without
	 * listeners or connectors. */
	struct config *cfg = parse_ok("");

	assert_int_equal(cfg->n_identities, 0);
	assert_int_equal(cfg->n_listeners, 0);
	assert_int_equal(cfg->n_connectors, 0);
	config_free(cfg);
	cfg = parse_ok("; only a comment\n\n# another\n   \n[global]\n");
	assert_int_equal(cfg->n_listeners, 0);
	config_free(cfg);
}

static void
test_workers_auto_and_none(void **state)
{
	struct config *cfg = parse_ok("[global]\nworkers = auto\naudit-log = none\n"
	    "idle-timeout = 0\n");

	assert_true(cfg->workers >= 1 && cfg->workers <= WORKERS_MAX);
	assert_string_equal(cfg->audit_log, "");
	assert_int_equal(cfg->idle_timeout_ms, 0);
	config_free(cfg);
}

/* ---- lines ---- */

static void
test_long_line(void **state)
{
	char text[512], value[256];
	struct config *cfg;
	size_t n;

	/* "tpm-tcti = " is 11 characters: 188 more make a 199-character line. */
	memset(value, 'a', 188);
	value[188] = '\0';
	snprintf(text, sizeof(text), "[global]\ntpm-tcti = %s\n", value);
	n = strlen("tpm-tcti = ") + strlen(value);
	assert_int_equal(n, 199);
	cfg = parse_ok(text);
	assert_string_equal(cfg->tpm_tcti, value);
	config_free(cfg);

	/* 200 characters: refused, not split. */
	snprintf(text, sizeof(text), "[global]\ntpm-tcti = %sa\n", value);
	parse_err(text, "t.conf:2: line too long (at most 199 characters)");
	/* A long comment is just as refused. */
	memset(value, ';', 250);
	value[250] = '\0';
	snprintf(text, sizeof(text), "[global]\n\n%s", value);
	parse_err(text, "t.conf:3: line too long (at most 199 characters)");
	/* The CR of a CRLF line does not count. */
	memset(value, 'a', 188);
	value[188] = '\0';
	snprintf(text, sizeof(text), "[global]\r\ntpm-tcti = %s\r\n", value);
	cfg = parse_ok(text);
	config_free(cfg);
}

static void
test_missing_final_newline(void **state)
{
	struct config *cfg = parse_ok("[global]\nworkers = 5");

	assert_int_equal(cfg->workers, 5);
	config_free(cfg);
	parse_err("[global]\nworkers = 99", "t.conf:2: workers: '99' is not auto or a number "
	    "from 1 to 64");
	cfg = parse_ok(IDENTITY LISTENER "alpn = redis");
	assert_int_equal(cfg->listeners[0].n_routes, 1);
	config_free(cfg);
}

static void
test_crlf_and_bom(void **state)
{
	struct config *cfg = parse_ok("\xef\xbb\xbf[global]\r\nworkers = 2\r\n"
	    "user = rd\r\n");

	assert_int_equal(cfg->workers, 2);
	assert_string_equal(cfg->user, "rd");
	config_free(cfg);
}

static void
test_line_numbers(void **state)
{
	/* The line of the key, after comments, blanks and a continuation-looking indent. */
	parse_err("; comment\n\n[global]\n# comment\n\n   workers = 2\n\tuser = x y\n",
	    "t.conf:7: user: 'x y' is not a user or group name (at most 32 letters, digits, "
	    "'.', '_' or '-', not starting with '-')");
	/* A missing key is reported at its section's header. */
	parse_err(IDENTITY "\n\n[listener clients]\nlisten = 0.0.0.0:6380\n\nidentity = node\n"
	    "allow = dns:a.example\n[global]\n", "t.conf:7: [listener clients] needs 'backend'");
}

static void
test_indented_keys(void **state)
{
	/* inih would make the second indented line a continuation of the first value. */
	struct config *cfg = parse_ok(IDENTITY "[listener clients]\n"
	    "    listen = 0.0.0.0:6380\n"
	    "    backend = unix:/run/redis/redis.sock\n"
	    "\tidentity = node\n"
	    "    allow = dns:app.example.com   ; inline comment\n");

	assert_addr(&cfg->listeners[0].backend, "unix:/run/redis/redis.sock");
	assert_string_equal(cfg->listeners[0].allow[0].value, "app.example.com");
	config_free(cfg);
}

static void
test_garbage(void **state)
{
	static const char nul[] = "[global]\nworkers = 2\0\n";
	struct config *cfg;

	/* UTF-8 in comments is text. */
	cfg = parse_ok("; redoubt — configuration für Ærø ✓\n[global]\n");
	config_free(cfg);
	parse_err("[global]\nuser = \xff\xfe\n", "t.conf:2: the line is not valid UTF-8");
	parse_err("[global]\n; \xc0\xaf overlong\n", "t.conf:2: the line is not valid UTF-8");
	parse_err("[global]\nworkers = \x01\n", "t.conf:2: control character 0x01 in the line "
	    "(the file must be text)");
	assert_int_equal(config_parse(NAME, nul, sizeof(nul) - 1, &cfg, errbuf, sizeof(errbuf)),
	    -1);
	assert_string_equal(errbuf, "t.conf:2: control character 0x00 in the line (the file "
	    "must be text)");
	parse_err("[global]\nworkers\n", "t.conf:2: expected 'key = value', a [section] header "
	    "or a comment");
	parse_err("[global]\nworkers ; = 2\n", "t.conf:2: expected 'key = value', a [section] "
	    "header or a comment");
	parse_err("[global]\n= 2\n", "t.conf:2: expected 'key = value' (nothing before '=')");
	parse_err("[global]\nuser = ü\n", "t.conf:2: user: 'ü' is not a user or group name (at "
	    "most 32 letters, digits, '.', '_' or '-', not starting with '-')");
	parse_err("\x7f" "ELF\x02\x01\x01", "t.conf:1: control character 0x7f in the line (the "
	    "file must be text)");
}

/* ---- section headers ---- */

static void
test_section_errors(void **state)
{
	parse_err("[global]\n[lisener x]\n", "t.conf:2: unknown section type 'lisener' in "
	    "[lisener x] (expected [global], [identity NAME], [listener NAME] or "
	    "[connector NAME])");
	parse_err(IDENTITY "[identity node]\n", "t.conf:5: duplicate section [identity node] "
	    "(first at line 1)");
	parse_err("[global]\n[global]\n", "t.conf:2: duplicate section [global] (first at "
	    "line 1)");
	parse_err("[listener cli ents]\n", "t.conf:1: listener name 'cli ents' is invalid (1 "
	    "to 63 letters, digits, '.', '_' or '-')");
	parse_err("[listener cl/ients]\n", "t.conf:1: listener name 'cl/ients' is invalid (1 "
	    "to 63 letters, digits, '.', '_' or '-')");
	parse_err("[listener]\n", "t.conf:1: [listener] needs a name: [listener NAME]");
	parse_err("[global x]\n", "t.conf:1: [global] takes no name (found [global x])");
	parse_err("[global\n", "t.conf:1: section header has no closing ']'");
	parse_err("[global] x\n", "t.conf:1: unexpected text after ']': 'x'");
	parse_err("[]\n", "t.conf:1: empty section header (expected [global], [identity NAME], "
	    "[listener NAME] or [connector NAME])");
	parse_err("workers = 2\n", "t.conf:1: key 'workers' is outside any section (global "
	    "settings go under [global])");
}

static void
test_section_names(void **state)
{
	char text[256];
	struct config *cfg;

	/* 63 characters, longer than inih's own 49-byte section buffer. */
	snprintf(text, sizeof(text), "[identity %s]\ncert = /c\nkey = /k\n"
	    "[ global ] ; comment\n", "a123456789b123456789c123456789d123456789e123456789f1234"
	    "5678.-_");
	cfg = parse_ok(text);
	assert_string_equal(cfg->identities[0].name,
	    "a123456789b123456789c123456789d123456789e123456789f12345678.-_");
	config_free(cfg);
	/* 64 characters. */
	snprintf(text, sizeof(text), "[identity %s]\n", "a123456789b123456789c123456789d12345678"
	    "9e123456789f1234567891234");
	parse_err_prefix(text, "t.conf:1: identity name 'a123456789");
}

static void
test_too_many_sections(void **state)
{
	char *text = calloc(1, 16384), *p = text;

	assert_non_null(text);
	for (int i = 0; i <= CONFIG_IDENTITIES_MAX; i++)
		p += sprintf(p, "[identity id%d]\ncert = /c\nkey = /k\n", i);
	parse_err(text, "t.conf:97: too many [identity] sections (at most 32)");
	free(text);
}

/* ---- keys ---- */

static void
test_key_errors(void **state)
{
	parse_err(IDENTITY "[listener clients]\nlisten = 0.0.0.0:6380\nbakend = /x\n",
	    "t.conf:7: unknown key 'bakend' in [listener clients]");
	parse_err("[global]\nworkers = 2\nfips = no\nworkers = 3\n", "t.conf:4: duplicate key "
	    "'workers' in [global] (first set at line 2)");
	parse_err("[global]\nuser =\n", "t.conf:2: user: needs a value");
	parse_err("[global]\nuser = ; only a comment\n", "t.conf:2: user: needs a value");
	parse_err("[global]\ncert = /x\n", "t.conf:2: unknown key 'cert' in [global]");
	parse_err("[identity n]\nlisten = 127.0.0.1:1\n", "t.conf:2: unknown key 'listen' in "
	    "[identity n]");
	parse_err("[global]\nWorkers = 2\n", "t.conf:2: unknown key 'Workers' in [global]");
}

static void
test_passphrase_refused(void **state)
{
	const char *msg = "t.conf:4: key-passphrase: a passphrase must never be written in the "
	    "configuration; use key-passphrase-file = /path (readable only by the keyd user) "
	    "or the REDOUBT_KEY_PASSPHRASE environment variable";

	parse_err("[identity n]\ncert = /c\nkey = /k\nkey-passphrase = hunter2\n", msg);
	assert_null(strstr(errbuf, "hunter2"));
	parse_err_prefix("[global]\npassword = x\n", "t.conf:2: password: a passphrase must "
	    "never");
	parse_err_prefix("[identity n]\nKey-Password = x\n", "t.conf:2: Key-Password: a "
	    "passphrase");
	parse_err_prefix("[listener n]\nclient-secret = x\n", "t.conf:2: client-secret: a "
	    "passphrase");
	/* The file form is a key, in the right section only. */
	parse_err("[global]\nkey-passphrase-file = /x\n", "t.conf:2: unknown key "
	    "'key-passphrase-file' in [global]");
}

static void
test_values_out_of_range(void **state)
{
	parse_err("[global]\nworkers = 0\n", "t.conf:2: workers: '0' is not auto or a number "
	    "from 1 to 64");
	parse_err("[global]\nworkers = 65\n", "t.conf:2: workers: '65' is not auto or a number "
	    "from 1 to 64");
	parse_err("[global]\ncheckpoint-records = 1000001\n", "t.conf:2: checkpoint-records: "
	    "'1000001' is out of range (1 to 1000000)");
	parse_err("[global]\nmax-connections = 99999999999999999999999\n", "t.conf:2: "
	    "max-connections: '99999999999999999999999' is out of range (1 to 1000000)");
	parse_err("[global]\nmax-connections = -1\n", "t.conf:2: max-connections: '-1' is not "
	    "a whole number");
	parse_err("[global]\nmax-connections = 0x10\n", "t.conf:2: max-connections: '0x10' is "
	    "not a whole number");
	parse_err("[global]\nexpiry-warning-days = 3651\n", "t.conf:2: expiry-warning-days: "
	    "'3651' is out of range (0 to 3650)");
	parse_err("[global]\nsign-rate = 0\n", "t.conf:2: sign-rate: '0' is out of range (1 to "
	    "10000000)");
	parse_err("[global]\nhandshake-timeout = 99ms\n", "t.conf:2: handshake-timeout: '99ms' "
	    "is out of range (100ms to 10m)");
	parse_err("[global]\nhandshake-timeout = 11m\n", "t.conf:2: handshake-timeout: '11m' "
	    "is out of range (100ms to 10m)");
	parse_err("[global]\nkeyd-timeout = 2m\n", "t.conf:2: keyd-timeout: '2m' is out of "
	    "range (10ms to 1m)");
	parse_err("[global]\nidle-timeout = 500ms\n", "t.conf:2: idle-timeout: '500ms' is out "
	    "of range (0 for none, or 1s to 7d)");
	parse_err("[global]\ncheckpoint-seconds = 0\n", "t.conf:2: checkpoint-seconds: '0' is "
	    "out of range (1s to 1d)");
	parse_err("[global]\ncheckpoint-seconds = 1500ms\n", "t.conf:2: checkpoint-seconds: "
	    "'1500ms' is not a whole number of seconds");
	parse_err("[global]\nticket-key-lifetime = 8d\n", "t.conf:2: ticket-key-lifetime: "
	    "'8d' is out of range (1m to 7d)");
	parse_err("[global]\nhandshake-timeout = 10 s\n", "t.conf:2: handshake-timeout: '10 s' "
	    "is not a duration (a whole number with ms, s, m, h or d, e.g. 500ms, 10s, 5m)");
	parse_err("[global]\nhandshake-timeout = 99999999999999999h\n", "t.conf:2: "
	    "handshake-timeout: '99999999999999999h' is out of range (100ms to 10m)");
	parse_err("[global]\nsecure-heap = 32K\n", "t.conf:2: secure-heap: '32K' is out of "
	    "range (64K to 1G)");
	parse_err("[global]\nsecure-heap = 2G\n", "t.conf:2: secure-heap: '2G' is out of range "
	    "(64K to 1G)");
	parse_err("[global]\nsecure-heap = 96K\n", "t.conf:2: secure-heap: '96K' is not a "
	    "power of two (e.g. 256K, 1M, 4M)");
	parse_err("[global]\nsecure-heap = 1MB\n", "t.conf:2: secure-heap: '1MB' is not a size "
	    "(a whole number with K, M or G, e.g. 256K, 1M)");
}

static void
test_values_durations_sizes(void **state)
{
	struct config *cfg = parse_ok("[global]\nhandshake-timeout = 30\nkeyd-timeout = 1s\n"
	    "idle-timeout = 7d\ncheckpoint-seconds = 1d\nticket-key-lifetime = 90m\n"
	    "secure-heap = 65536\n");

	assert_int_equal(cfg->handshake_timeout_ms, 30000);
	assert_int_equal(cfg->keyd_timeout_ms, 1000);
	assert_int_equal(cfg->idle_timeout_ms, 604800000u);
	assert_int_equal(cfg->checkpoint_seconds, 86400);
	assert_int_equal(cfg->ticket_key_lifetime, 5400);
	assert_int_equal(cfg->secure_heap, 65536);
	config_free(cfg);
}

static void
test_values_enums(void **state)
{
	struct config *cfg;

	parse_err(IDENTITY LISTENER "tls-mode = verify\n", "t.conf:10: tls-mode: 'verify' is "
	    "not one of require, verify-ca, verify-full");
	parse_err("[global]\nfips = maybe\n", "t.conf:2: fips: 'maybe' is not yes or no");
	parse_err("[global]\nlog-level = verbose\n", "t.conf:2: log-level: 'verbose' is not "
	    "one of error, warning, info, debug");
	parse_err("[global]\ntls-protocol-min = TLSv1.1\n", "t.conf:2: tls-protocol-min: "
	    "'TLSv1.1' is not supported (SSL 3.0, TLS 1.0 and 1.1 are obsolete and not allowed "
	    "by PCI DSS); use TLSv1.2 or TLSv1.3");
	parse_err("[global]\ntls-protocol-max = TLSv1.4\n", "t.conf:2: tls-protocol-max: "
	    "'TLSv1.4' is not one of TLSv1.2, TLSv1.3");
	parse_err("[global]\ntls-ciphersuites = TLS_AES_128_GCM_SHA256:TLS_NULL\n", "t.conf:2: "
	    "tls-ciphersuites: 'TLS_NULL' is not a TLS 1.3 cipher suite (one of "
	    "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, "
	    "TLS_AES_128_CCM_SHA256, TLS_AES_128_CCM_8_SHA256, separated by ':')");
	parse_err_prefix("[global]\ntls-ciphers = HIGH;!aNULL\n", "t.conf:2: tls-ciphers: "
	    "'HIGH;!aNULL' contains ';'");
	parse_err("[global]\ntls-ciphers = HIGH::!aNULL\n", "t.conf:2: tls-ciphers: "
	    "'HIGH::!aNULL' has an empty element");
	parse_err("[global]\ntls-groups = P-256:\n", "t.conf:2: tls-groups: 'P-256:' is not a "
	    "list of group names separated by ':' (e.g. X25519:P-256:P-384)");
	parse_err_prefix("[global]\ntpm-tcti = a b\n", "t.conf:2: tpm-tcti: 'a b' must be one "
	    "word");
	cfg = parse_ok("[global]\naudit-syslog = true\nfips = off\nauto-reload = 1\n"
	    "audit-fail-closed = false\nlog-level = warning\n");
	assert_int_equal(cfg->audit_syslog, 1);
	assert_int_equal(cfg->auto_reload, 1);
	assert_int_equal(cfg->audit_fail_closed, 0);
	assert_int_equal(cfg->log_level, LOG_LVL_WARN);
	config_free(cfg);
}

static void
test_values_paths_and_users(void **state)
{
	parse_err("[identity n]\ncert = node.crt\n", "t.conf:2: cert: 'node.crt' is not an "
	    "absolute path");
	parse_err("[identity n]\ncert = /c\nkey = tpm:node.tpmkey\n", "t.conf:3: key: "
	    "'node.tpmkey' is not an absolute path");
	parse_err("[global]\naudit-log = audit.jsonl\n", "t.conf:2: audit-log: 'audit.jsonl' "
	    "is not an absolute path");
	parse_err_prefix("[global]\ncontrol-socket = /run/redoubt/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
	    "t.conf:2: control-socket: unix socket path '/run/redoubt/aaa");
	parse_err("[global]\nuser = -rd\n", "t.conf:2: user: '-rd' is not a user or group name "
	    "(at most 32 letters, digits, '.', '_' or '-', not starting with '-')");
	parse_err("[global]\nuser = root\n", "t.conf:2: user: workers face the network and must "
	    "not run as root; use an unprivileged user such as redoubt");
	parse_err("[global]\nkeyd-user = root\n", "t.conf:2: keyd-user: keyd must not run as "
	    "root; use a user of its own such as redoubt-keyd");
	parse_err("[global]\nuser = rd\nkeyd-user = rd\n", "t.conf:3: user and keyd-user are "
	    "both 'rd': workers must not run as the user that can read the private keys");
}

/* ---- addresses ---- */

static void
test_addresses(void **state)
{
	struct config *cfg;
	const struct sockaddr_in *sin;

	cfg = parse_ok(IDENTITY "[listener a]\nlisten = 192.0.2.10:6380\n"
	    "backend = localhost:6379\nidentity = node\nallow = cn:x\n"
	    "[connector c]\nlisten = [::1]:16380\nconnect = [2001:db8::5]:6380\nidentity = node\n"
	    "[connector d]\nlisten = localhost:16381\nconnect = 198.51.100.7:6380\n"
	    "identity = node\n");
	assert_addr(&cfg->listeners[0].listen, "192.0.2.10:6380");
	/* localhost is fixed to 127.0.0.1, never looked up. */
	assert_string_equal(cfg->listeners[0].backend.host, "localhost");
	sin = (const struct sockaddr_in *)&cfg->listeners[0].backend.ss;
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
	assert_int_equal(ntohs(sin->sin_port), 6379);
	assert_addr(&cfg->connectors[0].listen, "[::1]:16380");
	assert_addr(&cfg->connectors[0].connect, "[2001:db8::5]:6380");
	assert_int_equal(cfg->connectors[0].connect.sslen, sizeof(struct sockaddr_in6));
	assert_int_equal(cfg->connectors[1].connect.sslen, sizeof(struct sockaddr_in));
	assert_int_equal(cfg->connectors[1].listen.sslen, sizeof(struct sockaddr_in));
	config_free(cfg);
}

static void
test_address_errors(void **state)
{
	parse_err(IDENTITY "[listener a]\nlisten = 0.0.0.0:6380\nbackend = 10.0.0.5:6379\n",
	    "t.conf:7: backend 10.0.0.5:6379 is not on loopback (use unix:/path, 127.0.0.1, ::1 "
	    "or localhost)");
	parse_err("[listener a]\nbackend = db.internal:6379\n", "t.conf:2: backend "
	    "db.internal:6379 is not on loopback (use unix:/path, 127.0.0.1, ::1 or localhost)");
	parse_err("[connector a]\nlisten = 0.0.0.0:16380\n", "t.conf:2: listen 0.0.0.0:16380 is "
	    "not on loopback (use unix:/path, 127.0.0.1, ::1 or localhost)");
	parse_err("[listener a]\nlisten = 0.0.0.0:0\n", "t.conf:2: listen: port '0' in "
	    "'0.0.0.0:0' is not a number from 1 to 65535");
	parse_err("[listener a]\nlisten = 0.0.0.0:65536\n", "t.conf:2: listen: port '65536' in "
	    "'0.0.0.0:65536' is not a number from 1 to 65535");
	parse_err("[listener a]\nlisten = 0.0.0.0\n", "t.conf:2: listen: '0.0.0.0' is not "
	    "HOST:PORT (e.g. 0.0.0.0:6380, [::]:6380, 192.0.2.10:6380)");
	parse_err("[listener a]\nlisten = ::1:6380\n", "t.conf:2: listen: '::1:6380': write "
	    "IPv6 addresses in brackets, e.g. [::1]:6379");
	parse_err("[listener a]\nlisten = :6380\n", "t.conf:2: listen: ':6380' has no host "
	    "(write 0.0.0.0 or [::] to listen on every address)");
	parse_err("[listener a]\nlisten = [10.0.0.1]:6380\n", "t.conf:2: listen: "
	    "'[10.0.0.1]:6380' is not an IPv6 address in brackets");
	parse_err("[listener a]\nlisten = host.example:6380\n", "t.conf:2: listen: "
	    "'host.example' must be an IP address or localhost, not a name (e.g. 0.0.0.0:6380, "
	    "[::]:6380, 192.0.2.10:6380)");
	parse_err("[listener a]\nlisten = unix:/run/x.sock\n", "t.conf:2: listen: "
	    "'unix:/run/x.sock': a unix socket is not allowed here (expected HOST:PORT)");
	parse_err("[connector a]\nlisten = 127.0.0.1:1\nconnect = 127.1:6380\n", "t.conf:3: "
	    "connect: '127.1' is not an IP address or a host name");
	parse_err("[listener a]\nbackend = unix:run/redis.sock\n", "t.conf:2: backend: unix "
	    "socket path 'run/redis.sock' is not absolute");
	parse_err_prefix("[listener a]\nbackend = unix:/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
	    "t.conf:2: backend: unix socket path '/run/aaaa");
}

static void
test_unix_path_limit(void **state)
{
	char path[128], text[256];
	struct config *cfg;

	/* 107 bytes is the most sun_path holds with its NUL. */
	memset(path, 'p', sizeof(path));
	path[0] = '/';
	path[107] = '\0';
	snprintf(text, sizeof(text), "[connector c]\nlisten = unix:%s\nconnect = h.example:1\n"
	    "identity = n\ntls-mode = require\n[identity n]\ncert = /c\nkey = /k\n", path);
	cfg = parse_ok(text);
	assert_string_equal(cfg->connectors[0].listen.path, path);
	config_free(cfg);
	path[107] = 'p';
	path[108] = '\0';
	snprintf(text, sizeof(text), "[connector c]\nlisten = unix:%s\n", path);
	parse_err_prefix(text, "t.conf:2: listen: unix socket path '/ppp");
	assert_non_null(strstr(errbuf, "is 108 bytes, at most 107 fit in sun_path"));
}

/* ---- allow lists ---- */

static void
test_allow_entries(void **state)
{
	struct config *cfg = parse_ok(IDENTITY LISTENER "allow = dns:Node1.Example.COM "
	    "ip:192.0.2.1 ip:::FFFF:192.0.2.1\n");
	const struct config_listener *l = &cfg->listeners[0];

	assert_int_equal(l->n_allow, 4);
	assert_string_equal(l->allow[1].value, "node1.example.com");
	assert_string_equal(l->allow[2].value, "192.0.2.1");
	assert_string_equal(l->allow[3].value, "::ffff:192.0.2.1");
	config_free(cfg);

	parse_err(IDENTITY LISTENER "allow = dns:*.com\n", "t.conf:10: allow: 'dns:*.com' is "
	    "not a DNS name (a wildcard may only be a leftmost '*.' label above at least two "
	    "labels)");
	parse_err_prefix(IDENTITY LISTENER "allow = dns:a.*.example.com\n", "t.conf:10: allow: "
	    "'dns:a.*.example.com' is not a DNS name");
	parse_err(IDENTITY LISTENER "allow = ip:10.0.0\n", "t.conf:10: allow: 'ip:10.0.0' is "
	    "not an IPv4 or IPv6 address");
	parse_err(IDENTITY LISTENER "allow = uri:spiffe\n", "t.conf:10: allow: 'uri:spiffe' is "
	    "not a URI (scheme:..., e.g. spiffe://example.com/app)");
	parse_err(IDENTITY LISTENER "allow = cn:\n", "t.conf:10: allow: 'cn:' is not a common "
	    "name");
	parse_err(IDENTITY LISTENER "allow = app.example.com\n", "t.conf:10: allow: "
	    "'app.example.com' is not an identity (expected dns:NAME, ip:ADDRESS, uri:URI or "
	    "cn:NAME)");
}

static void
test_allow_limit(void **state)
{
	char *text = calloc(1, 32768), *p;
	int i;

	assert_non_null(text);
	p = text + sprintf(text, "%s", IDENTITY LISTENER);   /* one entry already */
	for (i = 1; i < CONFIG_ALLOW_MAX; i++)
		p += sprintf(p, "allow = cn:c%d\n", i);
	sprintf(p, "allow = cn:one-too-many\n");
	parse_err(text, "t.conf:73: allow: more than 64 entries in one list");
	free(text);
}

/* ---- checks across sections ---- */

static void
test_identity_references(void **state)
{
	struct config *cfg;

	parse_err(IDENTITY "[listener clients]\nlisten = 0.0.0.0:6380\nbackend = 127.0.0.1:6379"
	    "\nallow = cn:x\n\nidentity = nod\n", "t.conf:10: identity 'nod' is not defined");
	/* An identity may be defined after its first use; indexes follow file order. */
	cfg = parse_ok("[identity first]\ncert = /c\nkey = /k\nca = /ca\n"
	    LISTENER "[identity node]\ncert = /c2\nkey = /k2\nca = /ca2\n");
	assert_int_equal(cfg->listeners[0].identity, 1);
	assert_string_equal(cfg->identities[1].name, "node");
	config_free(cfg);
	parse_err("[identity n]\ncert = /c\n", "t.conf:1: [identity n] needs 'key'");
}

static void
test_fips(void **state)
{
	struct config *cfg;

	/* The defaults become FIPS-approved sets, in [global] and in what inherits it. */
	cfg = parse_ok(IDENTITY LISTENER "[global]\nfips = yes\n");
	assert_int_equal(cfg->fips, 1);
	assert_string_equal(cfg->tls.groups, "P-256:P-384");
	assert_string_equal(cfg->tls.ciphersuites, "TLS_AES_128_GCM_SHA256:"
	    "TLS_AES_256_GCM_SHA384");
	assert_string_equal(cfg->tls.ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256:"
	    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
	    "ECDHE-RSA-AES256-GCM-SHA384");
	assert_string_equal(cfg->listeners[0].tls.groups, "P-256:P-384");
	assert_null(strstr(cfg->listeners[0].tls.ciphers, "CHACHA"));
	config_free(cfg);

	parse_err("[global]\ntls-groups = X25519:P-256\nfips = yes\n", "t.conf:2: tls-groups: "
	    "X25519 is not allowed with fips = yes (not FIPS-approved; use P-256, P-384 or "
	    "P-521)");
	parse_err("[global]\nfips = yes\ntls-groups = P-256:x448\n", "t.conf:3: tls-groups: "
	    "X448 is not allowed with fips = yes (not FIPS-approved; use P-256, P-384 or P-521)");
	parse_err("[global]\nfips = yes\ntls-ciphers = ECDHE-RSA-CHACHA20-POLY1305\n", "t.conf:3: "
	    "tls-ciphers: CHACHA20 is not allowed with fips = yes (use AES-GCM, e.g. "
	    "ECDHE-ECDSA-AES128-GCM-SHA256)");
	parse_err("[global]\nfips = yes\ntls-ciphersuites = TLS_CHACHA20_POLY1305_SHA256\n",
	    "t.conf:3: tls-ciphersuites: TLS_CHACHA20_POLY1305_SHA256 is not allowed with fips "
	    "= yes (use TLS_AES_128_GCM_SHA256 or TLS_AES_256_GCM_SHA384)");
	/* In a listener, at the listener's line, even when fips is set further down. */
	parse_err(IDENTITY LISTENER "tls-groups = X25519\n[global]\nfips = yes\n", "t.conf:10: "
	    "tls-groups: X25519 is not allowed with fips = yes (not FIPS-approved; use P-256, "
	    "P-384 or P-521)");
	/* A protocol below TLS 1.2 is never accepted, with or without fips. */
	parse_err_prefix("[global]\nfips = yes\ntls-protocol-min = TLSv1\n", "t.conf:3: "
	    "tls-protocol-min: 'TLSv1' is not supported");
}

static void
test_protocol_order(void **state)
{
	parse_err("[global]\ntls-protocol-min = TLSv1.3\ntls-protocol-max = TLSv1.2\n",
	    "t.conf:2: tls-protocol-min TLSv1.3 is above tls-protocol-max TLSv1.2 in [global]");
	/* Inherited minimum, own maximum: reported at the listener's key. */
	parse_err("[global]\ntls-protocol-min = 1.3\n" IDENTITY LISTENER
	    "tls-protocol-max = 1.2\n", "t.conf:12: tls-protocol-min TLSv1.3 is above "
	    "tls-protocol-max TLSv1.2 in [listener clients]");
}

static void
test_tls_mode_requirements(void **state)
{
	struct config *cfg;

	parse_err("[identity n]\ncert = /c\nkey = /k\n[listener l]\nlisten = 0.0.0.0:1\n"
	    "backend = 127.0.0.1:2\nidentity = n\nallow = cn:x\n", "t.conf:4: [listener l] "
	    "tls-mode verify-full needs a CA to verify peers: set 'ca' in [listener l] or in "
	    "[identity n]");
	parse_err("[identity n]\ncert = /c\nkey = /k\n[connector c]\nlisten = 127.0.0.1:1\n"
	    "connect = peer.example:2\nidentity = n\ntls-mode = verify-ca\n", "t.conf:8: "
	    "[connector c] tls-mode verify-ca needs a CA to verify peers: set 'ca' in "
	    "[connector c] or in [identity n]");
	/* A CA on the listener itself is enough; require needs none. */
	cfg = parse_ok("[identity n]\ncert = /c\nkey = /k\n[listener l]\nlisten = 0.0.0.0:1\n"
	    "backend = 127.0.0.1:2\nidentity = n\nallow = cn:x\nca = /ca\n[connector c]\n"
	    "listen = 127.0.0.1:3\nconnect = peer.example:2\nidentity = n\ntls-mode = require\n");
	config_free(cfg);

	parse_err(IDENTITY "[listener clients]\nlisten = 0.0.0.0:6380\nbackend = 127.0.0.1:1\n"
	    "identity = node\n", "t.conf:5: [listener clients] needs 'allow' for tls-mode "
	    "verify-full (the client identities to accept, e.g. allow = dns:app.example.com), or "
	    "set tls-mode = verify-ca");
	parse_err(IDENTITY LISTENER "tls-mode = verify-ca\n", "t.conf:9: allow: only checked "
	    "with tls-mode verify-full, but [listener clients] uses tls-mode verify-ca");
	parse_err(IDENTITY "[connector c]\nlisten = 127.0.0.1:1\nconnect = p.example:2\n"
	    "identity = node\nexpect = dns:p.example\ntls-mode = require\n", "t.conf:9: expect: "
	    "only checked with tls-mode verify-full, but [connector c] uses tls-mode require");
}

static void
test_routes(void **state)
{
	parse_err(IDENTITY LISTENER "alpn = redis\nroute = redis-bus 127.0.0.1:16379\n",
	    "t.conf:11: route: ALPN 'redis-bus' is not listed in alpn");
	parse_err(IDENTITY LISTENER "route = redis-bus 127.0.0.1:16379\n", "t.conf:10: route: "
	    "ALPN 'redis-bus' is not listed in alpn");
	parse_err(IDENTITY LISTENER "alpn = redis\nroute-allow = redis-bus cn:x\n", "t.conf:11: "
	    "route-allow: ALPN 'redis-bus' is not listed in alpn");
	parse_err(IDENTITY LISTENER "alpn = a b\nroute = a 127.0.0.1:1\nroute = a 127.0.0.1:2\n",
	    "t.conf:12: route: ALPN 'a' already has a route (line 11)");
	parse_err(IDENTITY LISTENER "alpn = a\nroute = a\n", "t.conf:11: route: expected "
	    "'PROTOCOL BACKEND' (e.g. route = redis-bus 127.0.0.1:16379), not 'a'");
	parse_err(IDENTITY LISTENER "alpn = a\nroute = a 10.1.1.1:1\n", "t.conf:11: route "
	    "backend 10.1.1.1:1 is not on loopback (use unix:/path, 127.0.0.1, ::1 or "
	    "localhost)");
	parse_err(IDENTITY LISTENER "alpn = redis redis\n", "t.conf:10: alpn: 'redis' is "
	    "listed twice");
	parse_err(IDENTITY LISTENER "alpn = a b c d e f g h i\n", "t.conf:10: alpn: more than "
	    "8 protocols");
	parse_err(IDENTITY "[connector c]\nalpn = a b\n", "t.conf:6: alpn: a connector offers "
	    "one protocol, not 'a b'");
}

static void
test_route_allow_before_route(void **state)
{
	/* Order inside a section does not matter: route-allow, then alpn, then route. */
	struct config *cfg = parse_ok(IDENTITY LISTENER "route-allow = bus cn:peer\n"
	    "route-allow = bus cn:peer2\nalpn = bus\nroute = bus 127.0.0.1:16379\n");
	const struct config_listener *l = &cfg->listeners[0];

	assert_int_equal(l->n_routes, 1);
	assert_addr(&l->routes[0].backend, "127.0.0.1:16379");
	assert_int_equal(l->routes[0].n_allow, 2);
	assert_string_equal(l->routes[0].allow[1].value, "peer2");
	config_free(cfg);
}

static void
test_listen_conflicts(void **state)
{
	parse_err(IDENTITY LISTENER "[listener other]\nlisten = 0.0.0.0:6380\n"
	    "backend = 127.0.0.1:1\nidentity = node\nallow = cn:x\n", "t.conf:11: listen "
	    "0.0.0.0:6380 is already used by [listener clients] (line 6)");
	/* A wildcard covers every address of its family. */
	parse_err(IDENTITY LISTENER "[listener other]\nlisten = 192.0.2.1:6380\n"
	    "backend = 127.0.0.1:1\nidentity = node\nallow = cn:x\n", "t.conf:11: listen "
	    "192.0.2.1:6380 is already used by [listener clients] (line 6)");
	parse_err(IDENTITY LISTENER "[connector c]\nlisten = 127.0.0.1:6380\nconnect = p.x:1\n"
	    "identity = node\n", "t.conf:11: listen 127.0.0.1:6380 is already used by "
	    "[listener clients] (line 6)");
	parse_err(IDENTITY "[connector a]\nlisten = unix:/run/a.sock\ntransparent = yes\n"
	    "identity = node\n[connector b]\nlisten = unix:/run/a.sock\ntransparent = yes\n"
	    "identity = node\n", "t.conf:10: listen unix:/run/a.sock is already used by "
	    "[connector a] (line 6)");
	/* Same port, another address or family: fine. */
	struct config *cfg = parse_ok(IDENTITY LISTENER "[listener v6]\nlisten = [::]:6380\n"
	    "backend = 127.0.0.1:1\nidentity = node\nallow = cn:x\n[listener p]\n"
	    "listen = 0.0.0.0:6381\nbackend = 127.0.0.1:1\nidentity = node\nallow = cn:x\n");
	config_free(cfg);
}

static void
test_backend_loop(void **state)
{
	parse_err(IDENTITY "[listener clients]\nlisten = 0.0.0.0:6380\n"
	    "backend = 127.0.0.1:6380\nidentity = node\nallow = cn:x\n", "t.conf:7: backend "
	    "127.0.0.1:6380 is the TLS port of [listener clients]; point it at the Redis "
	    "server's plaintext port or socket");
}

static void
test_connector_rules(void **state)
{
	parse_err(IDENTITY "[connector c]\nlisten = 127.0.0.1:1\nidentity = node\n",
	    "t.conf:5: [connector c] needs 'connect' (or transparent = yes)");
	parse_err(IDENTITY "[connector c]\nlisten = 127.0.0.1:1\nconnect = p.example:1\n"
	    "transparent = yes\nidentity = node\n", "t.conf:7: connect: not used with "
	    "transparent = yes (a transparent connector dials each connection's original "
	    "destination)");
	parse_err(IDENTITY "[connector c]\nconnect = p.example:1\nidentity = node\n",
	    "t.conf:5: [connector c] needs 'listen'");
}

/* ---- small API ---- */

static void
test_names_and_format(void **state)
{
	struct config_addr a;
	char buf[8];

	assert_string_equal(tls_mode_name(TLS_MODE_REQUIRE), "require");
	assert_string_equal(tls_mode_name(TLS_MODE_VERIFY_CA), "verify-ca");
	assert_string_equal(tls_mode_name(TLS_MODE_VERIFY_FULL), "verify-full");
	memset(&a, 0, sizeof(a));
	assert_addr(&a, "none");
	a.kind = ADDR_TCP;
	snprintf(a.host, sizeof(a.host), "::1");
	a.port = 6379;
	assert_addr(&a, "[::1]:6379");
	config_addr_format(&a, buf, sizeof(buf));     /* truncated, terminated */
	assert_string_equal(buf, "[::1]:6");
	a.kind = ADDR_UNIX;
	snprintf(a.path, sizeof(a.path), "/run/r.sock");
	assert_addr(&a, "unix:/run/r.sock");
}

/* ---- files ---- */

static char tmpdir[64];

static int
setup_tmpdir(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_config.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown_tmpdir(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void
test_read_file(void **state)
{
	char path[128], err[CONFIG_ERR_MAX], *buf;
	struct config *cfg;
	size_t len;
	int fd;

	snprintf(path, sizeof(path), "%s/ok.conf", tmpdir);
	write_file(path, "[global]\nworkers = 2\n");
	assert_int_equal(config_read_file(path, &buf, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 21);
	assert_string_equal(buf, "[global]\nworkers = 2\n");
	free(buf);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg->path, path);
	assert_int_equal(cfg->workers, 2);
	config_free(cfg);

	/* Errors name the file; parse errors too. */
	write_file(path, "[global]\nworkers = x\n");
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	assert_non_null(strstr(err, "/ok.conf:2: workers: 'x' is not auto"));

	snprintf(path, sizeof(path), "%s/missing.conf", tmpdir);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/missing.conf: No such file or directory"));
	assert_int_equal(config_read_file(tmpdir, &buf, &len, err, sizeof(err)), -1);
	assert_null(buf);
	assert_non_null(strstr(err, ": not a regular file"));

	/* One byte over the limit (a sparse file). */
	snprintf(path, sizeof(path), "%s/big.conf", tmpdir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)CONFIG_SIZE_MAX + 1), 0);
	close(fd);
	assert_int_equal(config_read_file(path, &buf, &len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/big.conf: 1048577 bytes, larger than 1048576 bytes"));
	/* Exactly the limit is read (and then refused by the parser as garbage). */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)CONFIG_SIZE_MAX), 0);
	close(fd);
	assert_int_equal(config_read_file(path, &buf, &len, err, sizeof(err)), 0);
	assert_int_equal(len, CONFIG_SIZE_MAX);
	free(buf);
}

static struct config *
parse_files_config(const char *dir, const char *key_line)
{
	char text[2048];

	snprintf(text, sizeof(text), "[identity node]\ncert = %s/node.crt\n%s\n"
	    "key-passphrase-file = %s/pass\nca = %s/ca.crt\ncrl = %s/ca.crl\n"
	    "[listener l]\nlisten = 0.0.0.0:1\nbackend = 127.0.0.1:2\nidentity = node\n"
	    "allow = cn:x\nca = %s/l-ca.crt\n"
	    "[connector c]\nlisten = 127.0.0.1:3\nconnect = p.example:4\nidentity = node\n"
	    "crl = %s/c.crl\n", dir, key_line, dir, dir, dir, dir, dir);
	return parse_ok(text);
}

static void
test_check_files(void **state)
{
	static const char *const files[] = {
		"node.crt", "node.key", "pass", "ca.crt", "ca.crl", "l-ca.crt", "c.crl",
	};
	char path[128], key_line[160], err[CONFIG_ERR_MAX], expected[CONFIG_ERR_MAX];
	struct config *cfg;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
		write_file(path, "x\n");
	}
	snprintf(key_line, sizeof(key_line), "key = %s/node.key", tmpdir);
	cfg = parse_files_config(tmpdir, key_line);
	assert_int_equal(config_check_files(cfg, err, sizeof(err)), 0);
	config_free(cfg);

	/* A missing file, named with its section and key. */
	snprintf(path, sizeof(path), "%s/l-ca.crt", tmpdir);
	assert_int_equal(unlink(path), 0);
	cfg = parse_files_config(tmpdir, key_line);
	assert_int_equal(config_check_files(cfg, err, sizeof(err)), -1);
	snprintf(expected, sizeof(expected), "[listener l] ca %s/l-ca.crt: No such file or "
	    "directory", tmpdir);
	assert_string_equal(err, expected);
	config_free(cfg);

	/* A directory opens but is no certificate (and root reads anything, so use that). */
	assert_int_equal(mkdir(path, 0700), 0);
	cfg = parse_files_config(tmpdir, key_line);
	assert_int_equal(config_check_files(cfg, err, sizeof(err)), -1);
	snprintf(expected, sizeof(expected), "[listener l] ca %s/l-ca.crt: not a regular file",
	    tmpdir);
	assert_string_equal(err, expected);
	config_free(cfg);
	assert_int_equal(rmdir(path), 0);
	write_file(path, "x\n");

	/* A dangling symlink. */
	snprintf(path, sizeof(path), "%s/ca.crl", tmpdir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink("/nonexistent/redoubt-test", path), 0);
	cfg = parse_files_config(tmpdir, key_line);
	assert_int_equal(config_check_files(cfg, err, sizeof(err)), -1);
	snprintf(expected, sizeof(expected), "[identity node] crl %s/ca.crl: No such file or "
	    "directory", tmpdir);
	assert_string_equal(err, expected);
	config_free(cfg);
	assert_int_equal(unlink(path), 0);
	write_file(path, "x\n");

	/* tpm: keys: the blob path is checked. */
	snprintf(key_line, sizeof(key_line), "key = tpm:%s/node.tpmkey", tmpdir);
	cfg = parse_files_config(tmpdir, key_line);
	assert_int_equal(config_check_files(cfg, err, sizeof(err)), -1);
	snprintf(expected, sizeof(expected), "[identity node] key %s/node.tpmkey: No such file "
	    "or directory", tmpdir);
	assert_string_equal(err, expected);
	config_free(cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_config_global),
		cmocka_unit_test(test_full_config_identity),
		cmocka_unit_test(test_full_config_listener),
		cmocka_unit_test(test_full_config_connectors),
		cmocka_unit_test(test_sha256_of_exact_bytes),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty_file),
		cmocka_unit_test(test_workers_auto_and_none),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_missing_final_newline),
		cmocka_unit_test(test_crlf_and_bom),
		cmocka_unit_test(test_line_numbers),
		cmocka_unit_test(test_indented_keys),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_section_errors),
		cmocka_unit_test(test_section_names),
		cmocka_unit_test(test_too_many_sections),
		cmocka_unit_test(test_key_errors),
		cmocka_unit_test(test_passphrase_refused),
		cmocka_unit_test(test_values_out_of_range),
		cmocka_unit_test(test_values_durations_sizes),
		cmocka_unit_test(test_values_enums),
		cmocka_unit_test(test_values_paths_and_users),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_address_errors),
		cmocka_unit_test(test_unix_path_limit),
		cmocka_unit_test(test_allow_entries),
		cmocka_unit_test(test_allow_limit),
		cmocka_unit_test(test_identity_references),
		cmocka_unit_test(test_fips),
		cmocka_unit_test(test_protocol_order),
		cmocka_unit_test(test_tls_mode_requirements),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_route_allow_before_route),
		cmocka_unit_test(test_listen_conflicts),
		cmocka_unit_test(test_backend_loop),
		cmocka_unit_test(test_connector_rules),
		cmocka_unit_test(test_names_and_format),
		cmocka_unit_test(test_read_file),
		cmocka_unit_test(test_check_files),
	};

	return cmocka_run_group_tests(tests, setup_tmpdir, teardown_tmpdir);
}
