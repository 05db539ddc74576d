/*
 * `redoubt serve -c FILE`: read and check the configuration, resolve the users, bind every
 * socket, then hand over to the supervisor.  Everything that can be wrong with the
 * configuration is reported before any process starts.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/supervisor.h"
#include "common/log.h"

#define SERVE_BACKLOG 4096   /* pending connections per listener (capped by somaxconn) */
#define SERVE_CONTROL_BACKLOG 16      /* pending `redoubt rotate|status` connections */
#define SERVE_CONTROL_MODE    0660    /* root and admin-group; keyd checks callers again */
#define SERVE_RUNDIR_MODE     0755    /* /run/redoubt when we have to create it */
#define SERVE_GRBUF_MAX       16384   /* bytes for getgrnam_r's strings */

/* Removed on the way out; the configuration is gone by then. */
static char serve_control_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

static int
serve_lookup_user(const char *name, const char *key, struct passwd *pw, char *buf,
    size_t buflen)
{
	struct passwd *res = NULL;
	int r = getpwnam_r(name, pw, buf, buflen, &res);

	if (res == NULL) {
		fprintf(stderr, "redoubt: %s '%s' does not exist (%s); create it with "
		    "'useradd --system --no-create-home --shell /usr/sbin/nologin %s' "
		    "(the Debian package does this)\n", key, name,
		    r != 0 ? strerror(r) : "no such user", name);
		return -1;
	}
	return 0;
}

/* Binds one address; unix paths are replaced only when they are stale sockets. */
static int
serve_bind(const struct config_addr *a, const char *what, const char *name)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char addr[300];
	int fd, one = 1;

	config_addr_format(a, addr, sizeof(addr));
	memset(&ss, 0, sizeof(ss));
	if (a->kind == ADDR_UNIX) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
		struct stat st;
		sun->sun_family = AF_UNIX;
		snprintf(sun->sun_path, sizeof(sun->sun_path), "%s", a->path);
		len = sizeof(*sun);
		if (lstat(a->path, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				fprintf(stderr, "redoubt: %s %s: %s exists and is not a socket\n", what,
				    name, a->path);
				return -1;
			}
			(void)unlink(a->path);
		}
	} else {
		if (a->sslen == 0) {
			fprintf(stderr, "redoubt: %s %s: %s is not a numeric address\n", what, name,
			    addr);
			return -1;
		}
		memcpy(&ss, &a->ss, a->sslen);
		len = a->sslen;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		fprintf(stderr, "redoubt: %s %s: socket: %s\n", what, name, strerror(errno));
		return -1;
	}
	if (ss.ss_family != AF_UNIX)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) == -1 || listen(fd, SERVE_BACKLOG) == -1) {
		fprintf(stderr, "redoubt: %s %s: cannot listen on %s: %s\n", what, name, addr,
		    strerror(errno));
		close(fd);
		return -1;
	}
	if (a->kind == ADDR_UNIX && chmod(a->path, 0660) == -1) {
		fprintf(stderr, "redoubt: %s %s: chmod %s: %s\n", what, name, a->path,
		    strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int
serve_bind_all(struct supervisor *s)
{
	const struct config *cfg = s->cfg;
	size_t n = 0;

	s->n_socks = cfg->n_listeners + cfg->n_connectors;
	s->sock_fds = calloc(s->n_socks ? s->n_socks : 1, sizeof(int));
	if (s->sock_fds == NULL)
		return -1;
	for (size_t i = 0; i < cfg->n_listeners; i++, n++)
		if ((s->sock_fds[n] = serve_bind(&cfg->listeners[i].listen, "listener",
		    cfg->listeners[i].name)) == -1)
			return -1;
	for (size_t i = 0; i < cfg->n_connectors; i++, n++)
		if ((s->sock_fds[n] = serve_bind(&cfg->connectors[i].listen, "connector",
		    cfg->connectors[i].name)) == -1)
			return -1;
	return 0;
}

/* A socket file someone still answers on belongs to a running redoubt: never take it over. */
static int
serve_control_in_use(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), r;

	if (fd == -1)
		return 0;
	r = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0;
	close(fd);
	return r;
}

static int
serve_control_dir(const char *path)
{
	char dir[sizeof(serve_control_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, SERVE_RUNDIR_MODE) == -1 && errno != EEXIST) {
		fprintf(stderr, "redoubt: control-socket %s: cannot create %s: %s\n", path, dir,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * keyd's control socket, bound while we are still root so that it belongs to
 * root:admin-group with mode 0660 (keyd, which could not create it in /run, only accepts).
 * Created 0600 and only then opened up, so nobody else connects in between.
 */
static int
serve_bind_control(struct supervisor *s)
{
	const char *path = s->cfg->control_socket;
	struct sockaddr_un sun;
	struct group gr, *res = NULL;
	struct stat st;
	char *grbuf;
	gid_t gid = getegid();
	mode_t old;
	int fd, r;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path) >=
	    (int)sizeof(sun.sun_path) || serve_control_dir(path) == -1)
		return -1;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			fprintf(stderr, "redoubt: control-socket %s exists and is not a socket\n", path);
			return -1;
		}
		if (serve_control_in_use(&sun)) {
			fprintf(stderr, "redoubt: control-socket %s is in use: another redoubt is "
			    "running; stop it or give this one its own control-socket\n", path);
			return -1;
		}
		(void)unlink(path);
	}
	if ((grbuf = malloc(SERVE_GRBUF_MAX)) == NULL)
		return -1;
	if (getgrnam_r(s->cfg->admin_group, &gr, grbuf, SERVE_GRBUF_MAX, &res) == 0 && res != NULL)
		gid = gr.gr_gid;
	else
		log_warnx("admin-group '%s' does not exist: only root can use redoubt rotate and "
		    "redoubt status (create it with 'groupadd --system %s')", s->cfg->admin_group,
		    s->cfg->admin_group);
	free(grbuf);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		fprintf(stderr, "redoubt: control-socket %s: socket: %s\n", path, strerror(errno));
		return -1;
	}
	old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (r == -1 || (geteuid() == 0 && chown(path, 0, gid) == -1) ||
	    chmod(path, SERVE_CONTROL_MODE) == -1 || listen(fd, SERVE_CONTROL_BACKLOG) == -1) {
		fprintf(stderr, "redoubt: control-socket %s: %s (set control-socket in [global] to "
		    "a path in a directory we can write)\n", path, strerror(errno));
		close(fd);
		if (r == 0)
			(void)unlink(path);
		return -1;
	}
	snprintf(serve_control_path, sizeof(serve_control_path), "%s", path);
	s->control_fd = fd;
	return 0;
}

/* The children read the configuration from here: the same bytes, and nothing can change them. */
static int
serve_config_memfd(const char *buf, size_t len)
{
	int fd = memfd_create("redoubt.conf", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	size_t off = 0;

	if (fd == -1)
		return -1;
	while (off < len) {
		ssize_t n = write(fd, buf + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Many connections per worker: two descriptors each. */
static void
serve_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void
serve_usage(void)
{
	fprintf(stderr, "usage: redoubt serve -c FILE [-d]\n");
}

int
cmd_serve(int argc, char **argv)
{
	static struct supervisor sup;
	const char *path = NULL;
	char err[CONFIG_ERR_MAX], *buf = NULL;
	size_t len = 0;
	int opt, debug = 0, rc;

	optind = 1;
	while ((opt = getopt(argc, argv, "c:d")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'd':
			debug = 1;
			break;
		default:
			serve_usage();
			return EXIT_USAGE;
		}
	}
	if (path == NULL || optind != argc) {
		serve_usage();
		return EXIT_USAGE;
	}
	if (config_read_file(path, &buf, &len, err, sizeof(err)) == -1 ||
	    config_parse(path, buf, len, &sup.cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "redoubt: %s\n", err);
		free(buf);
		return EXIT_CONFIG;
	}
	log_init("supervisor", debug ? LOG_LVL_DEBUG : sup.cfg->log_level);
	if (sup.cfg->n_listeners + sup.cfg->n_connectors == 0) {
		fprintf(stderr, "redoubt: %s: no [listener] or [connector] section: nothing to serve\n",
		    path);
		return EXIT_CONFIG;
	}
	if (config_check_files(sup.cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "redoubt: %s\n", err);
		return EXIT_CONFIG;
	}
	sup.privsep = geteuid() == 0;
	if (sup.privsep) {
		if (strcmp(sup.cfg->user, sup.cfg->keyd_user) == 0) {
			fprintf(stderr, "redoubt: user and keyd-user are both '%s': keyd must run as "
			    "its own user\n", sup.cfg->user);
			return EXIT_CONFIG;
		}
		if (serve_lookup_user(sup.cfg->user, "user", &sup.worker_pw, sup.pwbuf[0],
		    sizeof(sup.pwbuf[0])) == -1 ||
		    serve_lookup_user(sup.cfg->keyd_user, "keyd-user", &sup.keyd_pw, sup.pwbuf[1],
		    sizeof(sup.pwbuf[1])) == -1)
			return EXIT_CONFIG;
	} else
		log_warnx("not started as root: keyd and the workers run as uid %u too (no user "
		    "separation; seccomp and the other protections still apply)", (unsigned)geteuid());
	serve_raise_nofile();
	sup.control_fd = -1;
	if (serve_bind_all(&sup) == -1 || serve_bind_control(&sup) == -1)
		return EXIT_CONFIG;
	sup.cfg_fd = serve_config_memfd(buf, len);
	free(buf);
	if (sup.cfg_fd == -1) {
		log_warn("serve: config memfd");
		return 1;
	}
	sup.exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (sup.exe_fd == -1) {
		log_warn("serve: /proc/self/exe");
		return 1;
	}
	rc = supervisor_run(&sup);
	if (serve_control_path[0] != '\0')
		(void)unlink(serve_control_path);
	return rc;
}
