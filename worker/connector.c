/*
 * Connectors: a local plaintext listener (a replica's redis-server, or the cluster bus
 * redirected by nftables) whose connections redoubt carries to a TLS peer, presenting the
 * node's certificate and checking the peer per tls-mode.
 *
 * Per peer we remember consecutive failures: after CONNECTOR_BACKOFF_AFTER of them, local
 * clients are closed at once for a wait that doubles up to CONNECTOR_BACKOFF_MAX_MS, so a
 * peer that is down costs neither a dial nor a keyd signature per retry of redis-server.
 * We also keep the peer's newest TLS session, so that a reconnect (a replica after a link
 * drop, a cluster bus link) resumes without a new signature.
 */
#include "worker/connector.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker.h"

#define CONNECTOR_ACCEPT_BATCH 64
#define CONNECTOR_SOL_IPV6_ORIGINAL_DST 80  /* IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6) */

/* ---------- peers: backoff and sessions ---------- */

static void
connector_peer_format(struct connector_peer *p)
{
	const struct sockaddr *sa = (const struct sockaddr *)&p->addr;
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET &&
	    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host)))
		snprintf(p->name, sizeof(p->name), "%s:%u", host,
		    ntohs(((const struct sockaddr_in *)sa)->sin_port));
	else if (sa->sa_family == AF_INET6 &&
	    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host)))
		snprintf(p->name, sizeof(p->name), "[%s]:%u", host,
		    ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
	else
		snprintf(p->name, sizeof(p->name), "unknown");
}

static int
connector_addr_eq(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr *b,
    socklen_t blen)
{
	if (a->ss_family != b->sa_family)
		return 0;
	if (b->sa_family == AF_INET && blen >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (b->sa_family == AF_INET6 && blen >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return alen == blen && memcmp(a, b, blen) == 0;
}

static void
connector_peer_clear(struct connector_peer *p)
{
	SSL_SESSION_free(p->session);
	memset(p, 0, sizeof(*p));
}

struct connector_peer *
connector_peer_get(struct wk_connector *k, const struct sockaddr *sa, socklen_t len)
{
	struct connector_peer *p, *victim = NULL;

	if (k->peers == NULL || len == 0 || len > sizeof(p->addr))
		return NULL;
	for (size_t i = 0; i < CONNECTOR_PEERS_MAX; i++) {
		p = &k->peers[i];
		if (p->addr_len != 0 && connector_addr_eq(&p->addr, p->addr_len, sa, len))
			goto found;
		/* A free slot, else the least recently used one that no connection holds. */
		if (p->refs != 0 || (victim != NULL && victim->addr_len == 0))
			continue;
		if (victim == NULL || p->addr_len == 0 || p->last_used_ms < victim->last_used_ms)
			victim = p;
	}
	if (victim == NULL)
		return NULL;       /* every entry in use: no backoff or resumption for this one */
	p = victim;
	connector_peer_clear(p);
	memcpy(&p->addr, sa, len);
	p->addr_len = len;
	connector_peer_format(p);
found:
	p->refs++;
	p->last_used_ms = wk->loop.now_ms;
	return p;
}

uint64_t
connector_peer_backoff(const struct connector_peer *p)
{
	return p->backoff_until_ms > wk->loop.now_ms ? p->backoff_until_ms - wk->loop.now_ms : 0;
}

void
connector_peer_ok(struct wk_connector *k, struct connector_peer *p)
{
	if (p == NULL)
		return;
	if (p->failures >= CONNECTOR_BACKOFF_AFTER)
		log_info("connector %s: peer %s answers again after %u failures", k->cfg->name,
		    p->name, p->failures);
	p->failures = 0;
	p->backoff_ms = 0;
	p->backoff_until_ms = 0;
}

static void
connector_peer_failed(struct wk_connector *k, struct connector_peer *p, const char *why)
{
	/* A session the peer may no longer accept (it refused us, or restarted) is dropped. */
	SSL_SESSION_free(p->session);
	p->session = NULL;
	p->failures++;
	if (p->failures < CONNECTOR_BACKOFF_AFTER)
		return;
	if (p->backoff_ms == 0) {
		p->backoff_ms = CONNECTOR_BACKOFF_FIRST_MS;
		/* Logged once per outage; each failed retry after a wait is logged where it fails. */
		log_warnx("connector %s: peer %s failed %u times in a row (last: %s); local "
		    "connections are closed at once for %u ms, doubling up to %u ms, until it "
		    "answers", k->cfg->name, p->name, p->failures, why, p->backoff_ms,
		    CONNECTOR_BACKOFF_MAX_MS);
	} else {
		p->backoff_ms = p->backoff_ms * 2 > CONNECTOR_BACKOFF_MAX_MS ?
		    CONNECTOR_BACKOFF_MAX_MS : p->backoff_ms * 2;
		log_debug("connector %s: peer %s still failing (%s); next try in %u ms",
		    k->cfg->name, p->name, why, p->backoff_ms);
	}
	p->backoff_until_ms = wk->loop.now_ms + p->backoff_ms;
}

void
connector_conn_end(struct conn *c)
{
	struct connector_peer *p = c->kpeer;

	if (p == NULL)
		return;
	c->kpeer = NULL;
	/* Only a connection that never got past the dial or the handshake says the peer is bad. */
	if (c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE) {
		switch (c->end) {
		case END_BACKEND_UNAVAILABLE:
		case END_HANDSHAKE_FAILED:
		case END_HANDSHAKE_TIMEOUT:
		case END_IDENTITY_REFUSED:
			connector_peer_failed(c->connector, p, c->refusal != NULL ? c->refusal :
			    c->end_detail != NULL ? c->end_detail : conn_end_name(c->end));
			break;
		default:
			break;
		}
	}
	if (p->refs > 0)
		p->refs--;
}

void
connector_peer_resume(struct connector_peer *p, SSL *ssl, uint32_t generation)
{
	if (p == NULL || p->session == NULL)
		return;
	if (p->session_gen != generation || !SSL_SESSION_is_resumable(p->session)) {
		SSL_SESSION_free(p->session);
		p->session = NULL;
		return;
	}
	(void)SSL_set_session(ssl, p->session);
}

int
connector_session_new(SSL *ssl, SSL_SESSION *sess)
{
	struct conn *c = SSL_get_app_data(ssl);

	if (c == NULL || c->kpeer == NULL || c->gen == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	SSL_SESSION_free(c->kpeer->session);
	c->kpeer->session = sess;       /* 1 below: the reference is ours now */
	c->kpeer->session_gen = c->gen->generation;
	return 1;
}

int
connector_original_dst(struct wk_connector *k, int fd, struct sockaddr_storage *dst,
    socklen_t *len)
{
	struct sockaddr_storage self = { .ss_family = AF_UNSPEC };
	socklen_t slen = sizeof(self);
	int r;

	if (getsockname(fd, (struct sockaddr *)&self, &slen) == -1) {
		log_warn("connector %s: getsockname", k->cfg->name);
		return -1;
	}
	/* nftables REDIRECT kept the address the local redis-server meant to reach. */
	*len = sizeof(*dst);
	memset(dst, 0, sizeof(*dst));
	if (self.ss_family == AF_INET6)
		r = getsockopt(fd, SOL_IPV6, CONNECTOR_SOL_IPV6_ORIGINAL_DST, dst, len);
	else
		r = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, dst, len);
	if (r == -1) {
		log_warn("connector %s: SO_ORIGINAL_DST (is the nf_conntrack module loaded?)",
		    k->cfg->name);
		return -1;
	}
	/* Not redirected: dialling "the original destination" would be dialling ourselves. */
	if (connector_addr_eq(&self, slen, (const struct sockaddr *)dst, *len)) {
		log_warnx("connector %s: a connection reached this transparent connector without an "
		    "nftables redirect; refused (run 'redoubt cluster-redirect', and connect to the "
		    "peer's address, not to the connector)", k->cfg->name);
		return -1;
	}
	return 0;
}

void
connector_stop(struct wk_connector *k)
{
	if (k->peers == NULL)
		return;
	for (size_t i = 0; i < CONNECTOR_PEERS_MAX; i++)
		connector_peer_clear(&k->peers[i]);
	free(k->peers);
	k->peers = NULL;
}

/* ---------- accepting local clients ---------- */

static void
connector_accept(struct wk_connector *k)
{
	for (int i = 0; i < CONNECTOR_ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(k->io.fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("connector %s: accept", k->cfg->name);
			return;
		}
		if (wk->stopping || wk->n_conns >= wk->cfg->max_connections) {
			close(fd);
			continue;
		}
		(void)conn_new_outbound(k, fd, (struct sockaddr *)&ss, len);
	}
}

static void
connector_io_cb(struct ev_io *io, uint32_t events)
{
	connector_accept(io->arg);
}

int
connector_start(struct wk_connector *k, int fd)
{
	const struct config_addr *to = &k->cfg->connect;

	/*
	 * Names are resolved once, now, before the sandbox closes the resolver's files: a peer
	 * that moves to another address needs a worker restart (documented).
	 */
	if (to->kind == ADDR_TCP && to->sslen == 0) {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
		char port[8];
		int r;
		snprintf(port, sizeof(port), "%u", to->port);
		r = getaddrinfo(to->host, port, &hints, &res);
		if (r != 0 || res == NULL || res->ai_addrlen > sizeof(k->peer)) {
			log_warnx("connector %s: cannot resolve %s: %s; its connections will fail "
			    "until redoubt restarts", k->cfg->name, to->host,
			    r != 0 ? gai_strerror(r) : "no address");
		} else {
			memcpy(&k->peer, res->ai_addr, res->ai_addrlen);
			k->peer_len = res->ai_addrlen;
		}
		if (res != NULL)
			freeaddrinfo(res);
	} else if (to->kind == ADDR_TCP) {
		memcpy(&k->peer, &to->ss, to->sslen);
		k->peer_len = to->sslen;
	}
	k->peers = calloc(CONNECTOR_PEERS_MAX, sizeof(*k->peers));
	if (k->peers == NULL)
		fatal("connector %s: peer table", k->cfg->name);
	k->io.fd = fd;
	k->io.cb = connector_io_cb;
	k->io.arg = k;
	if (evloop_add(&wk->loop, &k->io, EPOLLIN | EPOLLEXCLUSIVE) == -1) {
		log_warn("connector %s: epoll_ctl(ADD)", k->cfg->name);
		return -1;
	}
	return 0;
}
