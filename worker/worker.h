/*
 * A worker process: listeners and connectors, their connections, the TLS contexts built
 * from what keyd sent, and the keyd channel.  One per process, single-threaded.
 */
#ifndef REDOUBT_WORKER_H
#define REDOUBT_WORKER_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "common/evloop.h"
#include "ipc/channel.h"
#include "ipc/ipc.h"
#include "policy/config.h"
#include "worker/conn.h"

/* One certificate generation of an identity, as the worker holds it: public parts only. */
struct tls_gen {
	unsigned          refs;
	uint16_t          identity;
	uint32_t          generation;
	uint8_t           key_id[IPC_KEY_ID_LEN];
	enum ipc_key_type key_type;
	X509             *leaf;
	STACK_OF(X509)   *extra;          /* intermediates */
	EVP_PKEY         *key;            /* keyd provider handle */
	X509_STORE       *ca;             /* NULL when no CA was configured */
	int               has_crl;
	uint8_t           digest[32];     /* of the chain, CA and CRL keyd sent */
	uint8_t           material[32];   /* digest + the trust of the identity's sections with
	                                     their own CA/CRL: same material, same generation */
	unsigned          conns;          /* connections whose TLS side uses this generation */
};

/* PEM parts being received from keyd, for one identity, listener or connector. */
struct pem_asm {
	uint32_t         gen;
	char            *buf[IPC_PEM_KIND_MAX];
	uint32_t         total[IPC_PEM_KIND_MAX];
	uint32_t         got[IPC_PEM_KIND_MAX];
};

/*
 * A listener's or connector's own CA bundle and CRL (config `ca` / `crl`), which keyd sends
 * before the identity generation they belong to.  The store replaces the identity's.
 */
struct wk_trust {
	X509_STORE      *store;           /* NULL: no CA (tls-mode require only) */
	uint32_t         generation;      /* of the identity; 0: nothing received yet */
	uint8_t          digest[32];
	struct pem_asm   pem;
};

struct wk_identity {
	const struct config_identity *cfg;
	struct tls_gen  *cur;
	struct tls_gen  *prev;
	struct pem_asm   pem;             /* a generation being received from keyd */
};

struct wk_listener {
	const struct config_listener *cfg;
	unsigned         index;
	struct ev_io     io;
	SSL_CTX         *ctx;             /* for new handshakes; NULL until keyd sent the identity */
	struct tls_gen  *gen;             /* the generation ctx was built from */
	uint8_t         *alpn_wire;       /* offered protocols, wire format */
	size_t           alpn_wire_len;
	struct wk_trust  trust;           /* used when the listener has its own ca or crl */
	unsigned         conns;
};

struct wk_connector {
	const struct config_connector *cfg;
	unsigned         index;
	struct ev_io     io;
	SSL_CTX         *ctx;
	struct tls_gen  *gen;
	struct sockaddr_storage peer;     /* the dialled address, resolved at start-up */
	socklen_t        peer_len;        /* 0: not resolved (connections fail) */
	struct wk_trust  trust;           /* used when the connector has its own ca or crl */
	struct connector_peer *peers;     /* connector.h: backoff and session per peer */
	unsigned         conns;
};

struct ticket_key {
	int      valid;
	uint64_t created;
	uint8_t  name[IPC_TICKET_NAME_LEN];
	uint8_t  aes[IPC_TICKET_AES_LEN];
	uint8_t  hmac[IPC_TICKET_HMAC_LEN];
};

struct worker_stats {
	uint64_t accepted, refused_limit, refused_admission, plaintext, handshakes,
	    handshake_failures, handshake_timeouts, identity_refusals, backend_failures,
	    idle_timeouts, closed;
};

TAILQ_HEAD(conn_list, conn);

struct worker {
	struct evloop        loop;
	struct config       *cfg;
	unsigned             index;
	struct ipc_chan      sup;
	struct ev_io         sup_io;
	struct ev_io         sig_io;
	struct wk_identity  *ids;
	struct wk_listener  *listeners;
	struct wk_connector *connectors;
	struct conn_list     conns;
	unsigned             n_conns;
	uint64_t             next_conn_id;
	int                  accepting;     /* keyd's admission (audit fail-closed) */
	int                  stopping;
	struct ticket_key    tickets[2];    /* [0] current (encrypts), [1] previous (decrypts) */
	uint32_t             ticket_lifetime;
	void                *buf_pool;      /* free CONN_BUF_SIZE buffers (singly linked) */
	unsigned             buf_pool_len;
	struct worker_stats  stats;
};

extern struct worker *wk;

/* tls_gen.c: builds a generation from the PEM keyd sent; NULL with a log line on error. */
struct tls_gen *tls_gen_new(uint16_t identity, const struct ipc_generation *g,
    const char *chain, size_t chain_len, const char *ca, size_t ca_len,
    const char *crl, size_t crl_len);
void tls_gen_ref(struct tls_gen *g);
void tls_gen_unref(struct tls_gen *g);
/* A CA store from PEM (CRLs added and checked when crl_len > 0); NULL with ca_len == 0. */
int  tls_trust_store(const char *ca, size_t ca_len, const char *crl, size_t crl_len,
    X509_STORE **out);
/* 1 when the listener or connector section sets its own ca or crl. */
static inline int
wk_trust_own(const char *ca, const char *crl)
{
	return ca[0] != '\0' || crl[0] != '\0';
}

/* tls_ctx.c: contexts for listeners (server) and connectors (client). */
SSL_CTX *tls_ctx_listener(const struct config *cfg, struct wk_listener *l, struct tls_gen *g);
SSL_CTX *tls_ctx_connector(const struct config *cfg, struct wk_connector *k, struct tls_gen *g);

/* worker.c */
void worker_install_generation(uint16_t identity, struct tls_gen *g);
void worker_install_trust(struct wk_trust *t, const struct ipc_trust *m, X509_STORE *store);
void worker_revoke(uint16_t identity, uint32_t generation);
void worker_set_tickets(const struct ipc_ticket_keys *tk);
void worker_fill_stats(struct ipc_stats *st);
uint8_t *worker_buf_get(void);
void worker_buf_put(uint8_t *buf);

/* listener.c / connector.c */
int  listener_start(struct wk_listener *l, int fd);
int  connector_start(struct wk_connector *k, int fd);

#endif
