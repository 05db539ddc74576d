/*
 * `redoubt cluster-redirect`: installs, removes or shows the nftables rules that send the
 * local redis-server's outbound cluster connections (bus links to peers, and in a cluster
 * with replicas the replication link to the primary's client port) to a local transparent
 * connector, which reads SO_ORIGINAL_DST and dials that peer's redoubt with TLS.
 *
 * One table, `inet redoubt_cluster`, with one nat output chain: connections from every user
 * except redoubt's workers (which must reach the peers themselves) to the caught ports are
 * redirected to the connector's loopback port.  The whole table is replaced in one nft
 * transaction, so running the command again is harmless and never leaves half a ruleset.
 *
 * Which ports a transparent connector catches: --redirect NAME:PORT[,PORT...], or --ports for
 * the only transparent connector, else the port of the listener with the same name as the
 * connector (cluster nodes use the same ports, so the local listener's port is the peers').
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/log.h"
#include "policy/config.h"

#define CR_TABLE          "redoubt_cluster"
#define CR_PORTS_MAX      16     /* ports caught per connector: a node has a handful */
#define CR_MAPS_MAX       CONFIG_CONNECTORS_MAX
#define CR_RULESET_MAX    8192   /* bytes of generated nft text; 64 connectors fit easily */
#define CR_DEFAULT_CONFIG "/etc/redoubt/redoubt.conf"

enum cr_action { CR_INSTALL = 0, CR_REMOVE, CR_CHECK, CR_PRINT };

/* One transparent connector and the destination ports whose connections it takes. */
struct cr_map {
	const struct config_connector *cm_conn;
	uint16_t cm_ports[CR_PORTS_MAX];
	size_t   cm_nports;
};

struct cr_opts {
	const char    *co_config;
	enum cr_action co_action;
	const char    *co_only_user;               /* redirect only this user's connections */
	const char    *co_ports;                   /* --ports, for the only transparent one */
	const char    *co_redirect[CR_MAPS_MAX];   /* --redirect NAME:PORTS */
	size_t         co_nredirect;
};

static void
cr_usage(FILE *f)
{
	fprintf(f,
	    "usage: redoubt cluster-redirect [-c FILE] [--redirect CONNECTOR:PORT[,PORT...]]...\n"
	    "                                [--ports PORT[,PORT...]] [--only-user USER]\n"
	    "                                [--remove | --check | --dry-run]\n"
	    "  -c FILE          configuration (default " CR_DEFAULT_CONFIG ")\n"
	    "  --redirect C:P   connections to destination port(s) P go to transparent connector C\n"
	    "  --ports P        the same, for the configuration's only transparent connector\n"
	    "                   (--bus-ports is a synonym); without either, a transparent\n"
	    "                   connector takes the port of the listener with its name\n"
	    "  --only-user U    redirect only connections made by user U (e.g. redis), instead of\n"
	    "                   those of every user except redoubt's workers\n"
	    "  --remove         delete the rules (table inet " CR_TABLE ")\n"
	    "  --check          print the installed rules; exit 1 when none are installed\n"
	    "  --dry-run        print the rules that would be installed, change nothing\n");
}

/* "16379,16380" -> ports; 0 or -1 with a message. */
static int
cr_parse_ports(const char *s, struct cr_map *m)
{
	const char *p = s;

	while (*p != '\0') {
		char *end;
		unsigned long v;
		errno = 0;
		v = strtoul(p, &end, 10);
		if (errno != 0 || end == p || v == 0 || v > 65535 || (*end != ',' && *end != '\0')) {
			fprintf(stderr, "cluster-redirect: '%s': expected ports like 16380 or "
			    "6380,16380\n", s);
			return -1;
		}
		if (m->cm_nports == CR_PORTS_MAX) {
			fprintf(stderr, "cluster-redirect: more than %d ports for connector %s\n",
			    CR_PORTS_MAX, m->cm_conn->name);
			return -1;
		}
		m->cm_ports[m->cm_nports++] = (uint16_t)v;
		p = *end == ',' ? end + 1 : end;
	}
	return 0;
}

static const struct config_connector *
cr_connector(const struct config *cfg, const char *name, size_t len)
{
	for (size_t i = 0; i < cfg->n_connectors; i++)
		if (strlen(cfg->connectors[i].name) == len &&
		    strncmp(cfg->connectors[i].name, name, len) == 0)
			return &cfg->connectors[i];
	return NULL;
}

/* The loopback family the connector listens on: "ipv4" or "ipv6"; NULL with a message. */
static const char *
cr_family(const struct config_connector *k)
{
	const struct config_addr *a = &k->listen;

	if (a->kind != ADDR_TCP) {
		fprintf(stderr, "cluster-redirect: connector %s listens on a unix socket; nftables "
		    "can only redirect to a TCP port (listen = 127.0.0.1:PORT)\n", k->name);
		return NULL;
	}
	if (a->sslen == 0)
		return "ipv4";     /* localhost */
	if (a->ss.ss_family == AF_INET &&
	    ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == htonl(INADDR_LOOPBACK))
		return "ipv4";
	if (a->ss.ss_family == AF_INET6 &&
	    IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr))
		return "ipv6";
	/* REDIRECT sends local connections to 127.0.0.1 or ::1, nowhere else. */
	fprintf(stderr, "cluster-redirect: connector %s must listen on 127.0.0.1 or [::1] for a "
	    "redirect to reach it (listen = %s:%u)\n", k->name, a->host, a->port);
	return NULL;
}

/* Fills maps from the options and the configuration; returns the count or -1. */
static int
cr_maps(const struct cr_opts *o, const struct config *cfg, struct cr_map *maps)
{
	size_t n = 0, ntransparent = 0;
	const struct config_connector *only = NULL;

	for (size_t i = 0; i < cfg->n_connectors; i++)
		if (cfg->connectors[i].transparent) {
			ntransparent++;
			only = &cfg->connectors[i];
		}
	if (ntransparent == 0) {
		fprintf(stderr, "cluster-redirect: %s has no connector with 'transparent = yes'; "
		    "add one (see docs/replication-and-cluster.md)\n", cfg->path);
		return -1;
	}
	for (size_t i = 0; i < o->co_nredirect; i++) {
		const char *r = o->co_redirect[i], *colon = strchr(r, ':');
		const struct config_connector *k;
		if (colon == NULL || colon == r || colon[1] == '\0') {
			fprintf(stderr, "cluster-redirect: --redirect '%s': expected CONNECTOR:PORTS\n",
			    r);
			return -1;
		}
		if ((k = cr_connector(cfg, r, (size_t)(colon - r))) == NULL || !k->transparent) {
			fprintf(stderr, "cluster-redirect: --redirect '%s': no transparent connector "
			    "'%.*s' in %s\n", r, (int)(colon - r), r, cfg->path);
			return -1;
		}
		memset(&maps[n], 0, sizeof(maps[n]));
		maps[n].cm_conn = k;
		if (cr_parse_ports(colon + 1, &maps[n]) == -1)
			return -1;
		n++;
	}
	if (o->co_ports != NULL) {
		if (ntransparent != 1) {
			fprintf(stderr, "cluster-redirect: %zu transparent connectors: say which one "
			    "takes which ports with --redirect NAME:PORTS\n", ntransparent);
			return -1;
		}
		memset(&maps[n], 0, sizeof(maps[n]));
		maps[n].cm_conn = only;
		if (cr_parse_ports(o->co_ports, &maps[n]) == -1)
			return -1;
		n++;
	}
	if (n > 0)
		return (int)n;
	/* Nothing said: each transparent connector takes its namesake listener's port. */
	for (size_t i = 0; i < cfg->n_connectors; i++) {
		const struct config_connector *k = &cfg->connectors[i];
		const struct config_listener *l = NULL;
		if (!k->transparent)
			continue;
		for (size_t j = 0; j < cfg->n_listeners; j++)
			if (strcmp(cfg->listeners[j].name, k->name) == 0)
				l = &cfg->listeners[j];
		if (l == NULL || l->listen.kind != ADDR_TCP) {
			fprintf(stderr, "cluster-redirect: which ports should connector %s take? Name "
			    "a TCP listener like it ([listener %s], the peers' bus port) or pass "
			    "--redirect %s:PORT\n", k->name, k->name, k->name);
			return -1;
		}
		memset(&maps[n], 0, sizeof(maps[n]));
		maps[n].cm_conn = k;
		maps[n].cm_ports[0] = l->listen.port;
		maps[n].cm_nports = 1;
		n++;
	}
	return (int)n;
}

/* The nft script: create-then-delete makes the delete succeed, then the table is rebuilt. */
static int
cr_ruleset(const struct cr_opts *o, const struct config *cfg, const struct cr_map *maps,
    size_t n, char *out, size_t outlen)
{
	const char *who = o->co_only_user != NULL ? o->co_only_user : cfg->user;
	struct passwd *pw = getpwnam(who);
	size_t used = 0;
	int r;

	if (pw == NULL) {
		fprintf(stderr, "cluster-redirect: user '%s' does not exist%s\n", who,
		    o->co_only_user != NULL ? "" : " (the workers' user from [global] user)");
		return -1;
	}
#define CR_PUT(...) do { \
	r = snprintf(out + used, outlen - used, __VA_ARGS__); \
	if (r < 0 || (size_t)r >= outlen - used) \
		goto too_long; \
	used += (size_t)r; \
} while (0)
	CR_PUT("# written by redoubt cluster-redirect from %s\n", cfg->path);
	CR_PUT("table inet " CR_TABLE " {}\ndelete table inet " CR_TABLE "\n");
	CR_PUT("table inet " CR_TABLE " {\n\tchain output {\n"
	    "\t\ttype nat hook output priority -100; policy accept;\n");
	if (o->co_only_user != NULL)
		CR_PUT("\t\tmeta skuid != %u return comment \"only %s's connections\"\n",
		    (unsigned)pw->pw_uid, who);
	else
		CR_PUT("\t\tmeta skuid %u return comment \"redoubt workers dial peers "
		    "themselves\"\n", (unsigned)pw->pw_uid);
	for (size_t i = 0; i < n; i++) {
		const char *fam = cr_family(maps[i].cm_conn);
		if (fam == NULL)
			return -1;
		CR_PUT("\t\tmeta nfproto %s tcp dport { ", fam);
		for (size_t j = 0; j < maps[i].cm_nports; j++)
			CR_PUT("%s%u", j > 0 ? ", " : "", maps[i].cm_ports[j]);
		CR_PUT(" } redirect to :%u comment \"connector %s\"\n",
		    maps[i].cm_conn->listen.port, maps[i].cm_conn->name);
	}
	CR_PUT("\t}\n}\n");
#undef CR_PUT
	return 0;
too_long:
	fprintf(stderr, "cluster-redirect: ruleset longer than %d bytes\n", CR_RULESET_MAX);
	return -1;
}

/*
 * Runs nft with args, feeding it input (may be NULL), its output discarded when quiet;
 * returns its exit status or -1.
 */
static int
cr_nft(char *const args[], const char *input, int quiet)
{
	int pfd[2] = { -1, -1 }, status;
	pid_t pid;

	if (input != NULL && pipe(pfd) == -1) {
		fprintf(stderr, "cluster-redirect: pipe: %s\n", strerror(errno));
		return -1;
	}
	if ((pid = fork()) == -1) {
		fprintf(stderr, "cluster-redirect: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		if (input != NULL) {
			dup2(pfd[0], STDIN_FILENO);
			close(pfd[0]);
			close(pfd[1]);
		}
		if (quiet) {
			int null = open("/dev/null", O_WRONLY);
			if (null != -1) {
				dup2(null, STDOUT_FILENO);
				dup2(null, STDERR_FILENO);
				close(null);
			}
		}
		/* Root's PATH may lack sbin (su without -, sudo secure_path aside). */
		execvp("nft", args);
		execv("/usr/sbin/nft", args);
		fprintf(stderr, "cluster-redirect: cannot run nft: %s (apt-get install nftables)\n",
		    strerror(errno));
		_exit(127);
	}
	if (input != NULL) {
		size_t len = strlen(input), off = 0;
		close(pfd[0]);
		signal(SIGPIPE, SIG_IGN);
		while (off < len) {
			ssize_t w = write(pfd[1], input + off, len - off);
			if (w == -1 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		close(pfd[1]);
	}
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int
cr_parse_args(int argc, char **argv, struct cr_opts *o)
{
	enum { OPT_REDIRECT = 256, OPT_PORTS, OPT_ONLY_USER, OPT_REMOVE, OPT_CHECK, OPT_DRY };
	static const struct option longopts[] = {
		{ "config",    required_argument, NULL, 'c' },
		{ "redirect",  required_argument, NULL, OPT_REDIRECT },
		{ "ports",     required_argument, NULL, OPT_PORTS },
		{ "bus-ports", required_argument, NULL, OPT_PORTS },
		{ "only-user", required_argument, NULL, OPT_ONLY_USER },
		{ "remove",    no_argument,       NULL, OPT_REMOVE },
		{ "check",     no_argument,       NULL, OPT_CHECK },
		{ "dry-run",   no_argument,       NULL, OPT_DRY },
		{ "help",      no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int opt, nactions = 0;

	memset(o, 0, sizeof(*o));
	o->co_config = CR_DEFAULT_CONFIG;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':           o->co_config = optarg; break;
		case OPT_PORTS:     o->co_ports = optarg; break;
		case OPT_ONLY_USER: o->co_only_user = optarg; break;
		case OPT_REMOVE:    o->co_action = CR_REMOVE; nactions++; break;
		case OPT_CHECK:     o->co_action = CR_CHECK; nactions++; break;
		case OPT_DRY:       o->co_action = CR_PRINT; nactions++; break;
		case OPT_REDIRECT:
			if (o->co_nredirect == CR_MAPS_MAX) {
				fprintf(stderr, "cluster-redirect: too many --redirect options\n");
				return -1;
			}
			o->co_redirect[o->co_nredirect++] = optarg;
			break;
		case 'h':
			cr_usage(stdout);
			exit(0);
		default:
			cr_usage(stderr);
			return -1;
		}
	}
	if (optind != argc || nactions > 1) {
		cr_usage(stderr);
		return -1;
	}
	return 0;
}

int
cmd_cluster_redirect(int argc, char **argv)
{
	static char *const nft_remove[] = { "nft", "delete", "table", "inet", CR_TABLE, NULL };
	static char *const nft_list[] = { "nft", "list", "table", "inet", CR_TABLE, NULL };
	static char *const nft_load[] = { "nft", "-f", "-", NULL };
	struct cr_map maps[CR_MAPS_MAX];
	char err[CONFIG_ERR_MAX], *ruleset = NULL;
	struct config *cfg = NULL;
	struct cr_opts o;
	int n, rc = EXIT_CONFIG;

	if (cr_parse_args(argc, argv, &o) == -1)
		return EXIT_USAGE;
	log_init("cluster-redirect", LOG_LVL_WARN);
	if (o.co_action == CR_REMOVE) {
		/* Removing needs no configuration: the package's removal script may have none. */
		if (cr_nft(nft_list, NULL, 1) != 0) {
			printf("cluster-redirect: no rules installed (table inet " CR_TABLE ")\n");
			return 0;
		}
		if (cr_nft(nft_remove, NULL, 0) != 0) {
			fprintf(stderr, "cluster-redirect: nft could not delete table inet " CR_TABLE
			    "\n");
			return 1;
		}
		printf("cluster-redirect: removed table inet " CR_TABLE "\n");
		return 0;
	}
	if (o.co_action == CR_CHECK) {
		if (cr_nft(nft_list, NULL, 1) != 0) {
			printf("cluster-redirect: no rules installed (table inet " CR_TABLE ")\n");
			return 1;
		}
		return cr_nft(nft_list, NULL, 0) == 0 ? 0 : 1;
	}
	if (config_load(o.co_config, &cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s\n", err);
		return EXIT_CONFIG;
	}
	if ((ruleset = malloc(CR_RULESET_MAX)) == NULL ||
	    (n = cr_maps(&o, cfg, maps)) == -1 ||
	    cr_ruleset(&o, cfg, maps, (size_t)n, ruleset, CR_RULESET_MAX) == -1)
		goto out;
	if (o.co_action == CR_PRINT) {
		fputs(ruleset, stdout);
		rc = 0;
		goto out;
	}
	if (cr_nft(nft_load, ruleset, 0) != 0) {
		fprintf(stderr, "cluster-redirect: nft refused the ruleset (run with --dry-run to "
		    "see it; needs root and the nf_nat module)\n");
		rc = 1;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		printf("cluster-redirect: tcp ports");
		for (size_t j = 0; j < maps[i].cm_nports; j++)
			printf(" %u", maps[i].cm_ports[j]);
		printf(" -> connector %s (%s:%u)\n", maps[i].cm_conn->name,
		    maps[i].cm_conn->listen.host, maps[i].cm_conn->listen.port);
	}
	rc = 0;
out:
	free(ruleset);
	config_free(cfg);
	return rc;
}
