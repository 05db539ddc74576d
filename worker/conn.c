/*
 * The connection state machine and the relay (dialling the other side: conn_dial.c).
 *
 * Readiness is edge-triggered: each side remembers "readable"/"writable" until an operation
 * reports it would block, so descriptors are registered once and never modified (no
 * epoll_ctl churn on the hot path).  Data already decrypted inside OpenSSL is drained
 * through side->ops->pending() without waiting for another edge.
 */
#include "worker/conn.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "common/limits.h"
#include "common/log.h"
#include "worker/conn_audit.h"
#include "worker/conn_internal.h"
#include "worker/connector.h"
#include "worker/tls_bio.h"
#include "worker/worker.h"

#define CONN_PLAINTEXT_REPLY   "-ERR this port requires TLS\r\n"
#define CONN_CLOSING_TIMEOUT_MS 30000 /* a peer that will not read our last bytes is dropped */
#define TLS_RECORD_HANDSHAKE   0x16   /* first byte of every TLS ClientHello record */
#define CONN_LIMIT_LOG_MS      1000   /* window of the log rate limit for limit hits */
#define CONN_LIMIT_LOG_BURST   10     /* lines per window per kind; then one "suppressed" note */

/* A flood of limit hits (slow-loris) must not become a flood of log lines. */
struct conn_log_limit {
	uint64_t window_ms;
	unsigned lines;
};

static struct conn_log_limit conn_timeout_log, conn_idle_log;

/* 1 when this hit may be logged; logs the one "suppressed" note itself. */
static int
conn_log_allowed(struct conn_log_limit *ll, const char *what)
{
	if (wk->loop.now_ms - ll->window_ms >= CONN_LIMIT_LOG_MS) {
		ll->window_ms = wk->loop.now_ms;
		ll->lines = 0;
	}
	if (ll->lines < CONN_LIMIT_LOG_BURST) {
		ll->lines++;
		return 1;
	}
	if (ll->lines++ == CONN_LIMIT_LOG_BURST)
		log_info("more %s this second: not logged (counted in status)", what);
	return 0;
}

static const char *const conn_end_names[END_MAX] = {
	[END_NONE] = "none",
	[END_CLIENT_CLOSED] = "client closed",
	[END_BACKEND_CLOSED] = "backend closed",
	[END_CLIENT_ERROR] = "client error",
	[END_BACKEND_ERROR] = "backend error",
	[END_HANDSHAKE_FAILED] = "handshake failed",
	[END_HANDSHAKE_TIMEOUT] = "handshake timeout",
	[END_IDENTITY_REFUSED] = "peer identity refused",
	[END_PLAINTEXT] = "plaintext client on TLS port",
	[END_BACKEND_UNAVAILABLE] = "backend unavailable",
	[END_IDLE_TIMEOUT] = "idle timeout",
	[END_REVOKED] = "certificate generation revoked",
	[END_SHUTDOWN] = "shutdown",
};

static void conn_run(struct conn *c);
static void conn_handshake(struct conn *c);

const char *
conn_end_name(enum conn_end e)
{
	return e < END_MAX && conn_end_names[e] != NULL ? conn_end_names[e] : "unknown";
}

/* ---------- buffers ---------- */

static size_t rbuf_len(const struct rbuf *b) { return b->tail - b->head; }

static void
rbuf_release(struct rbuf *b)
{
	/* Plaintext of a session (PHI, card data) does not outlive its use in our buffers. */
	if (b->data != NULL) {
		OPENSSL_cleanse(b->data, b->hw > b->tail ? b->hw : b->tail);
		worker_buf_put(b->data);
	}
	b->hw = 0;
	b->data = NULL;
	b->head = b->tail = 0;
}

/* Room at the tail, compacting first when the free space is all at the front. */
static size_t
rbuf_room(struct rbuf *b)
{
	if (b->data == NULL)
		return CONN_BUF_SIZE;
	if (b->tail == CONN_BUF_SIZE && b->head > 0) {
		memmove(b->data, b->data + b->head, rbuf_len(b));
		if (b->tail > b->hw)
			b->hw = b->tail;
		b->tail -= b->head;
		b->head = 0;
	}
	return CONN_BUF_SIZE - b->tail;
}

/* ---------- set-up ---------- */

static void
conn_io_cb(struct ev_io *io, uint32_t events)
{
	struct side *s = io->arg;

	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->readable = 1;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->hup = 1;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		s->writable = 1;
	conn_run(s->conn);
}

static void
conn_run_cb(struct ev_defer *d)
{
	conn_run(d->arg);
}

static void
conn_reap_cb(struct ev_defer *d)
{
	struct conn *c = d->arg;

	free(c->refusal);
	free(c);
}

static void conn_timer_cb(struct ev_timer *t);

void
side_init(struct side *s, struct conn *c, int fd)
{
	s->ops = &side_plain_ops;
	s->fd = fd;
	s->conn = c;
	s->io.fd = fd;
	s->io.cb = conn_io_cb;
	s->io.arg = s;
}

int
side_register(struct side *s)
{
	if (evloop_add(&wk->loop, &s->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) == -1) {
		log_warn("conn: epoll_ctl(ADD)");
		return -1;
	}
	s->registered = 1;
	return 0;
}

void
side_close(struct side *s)
{
	if (s->registered)
		evloop_del(&wk->loop, &s->io);
	s->registered = 0;
	if (s->ssl != NULL)
		SSL_free(s->ssl);
	s->ssl = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->io.fd = -1;
	s->readable = s->writable = 0;
}

static void
conn_format_peer(struct conn *c, const struct sockaddr *sa, socklen_t salen)
{
	char host[46];

	if (salen < sizeof(sa->sa_family)) {
		snprintf(c->peer_str, sizeof(c->peer_str), "unknown");
		return;
	}
	if (sa->sa_family == AF_INET &&
	    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host)))
		snprintf(c->peer_str, sizeof(c->peer_str), "%s:%u", host,
		    ntohs(((const struct sockaddr_in *)sa)->sin_port));
	else if (sa->sa_family == AF_INET6 &&
	    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host)))
		snprintf(c->peer_str, sizeof(c->peer_str), "[%s]:%u", host,
		    ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
	else if (sa->sa_family == AF_UNIX)
		snprintf(c->peer_str, sizeof(c->peer_str), "unix");
	else
		snprintf(c->peer_str, sizeof(c->peer_str), "unknown");
}

static struct conn *
conn_alloc(int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		log_warn("conn: allocation");
		close(fd);
		return NULL;
	}
	side_init(&c->client, c, fd);
	side_init(&c->backend, c, -1);
	conn_format_peer(c, sa, salen);
	c->id = ++wk->next_conn_id;
	c->started_ms = c->last_active_ms = wk->loop.now_ms;
	evloop_timer_init(&c->timer, conn_timer_cb, c);
	evloop_defer_init(&c->run, conn_run_cb, c);
	evloop_defer_init(&c->reap, conn_reap_cb, c);
	TAILQ_INSERT_TAIL(&wk->conns, c, entry);
	wk->n_conns++;
	if (side_register(&c->client) == -1) {
		conn_close(c, END_CLIENT_ERROR);
		return NULL;
	}
	return c;
}

struct conn *
conn_new_inbound(struct wk_listener *l, int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct conn *c = conn_alloc(fd, sa, salen);

	if (c == NULL)
		return NULL;
	c->listener = l;
	l->conns++;
	c->state = CONN_PEEK;
	evloop_timer_after(&wk->loop, &c->timer, wk->cfg->handshake_timeout_ms);
	conn_audit_accepted(c);
	/* The ClientHello is often already queued with the connection. */
	c->client.readable = 1;
	conn_run(c);
	return c;
}


struct conn *
conn_new_outbound(struct wk_connector *k, int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct conn *c = conn_alloc(fd, sa, salen);
	struct sockaddr_storage dst;
	socklen_t len = 0;

	if (c == NULL)
		return NULL;
	c->connector = k;
	k->conns++;
	conn_audit_accepted(c);
	evloop_timer_after(&wk->loop, &c->timer, wk->cfg->handshake_timeout_ms);
	if (k->ctx == NULL || k->gen == NULL) {
		log_warnx("connector %s: no certificate from keyd yet; dropping %s", k->cfg->name,
		    c->peer_str);
		conn_close(c, END_HANDSHAKE_FAILED);
		return NULL;
	}
	if (k->cfg->transparent) {
		if (connector_original_dst(k, fd, &dst, &len) == -1) {
			c->end_detail = "no original destination";
			conn_close(c, END_BACKEND_UNAVAILABLE);
			return NULL;
		}
	} else if (k->peer_len > 0) {
		memcpy(&dst, &k->peer, k->peer_len);
		len = k->peer_len;
	}
	if (len > 0 && (c->kpeer = connector_peer_get(k, (struct sockaddr *)&dst, len)) != NULL &&
	    connector_peer_backoff(c->kpeer) > 0) {
		/* The peer is down: the local client learns it now, not after a dial timeout. */
		c->end_detail = "peer down, waiting before the next attempt";
		conn_close(c, END_BACKEND_UNAVAILABLE);
		return NULL;
	}
	c->state = CONN_CONNECTING;
	conn_dial_to(c, &dst, len);
	return c;
}

/* ---------- TLS handshake ---------- */

static int
conn_start_tls(struct conn *c, struct side *s, SSL_CTX *ctx, struct tls_gen *gen, int server)
{
	SSL *ssl = SSL_new(ctx);

	if (ssl == NULL || tls_bio_attach(ssl, s) == -1) {
		log_ssl_errors("conn: SSL_new");
		SSL_free(ssl);
		return -1;
	}
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	SSL_set_app_data(ssl, c);
	SSL_set_async_callback_arg(ssl, c);
	s->ssl = ssl;
	s->ops = &side_tls_ops;
	c->tls = s;
	c->gen = gen;
	tls_gen_ref(gen);
	gen->conns++;
	c->state = CONN_HANDSHAKE;
	return 0;
}

int
conn_async_wake(SSL *ssl, void *arg)
{
	struct conn *c = arg;

	/* Called from keyd_client's dispatch: only schedule; never call SSL from here. */
	c->woken = 1;
	evloop_defer(&wk->loop, &c->run);
	return 1;
}

static void
conn_peek(struct conn *c)
{
	struct wk_listener *l = c->listener;
	uint8_t first;
	ssize_t n;

	if (!c->client.readable)
		return;
	do
		n = recv(c->client.fd, &first, 1, MSG_PEEK);
	while (n == -1 && errno == EINTR);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		c->client.readable = 0;
		return;
	}
	if (n <= 0) {
		conn_close(c, n == 0 ? END_CLIENT_CLOSED : END_CLIENT_ERROR);
		return;
	}
	if (first != TLS_RECORD_HANDSHAKE) {
		/* A RESP client that forgot --tls: tell it in its own protocol, then close. */
		wk->stats.plaintext++;
		log_info("%s: plaintext client %s refused", l->cfg->name, c->peer_str);
		if (send(c->client.fd, CONN_PLAINTEXT_REPLY, sizeof(CONN_PLAINTEXT_REPLY) - 1,
		    MSG_NOSIGNAL) < 0)
			log_debug("conn: -ERR to %s: %s", c->peer_str, strerror(errno));
		c->end = END_PLAINTEXT;
		c->backend.eof = 1;
		c->client.shut = 1;
		shutdown(c->client.fd, SHUT_WR);
		c->state = CONN_LINGER;
		evloop_timer_after(&wk->loop, &c->timer, LINGER_TIMEOUT_MS);
		conn_run(c);
		return;
	}
	if (l->ctx == NULL || l->gen == NULL) {
		log_warnx("%s: no certificate from keyd yet; refusing %s", l->cfg->name, c->peer_str);
		conn_close(c, END_HANDSHAKE_FAILED);
		return;
	}
	if (conn_start_tls(c, &c->client, l->ctx, l->gen, 1) == -1) {
		conn_close(c, END_HANDSHAKE_FAILED);
		return;
	}
	conn_handshake(c);
}

/* Chooses the backend: the route for the negotiated ALPN protocol, else the default. */
static const struct config_addr *
conn_route(struct conn *c)
{
	const struct config_listener *lc = c->listener->cfg;
	const unsigned char *proto = NULL;
	unsigned int plen = 0;

	SSL_get0_alpn_selected(c->client.ssl, &proto, &plen);
	for (size_t i = 0; proto != NULL && i < lc->n_routes; i++)
		if (strlen(lc->routes[i].alpn) == plen && memcmp(lc->routes[i].alpn, proto, plen) == 0)
			return &lc->routes[i].backend;
	return &lc->backend;
}


/* Connector: we are the TLS client; the peer must prove the name we dialled (verify-full). */
void
conn_start_tls_client(struct conn *c)
{
	struct wk_connector *k = c->connector;
	const struct config_addr *to = &k->cfg->connect;
	struct sockaddr_storage ss = { .ss_family = AF_UNSPEC };
	socklen_t sslen = sizeof(ss);
	char ip[INET6_ADDRSTRLEN];
	const char *name = NULL;
	X509_VERIFY_PARAM *vp;
	int is_ip = 0;

	if (conn_start_tls(c, &c->backend, k->ctx, k->gen, 0) == -1) {
		conn_close(c, END_HANDSHAKE_FAILED);
		return;
	}
	evloop_timer_after(&wk->loop, &c->timer, wk->cfg->handshake_timeout_ms);
	if (k->cfg->transparent) {
		/* The peer must prove the address the local redis-server dialled (SO_ORIGINAL_DST). */
		if (getpeername(c->backend.fd, (struct sockaddr *)&ss, &sslen) == 0 &&
		    ((ss.ss_family == AF_INET && inet_ntop(AF_INET,
		    &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip)) != NULL) ||
		    (ss.ss_family == AF_INET6 && inet_ntop(AF_INET6,
		    &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip)) != NULL))) {
			name = ip;
			is_ip = 1;
		}
	} else if (to->kind == ADDR_TCP && to->host[0] != '\0') {
		name = to->host;
		is_ip = to->sslen != 0;
	}
	if (name != NULL && !is_ip)
		(void)SSL_set_tlsext_host_name(c->backend.ssl, name);
	if (k->cfg->mode == TLS_MODE_VERIFY_FULL) {
		vp = SSL_get0_param(c->backend.ssl);
		X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (name == NULL || !(is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) :
		    X509_VERIFY_PARAM_set1_host(vp, name, 0))) {
			/* verify-full without a name to check would be verify-ca: refuse instead. */
			c->end_detail = "no peer name or address to verify";
			conn_close(c, END_HANDSHAKE_FAILED);
			return;
		}
	}
	connector_peer_resume(c->kpeer, c->backend.ssl, k->gen->generation);
	c->backend.writable = 1;
	conn_handshake(c);
}

static void
conn_handshake_done(struct conn *c)
{
	SSL *ssl = c->tls->ssl;

	/* No signature is needed after the handshake: skip the async job on every read/write. */
	SSL_clear_mode(ssl, SSL_MODE_ASYNC);
	wk->stats.handshakes++;
	conn_audit_handshake(c, 1, NULL);
	log_debug("%s: %s %s %s", c->listener ? c->listener->cfg->name : c->connector->cfg->name,
	    c->peer_str, SSL_get_version(ssl), SSL_get_cipher_name(ssl));
	if (c->listener != NULL)
		conn_dial(c, conn_route(c));
	else {
		connector_peer_ok(c->connector, c->kpeer);
		c->state = CONN_RELAY;
		evloop_timer_cancel(&wk->loop, &c->timer);
		conn_pump(c);
	}
}

static void
conn_handshake(struct conn *c)
{
	struct side *t = c->tls;
	enum side_status st;
	int r;

	if (c->async_wait && !c->woken)
		return;
	c->async_wait = 0;
	c->woken = 0;
	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	st = side_tls_status(t, r);
	if (st == SIDE_WANT_ASYNC) {
		c->async_wait = 1;
		if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_ASYNC_JOB)
			c->woken = 1;  /* no job was free: retry on the next round */
		if (c->woken)
			evloop_defer(&wk->loop, &c->run);
		return;
	}
	if (c->pending_close != END_NONE) {
		conn_close(c, c->pending_close);
		return;
	}
	switch (st) {
	case SIDE_OK:
		conn_handshake_done(c);
		return;
	case SIDE_WANT_READ:
	case SIDE_WANT_WRITE:
		return;
	default:
		break;
	}
	if (c->refusal != NULL) {
		wk->stats.identity_refusals++;
		log_info("%s: refused %s: %s", c->listener ? c->listener->cfg->name :
		    c->connector->cfg->name, c->peer_str, c->refusal);
		conn_audit_handshake(c, 0, c->refusal);
		conn_close(c, END_IDENTITY_REFUSED);
		return;
	}
	wk->stats.handshake_failures++;
	c->end_detail = st == SIDE_EOF ? "peer closed during the handshake" : t->errmsg;
	log_info("%s: handshake with %s failed: %s", c->listener ? c->listener->cfg->name :
	    c->connector->cfg->name, c->peer_str, c->end_detail);
	conn_audit_handshake(c, 0, c->end_detail);
	conn_close(c, END_HANDSHAKE_FAILED);
}

/* ---------- relay ---------- */

/* Moves bytes src -> b -> dst as far as both sockets allow.  Returns 1 on any progress. */
static int
conn_pump_dir(struct conn *c, struct side *src, struct side *dst, struct rbuf *b)
{
	int progress = 0;
	size_t room;
	ssize_t n;

	while (!src->eof && (src->readable || src->ops->pending(src)) &&
	    (room = rbuf_room(b)) > 0) {
		if (b->data == NULL)
			b->data = worker_buf_get();
		n = src->ops->read(src, b->data + b->tail, room);
		if (n > 0) {
			b->tail += (size_t)n;
			progress = 1;
			continue;
		}
		if (src->status == SIDE_EOF) {
			src->eof = 1;
			progress = 1;
		} else if (src->status == SIDE_ERROR) {
			src->eof = 1;
			src->failed = 1;
			progress = 1;
		}
		break;
	}
	while (rbuf_len(b) > 0 && dst->writable && !dst->shut && !dst->failed) {
		n = dst->ops->write(dst, b->data + b->head, rbuf_len(b));
		if (n > 0) {
			b->head += (size_t)n;
			progress = 1;
			continue;
		}
		if (dst->status == SIDE_ERROR) {
			dst->failed = 1;
			dst->eof = 1;
			progress = 1;
		}
		break;
	}
	/* Idle connections give their buffers back: memory per idle connection stays small. */
	if (b->data != NULL && rbuf_len(b) == 0)
		rbuf_release(b);
	return progress;
}

void
conn_pump(struct conn *c)
{
	struct side *cl = &c->client, *be = &c->backend;
	int progress, r;

	do {
		progress = conn_pump_dir(c, cl, be, &c->buf_c2b);
		progress |= conn_pump_dir(c, be, cl, &c->buf_b2c);
		if (progress)
			c->last_active_ms = wk->loop.now_ms;
	} while (progress);

	if (cl->failed) {
		if (c->end_detail == NULL)
			c->end_detail = cl->errmsg;
		conn_close(c, END_CLIENT_ERROR);
		return;
	}
	if (cl->eof) {
		/* The client went away: what it sent still reaches the backend, then we close. */
		if (rbuf_len(&c->buf_c2b) > 0 && !be->failed && be->fd >= 0) {
			if (c->state != CONN_CLOSING) {
				c->state = CONN_CLOSING;
				evloop_timer_after(&wk->loop, &c->timer, CONN_CLOSING_TIMEOUT_MS);
			}
			return;
		}
		if (be->ssl != NULL && !be->failed)
			(void)be->ops->shutdown(be);
		conn_close(c, END_CLIENT_CLOSED);
		return;
	}
	if (be->eof) {
		/* The backend is done: every byte it sent reaches the client, then close_notify. */
		if (rbuf_len(&c->buf_b2c) > 0) {
			if (c->state != CONN_CLOSING) {
				c->state = CONN_CLOSING;
				evloop_timer_after(&wk->loop, &c->timer, CONN_CLOSING_TIMEOUT_MS);
			}
			return;
		}
		if (c->end == END_NONE)
			c->end = be->failed ? END_BACKEND_ERROR : END_BACKEND_CLOSED;
		if (!cl->shut) {
			r = cl->ops->shutdown(cl);
			if (r == 0) {
				c->state = CONN_CLOSING;
				return;
			}
			cl->shut = 1;
			(void)shutdown(cl->fd, SHUT_WR);
		}
		side_close(be);
		/* Lingering close: a reset would destroy the last reply still in flight. */
		c->state = CONN_LINGER;
		evloop_timer_after(&wk->loop, &c->timer, LINGER_TIMEOUT_MS);
		conn_run(c);
	}
}

static void
conn_linger(struct conn *c)
{
	uint8_t scratch[4096];
	ssize_t n;

	while (c->client.readable) {
		n = read(c->client.fd, scratch, sizeof(scratch));
		if (n > 0)
			continue;
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->client.readable = 0;
			return;
		}
		conn_close(c, c->end != END_NONE ? c->end : END_CLIENT_CLOSED);
		return;
	}
}

/* ---------- timers and the end ---------- */

static void
conn_timer_cb(struct ev_timer *t)
{
	struct conn *c = t->arg;

	switch (c->state) {
	case CONN_PEEK:
	case CONN_HANDSHAKE:
		wk->stats.handshake_timeouts++;
		if (conn_log_allowed(&conn_timeout_log, "handshake timeouts"))
			log_info("%s: handshake with %s timed out (%llu so far)", c->listener ?
			    c->listener->cfg->name : c->connector->cfg->name, c->peer_str,
			    (unsigned long long)wk->stats.handshake_timeouts);
		conn_audit_handshake(c, 0, "handshake timeout");
		conn_close(c, END_HANDSHAKE_TIMEOUT);
		break;
	case CONN_CONNECTING:
		conn_backend_down(c, "connect timed out");
		break;
	case CONN_RELAY:
		if (wk->cfg->idle_timeout_ms == 0)
			break;
		if (wk->loop.now_ms - c->last_active_ms >= wk->cfg->idle_timeout_ms) {
			wk->stats.idle_timeouts++;
			if (conn_log_allowed(&conn_idle_log, "idle timeouts"))
				log_info("%s: closing %s, idle for %u ms (%llu so far)", c->listener ?
				    c->listener->cfg->name : c->connector->cfg->name, c->peer_str,
				    wk->cfg->idle_timeout_ms,
				    (unsigned long long)wk->stats.idle_timeouts);
			conn_close(c, END_IDLE_TIMEOUT);
		} else
			evloop_timer_set(&wk->loop, &c->timer,
			    c->last_active_ms + wk->cfg->idle_timeout_ms);
		break;
	case CONN_CLOSING:
	case CONN_LINGER:
		conn_close(c, c->end != END_NONE ? c->end : END_CLIENT_ERROR);
		break;
	case CONN_DEAD:
		break;
	}
}

void
conn_close(struct conn *c, enum conn_end why)
{
	if (c->state == CONN_DEAD)
		return;
	/* Never free an SSL whose job is paused: finish the job first (keyd's deadline bounds it). */
	if (c->async_wait) {
		if (c->pending_close == END_NONE)
			c->pending_close = why;
		return;
	}
	if (c->end == END_NONE)
		c->end = why;
	wk->stats.closed++;
	conn_audit_closed(c);
	evloop_timer_cancel(&wk->loop, &c->timer);
	evloop_defer_cancel(&wk->loop, &c->run);
	side_close(&c->client);
	side_close(&c->backend);
	rbuf_release(&c->buf_c2b);
	rbuf_release(&c->buf_b2c);
	if (c->gen != NULL) {
		c->gen->conns--;
		tls_gen_unref(c->gen);
		c->gen = NULL;
	}
	if (c->listener != NULL)
		c->listener->conns--;
	if (c->connector != NULL) {
		c->connector->conns--;
		connector_conn_end(c);
	}
	TAILQ_REMOVE(&wk->conns, c, entry);
	wk->n_conns--;
	c->state = CONN_DEAD;
	evloop_defer(&wk->loop, &c->reap);
}

void
conn_terminate(struct conn *c, enum conn_end why)
{
	if (c->state == CONN_RELAY && c->client.ssl != NULL && !c->client.shut)
		(void)c->client.ops->shutdown(&c->client);
	conn_close(c, why);
}

static void
conn_run(struct conn *c)
{
	switch (c->state) {
	case CONN_PEEK:
		conn_peek(c);
		break;
	case CONN_HANDSHAKE:
		conn_handshake(c);
		break;
	case CONN_CONNECTING:
		conn_connect_check(c);
		break;
	case CONN_RELAY:
	case CONN_CLOSING:
		conn_pump(c);
		break;
	case CONN_LINGER:
		conn_linger(c);
		break;
	case CONN_DEAD:
		break;
	}
}
