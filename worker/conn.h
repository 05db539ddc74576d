/*
 * A relayed connection: a TLS side and a plain side (listeners: TLS client -> plain backend;
 * connectors: plain local client -> TLS peer), two bounded buffers, one state machine.
 *
 * A handler may end its own connection: conn_close() releases descriptors and TLS state at
 * once but frees the memory from a deferred call, after the event batch that may still
 * hold a pointer to it (the same guarantee a reference count gives, without the counting).
 */
#ifndef REDOUBT_CONN_H
#define REDOUBT_CONN_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "common/evloop.h"
#include "worker/side.h"

enum conn_state {
	CONN_PEEK = 0,     /* listener: first byte decides TLS or plaintext */
	CONN_HANDSHAKE,    /* TLS handshake on the TLS side */
	CONN_CONNECTING,   /* dialling the backend (listener) or the peer (connector) */
	CONN_RELAY,
	CONN_CLOSING,      /* one side ended: flushing what it sent to the other, then closing */
	CONN_LINGER,       /* we closed our direction: reading and discarding for a moment */
	CONN_DEAD
};

/* Why a connection ended: logged, audited, counted. */
enum conn_end {
	END_NONE = 0,
	END_CLIENT_CLOSED,
	END_BACKEND_CLOSED,
	END_CLIENT_ERROR,
	END_BACKEND_ERROR,
	END_HANDSHAKE_FAILED,
	END_HANDSHAKE_TIMEOUT,
	END_IDENTITY_REFUSED,
	END_PLAINTEXT,
	END_BACKEND_UNAVAILABLE,
	END_IDLE_TIMEOUT,
	END_REVOKED,
	END_SHUTDOWN,
	END_MAX
};

struct rbuf {
	uint8_t *data;       /* CONN_BUF_SIZE bytes, taken from the worker's pool while in use */
	size_t   head, tail;
	size_t   hw;         /* highest tail since taken: what must be wiped on release */
};

struct tls_gen;
struct wk_listener;
struct wk_connector;
struct connector_peer;

#define CONN_REFUSAL_MAX 256          /* bytes of c->refusal, allocated only when refusing */

/* Per connection, so its size counts in memory per idle connection: keep rare things out. */
struct conn {
	TAILQ_ENTRY(conn) entry;          /* worker's list of connections */
	uint64_t          id;             /* per worker; with keyd's worker id, names it in audit */
	enum conn_state   state;
	enum conn_end     end;
	const char       *end_detail;     /* static or owned by the SSL error tables */
	struct side       client;         /* the accepted socket */
	struct side       backend;        /* the socket we dial */
	struct side      *tls;            /* &client or &backend */
	struct rbuf       buf_c2b;        /* client -> backend */
	struct rbuf       buf_b2c;        /* backend -> client */
	struct wk_listener  *listener;    /* exactly one of listener / connector */
	struct wk_connector *connector;
	struct connector_peer *kpeer;     /* connector: the dialled peer's entry (referenced) */
	struct tls_gen   *gen;            /* identity generation of the TLS side (refcounted) */
	const struct config_addr *dial;   /* where CONN_CONNECTING goes */
	char              peer_str[64];   /* the client's address, for logs and audit */
	char             *refusal;        /* why the peer's certificate was refused, or NULL */
	uint64_t          started_ms;
	uint64_t          last_active_ms;
	struct ev_timer   timer;          /* handshake / connect / idle / closing / linger deadline */
	struct ev_defer   run;            /* resume after keyd answered, or more work to do */
	struct ev_defer   reap;
	unsigned          async_wait:1;   /* a TLS job is paused: only keyd's answer resumes it */
	unsigned          woken:1;
	enum conn_end     pending_close;  /* asked to close while a TLS job was paused */
};

/* Listener path: a freshly accepted TLS client. */
struct conn *conn_new_inbound(struct wk_listener *l, int fd, const struct sockaddr *sa,
    socklen_t salen);
/* Connector path: a freshly accepted local plaintext client. */
struct conn *conn_new_outbound(struct wk_connector *k, int fd, const struct sockaddr *sa,
    socklen_t salen);
/* Ends c now (revocation, shutdown); safe while a TLS job is paused. */
void conn_terminate(struct conn *c, enum conn_end why);
const char *conn_end_name(enum conn_end e);
/* The SSL-level async callback (SSL_CTX_set_async_callback). */
int  conn_async_wake(SSL *ssl, void *arg);
/* Verify callback with tls-mode and identity rules (SSL_CTX_set_verify). */
int  conn_verify_cb(int preverify_ok, X509_STORE_CTX *xs);

#endif
