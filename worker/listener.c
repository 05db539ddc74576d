/*
 * Accepting clients: admission (keyd's audit state), the per-worker connection limit, and
 * the hand-off to a new connection.  Listening sockets are shared by all workers and
 * registered with EPOLLEXCLUSIVE, so one connection wakes one worker.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/conn_audit.h"
#include "worker/worker.h"

#define ACCEPT_BATCH 64   /* connections taken per wake-up before other work gets a turn */

static void
listener_refuse(struct wk_listener *l, int fd, const struct sockaddr_storage *ss,
    const char *why)
{
	static uint64_t last_log_ms;
	char peer[64] = "?";

	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, peer, sizeof(peer));
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, peer, sizeof(peer));
	/* A flood of refusals must not become a flood of log lines: one per second. */
	if (wk->loop.now_ms - last_log_ms >= 1000) {
		last_log_ms = wk->loop.now_ms;
		log_warnx("%s: refusing %s: %s", l->cfg->name, peer, why);
	}
	conn_audit_limit(l->cfg->name, peer, why);
	close(fd);
}

static void
listener_accept(struct wk_listener *l)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss = { .ss_family = AF_UNSPEC };
		socklen_t len = sizeof(ss);
		int fd, one = 1;

		fd = accept4(l->io.fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
			    errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE)
				log_warn("%s: accept (raise LimitNOFILE or lower max-connections)",
				    l->cfg->name);
			else
				log_warn("%s: accept", l->cfg->name);
			return;
		}
		wk->stats.accepted++;
		/*
		 * Refuse by accepting and closing: a client fails at once instead of hanging in the
		 * backlog.  While keyd is away we still accept: the handshake fails fast when the
		 * signature cannot be had.
		 */
		if (wk->stopping) {
			close(fd);
			continue;
		}
		if (!wk->accepting) {
			wk->stats.refused_admission++;
			listener_refuse(l, fd, &ss, "audit log cannot be written (audit-fail-closed)");
			continue;
		}
		if (wk->n_conns >= wk->cfg->max_connections) {
			wk->stats.refused_limit++;
			listener_refuse(l, fd, &ss, "max-connections reached");
			continue;
		}
		if (ss.ss_family != AF_UNIX)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		(void)conn_new_inbound(l, fd, (struct sockaddr *)&ss, len);
	}
}

static void
listener_io_cb(struct ev_io *io, uint32_t events)
{
	listener_accept(io->arg);
}

int
listener_start(struct wk_listener *l, int fd)
{
	l->io.fd = fd;
	l->io.cb = listener_io_cb;
	l->io.arg = l;
	/* Level-triggered + exclusive: whatever stays in the backlog wakes a worker again. */
	if (evloop_add(&wk->loop, &l->io, EPOLLIN | EPOLLEXCLUSIVE) == -1) {
		log_warn("%s: epoll_ctl(ADD) on the listening socket", l->cfg->name);
		return -1;
	}
	return 0;
}

