/*
 * Dialling a connection's other side: the backend of a listener (TCP or unix), or the remote
 * peer of a connector; "backend unavailable" in RESP when that fails on a client's behalf.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <openssl/ssl.h>

#include "common/limits.h"
#include "common/log.h"
#include "worker/conn.h"
#include "worker/conn_internal.h"
#include "worker/connector.h"
#include "worker/worker.h"

#define CONN_BACKEND_DOWN_REPLY "-ERR redoubt: backend unavailable\r\n"

static socklen_t
conn_sockaddr(const struct config_addr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->kind == ADDR_UNIX) {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, a->path, strnlen(a->path, sizeof(sun->sun_path) - 1));
		return sizeof(*sun);
	}
	if (a->sslen == 0 || a->sslen > sizeof(*ss))
		return 0;
	memcpy(ss, &a->ss, a->sslen);
	return a->sslen;
}

/* 1 when c's TLS side negotiated the ALPN protocol proto. */
static int
conn_alpn_is(const struct conn *c, const char *proto)
{
	const unsigned char *p = NULL;
	unsigned int n = 0;

	if (c->tls == NULL || c->tls->ssl == NULL)
		return 0;
	SSL_get0_alpn_selected(c->tls->ssl, &p, &n);
	return p != NULL && n == strlen(proto) && memcmp(p, proto, n) == 0;
}

void
conn_backend_down(struct conn *c, const char *why)
{
	wk->stats.backend_failures++;
	if (c->connector != NULL)
		log_warnx("connector %s: peer %s unreachable (local client %s): %s",
		    c->connector->cfg->name, c->kpeer != NULL ? c->kpeer->name : "?", c->peer_str,
		    why);
	else
		log_warnx("%s: backend for %s unavailable: %s", c->listener->cfg->name, c->peer_str,
		    why);
	c->end = END_BACKEND_UNAVAILABLE;
	c->end_detail = why;
	side_close(&c->backend);
	c->backend.eof = 1;
	c->backend.failed = 1;
	/*
	 * Say so in RESP over TLS before closing: a client library reports it verbatim.  Not on
	 * the cluster bus, which is not RESP: the peer would count it as a malformed message.
	 */
	if (c->listener != NULL && c->client.ssl != NULL && !conn_alpn_is(c, "redis-bus")) {
		size_t n = sizeof(CONN_BACKEND_DOWN_REPLY) - 1;
		if (c->buf_b2c.data == NULL)
			c->buf_b2c.data = worker_buf_get();
		memcpy(c->buf_b2c.data, CONN_BACKEND_DOWN_REPLY, n);
		c->buf_b2c.head = 0;
		c->buf_b2c.tail = n;
		c->state = CONN_RELAY;
		c->client.writable = 1;
		conn_pump(c);
		return;
	}
	conn_close(c, END_BACKEND_UNAVAILABLE);
}

static void
conn_dial_done(struct conn *c)
{
	if (c->connector != NULL) {
		conn_start_tls_client(c);
		return;
	}
	evloop_timer_cancel(&wk->loop, &c->timer);
	c->state = CONN_RELAY;
	if (wk->cfg->idle_timeout_ms != 0)
		evloop_timer_after(&wk->loop, &c->timer, wk->cfg->idle_timeout_ms);
	c->last_active_ms = wk->loop.now_ms;
	conn_pump(c);
}

void
conn_dial_to(struct conn *c, const struct sockaddr_storage *ss, socklen_t len)
{
	int fd, one = 1;

	if (len == 0) {
		conn_backend_down(c, "address not resolved");
		return;
	}
	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		conn_backend_down(c, strerror(errno));
		return;
	}
	if (ss->ss_family != AF_UNIX)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	side_init(&c->backend, c, fd);
	if (side_register(&c->backend) == -1) {
		conn_backend_down(c, "epoll");
		return;
	}
	if (connect(fd, (const struct sockaddr *)ss, len) == 0) {
		c->backend.writable = 1;
		conn_dial_done(c);
		return;
	}
	if (errno != EINPROGRESS) {
		conn_backend_down(c, strerror(errno));
		return;
	}
	c->state = CONN_CONNECTING;
	evloop_timer_after(&wk->loop, &c->timer, BACKEND_CONNECT_TIMEOUT_MS);
}

void
conn_dial(struct conn *c, const struct config_addr *to)
{
	struct sockaddr_storage ss;
	socklen_t len = conn_sockaddr(to, &ss);

	c->dial = to;
	conn_dial_to(c, &ss, len);
}

void
conn_connect_check(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (!c->backend.writable)
		return;
	if (getsockopt(c->backend.fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		conn_backend_down(c, strerror(err));
		return;
	}
	conn_dial_done(c);
}
