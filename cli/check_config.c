/*
 * `redoubt check-config -c FILE`: everything `serve` would refuse, said before anything
 * starts: syntax and values (file:line), files, every identity's key and certificate
 * (passphrase, match, validity, chain), the users, and whether each address can be bound.
 * It loads the keys itself, so run it as root or as the keyd user.  With the split
 * services, --role keyd checks what keyd's half uses (no addresses: its unit has no
 * network) and --role workers what the workers' half uses (addresses, no keys: that user
 * cannot read them).
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "cli/supervisor.h"
#include "common/fips.h"
#include "common/limits.h"
#include "common/log.h"
#include "keyd/keystore.h"

/* Can this TCP address be bound right now?  (Unix paths are created by serve.) */
static int
check_bindable(const struct config_addr *a, const char *what, const char *name)
{
	char addr[300];
	int fd, one = 1, r;

	if (a->kind != ADDR_TCP || a->sslen == 0)
		return 0;
	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return 0;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	r = bind(fd, (const struct sockaddr *)&a->ss, a->sslen);
	if (r == -1) {
		config_addr_format(a, addr, sizeof(addr));
		fprintf(stderr, "%s %s: cannot listen on %s: %s\n", what, name, addr,
		    strerror(errno));
	}
	close(fd);
	return r;
}

static int
check_user(const char *name, const char *key)
{
	if (getpwnam(name) != NULL)
		return 0;
	fprintf(stderr, "%s '%s' does not exist; create it with 'useradd --system "
	    "--no-create-home --shell /usr/sbin/nologin %s'\n", key, name, name);
	return -1;
}

static void
check_usage(void)
{
	fprintf(stderr, "usage: redoubt check-config -c FILE [--role all|keyd|workers]\n");
}

int
cmd_check_config(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "role", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 }
	};
	const char *path = NULL;
	enum sup_role role = SUP_ROLE_ALL;
	struct config *cfg = NULL;
	char err[KEYSTORE_ERR_MAX], ferr[FIPS_ERR_MAX];
	int opt, bad = 0, keys, addrs;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:r:", longopts, NULL)) != -1) {
		if (opt == 'c')
			path = optarg;
		else if (opt == 'r') {
			if (supervisor_role_parse(optarg, &role) == -1)
				return EXIT_USAGE;
		} else {
			check_usage();
			return EXIT_USAGE;
		}
	}
	keys = role != SUP_ROLE_WORKERS;
	addrs = role != SUP_ROLE_KEYD;
	if (path == NULL || optind != argc) {
		check_usage();
		return EXIT_USAGE;
	}
	log_init("check-config", LOG_LVL_WARN);
	if (config_load(path, &cfg, err, sizeof(err)) == -1 ||
	    (keys && config_check_files(cfg, err, sizeof(err)) == -1)) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return EXIT_CONFIG;
	}
	/* fips = yes: the provider must load here as it will in keyd and the workers. */
	if (fips_enable(cfg, ferr, sizeof(ferr)) == -1) {
		fprintf(stderr, "%s\n", ferr);
		config_free(cfg);
		return EXIT_CONFIG;
	}
	if (keys && CRYPTO_secure_malloc_init(cfg->secure_heap, KEYD_SECURE_HEAP_MINSIZE) != 1)
		log_warnx("no secure heap (mlock refused): keys are checked in ordinary memory");
	for (size_t i = 0; i < cfg->n_identities && keys; i++) {
		struct keyd_key *k = NULL;
		if (keystore_load(cfg, &cfg->identities[i], 1, &k, err, sizeof(err)) == -1) {
			fprintf(stderr, "[identity %s] %s\n", cfg->identities[i].name, err);
			bad = 1;
		}
		keystore_free(k);
	}
	if (geteuid() == 0 &&
	    (check_user(cfg->user, "user") == -1 || check_user(cfg->keyd_user, "keyd-user") == -1))
		bad = 1;
	for (size_t i = 0; i < cfg->n_listeners && addrs; i++)
		if (check_bindable(&cfg->listeners[i].listen, "listener", cfg->listeners[i].name))
			bad = 1;
	for (size_t i = 0; i < cfg->n_connectors && addrs; i++)
		if (check_bindable(&cfg->connectors[i].listen, "connector", cfg->connectors[i].name))
			bad = 1;
	if (!bad)
		printf("%s: configuration OK (%zu identit%s, %zu listener%s, %zu connector%s)\n",
		    path, cfg->n_identities, cfg->n_identities == 1 ? "y" : "ies",
		    cfg->n_listeners, cfg->n_listeners == 1 ? "" : "s", cfg->n_connectors,
		    cfg->n_connectors == 1 ? "" : "s");
	config_free(cfg);
	return bad ? EXIT_CONFIG : 0;
}
