/*
 * Connectors: a local plaintext listener (a replica's redis-server, or the cluster bus
 * redirected by nftables) whose connections redoubt carries to a TLS peer, presenting the
 * node's certificate and checking the peer per tls-mode.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker.h"

#define CONNECTOR_ACCEPT_BATCH 64

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

	/* Names are resolved now, before the sandbox closes the resolver's files. */
	if (to->kind == ADDR_TCP && to->sslen == 0) {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
		char port[8];
		int r;
		snprintf(port, sizeof(port), "%u", to->port);
		r = getaddrinfo(to->host, port, &hints, &res);
		if (r != 0 || res == NULL || res->ai_addrlen > sizeof(k->peer)) {
			log_warnx("connector %s: cannot resolve %s: %s", k->cfg->name, to->host,
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
	k->io.fd = fd;
	k->io.cb = connector_io_cb;
	k->io.arg = k;
	if (evloop_add(&wk->loop, &k->io, EPOLLIN | EPOLLEXCLUSIVE) == -1) {
		log_warn("connector %s: epoll_ctl(ADD)", k->cfg->name);
		return -1;
	}
	return 0;
}
