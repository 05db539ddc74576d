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
#include "common/sd_daemon.h"

#define SERVE_BACKLOG 4096   /* pending connections per listener (capped by somaxconn) */
#define SERVE_CONTROL_BACKLOG 16      /* pending `redoubt rotate|status` connections */
#define SERVE_CONTROL_MODE    0660    /* root and admin-group; keyd checks callers again */
#define SERVE_LINK_MODE       0666    /* the peer's uid is checked instead; see serve_bind_link */
#define SERVE_RUNDIR_MODE     0755    /* /run/redoubt when we have to create it */
#define SERVE_GRBUF_MAX       16384   /* bytes for getgrnam_r's strings */

/* Removed on the way out; the configuration is gone by then. */
static char serve_control_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static char serve_link_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

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
serve_local_in_use(const struct sockaddr_un *sun, int type)
{
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0), r;

	if (fd == -1)
		return 0;
	r = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0;
	close(fd);
	return r;
}

static int
serve_local_dir(const char *path, const char *key)
{
	char dir[sizeof(serve_control_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, SERVE_RUNDIR_MODE) == -1 && errno != EEXIST) {
		fprintf(stderr, "redoubt: %s %s: cannot create %s: %s\n", key, path, dir,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * One of our own local sockets (control-socket, link-socket): created 0600 and only then
 * opened up to mode (and to group gid when we are root), so nobody connects in between.
 * Returns the listening descriptor; the path is copied to saved for removal at exit.
 */
static int
serve_bind_local(const char *path, const char *key, int type, mode_t mode, gid_t gid,
    char *saved, size_t savedlen)
{
	struct sockaddr_un sun;
	struct stat st;
	mode_t old;
	int fd, r;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path) >=
	    (int)sizeof(sun.sun_path) || serve_local_dir(path, key) == -1)
		return -1;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			fprintf(stderr, "redoubt: %s %s exists and is not a socket\n", key, path);
			return -1;
		}
		if (serve_local_in_use(&sun, type & ~SOCK_NONBLOCK)) {
			fprintf(stderr, "redoubt: %s %s is in use: another redoubt is running; stop "
			    "it or give this one its own %s\n", key, path, key);
			return -1;
		}
		(void)unlink(path);
	}
	if ((fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0)) == -1) {
		fprintf(stderr, "redoubt: %s %s: socket: %s\n", key, path, strerror(errno));
		return -1;
	}
	old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (r == -1 || (geteuid() == 0 && chown(path, 0, gid) == -1) ||
	    chmod(path, mode) == -1 || listen(fd, SERVE_CONTROL_BACKLOG) == -1) {
		fprintf(stderr, "redoubt: %s %s: %s (set %s in [global] to a path in a directory "
		    "we can write)\n", key, path, strerror(errno), key);
		close(fd);
		if (r == 0)
			(void)unlink(path);
		return -1;
	}
	snprintf(saved, savedlen, "%s", path);
	return fd;
}

/*
 * keyd's control socket: from systemd when socket-activated (redoubt-control.socket makes
 * it root:redoubt-admin 0660); else bound here, while we may still be root, so that it
 * belongs to root:admin-group with mode 0660 (keyd, which could not create it in /run,
 * only accepts).
 */
static int
serve_bind_control(struct supervisor *s)
{
	struct group gr, *res = NULL;
	char *grbuf;
	gid_t gid = getegid();

	if ((s->control_fd = sd_listen_fd_named("control")) >= 0) {
		struct sockaddr_un sun;
		socklen_t len = sizeof(sun);
		/* `redoubt rotate` finds the socket through control-socket: they must agree. */
		memset(&sun, 0, sizeof(sun));
		if (getsockname(s->control_fd, (struct sockaddr *)&sun, &len) == 0 &&
		    sun.sun_family == AF_UNIX && strcmp(sun.sun_path, s->cfg->control_socket) != 0)
			log_warnx("control-socket is %s but systemd passed %s: redoubt rotate and "
			    "redoubt status need --socket %s", s->cfg->control_socket, sun.sun_path,
			    sun.sun_path);
		return 0;
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
	s->control_fd = serve_bind_local(s->cfg->control_socket, "control-socket", SOCK_STREAM,
	    SERVE_CONTROL_MODE, gid, serve_control_path, sizeof(serve_control_path));
	return s->control_fd == -1 ? -1 : 0;
}

/*
 * The workers' end of the link to keyd's supervisor.  Anyone may connect (mode 0666): the
 * kernel-reported uid of the peer decides (supervisor_link.c); a file mode could not name
 * keyd-user without a group the two users share.
 */
static int
serve_bind_link(struct supervisor *s)
{
	s->link_listen_fd = serve_bind_local(s->cfg->link_socket, "link-socket",
	    SOCK_SEQPACKET | SOCK_NONBLOCK, SERVE_LINK_MODE, getegid(), serve_link_path,
	    sizeof(serve_link_path));
	return s->link_listen_fd == -1 ? -1 : 0;
}

/*
 * The uid the other half of a split service must have: its configured user; or, when this
 * half is not running as its own configured user either (one account for everything, as in
 * development), our own uid.
 */
static int
serve_link_peer(struct supervisor *s)
{
	const char *mine = s->role == SUP_ROLE_KEYD ? s->cfg->keyd_user : s->cfg->user;
	const char *theirs = s->role == SUP_ROLE_KEYD ? s->cfg->user : s->cfg->keyd_user;
	struct passwd pw, *res = NULL;
	char buf[1024];
	uid_t me = geteuid();

	if (me != 0 && (getpwnam_r(mine, &pw, buf, sizeof(buf), &res) != 0 || res == NULL ||
	    pw.pw_uid != me)) {
		log_warnx("running as uid %u, not as '%s': the other half of the service must run "
		    "as uid %u too (no user separation between keyd and the workers)",
		    (unsigned)me, mine, (unsigned)me);
		s->link_peer_uid = me;
		return 0;
	}
	if (getpwnam_r(theirs, &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
		fprintf(stderr, "redoubt: %s '%s' does not exist: the other half of the service "
		    "runs as that user\n", s->role == SUP_ROLE_KEYD ? "user" : "keyd-user", theirs);
		return -1;
	}
	s->link_peer_uid = pw.pw_uid;
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
	fprintf(stderr, "usage: redoubt serve -c FILE [-d] [--role all|keyd|workers]\n");
}

/*
 * Users, and whether we switch to them: only as root.  Under the split systemd units each
 * half already runs as its own user; the other half's uid is what the link admits.
 */
static int
serve_users(struct supervisor *s)
{
	struct config *cfg = s->cfg;

	s->privsep = geteuid() == 0;
	if (s->privsep) {
		if (strcmp(cfg->user, cfg->keyd_user) == 0) {
			fprintf(stderr, "redoubt: user and keyd-user are both '%s': keyd must run as "
			    "its own user\n", cfg->user);
			return -1;
		}
		if ((s->role != SUP_ROLE_KEYD && serve_lookup_user(cfg->user, "user",
		    &s->worker_pw, s->pwbuf[0], sizeof(s->pwbuf[0])) == -1) ||
		    (s->role != SUP_ROLE_WORKERS && serve_lookup_user(cfg->keyd_user, "keyd-user",
		    &s->keyd_pw, s->pwbuf[1], sizeof(s->pwbuf[1])) == -1))
			return -1;
	} else if (s->role == SUP_ROLE_ALL)
		log_warnx("not started as root: keyd and the workers run as uid %u too (no user "
		    "separation; seccomp and the other protections still apply)", (unsigned)geteuid());
	return s->role == SUP_ROLE_ALL ? 0 : serve_link_peer(s);
}

/* Each half binds only what its processes use: keyd the control socket, workers the rest. */
static int
serve_bind_role(struct supervisor *s)
{
	s->control_fd = -1;
	s->link_listen_fd = -1;
	if (s->role == SUP_ROLE_KEYD) {
		s->sock_fds = calloc(1, sizeof(int));
		return s->sock_fds == NULL ? -1 : serve_bind_control(s);
	}
	if (serve_bind_all(s) == -1)
		return -1;
	return s->role == SUP_ROLE_WORKERS ? serve_bind_link(s) : serve_bind_control(s);
}

int
cmd_serve(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "role", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 }
	};
	static struct supervisor sup;
	const char *path = NULL;
	char err[CONFIG_ERR_MAX], *buf = NULL;
	size_t len = 0;
	int opt, debug = 0, rc;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:dr:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'd':
			debug = 1;
			break;
		case 'r':
			if (supervisor_role_parse(optarg, &sup.role) == -1)
				return EXIT_USAGE;
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
	log_init(sup.role == SUP_ROLE_KEYD ? "supervisor-keyd" : sup.role == SUP_ROLE_WORKERS ?
	    "supervisor-workers" : "supervisor", debug ? LOG_LVL_DEBUG : sup.cfg->log_level);
	if (sup.cfg->n_listeners + sup.cfg->n_connectors == 0) {
		fprintf(stderr, "redoubt: %s: no [listener] or [connector] section: nothing to serve\n",
		    path);
		return EXIT_CONFIG;
	}
	/* The workers' user cannot read keys; keyd's half checks them. */
	if (sup.role != SUP_ROLE_WORKERS && config_check_files(sup.cfg, err, sizeof(err)) == -1) {
		fprintf(stderr, "redoubt: %s\n", err);
		return EXIT_CONFIG;
	}
	if (serve_users(&sup) == -1)
		return EXIT_CONFIG;
	serve_raise_nofile();
	if (serve_bind_role(&sup) == -1)
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
	if (serve_link_path[0] != '\0')
		(void)unlink(serve_link_path);
	return rc;
}
