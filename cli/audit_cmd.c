/*
 * `redoubt audit verify|show`: command lines for the audit verifier and reader.
 *
 * Exit status: 0 intact (verify) / shown (show); 1 tampered (verify names the first
 * problem); 2 a file or the public key unreadable; 64 bad command line.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "audit/record.h"
#include "audit/show.h"
#include "audit/verify.h"
#include "cli/cli.h"

#define AUDIT_EVENTS_MAX 32   /* --event options in one command */

static int
audit_usage(FILE *f)
{
	fprintf(f,
	    "usage: redoubt audit verify FILE... [--pubkey FILE]\n"
	    "       redoubt audit show FILE... [--since T] [--until T] [--event E]...\n"
	    "              [--peer ADDR] [--identity PATTERN] [--outcome success|failure]\n"
	    "              [--json | --csv]\n"
	    "T: RFC 3339 (2026-11-22T19:40:01Z) or YYYY-MM-DD[ HH:MM[:SS]] in UTC; since <= t < until\n"
	    "verify exits 0 when intact, 1 when tampered, 2 when unreadable\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

static int
audit_cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pubkey", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pubkey = NULL;
	int c;

	optind = 0;
	while ((c = getopt_long(argc, argv, "p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			pubkey = optarg;
			break;
		case 'h':
			return audit_usage(stdout);
		default:
			return audit_usage(stderr);
		}
	}
	if (optind >= argc)
		return audit_usage(stderr);
	return audit_verify(argv + optind, (size_t)(argc - optind), pubkey, stdout, stderr);
}

static int
audit_cmd_time(const char *opt, const char *s, int64_t *t)
{
	if (audit_time_parse(s, t) == 0)
		return 0;
	fprintf(stderr, "redoubt audit show: %s '%s': use RFC 3339 (2026-11-22T19:40:01Z) or "
	    "YYYY-MM-DD[ HH:MM[:SS]] (UTC)\n", opt, s);
	return -1;
}

static int
audit_cmd_show(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "event", required_argument, NULL, 'e' },
		{ "peer", required_argument, NULL, 'P' },
		{ "identity", required_argument, NULL, 'i' },
		{ "outcome", required_argument, NULL, 'o' },
		{ "json", no_argument, NULL, 'j' },
		{ "csv", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *events[AUDIT_EVENTS_MAX];
	struct audit_filter f;
	enum audit_show_format fmt = AUDIT_SHOW_TABLE;
	int c;

	memset(&f, 0, sizeof(f));
	f.af_events = events;
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (audit_cmd_time("--since", optarg, &f.af_since) == -1)
				return EXIT_USAGE;
			f.af_has_since = 1;
			break;
		case 'u':
			if (audit_cmd_time("--until", optarg, &f.af_until) == -1)
				return EXIT_USAGE;
			f.af_has_until = 1;
			break;
		case 'e':
			if (f.af_nevents == AUDIT_EVENTS_MAX) {
				fprintf(stderr, "redoubt audit show: at most %d --event options\n",
				    AUDIT_EVENTS_MAX);
				return EXIT_USAGE;
			}
			events[f.af_nevents++] = optarg;
			break;
		case 'P':
			f.af_peer = optarg;
			break;
		case 'i':
			f.af_identity = optarg;
			break;
		case 'o':
			if (strcmp(optarg, "success") != 0 && strcmp(optarg, "failure") != 0) {
				fprintf(stderr, "redoubt audit show: --outcome is success or failure\n");
				return EXIT_USAGE;
			}
			f.af_outcome = optarg;
			break;
		case 'j':
		case 'c':
			if (fmt != AUDIT_SHOW_TABLE) {
				fprintf(stderr, "redoubt audit show: --json and --csv exclude each other\n");
				return EXIT_USAGE;
			}
			fmt = c == 'j' ? AUDIT_SHOW_JSON : AUDIT_SHOW_CSV;
			break;
		case 'h':
			return audit_usage(stdout);
		default:
			return audit_usage(stderr);
		}
	}
	if (optind >= argc)
		return audit_usage(stderr);
	return audit_show(argv + optind, (size_t)(argc - optind), &f, fmt, stdout, stderr);
}

int
cmd_audit(int argc, char **argv)
{
	if (argc < 2)
		return audit_usage(stderr);
	if (strcmp(argv[1], "verify") == 0)
		return audit_cmd_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "show") == 0)
		return audit_cmd_show(argc - 1, argv + 1);
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0)
		return audit_usage(stdout);
	fprintf(stderr, "redoubt audit: unknown subcommand '%s'\n", argv[1]);
	return audit_usage(stderr);
}
