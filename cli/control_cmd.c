/*
 * `redoubt rotate` and `redoubt status`: clients of keyd's control socket (the protocol is in
 * keyd/control.h).  The socket is --socket PATH, else the control-socket of -c FILE, else
 * that of /etc/redoubt/redoubt.conf when it can be read, else the built-in default.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/evloop.h"
#include "keyd/control.h"
#include "policy/config.h"

#define CTL_PACKAGE_CONFIG "/etc/redoubt/redoubt.conf"

struct ctl_opts {
	const char *socket;
	const char *config;
	int         json;
	int         revoke_previous;
	int         audit;
	int         tickets;
};

/* The socket path; 0, or -1 with a message. */
static int
ctl_socket_path(const struct ctl_opts *o, char *out, size_t outlen)
{
	struct config *cfg = NULL;
	char err[CONFIG_ERR_MAX];
	const char *conf = o->config;
	int rc;

	if (o->socket != NULL) {
		snprintf(out, outlen, "%s", o->socket);
		return 0;
	}
	if (conf == NULL && access(CTL_PACKAGE_CONFIG, R_OK) == 0)
		conf = CTL_PACKAGE_CONFIG;
	/* No file at all: an empty configuration has every default, control-socket too. */
	rc = conf != NULL ? config_load(conf, &cfg, err, sizeof(err)) :
	    config_parse("(defaults)", "", 0, &cfg, err, sizeof(err));
	if (rc == -1) {
		fprintf(stderr, "redoubt: %s\n", err);
		return -1;
	}
	snprintf(out, outlen, "%s", cfg->control_socket);
	config_free(cfg);
	return 0;
}

static int
ctl_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path) >= (int)sizeof(sun.sun_path)) {
		fprintf(stderr, "redoubt: control socket path too long: %s\n", path);
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		int e = errno;
		fprintf(stderr, "redoubt: cannot connect to keyd's control socket %s: %s (%s)\n",
		    path, strerror(e), e == EACCES ? "run as root or as a member of admin-group" :
		    "is 'redoubt serve' running with this control-socket? use -c FILE or --socket "
		    "PATH");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Waits until fd is ready for events or the deadline passes. */
static int
ctl_wait(int fd, short events, uint64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	uint64_t now = evloop_clock_ms();
	int r;

	if (now >= deadline)
		return -1;
	while ((r = poll(&p, 1, (int)(deadline - now))) == -1 && errno == EINTR)
		;
	return r > 0 ? 0 : -1;
}

/* One request line, one JSON answer.  Returns the answer, or NULL with a message. */
static json_t *
ctl_exchange(const char *path, json_t *req)
{
	uint64_t deadline = evloop_clock_ms() + CONTROL_CLIENT_TIMEOUT_MS;
	char *line = json_dumps(req, JSON_COMPACT), *buf = NULL;
	size_t len, off = 0, cap = 0;
	json_error_t jerr;
	json_t *answer = NULL;
	int fd;

	json_decref(req);
	if (line == NULL || (len = strlen(line)) + 1 > CONTROL_REQUEST_MAX) {
		free(line);
		fprintf(stderr, "redoubt: cannot build the request\n");
		return NULL;
	}
	line[len++] = '\n';
	if ((fd = ctl_connect(path)) == -1) {
		free(line);
		return NULL;
	}
	while (off < len) {
		ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		/* keyd may have refused and closed before reading: its answer says why. */
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	for (off = 0;;) {
		ssize_t n;
		if (off == cap) {
			char *nb;
			if (cap >= CONTROL_RESPONSE_MAX || (nb = realloc(buf, cap + 65536)) == NULL)
				goto io;
			buf = nb;
			cap += 65536;
		}
		if (ctl_wait(fd, POLLIN, deadline) == -1) {
			fprintf(stderr, "redoubt: keyd did not answer within %d s\n",
			    CONTROL_CLIENT_TIMEOUT_MS / 1000);
			goto out;
		}
		n = recv(fd, buf + off, cap - off, 0);
		if (n == -1 && errno == EINTR)
			continue;
		/* keyd closed without reading all we sent (a refusal): what it wrote still counts. */
		if (n == -1 && errno == ECONNRESET && off > 0)
			break;
		if (n < 0)
			goto io;
		if (n == 0)
			break;
		off += (size_t)n;
	}
	if (off == 0) {
		errno = 0;
		goto io;
	}
	answer = json_loadb(buf, off, 0, &jerr);
	if (answer == NULL || !json_is_object(answer)) {
		fprintf(stderr, "redoubt: keyd's answer is not a JSON object: %s\n", jerr.text);
		json_decref(answer);
		answer = NULL;
	}
	goto out;
io:
	fprintf(stderr, "redoubt: control socket %s: %s\n", path, errno != 0 ? strerror(errno) :
	    "connection closed");
out:
	close(fd);
	free(line);
	free(buf);
	return answer;
}

/* keyd refused: say why; exit status 1. */
static int
ctl_failed(const char *cmd, json_t *answer)
{
	const char *err = json_string_value(json_object_get(answer, "error"));

	fprintf(stderr, "redoubt %s: refused: %s\n", cmd, err != NULL ? err : "(no reason given)");
	json_decref(answer);
	return 1;
}

static int
ctl_parse(int argc, char **argv, const char *cmd, struct ctl_opts *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "revoke-previous", no_argument, NULL, 'r' },
		{ "audit", no_argument, NULL, 'a' },
		{ "tickets", no_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	int opt, rotate = strcmp(cmd, "rotate") == 0;

	memset(o, 0, sizeof(*o));
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': o->config = optarg; break;
		case 's': o->socket = optarg; break;
		case 'j': o->json = 1; break;
		case 'r': o->revoke_previous = 1; break;
		case 'a': o->audit = 1; break;
		case 't': o->tickets = 1; break;
		default: return -1;
		}
		if ((!rotate && (opt == 'r' || opt == 'a' || opt == 't')) ||
		    (rotate && opt == 'j'))
			return -1;
	}
	if (optind != argc || (o->config != NULL && o->socket != NULL) ||
	    o->revoke_previous + o->audit + o->tickets > 1)
		return -1;
	return 0;
}

/* ---------- rotate ---------- */

static void
ctl_print_identity(json_t *id)
{
	json_t *a = json_object_get(id, "active"), *p = json_object_get(id, "previous");
	json_t *rv = json_object_get(id, "revoked_generation");
	const char *name = json_string_value(json_object_get(id, "name"));

	if (json_is_true(json_object_get(id, "changed"))) {
		printf("identity %s: generation %lld now active (serial %s, until %s, %lld days "
		    "left)", name, json_integer_value(json_object_get(a, "generation")),
		    json_string_value(json_object_get(a, "serial")),
		    json_string_value(json_object_get(a, "not_after")),
		    json_integer_value(json_object_get(a, "days_left")));
		if (json_is_object(p))
			printf("; generation %lld is previous",
			    json_integer_value(json_object_get(p, "generation")));
		printf("\n");
	} else
		printf("identity %s: unchanged (generation %lld, serial %s)\n", name,
		    json_integer_value(json_object_get(a, "generation")),
		    json_string_value(json_object_get(a, "serial")));
	if (json_is_integer(rv))
		printf("identity %s: generation %lld revoked; its connections were ended\n", name,
		    json_integer_value(rv));
}

int
cmd_rotate(int argc, char **argv)
{
	struct ctl_opts o;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	json_t *answer, *req, *id;
	size_t i;

	if (ctl_parse(argc, argv, "rotate", &o) == -1) {
		fprintf(stderr, "usage: redoubt rotate [--revoke-previous | --tickets | --audit] "
		    "[-c FILE | --socket PATH]\n");
		return EXIT_USAGE;
	}
	if (ctl_socket_path(&o, path, sizeof(path)) == -1)
		return EXIT_CONFIG;
	if (o.audit)
		req = json_pack("{s:s}", "cmd", "reopen-audit");
	else if (o.tickets)
		req = json_pack("{s:s}", "cmd", "rotate-tickets");
	else
		req = json_pack("{s:s, s:b}", "cmd", "rotate", "revoke_previous", o.revoke_previous);
	if ((answer = ctl_exchange(path, req)) == NULL)
		return 1;
	if (!json_is_true(json_object_get(answer, "ok")))
		return ctl_failed("rotate", answer);
	if (o.audit)
		printf("audit log reopened\n");
	else if (o.tickets)
		printf("session-ticket keys rotated; the previous key still decrypts\n");
	json_array_foreach(json_object_get(answer, "identities"), i, id) {
		ctl_print_identity(id);
	}
	json_decref(answer);
	return 0;
}

/* ---------- status ---------- */

static void
ctl_print_generation(const char *label, json_t *g)
{
	if (!json_is_object(g)) {
		printf("  %-9s none\n", label);
		return;
	}
	printf("  %-9s generation %lld  serial %s  connections %lld\n", label,
	    json_integer_value(json_object_get(g, "generation")),
	    json_string_value(json_object_get(g, "serial")),
	    json_integer_value(json_object_get(g, "connections")));
	printf("  %-9s not after %s (%lld days left)\n", "",
	    json_string_value(json_object_get(g, "not_after")),
	    json_integer_value(json_object_get(g, "days_left")));
	printf("  %-9s sha256 %s\n", "", json_string_value(json_object_get(g, "fingerprint")));
}

static void
ctl_print_status(json_t *st)
{
	json_t *v, *w, *g, *t = json_object_get(st, "tickets");
	size_t i, j;

	json_array_foreach(json_object_get(st, "identities"), i, v) {
		printf("identity %s%s\n", json_string_value(json_object_get(v, "name")),
		    json_is_true(json_object_get(v, "expiring")) ? "  (EXPIRES SOON: renew and "
		    "run 'redoubt rotate')" : "");
		ctl_print_generation("active", json_object_get(v, "active"));
		ctl_print_generation("previous", json_object_get(v, "previous"));
	}
	json_array_foreach(json_object_get(st, "workers"), i, w) {
		printf("worker %lld: %s", json_integer_value(json_object_get(w, "index")),
		    json_string_value(json_object_get(w, "state")));
		if (!json_is_true(json_object_get(w, "reported"))) {
			printf(", no report\n");
			continue;
		}
		printf(", %lld connections", json_integer_value(json_object_get(w, "connections")));
		json_array_foreach(json_object_get(w, "generations"), j, g) {
			printf("%s%s/%lld: %lld", j == 0 ? " (" : ", ",
			    json_string_value(json_object_get(g, "identity")),
			    json_integer_value(json_object_get(g, "generation")),
			    json_integer_value(json_object_get(g, "connections")));
		}
		printf("%s\n", json_array_size(json_object_get(w, "generations")) > 0 ? ")" : "");
	}
	printf("session tickets: current key %lld s old, ", json_integer_value(
	    json_object_get(t, "current_age_s")));
	if (json_is_integer(json_object_get(t, "previous_age_s")))
		printf("previous key %lld s old (decrypt only), ", json_integer_value(
		    json_object_get(t, "previous_age_s")));
	printf("lifetime %lld s\n", json_integer_value(json_object_get(t, "lifetime_s")));
	v = json_object_get(st, "auto_reload");
	printf("auto-reload: %s\n", json_string_value(json_object_get(v, "mode")));
	v = json_object_get(st, "fips");
	if (json_is_object(v))
		printf("fips: %s%s%s\n", json_is_true(json_object_get(v, "active")) ? "active" :
		    "off", json_is_string(json_object_get(v, "provider")) ? ", provider " : "",
		    json_is_string(json_object_get(v, "provider")) ?
		    json_string_value(json_object_get(v, "provider")) : "");
	v = json_object_get(st, "tpm");
	if (json_is_object(v))
		printf("tpm: %s, %lld pending (queue %lld), %lld signatures, %lld timed out\n",
		    json_string_value(json_object_get(v, "tcti")),
		    json_integer_value(json_object_get(v, "pending")),
		    json_integer_value(json_object_get(v, "queue_max")),
		    json_integer_value(json_object_get(v, "signs")),
		    json_integer_value(json_object_get(v, "timeouts")));
	v = json_object_get(st, "last_rotation");
	if (json_is_object(v))
		printf("last rotation: %s (%s): %s: %s\n",
		    json_string_value(json_object_get(v, "time")),
		    json_string_value(json_object_get(v, "source")),
		    json_string_value(json_object_get(v, "outcome")),
		    json_string_value(json_object_get(v, "reason")));
}

int
cmd_status(int argc, char **argv)
{
	struct ctl_opts o;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	json_t *answer;

	if (ctl_parse(argc, argv, "status", &o) == -1) {
		fprintf(stderr, "usage: redoubt status [--json] [-c FILE | --socket PATH]\n");
		return EXIT_USAGE;
	}
	if (ctl_socket_path(&o, path, sizeof(path)) == -1)
		return EXIT_CONFIG;
	if ((answer = ctl_exchange(path, json_pack("{s:s}", "cmd", "status"))) == NULL)
		return 1;
	if (!json_is_true(json_object_get(answer, "ok")))
		return ctl_failed("status", answer);
	if (o.json) {
		char *text = json_dumps(answer, JSON_INDENT(2) | JSON_SORT_KEYS);
		if (text != NULL)
			printf("%s\n", text);
		free(text);
	} else
		ctl_print_status(answer);
	json_decref(answer);
	return 0;
}
