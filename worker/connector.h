/*
 * What a connector remembers about each peer it dials: consecutive failures (for the
 * reconnect backoff) and the last TLS session (for resumption).  A small table per
 * connector, filled on demand; entries in use by a connection are never recycled.
 */
#ifndef REDOUBT_CONNECTOR_H
#define REDOUBT_CONNECTOR_H

#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#define CONNECTOR_PEERS_MAX        64    /* peers remembered per connector (cluster nodes) */
#define CONNECTOR_BACKOFF_AFTER    3     /* consecutive failures before local clients wait */
#define CONNECTOR_BACKOFF_FIRST_MS 500   /* first wait; doubles with every further failure */
#define CONNECTOR_BACKOFF_MAX_MS   5000  /* a peer that is back is used again within 5 s,
                                            well inside Redis' cluster-node-timeout (15 s) */

struct conn;
struct wk_connector;

struct connector_peer {
	struct sockaddr_storage addr;
	socklen_t     addr_len;            /* 0: free slot */
	char          name[64];            /* "10.0.0.1:6380", for logs */
	unsigned      refs;                /* connections using this entry */
	unsigned      failures;            /* consecutive dial or handshake failures */
	unsigned      backoff_ms;          /* current wait, 0 when not backing off */
	uint64_t      backoff_until_ms;    /* local clients are closed at once until then */
	uint64_t      last_used_ms;
	SSL_SESSION  *session;             /* resumes the next handshake to this peer */
	uint32_t      session_gen;         /* certificate generation the session was made with */
};

/* The entry for the address (made on demand, referenced); NULL when the table is full. */
struct connector_peer *connector_peer_get(struct wk_connector *k, const struct sockaddr *sa,
    socklen_t len);
/* Milliseconds local clients must still wait before this peer is dialled again; 0: dial. */
uint64_t connector_peer_backoff(const struct connector_peer *p);
/* The handshake with the peer completed: failures and backoff are forgotten. */
void     connector_peer_ok(struct wk_connector *k, struct connector_peer *p);
/* c ends: counts a failure if it never got past the dial or the handshake; drops the ref. */
void     connector_conn_end(struct conn *c);
/* Offers the cached session (same certificate generation only) to a new client SSL. */
void     connector_peer_resume(struct connector_peer *p, SSL *ssl, uint32_t generation);
/* SSL_CTX_sess_set_new_cb: keeps the newest session per peer. */
int      connector_session_new(SSL *ssl, SSL_SESSION *sess);
/* Where a redirected connection was going (SO_ORIGINAL_DST); -1 with a log line. */
int      connector_original_dst(struct wk_connector *k, int fd, struct sockaddr_storage *dst,
    socklen_t *len);
/* Frees the table (worker exit). */
void     connector_stop(struct wk_connector *k);

#endif
