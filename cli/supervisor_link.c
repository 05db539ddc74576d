/*
 * The link between the two halves of a split service (`serve --role keyd` as keyd's user,
 * `serve --role workers` as the workers' user; two systemd units, neither with a
 * capability).  Over one SEQPACKET connection on link-socket, keyd's supervisor does what
 * the single supervisor does with socketpairs: it makes each worker's keyd channel, gives
 * one end to keyd and sends the other across; worker exits and restarts travel back for
 * keyd's audit trail, and keyd's "restart this worker" requests travel forward.
 *
 * Who may be on the other end is decided by the kernel, never by what a peer says:
 * the workers' side listens and admits only a connection whose SO_PEERCRED uid is
 * keyd-user's; keyd's side connects and accepts only a listener created by user's uid.
 * A worker shares its supervisor's uid but cannot create the listener (no bind, no file
 * system under Landlock) and is not keyd-user, so it can take neither end.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/supervisor.h"
#include "common/log.h"

#define LINK_RETRY_MIN_MS   100    /* keyd's side: first reconnect delay */
#define LINK_RETRY_MAX_MS   2000   /* ... doubling up to this */
#define LINK_LONELY_MS      10000  /* workers' side: warn when nobody linked within this */

static void
link_down(struct supervisor *s, const char *why)
{
	if (s->link.fd < 0)
		return;
	log_warnx("link to %s supervisor lost (%s)", s->role == SUP_ROLE_KEYD ? "the workers'" :
	    "keyd's", why);
	evloop_del(&s->loop, &s->link_io);
	ipc_chan_close(&s->link);
	if (s->role == SUP_ROLE_KEYD && !s->stopping) {
		s->link_retry_ms = LINK_RETRY_MIN_MS;
		evloop_timer_after(&s->loop, &s->link_timer, s->link_retry_ms);
	}
}

static int
link_peer_ok(struct supervisor *s, int fd, const char *what)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
		log_warn("link-socket %s: SO_PEERCRED", s->cfg->link_socket);
		return 0;
	}
	if (cred.uid != s->link_peer_uid) {
		log_warnx("link-socket %s: refused %s of pid %d: uid %u, expected %u",
		    s->cfg->link_socket, what, (int)cred.pid, (unsigned)cred.uid,
		    (unsigned)s->link_peer_uid);
		return 0;
	}
	log_info("linked with the %s supervisor (pid %d)", s->role == SUP_ROLE_KEYD ?
	    "workers'" : "keyd's", (int)cred.pid);
	return 1;
}

/* Ownership of fd (>= 0) passes here, sent or not. */
static int
link_send(struct supervisor *s, const struct ipc_msg *m, int fd)
{
	enum ipc_io r;

	if (s->link.fd < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	r = ipc_chan_send(&s->link, m, fd);
	if (r == IPC_IO_OK)
		r = ipc_chan_flush(&s->link);
	if (r != IPC_IO_OK && r != IPC_IO_AGAIN) {
		link_down(s, "send failed");
		return -1;
	}
	if (ipc_chan_has_queued(&s->link))
		(void)evloop_mod(&s->loop, &s->link_io, EPOLLIN | EPOLLOUT);
	return 0;
}

/* ---------- keyd's side ---------- */

void
supervisor_link_wire(struct supervisor *s, unsigned worker)
{
	struct ipc_msg m;
	int sv[2];

	if (s->role != SUP_ROLE_KEYD || s->link.fd < 0 || s->keyd.pid == 0 ||
	    worker >= s->cfg->workers)
		return;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == -1) {
		log_warn("socketpair for worker %u", worker);
		return;
	}
	ipc_msg_init(&m, IPC_CHANNEL, 0);
	m.u.channel.kind = IPC_CHANNEL_WORKER;
	m.u.channel.worker = worker;
	if (supervisor_send(&s->keyd, &m, sv[0]) == -1) {
		close(sv[1]);
		return;
	}
	m.u.channel.kind = IPC_CHANNEL_KEYD;
	(void)link_send(s, &m, sv[1]);
}

void
supervisor_link_wire_all(struct supervisor *s)
{
	for (unsigned i = 0; i < s->cfg->workers; i++)
		supervisor_link_wire(s, i);
}

/* Worker exits and restarts, for keyd's audit trail; a restarted worker needs a channel. */
static int
link_msg_from_workers(struct supervisor *s, const struct ipc_msg *m)
{
	const struct ipc_child_event *ce = &m->u.child_event;

	if (m->hdr.type != IPC_CHILD_EVENT || ce->child < 1 || ce->child > s->cfg->workers ||
	    (ce->kind != IPC_CHILD_EXITED && ce->kind != IPC_CHILD_RESTARTED))
		return -1;
	if (s->keyd.pid > 0)
		(void)supervisor_send(&s->keyd, m, -1);
	if (ce->kind == IPC_CHILD_RESTARTED)
		supervisor_link_wire(s, ce->child - 1);
	return 0;
}

/* ---------- the workers' side ---------- */

static int
link_msg_from_keyd(struct supervisor *s, const struct ipc_msg *m, int fd)
{
	if (m->hdr.type == IPC_CHANNEL && m->u.channel.kind == IPC_CHANNEL_KEYD && fd >= 0 &&
	    m->u.channel.worker < s->cfg->workers) {
		struct sup_child *w = &s->workers[m->u.channel.worker];
		/* A worker that is not running gets a fresh channel when it restarts. */
		if (w->pid > 0)
			(void)supervisor_send(w, m, fd);
		else
			close(fd);
		return 0;
	}
	if (supervisor_is_violation(s, m)) {
		supervisor_kill_worker(s, m->u.child_event.child - 1);
		return 0;
	}
	if (fd >= 0)
		close(fd);
	return -1;
}

/* ---------- both sides ---------- */

static void
link_io_cb(struct ev_io *io, uint32_t events)
{
	struct supervisor *s = io->arg;
	struct ipc_msg m;
	int fd, err, bad;

	if (events & EPOLLOUT) {
		enum ipc_io r = ipc_chan_flush(&s->link);
		if (r != IPC_IO_OK && r != IPC_IO_AGAIN) {
			link_down(s, "write failed");
			return;
		}
		if (!ipc_chan_has_queued(&s->link))
			(void)evloop_mod(&s->loop, io, EPOLLIN);
	}
	while (s->link.fd >= 0) {
		switch (ipc_chan_recv(&s->link, &m, &fd, &err)) {
		case IPC_IO_OK:
			if (s->role == SUP_ROLE_KEYD) {
				if (fd >= 0)
					close(fd);
				bad = fd >= 0 || link_msg_from_workers(s, &m) == -1;
			} else
				bad = link_msg_from_keyd(s, &m, fd) == -1;
			if (bad) {
				log_warnx("link: unexpected %s message", ipc_type_name(m.hdr.type));
				link_down(s, "protocol violation");
			}
			break;
		case IPC_IO_AGAIN:
			return;
		case IPC_IO_EOF:
			link_down(s, "closed by the peer");
			return;
		case IPC_IO_BADMSG:
			log_warnx("link: bad frame (%s)", ipc_codec_strerror(err));
			link_down(s, "bad frame");
			return;
		default:
			link_down(s, strerror(errno));
			return;
		}
	}
}

static int
link_up(struct supervisor *s, int fd)
{
	ipc_chan_init(&s->link, fd);
	s->link_io.fd = fd;
	s->link_io.cb = link_io_cb;
	s->link_io.arg = s;
	if (evloop_add(&s->loop, &s->link_io, EPOLLIN) == -1) {
		log_warn("link: epoll_ctl");
		ipc_chan_init(&s->link, -1);    /* the caller closes fd */
		return -1;
	}
	return 0;
}

/* keyd's side: (re)connect; a refused or missing listener is retried with backoff. */
static void
link_connect_cb(struct ev_timer *t)
{
	struct supervisor *s = t->arg;
	struct sockaddr_un sun;
	int fd;

	if (s->stopping || s->link.fd >= 0)
		return;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", s->cfg->link_socket);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 &&
	    link_peer_ok(s, fd, "the listener") && link_up(s, fd) == 0) {
		supervisor_link_wire_all(s);
		return;
	}
	if (fd >= 0)
		close(fd);
	if (s->link_retry_ms == 0)
		log_info("waiting for the workers' supervisor on link-socket %s",
		    s->cfg->link_socket);
	s->link_retry_ms = s->link_retry_ms == 0 ? LINK_RETRY_MIN_MS :
	    s->link_retry_ms * 2 > LINK_RETRY_MAX_MS ? LINK_RETRY_MAX_MS : s->link_retry_ms * 2;
	evloop_timer_after(&s->loop, t, s->link_retry_ms);
}

/* The workers' side: a newer authenticated connection replaces the old one. */
static void
link_accept_cb(struct ev_io *io, uint32_t events)
{
	struct supervisor *s = io->arg;
	int fd;

	while ((fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		if (!link_peer_ok(s, fd, "a connection")) {
			close(fd);
			continue;
		}
		if (s->link.fd >= 0)
			link_down(s, "replaced by a new connection");
		evloop_timer_cancel(&s->loop, &s->link_timer);
		if (link_up(s, fd) == -1)
			close(fd);
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
		log_warn("link-socket %s: accept", s->cfg->link_socket);
}

static void
link_lonely_cb(struct ev_timer *t)
{
	struct supervisor *s = t->arg;

	if (s->link.fd < 0)
		log_warnx("keyd's supervisor has not connected to link-socket %s after %d s: "
		    "handshakes wait for it (is redoubt-keyd.service, or 'redoubt serve --role "
		    "keyd', running with this configuration?)", s->cfg->link_socket,
		    LINK_LONELY_MS / 1000);
}

void
supervisor_link_start(struct supervisor *s)
{
	s->link_retry_ms = 0;
	if (s->role == SUP_ROLE_KEYD) {
		evloop_timer_init(&s->link_timer, link_connect_cb, s);
		link_connect_cb(&s->link_timer);
	} else if (s->role == SUP_ROLE_WORKERS) {
		s->link_listen_io.fd = s->link_listen_fd;
		s->link_listen_io.cb = link_accept_cb;
		s->link_listen_io.arg = s;
		if (evloop_add(&s->loop, &s->link_listen_io, EPOLLIN) == -1)
			fatal("link-socket: epoll_ctl");
		evloop_timer_init(&s->link_timer, link_lonely_cb, s);
		evloop_timer_after(&s->loop, &s->link_timer, LINK_LONELY_MS);
	}
}

/* The workers' side: a worker exited or restarted (keyd audits it; a restart needs wiring). */
void
supervisor_link_report(struct supervisor *s, const struct ipc_msg *m)
{
	if (s->role == SUP_ROLE_WORKERS)
		(void)link_send(s, m, -1);
	else if (s->role == SUP_ROLE_KEYD && m->hdr.type == IPC_CHILD_EVENT &&
	    m->u.child_event.kind == IPC_CHILD_VIOLATION)
		(void)link_send(s, m, -1);     /* keyd asks for a worker restart */
}

void
supervisor_link_stop(struct supervisor *s)
{
	if (s->role == SUP_ROLE_ALL)
		return;
	evloop_timer_cancel(&s->loop, &s->link_timer);
	if (s->link.fd >= 0) {
		evloop_del(&s->loop, &s->link_io);
		ipc_chan_close(&s->link);
	}
	if (s->link_listen_fd >= 0) {
		evloop_del(&s->loop, &s->link_listen_io);
		close(s->link_listen_fd);
		s->link_listen_fd = -1;
	}
}
