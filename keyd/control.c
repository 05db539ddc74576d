/*
 * The control socket server in keyd (protocol in keyd/control.h).
 *
 * The supervisor binds the socket before it drops privileges and hands it over at
 * CHILD_FD_FIRST; keyd only accepts.  The caller is checked on accept, before a byte of the
 * request is read: root, or a member of admin-group (primary group from SO_PEERCRED,
 * supplementary ones from SO_PEERGROUPS) — and, only when redoubt runs without user
 * separation (not started as root, so keyd is not keyd-user), the user running it.
 * Everything is bounded: clients at once, request size, answer size, time.
 */
#include "keyd/control.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "audit/events.h"
#include "common/log.h"
#include "keyd/keyd.h"

#define CONTROL_GRBUF_MAX 16384   /* bytes for getgrnam_r's strings (big groups are long) */
#define CONTROL_DRAIN_MAX 65536   /* bytes of unread input discarded before a close */

enum ctl_state { CTL_FREE = 0, CTL_READING, CTL_WAITING, CTL_WRITING };

struct ctl_client {
	enum ctl_state  state;
	struct ev_io    io;
	struct ev_timer timer;
	struct ucred    cred;
	char            req[CONTROL_REQUEST_MAX + 1];
	size_t          req_len;
	char           *resp;
	size_t          resp_len, resp_off;
};

static struct {
	int               fd;             /* listening socket, -1: none */
	struct ev_io      io;
	gid_t             admin_gid;
	int               admin_known;
	int               own_uid_ok;     /* no user separation: our uid is the operator's */
	struct ctl_client clients[CONTROL_CLIENTS_MAX];
	uint64_t          stats_id;       /* the STATS_REQ round being collected, 0: none */
	uint64_t          stats_seq;
	struct ev_timer   stats_timer;
} ctl = { .fd = -1 };

static void ctl_client_io_cb(struct ev_io *io, uint32_t events);

/*
 * Closing a UNIX socket with unread input makes the peer's next read fail with ECONNRESET
 * instead of EOF, so what is left of a refused or oversized request is read away first.
 */
static void
ctl_close_fd(int fd)
{
	char buf[512];
	size_t total = 0;
	ssize_t n;

	while (total < CONTROL_DRAIN_MAX && (n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		total += (size_t)n;
	close(fd);
}

/* ---------- clients ---------- */

static void
ctl_client_close(struct ctl_client *c)
{
	if (c->state == CTL_FREE)
		return;
	evloop_del(&kd->loop, &c->io);
	ctl_close_fd(c->io.fd);
	evloop_timer_cancel(&kd->loop, &c->timer);
	free(c->resp);
	memset(c, 0, sizeof(*c));
	c->io.fd = -1;
}

static void
ctl_client_timeout_cb(struct ev_timer *t)
{
	struct ctl_client *c = t->arg;

	log_warnx("control: client (uid %u, pid %d) too slow: dropped", (unsigned)c->cred.uid,
	    (int)c->cred.pid);
	ctl_client_close(c);
}

/* Writes as much of the answer as the socket takes; closes when it is all out. */
static void
ctl_client_write(struct ctl_client *c)
{
	while (c->resp_off < c->resp_len) {
		ssize_t n = send(c->io.fd, c->resp + c->resp_off, c->resp_len - c->resp_off,
		    MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			ctl_client_close(c);
			return;
		}
		c->resp_off += (size_t)n;
	}
	ctl_client_close(c);
}

/* Sends o (stolen) as the answer. */
static void
ctl_client_answer(struct ctl_client *c, json_t *o)
{
	char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	size_t len = text != NULL ? strlen(text) : 0;

	json_decref(o);
	if (text == NULL || len + 1 > CONTROL_RESPONSE_MAX) {
		free(text);
		text = strdup("{\"ok\":false,\"error\":\"keyd: answer too large or out of memory\"}");
		len = text != NULL ? strlen(text) : 0;
	}
	if (text == NULL) {
		ctl_client_close(c);
		return;
	}
	text[len] = '\n';                 /* json_dumps' NUL becomes the line end */
	c->resp = text;
	c->resp_len = len + 1;
	c->resp_off = 0;
	c->state = CTL_WRITING;
	evloop_timer_after(&kd->loop, &c->timer, CONTROL_IO_TIMEOUT_MS);
	if (evloop_mod(&kd->loop, &c->io, EPOLLOUT) == -1) {
		ctl_client_close(c);
		return;
	}
	ctl_client_write(c);
}

static void
ctl_client_error(struct ctl_client *c, const char *why)
{
	ctl_client_answer(c, json_pack("{s:b, s:s}", "ok", 0, "error", why));
}

/* ---------- status: ask every worker, answer when all replied or the wait is over ---------- */

static void
ctl_stats_finish(void)
{
	uint64_t id = ctl.stats_id;

	ctl.stats_id = 0;
	evloop_timer_cancel(&kd->loop, &ctl.stats_timer);
	for (size_t i = 0; i < CONTROL_CLIENTS_MAX; i++)
		if (ctl.clients[i].state == CTL_WAITING)
			ctl_client_answer(&ctl.clients[i], keyd_status_json(id));
}

static void
ctl_stats_timeout_cb(struct ev_timer *t)
{
	log_warnx("control: not every worker reported its connections within %d ms",
	    CONTROL_STATS_WAIT_MS);
	ctl_stats_finish();
}

void
keyd_control_stats_arrived(void)
{
	if (ctl.stats_id == 0)
		return;
	for (unsigned i = 0; i < WORKERS_MAX; i++)
		if (kd->workers[i].state == KW_READY && kd->workers[i].stats_id != ctl.stats_id)
			return;
	ctl_stats_finish();
}

static void
ctl_status(struct ctl_client *c)
{
	struct ipc_msg m;

	c->state = CTL_WAITING;
	evloop_timer_cancel(&kd->loop, &c->timer);
	(void)evloop_mod(&kd->loop, &c->io, 0);
	if (ctl.stats_id != 0)
		return;                   /* a round is on its way: this client shares it */
	ctl.stats_id = ++ctl.stats_seq;
	ipc_msg_init(&m, IPC_STATS_REQ, ctl.stats_id);
	keyd_broadcast(&m);
	evloop_timer_after(&kd->loop, &ctl.stats_timer, CONTROL_STATS_WAIT_MS);
	keyd_control_stats_arrived();     /* no worker ready: answer at once */
}

/* ---------- requests ---------- */

static void
ctl_request(struct ctl_client *c)
{
	struct keyd_rotate_req rr = { "control", (long)c->cred.uid, (long)c->cred.pid, 0 };
	json_error_t jerr;
	json_t *req, *v;
	const char *cmd, *key;
	char err[CONFIG_ERR_MAX];

	req = json_loadb(c->req, c->req_len, JSON_REJECT_DUPLICATES, &jerr);
	if (req == NULL || !json_is_object(req) ||
	    !json_is_string(v = json_object_get(req, "cmd"))) {
		json_decref(req);
		ctl_client_error(c, "control: the request is not a JSON object with a \"cmd\"");
		return;
	}
	cmd = json_string_value(v);
	json_object_foreach(req, key, v) {
		if (strcmp(key, "cmd") == 0 ||
		    (strcmp(key, "revoke_previous") == 0 && json_is_boolean(v) &&
		    strcmp(cmd, "rotate") == 0))
			continue;
		snprintf(err, sizeof(err), "control: unknown or misplaced key \"%.64s\"", key);
		json_decref(req);
		ctl_client_error(c, err);
		return;
	}
	rr.revoke_previous = json_is_true(json_object_get(req, "revoke_previous"));
	if (strcmp(cmd, "rotate") == 0)
		ctl_client_answer(c, keyd_rotate(&rr));
	else if (strcmp(cmd, "rotate-tickets") == 0) {
		keyd_tickets_rotate_now("control", (long)c->cred.uid);
		ctl_client_answer(c, json_pack("{s:b}", "ok", 1));
	} else if (strcmp(cmd, "reopen-audit") == 0) {
		if (kd->audit != NULL && audit_writer_reopen(kd->audit, err, sizeof(err)) == -1)
			ctl_client_error(c, err);
		else
			ctl_client_answer(c, json_pack("{s:b}", "ok", 1));
	} else if (strcmp(cmd, "status") == 0)
		ctl_status(c);
	else {
		snprintf(err, sizeof(err), "control: unknown command \"%.64s\"", cmd);
		ctl_client_error(c, err);
	}
	json_decref(req);
}

static void
ctl_client_read(struct ctl_client *c)
{
	char *nl;

	for (;;) {
		ssize_t n = recv(c->io.fd, c->req + c->req_len, CONTROL_REQUEST_MAX - c->req_len,
		    0);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			ctl_client_close(c);  /* gone before it finished asking */
			return;
		}
		c->req_len += (size_t)n;
		c->req[c->req_len] = '\0';
		if ((nl = memchr(c->req, '\n', c->req_len)) != NULL) {
			c->req_len = (size_t)(nl - c->req);
			ctl_request(c);
			return;
		}
		if (c->req_len == CONTROL_REQUEST_MAX) {
			ctl_client_error(c, "control: request longer than CONTROL_REQUEST_MAX");
			return;
		}
	}
}

static void
ctl_client_io_cb(struct ev_io *io, uint32_t events)
{
	struct ctl_client *c = io->arg;

	if (c->state == CTL_READING)
		ctl_client_read(c);
	else if (c->state == CTL_WRITING)
		ctl_client_write(c);
	else if (events & (EPOLLHUP | EPOLLERR))
		ctl_client_close(c);
}

/* ---------- accepting ---------- */

static int
ctl_in_group(int fd, gid_t gid)
{
	gid_t groups[CONTROL_PEER_GROUPS_MAX];
	socklen_t len = sizeof(groups);

	/* ERANGE (more groups than we look at) counts as "not a member". */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == -1)
		return 0;
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == gid)
			return 1;
	return 0;
}

static int
ctl_permitted(int fd, const struct ucred *uc)
{
	if (uc->uid == 0 || (ctl.own_uid_ok && uc->uid == geteuid()))
		return 1;
	return ctl.admin_known && (uc->gid == ctl.admin_gid || ctl_in_group(fd, ctl.admin_gid));
}

static void
ctl_refuse(int fd, const struct ucred *uc, const char *why)
{
	char msg[256];
	json_t *f;

	snprintf(msg, sizeof(msg), "{\"ok\":false,\"error\":\"control: %s\"}\n", why);
	(void)send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
	ctl_close_fd(fd);
	log_warnx("control: refused uid %u gid %u pid %d: %s", (unsigned)uc->uid,
	    (unsigned)uc->gid, (int)uc->pid, why);
	f = json_pack("{s:s, s:I, s:I, s:I}", "source", "control", "uid", (json_int_t)uc->uid,
	    "gid", (json_int_t)uc->gid, "pid", (json_int_t)uc->pid);
	keyd_audit(AUDIT_ROTATION_REFUSED, AUDIT_WORKER_NONE, "failure", why, f);
	json_decref(f);
}

static void
ctl_accept_cb(struct ev_io *io, uint32_t events)
{
	for (;;) {
		struct ctl_client *c = NULL;
		struct ucred uc;
		socklen_t len = sizeof(uc);
		int fd = accept4(ctl.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("control: accept");
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == -1 ||
		    len != sizeof(uc)) {
			log_warn("control: SO_PEERCRED");
			close(fd);
			continue;
		}
		if (!ctl_permitted(fd, &uc)) {
			ctl_refuse(fd, &uc, "permission denied: only root and members of "
			    "admin-group may use the control socket");
			continue;
		}
		for (size_t i = 0; i < CONTROL_CLIENTS_MAX && c == NULL; i++)
			if (ctl.clients[i].state == CTL_FREE)
				c = &ctl.clients[i];
		if (c == NULL) {
			static const char busy[] =
			    "{\"ok\":false,\"error\":\"control: busy, try again\"}\n";
			(void)send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			ctl_close_fd(fd);
			continue;
		}
		memset(c, 0, sizeof(*c));
		c->cred = uc;
		c->io.fd = fd;
		c->io.cb = ctl_client_io_cb;
		c->io.arg = c;
		evloop_timer_init(&c->timer, ctl_client_timeout_cb, c);
		if (evloop_add(&kd->loop, &c->io, EPOLLIN) == -1) {
			close(fd);
			continue;
		}
		c->state = CTL_READING;
		evloop_timer_after(&kd->loop, &c->timer, CONTROL_IO_TIMEOUT_MS);
	}
}

/*
 * admin-group's gid, and whether keyd runs as keyd-user, resolved once at start-up (before
 * the sandbox closes /etc/group and /etc/passwd).
 */
static void
ctl_admin_group(void)
{
	struct group gr, *res = NULL;
	struct passwd pw, *pres = NULL;
	char *buf = malloc(CONTROL_GRBUF_MAX);
	int r;

	if (buf == NULL)
		fatal("control: group buffer");
	ctl.own_uid_ok = getpwnam_r(kd->cfg->keyd_user, &pw, buf, CONTROL_GRBUF_MAX, &pres) != 0 ||
	    pres == NULL || pw.pw_uid != geteuid();
	r = getgrnam_r(kd->cfg->admin_group, &gr, buf, CONTROL_GRBUF_MAX, &res);
	if (res != NULL) {
		ctl.admin_gid = gr.gr_gid;
		ctl.admin_known = 1;
	} else
		log_warnx("control: admin-group '%s' does not exist (%s): only root may use "
		    "redoubt rotate and redoubt status; create it with 'groupadd --system %s'",
		    kd->cfg->admin_group, r != 0 ? strerror(r) : "no such group",
		    kd->cfg->admin_group);
	free(buf);
}

void
keyd_control_init(int fd)
{
	int type = 0, listening = 0;
	socklen_t len = sizeof(type);

	evloop_timer_init(&ctl.stats_timer, ctl_stats_timeout_cb, NULL);
	/* Not handed over (serve could not bind it): SIGHUP still rotates. */
	if (fcntl(fd, F_GETFD) == -1 ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1 || type != SOCK_STREAM ||
	    (len = sizeof(listening), getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening,
	    &len)) == -1 || !listening) {
		log_warnx("control: no control socket was handed over: 'redoubt rotate' and "
		    "'redoubt status' are unavailable (SIGHUP still rotates)");
		return;
	}
	if (fcntl(fd, F_SETFL, O_NONBLOCK) == -1 || fcntl(fd, F_SETFD, FD_CLOEXEC) == -1)
		fatal("control: fcntl");
	ctl_admin_group();
	for (size_t i = 0; i < CONTROL_CLIENTS_MAX; i++)
		ctl.clients[i].io.fd = -1;
	ctl.fd = fd;
	ctl.io.fd = fd;
	ctl.io.cb = ctl_accept_cb;
	if (evloop_add(&kd->loop, &ctl.io, EPOLLIN) == -1)
		fatal("control: epoll");
}

void
keyd_control_close(void)
{
	for (size_t i = 0; i < CONTROL_CLIENTS_MAX; i++)
		ctl_client_close(&ctl.clients[i]);
	if (ctl.fd >= 0) {
		evloop_del(&kd->loop, &ctl.io);
		close(ctl.fd);
		ctl.fd = -1;
	}
	evloop_timer_cancel(&kd->loop, &ctl.stats_timer);
}
