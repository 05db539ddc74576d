/*
 * `redoubt cert dev`: a throw-away CA plus node and client certificates, so that a developer
 * (and `make demo`, and the system tests) can run redoubt with mutual TLS in one command.
 *
 * Everything is made in memory first and written only when all of it exists, so a failure
 * to generate leaves nothing behind; a failure while writing removes what this run wrote.
 * Keys are created 0600 with O_EXCL | O_NOFOLLOW relative to the opened directory, so they
 * are never readable by others (whatever the umask) and a planted symlink is not followed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "cli/cli.h"
#include "common/x509_make.h"

#define CERT_DEV_NAMES_MAX     32    /* --name options; more is a mistake, not a use case */
#define CERT_DEV_DAYS_DEFAULT  90    /* days a leaf is valid; the CA lives twice as long */
#define CERT_DEV_DAYS_MAX      3650  /* days; ten years is already far beyond "development" */
#define CERT_DEV_CA_ID_BYTES   8     /* random bytes (16 hex digits) that tell two dev CAs apart */
#define CERT_DEV_MODE_KEY      0600
#define CERT_DEV_MODE_CERT     0644
#define CERT_DEV_MODE_DIR      0755

#define CERT_DEV_PREFIX        "redoubt cert dev"

/* The files of one run, in the order they are written. */
enum cert_dev_file {
	CERT_DEV_CA_KEY = 0,
	CERT_DEV_CA_CRT,
	CERT_DEV_NODE_KEY,
	CERT_DEV_NODE_CRT,
	CERT_DEV_CLIENT_KEY,
	CERT_DEV_CLIENT_CRT,
	CERT_DEV_NFILES,
};

static const char *const cert_dev_filenames[CERT_DEV_NFILES] = {
	[CERT_DEV_CA_KEY] = "ca.key",         [CERT_DEV_CA_CRT] = "ca.crt",
	[CERT_DEV_NODE_KEY] = "node.key",     [CERT_DEV_NODE_CRT] = "node.crt",
	[CERT_DEV_CLIENT_KEY] = "client.key", [CERT_DEV_CLIENT_CRT] = "client.crt",
};

struct cert_dev_opts {
	const char             *cdo_dir;
	const char             *cdo_names[CERT_DEV_NAMES_MAX];
	size_t                  cdo_nnames;
	enum x509_make_keytype  cdo_keytype;
	long                    cdo_days;
	const char             *cdo_client;
	int                     cdo_force;
};

/* Keys and certificates of one run; [i] of keys and certs belong together. */
enum cert_dev_who { CERT_DEV_CA = 0, CERT_DEV_NODE, CERT_DEV_CLIENT, CERT_DEV_NWHO };

struct cert_dev_set {
	EVP_PKEY *cds_key[CERT_DEV_NWHO];
	X509     *cds_cert[CERT_DEV_NWHO];
};

/* The output directory, and which files this run created (removed again on failure). */
struct cert_dev_out {
	const char *cdt_dir;
	int         cdt_dirfd;
	int         cdt_created[CERT_DEV_NFILES];
};

static void
cert_dev_usage(FILE *f)
{
	fprintf(f,
	    "usage: redoubt cert dev --dir DIR [--name HOST]... [--key-type TYPE] [--days N]\n"
	    "                        [--client-name NAME] [--force]\n"
	    "\n"
	    "Makes a development CA (ca.crt, ca.key), a node certificate for servers and\n"
	    "connectors (node.crt, node.key) and a client certificate (client.crt, client.key).\n"
	    "\n"
	    "  --dir DIR            where to write; created (mode 0755) if missing\n"
	    "  --name HOST          a name of the node: IP address or DNS name; repeatable; the\n"
	    "                       first is the CN (default: localhost, 127.0.0.1, ::1)\n"
	    "  --key-type TYPE      node and client key: p256 (default), p384, rsa2048, rsa3072,\n"
	    "                       rsa4096; the CA key is always P-256\n"
	    "  --days N             leaf lifetime, 1..%d (default %d); the CA gets 2 x N\n"
	    "  --client-name NAME   CN and DNS name of the client certificate (default: client)\n"
	    "  --force              replace existing files\n",
	    CERT_DEV_DAYS_MAX, CERT_DEV_DAYS_DEFAULT);
}

static int
cert_dev_parse_days(const char *s, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1 || v > CERT_DEV_DAYS_MAX) {
		fprintf(stderr, CERT_DEV_PREFIX ": --days '%s': expected a whole number of days "
		    "from 1 to %d\n", s, CERT_DEV_DAYS_MAX);
		return -1;
	}
	*out = v;
	return 0;
}

static int
cert_dev_add_name(struct cert_dev_opts *o, const char *name)
{
	if (!x509_make_name_valid(name)) {
		fprintf(stderr, CERT_DEV_PREFIX ": --name '%s': not an IP address or DNS name "
		    "(letters, digits, '-', '_', dots; an optional leading '*.')\n", name);
		return -1;
	}
	/* A repeated name adds nothing to the certificate; drop it rather than complain. */
	for (size_t i = 0; i < o->cdo_nnames; i++)
		if (strcasecmp(o->cdo_names[i], name) == 0)
			return 0;
	if (o->cdo_nnames >= CERT_DEV_NAMES_MAX) {
		fprintf(stderr, CERT_DEV_PREFIX ": more than %d --name options\n",
		    CERT_DEV_NAMES_MAX);
		return -1;
	}
	o->cdo_names[o->cdo_nnames++] = name;
	return 0;
}

/* Cross-option checks and defaults, after every option has been read. */
static int
cert_dev_finish_opts(struct cert_dev_opts *o)
{
	static const char *const defaults[] = { "localhost", "127.0.0.1", "::1" };

	if (o->cdo_dir == NULL || o->cdo_dir[0] == '\0') {
		fprintf(stderr, CERT_DEV_PREFIX ": --dir DIR is required\n");
		return -1;
	}
	if (o->cdo_nnames == 0)
		for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
			o->cdo_names[o->cdo_nnames++] = defaults[i];
	if (strlen(o->cdo_names[0]) > X509_MAKE_CN_MAX) {
		fprintf(stderr, CERT_DEV_PREFIX ": the first --name becomes the CN and may have at "
		    "most %d characters; put a shorter name first\n", X509_MAKE_CN_MAX);
		return -1;
	}
	if (!x509_make_name_valid(o->cdo_client) || strlen(o->cdo_client) > X509_MAKE_CN_MAX) {
		fprintf(stderr, CERT_DEV_PREFIX ": --client-name '%s': expected a DNS-style name "
		    "of at most %d characters\n", o->cdo_client, X509_MAKE_CN_MAX);
		return -1;
	}
	return 0;
}

/* Reports one bad option; getopt's own messages are off so they all read the same. */
static void
cert_dev_bad_option(int c, int argc, char **argv)
{
	const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";

	if (c == ':')
		fprintf(stderr, CERT_DEV_PREFIX ": option '%s' needs a value\n", arg);
	else if (optopt > 0 && optopt < 256)   /* an unknown short option */
		fprintf(stderr, CERT_DEV_PREFIX ": unknown option '-%c'\n", optopt);
	else if (optopt != 0)                  /* a known long option, e.g. --force=yes */
		fprintf(stderr, CERT_DEV_PREFIX ": option '%s' takes no value\n", arg);
	else
		fprintf(stderr, CERT_DEV_PREFIX ": unknown option '%s'\n", arg);
}

/* argv[0] is "dev".  Returns 0, 1 for --help (exit 0), or -1 for a usage error. */
static int
cert_dev_parse(int argc, char **argv, struct cert_dev_opts *o)
{
	/* Long-only options get values above any char, so optopt tells the two kinds apart. */
	enum { OPT_DIR = 256, OPT_NAME, OPT_KEYTYPE, OPT_DAYS, OPT_CLIENT, OPT_FORCE, OPT_HELP };
	static const struct option longopts[] = {
		{ "dir",         required_argument, NULL, OPT_DIR },
		{ "name",        required_argument, NULL, OPT_NAME },
		{ "key-type",    required_argument, NULL, OPT_KEYTYPE },
		{ "days",        required_argument, NULL, OPT_DAYS },
		{ "client-name", required_argument, NULL, OPT_CLIENT },
		{ "force",       no_argument,       NULL, OPT_FORCE },
		{ "help",        no_argument,       NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int c, err = 0;

	memset(o, 0, sizeof(*o));
	o->cdo_keytype = X509_MAKE_P256;
	o->cdo_days = CERT_DEV_DAYS_DEFAULT;
	o->cdo_client = "client";
	/* glibc: optind = 0 re-initialises getopt fully, so a second call in one process works. */
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_DIR:     o->cdo_dir = optarg; break;
		case OPT_NAME:    err |= cert_dev_add_name(o, optarg); break;
		case OPT_DAYS:    err |= cert_dev_parse_days(optarg, &o->cdo_days); break;
		case OPT_CLIENT:  o->cdo_client = optarg; break;
		case OPT_FORCE:   o->cdo_force = 1; break;
		case 'h':
		case OPT_HELP:    return 1;
		case OPT_KEYTYPE:
			if (x509_make_keytype_parse(optarg, &o->cdo_keytype) == -1) {
				fprintf(stderr, CERT_DEV_PREFIX ": --key-type '%s': expected p256, "
				    "p384, rsa2048, rsa3072 or rsa4096\n", optarg);
				err = -1;
			}
			break;
		default:
			cert_dev_bad_option(c, argc, argv);
			err = -1;
			break;
		}
	}
	if (err == 0 && optind < argc) {
		fprintf(stderr, CERT_DEV_PREFIX ": unexpected argument '%s'\n", argv[optind]);
		err = -1;
	}
	return err != 0 ? -1 : cert_dev_finish_opts(o);
}

/* mkdir -p, each new directory 0755 whatever the umask; returns 0 or -1 (reported). */
static int
cert_dev_mkdirs(const char *dir)
{
	char path[PATH_MAX];
	size_t len = strlen(dir);

	if (len >= sizeof(path)) {
		fprintf(stderr, CERT_DEV_PREFIX ": --dir: path longer than %zu bytes\n",
		    sizeof(path) - 1);
		return -1;
	}
	memcpy(path, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		path[i] = '\0';
		if (mkdir(path, CERT_DEV_MODE_DIR) == 0) {
			if (chmod(path, CERT_DEV_MODE_DIR) == -1)
				goto fail;
		} else if (errno != EEXIST) {
			goto fail;
		}
		path[i] = dir[i];
	}
	return 0;
fail:
	fprintf(stderr, CERT_DEV_PREFIX ": cannot create directory %s: %s\n", path,
	    strerror(errno));
	return -1;
}

static int
cert_dev_open_dir(struct cert_dev_out *out, const char *dir)
{
	memset(out, 0, sizeof(*out));
	out->cdt_dir = dir;
	out->cdt_dirfd = -1;
	if (cert_dev_mkdirs(dir) == -1)
		return -1;
	out->cdt_dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (out->cdt_dirfd == -1) {
		fprintf(stderr, CERT_DEV_PREFIX ": cannot open directory %s: %s\n", dir,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Without --force, refuses if any of the files exists (a dangling symlink counts), before
 * anything is generated or written, so a refused run changes nothing.
 */
static int
cert_dev_check_free(const struct cert_dev_out *out)
{
	struct stat st;

	for (size_t i = 0; i < CERT_DEV_NFILES; i++) {
		if (fstatat(out->cdt_dirfd, cert_dev_filenames[i], &st, AT_SYMLINK_NOFOLLOW) == 0) {
			fprintf(stderr, CERT_DEV_PREFIX ": %s/%s already exists; remove it or pass "
			    "--force to replace all six files\n", out->cdt_dir, cert_dev_filenames[i]);
			return -1;
		}
		if (errno != ENOENT) {
			fprintf(stderr, CERT_DEV_PREFIX ": cannot check %s/%s: %s\n", out->cdt_dir,
			    cert_dev_filenames[i], strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* CN "redoubt development CA <hex>": two dev CAs never share a subject, so never mix up. */
static int
cert_dev_ca_cn(char *buf, size_t size)
{
	unsigned char id[CERT_DEV_CA_ID_BYTES];
	int n = snprintf(buf, size, "redoubt development CA ");

	if (RAND_bytes(id, sizeof(id)) != 1 || n < 0 || (size_t)n + 2 * sizeof(id) >= size)
		return -1;
	for (size_t i = 0; i < sizeof(id); i++)
		snprintf(buf + n + 2 * i, size - (size_t)n - 2 * i, "%02x", id[i]);
	return 0;
}

static void
cert_dev_set_free(struct cert_dev_set *set)
{
	for (size_t i = 0; i < CERT_DEV_NWHO; i++) {
		EVP_PKEY_free(set->cds_key[i]);
		X509_free(set->cds_cert[i]);
	}
	memset(set, 0, sizeof(*set));
}

/* Makes all three keys and certificates; on failure the caller frees what exists. */
static int
cert_dev_generate(const struct cert_dev_opts *o, struct cert_dev_set *set)
{
	const char *client_names[1] = { o->cdo_client };
	char ca_cn[X509_MAKE_CN_MAX + 1];
	struct x509_make_req req;

	if (cert_dev_ca_cn(ca_cn, sizeof(ca_cn)) == -1)
		return -1;
	/* The CA is P-256 whatever --key-type says: it only signs three certificates. */
	if ((set->cds_key[CERT_DEV_CA] = x509_make_key(X509_MAKE_P256)) == NULL ||
	    (set->cds_key[CERT_DEV_NODE] = x509_make_key(o->cdo_keytype)) == NULL ||
	    (set->cds_key[CERT_DEV_CLIENT] = x509_make_key(o->cdo_keytype)) == NULL)
		return -1;
	req = (struct x509_make_req){ .xr_role = X509_MAKE_ROLE_CA, .xr_cn = ca_cn,
	    .xr_days = 2 * o->cdo_days, .xr_key = set->cds_key[CERT_DEV_CA] };
	if ((set->cds_cert[CERT_DEV_CA] = x509_make_cert(&req)) == NULL)
		return -1;
	req = (struct x509_make_req){ .xr_role = X509_MAKE_ROLE_NODE, .xr_cn = o->cdo_names[0],
	    .xr_names = o->cdo_names, .xr_nnames = o->cdo_nnames, .xr_days = o->cdo_days,
	    .xr_key = set->cds_key[CERT_DEV_NODE], .xr_issuer = set->cds_cert[CERT_DEV_CA],
	    .xr_issuer_key = set->cds_key[CERT_DEV_CA] };
	if ((set->cds_cert[CERT_DEV_NODE] = x509_make_cert(&req)) == NULL)
		return -1;
	req.xr_role = X509_MAKE_ROLE_CLIENT;
	req.xr_cn = o->cdo_client;
	req.xr_names = client_names;
	req.xr_nnames = 1;
	req.xr_key = set->cds_key[CERT_DEV_CLIENT];
	if ((set->cds_cert[CERT_DEV_CLIENT] = x509_make_cert(&req)) == NULL)
		return -1;
	return 0;
}

static int
cert_dev_write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Creates one file with exactly `mode` (fchmod: the umask must not widen or narrow it) and
 * writes data.  --force removes the old file first instead of truncating it, so an old key
 * that was 0644 does not pass its mode on and a symlink in its place is replaced, not followed.
 */
static int
cert_dev_write_file(struct cert_dev_out *out, enum cert_dev_file f, int force,
    const char *data, size_t len, mode_t mode)
{
	const char *name = cert_dev_filenames[f];
	int fd, saved;

	if (force && unlinkat(out->cdt_dirfd, name, 0) == -1 && errno != ENOENT)
		goto fail;
	fd = openat(out->cdt_dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    mode);
	if (fd == -1)
		goto fail;
	out->cdt_created[f] = 1;
	if (fchmod(fd, mode) == -1 || cert_dev_write_all(fd, data, len) == -1 || fsync(fd) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		goto fail;
	}
	if (close(fd) == -1)
		goto fail;
	return 0;
fail:
	fprintf(stderr, CERT_DEV_PREFIX ": cannot write %s/%s: %s\n", out->cdt_dir, name,
	    errno == EEXIST ? "file appeared meanwhile (pass --force to replace it)" :
	    strerror(errno));
	return -1;
}

/* PEM in a memory BIO; its buffer is cleansed when freed (BUF_MEM_free clears), so keys too. */
static int
cert_dev_write_pem(struct cert_dev_out *out, enum cert_dev_file f, int force, X509 *cert,
    EVP_PKEY *key)
{
	BIO *bio;
	char *data;
	long len;
	int ok, r = -1;

	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		goto out;
	ok = key != NULL ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) :
	    PEM_write_bio_X509(bio, cert);
	if (ok != 1 || (len = BIO_get_mem_data(bio, &data)) <= 0) {
		fprintf(stderr, CERT_DEV_PREFIX ": cannot encode %s\n", cert_dev_filenames[f]);
		goto out;
	}
	r = cert_dev_write_file(out, f, force, data, (size_t)len,
	    key != NULL ? CERT_DEV_MODE_KEY : CERT_DEV_MODE_CERT);
out:
	BIO_free(bio);
	return r;
}

/* Writes the six files; on any failure removes the ones this run created. */
static int
cert_dev_write_set(struct cert_dev_out *out, const struct cert_dev_set *set, int force)
{
	for (size_t i = 0; i < CERT_DEV_NFILES; i++) {
		/* Files alternate key, certificate for CA, node, client (enum cert_dev_file). */
		enum cert_dev_who who = (enum cert_dev_who)(i / 2);
		int is_key = i % 2 == 0;

		if (cert_dev_write_pem(out, (enum cert_dev_file)i, force, set->cds_cert[who],
		    is_key ? set->cds_key[who] : NULL) == -1)
			goto undo;
	}
	/* The directory entries should survive a crash as much as the contents do. */
	if (fsync(out->cdt_dirfd) == -1) {
		fprintf(stderr, CERT_DEV_PREFIX ": cannot sync directory %s: %s\n", out->cdt_dir,
		    strerror(errno));
		goto undo;
	}
	return 0;
undo:
	for (size_t i = 0; i < CERT_DEV_NFILES; i++)
		if (out->cdt_created[i] && unlinkat(out->cdt_dirfd, cert_dev_filenames[i], 0) == -1)
			fprintf(stderr, CERT_DEV_PREFIX ": cannot remove partial %s/%s: %s\n",
			    out->cdt_dir, cert_dev_filenames[i], strerror(errno));
	return -1;
}

static void
cert_dev_report(const struct cert_dev_opts *o)
{
	const char *d = o->cdo_dir;

	printf("wrote %s/ca.crt and %s/ca.key (development CA, P-256, %ld days)\n", d, d,
	    2 * o->cdo_days);
	printf("wrote %s/node.crt and %s/node.key (%s, %ld days, names:", d, d,
	    x509_make_keytype_name(o->cdo_keytype), o->cdo_days);
	for (size_t i = 0; i < o->cdo_nnames; i++)
		printf(" %s", o->cdo_names[i]);
	printf(")\n");
	printf("wrote %s/client.crt and %s/client.key (%s, %ld days, name: %s)\n", d, d,
	    x509_make_keytype_name(o->cdo_keytype), o->cdo_days, o->cdo_client);
	fflush(stdout);
	fprintf(stderr,
	    "\n"
	    "WARNING: these are DEVELOPMENT certificates, NOT FOR PRODUCTION.\n"
	    "WARNING: the CA key %s/ca.key sits beside them; anyone who can read it can\n"
	    "WARNING: make certificates that every holder of ca.crt trusts.  Never use\n"
	    "WARNING: them, or trust this ca.crt, in production.\n"
	    "\n", d);
}

int
cmd_cert(int argc, char **argv)
{
	struct cert_dev_opts opts;
	struct cert_dev_set set = { 0 };
	struct cert_dev_out out;
	int r;

	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		cert_dev_usage(stdout);
		return 0;
	}
	if (argc < 2 || strcmp(argv[1], "dev") != 0) {
		fprintf(stderr, "redoubt cert: expected 'dev' (the only kind of certificate "
		    "redoubt makes)\n");
		cert_dev_usage(stderr);
		return EXIT_USAGE;
	}
	if ((r = cert_dev_parse(argc - 1, argv + 1, &opts)) == 1) {
		cert_dev_usage(stdout);
		return 0;
	}
	if (r == -1) {
		fprintf(stderr, "see 'redoubt cert dev --help'\n");
		return EXIT_USAGE;
	}
	r = 1;
	if (cert_dev_open_dir(&out, opts.cdo_dir) == -1 ||
	    (!opts.cdo_force && cert_dev_check_free(&out) == -1))
		goto done;
	if (cert_dev_generate(&opts, &set) == -1) {
		fprintf(stderr, CERT_DEV_PREFIX ": cannot make the keys and certificates "
		    "(see the messages above); nothing was written\n");
		goto done;
	}
	if (cert_dev_write_set(&out, &set, opts.cdo_force) == -1)
		goto done;
	cert_dev_report(&opts);
	r = 0;
done:
	cert_dev_set_free(&set);
	if (out.cdt_dirfd != -1)
		close(out.cdt_dirfd);
	return r;
}
