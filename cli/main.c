/*
 * redoubt: privilege-separated TLS for Redis-protocol servers.  One binary; the first
 * argument names the subcommand.  `keyd` and `worker` are the re-executed children of
 * `serve` and refuse to run without the descriptors the supervisor hands them.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

struct command {
	const char *name;
	int (*fn)(int, char **);
	const char *usage;      /* NULL: internal, not listed */
};

static const struct command commands[] = {
	{ "serve",        cmd_serve,        "serve -c FILE [-d]            run the service" },
	{ "check-config", cmd_check_config, "check-config -c FILE          validate a configuration" },
	{ "cert",         cmd_cert,         "cert dev --dir DIR [--name HOST]...  development certificates" },
	{ "rotate",       cmd_rotate,       "rotate [--revoke-previous] [--audit]  reload certificates and keys" },
	{ "status",       cmd_status,       "status [--json]               show identities, generations, connections" },
	{ "audit",        cmd_audit,        "audit verify|show FILE...     check or read the audit log" },
	{ "cluster-redirect", cmd_cluster_redirect, "cluster-redirect [-c FILE] [--remove|--check]  nftables redirect for the cluster bus" },
	{ "tpm",          cmd_tpm,          "tpm create-key|public ...     TPM 2.0 keys (docs/tpm.md)" },
	{ "version",      cmd_version,      "version                       print the version" },
	{ "keyd",         keyd_main,        NULL },
	{ "worker",       worker_main,      NULL },
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: redoubt COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].usage != NULL)
			fprintf(f, "  redoubt %s\n", commands[i].usage);
}

int
cmd_version(int argc, char **argv)
{
	printf("redoubt %s\n", REDOUBT_VERSION);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version(argc - 1, argv + 1);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "redoubt: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
